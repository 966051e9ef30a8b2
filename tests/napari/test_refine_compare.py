"""The Compare tab of "Refine labels" through a real napari viewer: difference, table, blink, swipe."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from napari_phoenix._napari import compare_panel as cp
from napari_phoenix.core.masks import read_mask
from napari_phoenix.core.refine import compare_predictions, compare_rounds, list_rounds


@pytest.fixture(scope="module")
def probs(refine_phantom):
    """Two predictions of the phantom: the second finds more ink on the right and less at the top."""
    rng = np.random.default_rng(0)
    label = read_mask(refine_phantom / "label.png").astype(np.float32)
    a = np.clip(ndi.gaussian_filter(label, 2) * 0.8 + 0.1 + rng.normal(0, 0.05, label.shape), 0, 1)
    b = a.copy()
    b[100:160, 250:370] = np.maximum(b[100:160, 250:370], 0.9)
    b[:128, :192] *= 0.3
    return a.astype(np.float32), b.astype(np.float32)


def _dock(viewer, seg):
    viewer.open(str(seg), plugin="napari-phoenix")
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Refine labels")
    return widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _red(widget) -> bool:
    return "#ff6060" in widget.status.styleSheet()


def _cells(table) -> list[list[str]]:
    return [[table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
            for r in range(table.rowCount())]  # fmt: skip


def _display(label, ignore):
    """What the swipe layer shows of one side: 1 ink, 2 ignore without ink."""
    out = (np.asarray(label) != 0).astype(np.uint8)
    out[(np.asarray(ignore) != 0) & (out == 0)] = 2
    return out


def _two_rounds(qtbot, widget, viewer, seg):
    ink, ignore = viewer.layers["seg label"], viewer.layers["seg ignore"]
    _click(qtbot, widget.rounds.save_button)
    _wait(qtbot, widget)
    ink.data[100:160, 250:370] = 1  # more ink on the right, less top left, an ignored patch
    ink.data[:128, :192] = 0
    ignore.data[200:240, 20:120] = 1
    ink.refresh()
    _click(qtbot, widget.rounds.save_button)
    _wait(qtbot, widget)
    return list_rounds(seg)


def test_compare_two_rounds_blink_and_swipe(make_napari_viewer, qtbot, seg):
    viewer = make_napari_viewer(show=True)
    widget = _dock(viewer, seg)
    panel, press = widget.compare, viewer.window._qt_viewer._key_map_handler.press_key
    r1, r2 = _two_rounds(qtbot, widget, viewer, seg)
    ink, ignore = viewer.layers["seg label"], viewer.layers["seg ignore"]
    assert [panel.a_combo.itemText(i) for i in range(panel.a_combo.count())] == ["round 1", "round 2",
                                                                                  "current layers"]  # fmt: skip
    assert (panel.a_combo.currentText(), panel.b_combo.currentText()) == ("round 2", "current layers")
    panel.a_combo.setCurrentText("round 1")
    panel.b_combo.setCurrentText("round 2")
    _click(qtbot, panel.compare_button)
    _wait(qtbot, widget)
    diff, stats = compare_rounds(r1, r2)
    layer = viewer.layers["round 1 → round 2"]
    np.testing.assert_array_equal(layer.data, diff)
    assert stats["ink_added"] > 0 and stats["ink_removed"] > 0 and 0 < stats["ignore_added"] <= 40 * 100
    s = stats
    assert _cells(panel.table) == [
        ["Ink px", f"{s['ink_a']:,}", f"{s['ink_b']:,}", f"+{s['ink_added']:,} / −{s['ink_removed']:,}"],
        ["Ignore px", f"{s['ignore_a']:,}", f"{s['ignore_b']:,}", f"+{s['ignore_added']:,} / −{s['ignore_removed']:,}"],
        ["Ink IoU", "", "", f"{s['ink_iou']:.3f}"], ["Ignore IoU", "", "", f"{s['ignore_iou']:.3f}"]]  # fmt: skip
    assert "1 ink added" in panel.legend.text() and "4 ignore removed" in panel.legend.text()

    # blink by hand (K) and on a timer (Shift+K): round 1 and round 2 as two layers, in turn
    (la, ia), (lb, ib) = r1.masks(), r2.masks()
    want_a, want_b = _display(la, ia), _display(lb, ib)
    looks = {ly: (ly.visible, ly.opacity) for ly in viewer.layers}
    assert press("k")
    a, b = viewer.layers["A: round 1"], viewer.layers["B: round 2"]
    np.testing.assert_array_equal(a.data, want_a)  # ink 1, ignore 2
    np.testing.assert_array_equal(b.data, want_b)
    assert a.opacity > 0 and b.opacity == 0 and a.visible and b.visible  # by opacity: nothing re-read
    assert not ink.visible and not ignore.visible  # the layers being compared with are out of the way
    assert widget.status.text() == "Showing A: round 1."
    press("k")
    assert a.opacity == 0 and b.opacity > 0 and widget.status.text() == "Showing B: round 2."
    panel.rate_spin.setValue(200)
    press("Shift-K")
    assert panel.blink_button.isChecked() and panel.blink_timer.interval() == 200
    qtbot.waitUntil(lambda: a.opacity == 0, timeout=2000)
    qtbot.waitUntil(lambda: a.opacity > 0, timeout=2000)  # it keeps going
    press("Shift-K")
    assert not panel.blink_timer.isActive() and not panel.blink_button.isChecked()
    assert a not in viewer.layers and b not in viewer.layers  # gone, and the rest looks as before
    assert {ly: (ly.visible, ly.opacity) for ly in viewer.layers} == looks

    # swipe: round 1 left of the line, round 2 right of it
    viewer.reset_view()
    _click(qtbot, panel.swipe_button)
    swipe = viewer.layers["swipe: round 1 | round 2"]
    np.testing.assert_array_equal(swipe.data[:, :191], want_a[:, :191])
    np.testing.assert_array_equal(swipe.data[:, 193:], want_b[:, 193:])
    assert (swipe.data[:, 191:193] == cp.SWIPE_LINE).all()  # the line: white, 2 px
    assert not ink.visible and not ignore.visible and panel.swipe_slider.maximum() == 384
    qtbot.wait(50)
    before = viewer.screenshot(canvas_only=True, flash=False)
    panel.swipe_slider.setValue(360)  # over the new ink: round 1 has none there
    np.testing.assert_array_equal(swipe.data[:, :359], want_a[:, :359])
    np.testing.assert_array_equal(swipe.data[:, 361:], want_b[:, 361:])
    assert (swipe.data[:, 359:361] == cp.SWIPE_LINE).all() and (swipe.data[:, 191:193] != cp.SWIPE_LINE).all()
    qtbot.wait(50)
    moved = viewer.screenshot(canvas_only=True, flash=False)
    swipe.refresh()  # what a full redraw shows is what the strip update showed
    qtbot.wait(50)
    full = viewer.screenshot(canvas_only=True, flash=False)
    assert not np.array_equal(before, moved)
    assert np.abs(moved.astype(int) - full.astype(int)).max() <= 2
    panel.swipe_slider.setValue(10)
    np.testing.assert_array_equal(swipe.data[:, 11:], want_b[:, 11:])
    _click(qtbot, panel.swipe_button)  # off: the swipe layer goes, A and B come back as they were
    assert swipe not in viewer.layers and not panel.swipe_slider.isEnabled()
    assert {ly: (ly.visible, ly.opacity) for ly in viewer.layers} == looks


def test_compare_two_predictions(make_napari_viewer, qtbot, seg, probs):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1300, 950)
    pa, pb = probs
    widget = _dock(viewer, seg)
    viewer.add_image(pa, name="round 1 prediction", contrast_limits=(0, 1), colormap="magma")
    viewer.add_image(pb, name="round 2 prediction", contrast_limits=(0, 1), colormap="magma")
    panel = widget.compare
    panel.mode_combo.setCurrentText(cp.PREDICTIONS)
    assert (panel.a_combo.currentText(), panel.b_combo.currentText()) == ("round 1 prediction",
                                                                          "round 2 prediction")  # fmt: skip
    assert panel.threshold_spin.isEnabled() and "became ink" in panel.legend.text()
    panel.threshold_spin.setValue(0.6)
    panel.signed_check.setChecked(True)
    _click(qtbot, panel.compare_button)
    _wait(qtbot, widget)
    mask = viewer.layers["seg mask"].data  # only inside the papyrus
    diff, stats = compare_predictions(pa, pb, 0.6, mask, codes=True)
    layer = viewer.layers["round 1 prediction → round 2 prediction ink change"]
    np.testing.assert_array_equal(layer.data, diff)
    assert stats["became_ink"] > 0 and stats["stopped_being_ink"] > 0 and panel.stats == stats
    np.testing.assert_allclose(viewer.layers["round 1 prediction → round 2 prediction signed difference"].data,
                               pb - pa)  # fmt: skip
    s = stats
    assert _cells(panel.table) == [
        ["Ink px (≥ 0.60)", f"{s['ink_a']:,}", f"{s['ink_b']:,}", f"+{s['became_ink']:,} / −{s['stopped_being_ink']:,}"],
        ["Ink IoU", "", "", f"{s['ink_iou']:.3f}"], ["Mean |B − A|", "", "", f"{s['mean_abs_change']:.4f}"]]  # fmt: skip
    assert tuple(layer.colormap.map(np.array([1, 2]))[:, :3].argmax(axis=1)) == (1, 0)  # green, red

    viewer.reset_view()
    qtbot.wait(50)
    from PIL import Image

    widget.tabs.setCurrentWidget(panel)
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save("/tmp/refine_compare.png")

    a, b = viewer.layers["round 1 prediction"], viewer.layers["round 2 prediction"]
    _click(qtbot, panel.flip_button)
    assert a.opacity == 1 and b.opacity == 0
    _click(qtbot, panel.swipe_button)  # swipe ends the blink; A and B are hidden under the swipe layer
    swipe = viewer.layers["swipe: round 1 prediction | round 2 prediction"]
    assert swipe.data.dtype == np.uint8 and swipe.contrast_limits == [0, 255] and swipe.colormap.name == "magma"
    to8 = cp._to_uint8
    np.testing.assert_array_equal(swipe.data[:, :191], to8(pa[:, :191]))
    np.testing.assert_array_equal(swipe.data[:, 193:], to8(pb[:, 193:]))
    assert (swipe.data[:, 191:193] == 255).all() and not a.visible and not b.visible
    panel.swipe_slider.setValue(300)
    np.testing.assert_array_equal(swipe.data[:, :299], to8(pa[:, :299]))
    np.testing.assert_array_equal(swipe.data[:, 301:], to8(pb[:, 301:]))
    qtbot.wait(50)
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save("/tmp/refine_compare_swipe.png")
    _click(qtbot, panel.compare_button)  # a new comparison ends the swipe and brings A and B back
    _wait(qtbot, widget)
    assert swipe not in viewer.layers and not panel.swipe_button.isChecked()
    assert a.visible and b.visible and a.opacity == b.opacity == 1


def test_compare_errors_are_red_sentences(make_napari_viewer, qtbot, seg, probs):
    viewer = make_napari_viewer()
    widget = _dock(viewer, seg)
    panel = widget.compare
    _click(qtbot, panel.compare_button)  # no rounds yet: only the current layers
    assert _red(widget) and widget.status.text().startswith("Nothing to compare: save a round (Rounds tab)")
    _click(qtbot, panel.flip_button)
    assert _red(widget) and widget.status.text().startswith("Compare A and B first")
    _click(qtbot, panel.swipe_button)
    assert not panel.swipe_button.isChecked() and not any(ly.name.startswith("swipe") for ly in viewer.layers)
    viewer.add_image(probs[0], name="p")
    viewer.add_image(probs[0][:100], name="small")
    panel.pick(cp.PREDICTIONS, "p", "p")
    _click(qtbot, panel.compare_button)
    assert _red(widget) and widget.status.text() == "A and B are both p: pick two different ones."
    panel.b_combo.setCurrentText("small")
    _click(qtbot, panel.compare_button)
    assert _red(widget) and widget.status.text() == ("Small is 100 x 384 px, p 256 x 384 px: compare two "
                                                     "predictions of one segment.")  # fmt: skip
