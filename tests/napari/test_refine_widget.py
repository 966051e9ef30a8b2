"""The "Refine labels" dock widget through a real napari viewer, on a small phantom segment."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from napari_phoenix._napari import refine_widget as rw
from napari_phoenix.core.masks import read_mask
from napari_phoenix.core.refine import (
    compare_rounds,
    evaluate,
    list_rounds,
    propose_ignore,
    propose_ink,
)

PRED_META = {"role": "prediction composite", "source_layer": "seg", "store": "/data/seg/predictions/m.zarr",
             "checkpoint": "m.json", "checkpoint_path": "/nowhere/m.json", "settings": {"windows": (3, 5, 9)}}


@pytest.fixture(scope="module")
def maps(refine_phantom):
    """A synthetic prediction (the label blurred, plus noise) and three window maps around it."""
    rng = np.random.default_rng(0)
    label = read_mask(refine_phantom / "label.png").astype(np.float32)
    prob = np.clip(ndi.gaussian_filter(label, 2) * 0.8 + 0.1 + rng.normal(0, 0.08, label.shape), 0, 1)
    windows = np.clip(prob + rng.normal(0, 0.12, (3, *label.shape)), 0, 1).astype(np.float32)
    return prob.astype(np.float32), windows


def _open(viewer, seg, maps, windows=False):
    prob, win = maps
    viewer.open(str(seg), plugin="napari-phoenix")
    viewer.add_image(prob, name="seg prediction", contrast_limits=(0, 1), metadata={"phoenix": dict(PRED_META)})
    if windows:  # windows 3, 5, 9 on the layer slider: slots 0, 1, 3 of 4 (slot 2 is an empty gap)
        slots = np.zeros((4, *prob.shape), np.float32)
        slots[[0, 1, 3]] = win
        viewer.add_image(slots, name="seg prediction windows", translate=(3, 0, 0), scale=(2, 1, 1),
                         metadata={"phoenix": {"role": "prediction windows", "source_layer": "seg",
                                               "windows": [3, 5, 9]}})  # fmt: skip
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Refine labels")
    assert isinstance(widget, rw.RefineWidget)
    return widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=20_000)


def _click(qtbot, button):
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _red(widget) -> bool:
    return "#ff6060" in widget.status.styleSheet()


def test_ink_proposal_follows_the_slider_and_is_accepted(make_napari_viewer, qtbot, seg, maps, monkeypatch):
    threads, real = set(), rw.propose_ink
    monkeypatch.setattr(rw, "propose_ink", lambda *a, **k: threads.add(threading.get_ident()) or real(*a, **k))
    viewer = make_napari_viewer()
    widget = _open(viewer, seg, maps)
    prob = maps[0]
    picked = {role: getattr(widget.layer(role), "name", None) for role in rw.PICKERS}
    assert picked == {"prediction": "seg prediction", "windows": None, "ink": "seg label", "ignore": "seg ignore",
                      "mask": "seg mask"}  # fmt: skip
    assert widget.threshold == 0.5 and widget.min_size_spin.value() == widget.max_hole_spin.value() == 64
    _click(qtbot, widget.ink_propose_button)
    _wait(qtbot, widget)
    proposal = viewer.layers["seg prediction ink proposal"]
    np.testing.assert_array_equal(proposal.data, propose_ink(prob, 0.5, 64, 64))
    assert threads and threading.get_ident() not in threads  # computed off the GUI thread
    assert "px" in widget.status.text() and not _red(widget)

    widget.threshold_slider.setValue(300)  # live: the same layer follows the slider
    _wait(qtbot, widget)
    assert viewer.layers["seg prediction ink proposal"] is proposal and widget.threshold_label.text() == "0.300"
    low = propose_ink(prob, 0.3, 64, 64)
    np.testing.assert_array_equal(proposal.data, low)
    assert low.sum() > propose_ink(prob, 0.5, 64, 64).sum()
    widget.min_size_spin.setValue(0)
    widget.max_hole_spin.setValue(0)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(proposal.data, prob >= 0.3)
    assert proposal.metadata["phoenix"]["params"] == {"threshold": 0.3, "min_size": 0, "max_hole": 0}

    # accept: replace, then union; one Ctrl+Z undoes an accept
    ink = viewer.layers["seg label"]
    before = ink.data.copy()
    _click(qtbot, widget.ink_accept_button)
    np.testing.assert_array_equal(ink.data, prob >= 0.3)
    ink.undo()
    np.testing.assert_array_equal(ink.data, before)
    widget.threshold_slider.setValue(700)
    _wait(qtbot, widget)
    widget.accept_combo.setCurrentIndex(1)  # union
    _click(qtbot, widget.ink_accept_button)
    np.testing.assert_array_equal(ink.data, (before != 0) | (prob >= 0.7))
    assert widget.status.text().startswith("Added") and not _red(widget)
    _click(qtbot, widget.ink_discard_button)
    assert "seg prediction ink proposal" not in viewer.layers

    assert widget.threshold_slider.hasTracking()  # small: live while the slider moves
    monkeypatch.setattr(rw, "LIVE_PX", 1000)
    widget._picked("prediction")
    assert not widget.threshold_slider.hasTracking()  # big: when the slider is released


def test_the_threshold_shows_at_once_and_the_cleanup_follows(make_napari_viewer, qtbot, seg, maps, monkeypatch):
    viewer = make_napari_viewer()
    widget = _open(viewer, seg, maps)
    prob = maps[0]
    _click(qtbot, widget.ink_propose_button)
    _wait(qtbot, widget)
    proposal = viewer.layers["seg prediction ink proposal"]
    gate, real = threading.Event(), rw.propose_ink
    monkeypatch.setattr(rw, "propose_ink", lambda *a, **k: gate.wait(20) and real(*a, **k))
    widget.threshold_slider.setValue(300)  # the cleanup (specks, holes) is held back by the gate...
    raw, clean = prob >= 0.3, propose_ink(prob, 0.3, 64, 64)
    assert not np.array_equal(raw, clean)
    np.testing.assert_array_equal(proposal.data, raw)  # ...but the threshold already shows
    gate.set()
    _wait(qtbot, widget)
    np.testing.assert_array_equal(proposal.data, clean)
    assert viewer.layers["seg prediction ink proposal"] is proposal


def test_ignore_proposal_uses_band_windows_margin_and_mask(make_napari_viewer, qtbot, seg, maps):
    viewer = make_napari_viewer()
    widget = _open(viewer, seg, maps, windows=True)
    prob, win = maps
    mask = viewer.layers["seg mask"].data
    assert widget.layer("windows").name == "seg prediction windows"
    _click(qtbot, widget.ignore_propose_button)
    _wait(qtbot, widget)
    proposal = viewer.layers["seg prediction ignore proposal"]
    want = propose_ignore(prob, (0.3, 0.7), windows=win, spread=0.15, margin=4, mask=mask)
    np.testing.assert_array_equal(proposal.data, want)  # only the 3 real windows count, not the gap
    widget.margin_spin.setValue(0)
    widget.spread_spin.setValue(0.5)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(proposal.data, propose_ignore(prob, (0.3, 0.7), win, 0.5, 0, mask))
    widget.combos["windows"].setCurrentIndex(0)  # none: the band only
    widget.low_spin.setValue(0.2)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(proposal.data, propose_ignore(prob, (0.2, 0.7), None, 0.5, 0, mask))
    ignore = viewer.layers["seg ignore"]
    _click(qtbot, widget.ignore_accept_button)
    np.testing.assert_array_equal(ignore.data, proposal.data)


def test_painting_helpers_and_keys(make_napari_viewer, qtbot, seg, maps):
    viewer = make_napari_viewer()
    widget = _open(viewer, seg, maps)
    paint, ink, ignore = widget.paint, viewer.layers["seg label"], viewer.layers["seg ignore"]
    ink.data[:] = 0
    ink.data[20:120, 30:200] = 1
    ignore.data[:] = 0
    ignore.data[80:160, 150:300] = 1
    ink_before, ignore_before = ink.data.copy(), ignore.data.copy()

    paint.overlap_check.setChecked(True)  # the ink-under-ignore layer, kept up to date while painting
    np.testing.assert_array_equal(viewer.layers["ink under ignore"].data, (ink_before & ignore_before))
    ink.paint((150, 250), 1)  # a brush stroke into the ignore
    _wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["ink under ignore"].data, ink.data & ignore.data)
    assert ink.data[150, 250] == 1 and viewer.layers["ink under ignore"].data[150, 250] == 1
    with ignore.block_history():  # a drag of the ignore brush over ink: one update after the stroke
        for x in range(40, 120, 5):
            ignore.paint((60, x), 1)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["ink under ignore"].data, ink.data & ignore.data)
    assert widget.status.text() == f"{int((ink.data & ignore.data).sum()):,} px of ink lie under ignore (cyan)."
    ignore.undo()
    ink.undo()
    ink_before = ink.data.copy()

    _click(qtbot, paint.erase_ignore_button)
    np.testing.assert_array_equal(ignore.data, ignore_before & (ink_before == 0))
    np.testing.assert_array_equal(ink.data, ink_before)
    assert not viewer.layers["ink under ignore"].data.any()
    assert widget.status.text() == f"Erased {int((ink_before & ignore_before).sum()):,} px of seg ignore under seg label."
    ignore.undo()  # one undo step restores the ignore mask
    np.testing.assert_array_equal(ignore.data, ignore_before)
    _click(qtbot, paint.erase_ink_button)
    np.testing.assert_array_equal(ink.data, ink_before & (ignore_before == 0))
    np.testing.assert_array_equal(ignore.data, ignore_before)
    paint.overlap_check.setChecked(False)
    assert "ink under ignore" not in viewer.layers
    paint.overlap_check.setChecked(True)
    viewer.layers.remove("ink under ignore")  # deleting the layer unticks the box (it does not come back)
    assert not paint.overlap_check.isChecked() and "ink under ignore" not in viewer.layers

    # brushes through the keys bound on the viewer: I ink, G ignore, E eraser
    press = viewer.window._qt_viewer._key_map_handler.press_key
    paint.size_spin.setValue(7)
    assert press("i") is True
    assert viewer.layers.selection.active is ink and ink.mode == "paint" and ink.selected_label == 1
    assert ink.brush_size == 7
    press("g")
    assert viewer.layers.selection.active is ignore and ignore.mode == "paint" and ignore.brush_size == 7
    _click(qtbot, paint.brush_buttons["ink"])  # the buttons do the same
    assert viewer.layers.selection.active is ink
    press("g")
    assert press("e") and ignore.mode == "erase"  # on the ink or ignore layer being painted
    viewer.layers.selection.active = viewer.layers["seg prediction"]
    press("e")  # elsewhere: the ink layer, with the preset size
    assert viewer.layers.selection.active is ink and ink.mode == "erase" and ink.brush_size == 7
    _click(qtbot, paint.opacity_buttons[0])
    assert ink.opacity == ignore.opacity == 0.3
    assert "I ink brush" in paint.keys_label.text() and "E eraser" in paint.keys_label.text()


def test_rounds_save_list_load_compare_blink_restore(make_napari_viewer, qtbot, seg, maps):
    viewer = make_napari_viewer()
    widget = _open(viewer, seg, maps)
    rounds, ink, ignore = widget.rounds, viewer.layers["seg label"], viewer.layers["seg ignore"]
    first_ink, first_ignore = ink.data != 0, ignore.data != 0
    rounds.note_edit.setText("first")
    _click(qtbot, rounds.save_button)
    _wait(qtbot, widget)
    assert (seg / "rounds" / "round-001" / "label.png").exists() and (seg / "label.png").exists()
    record = json.loads((seg / "rounds" / "round-001" / "round.json").read_text())
    assert record["note"] == "first" and record["prediction"]["store"] == PRED_META["store"]
    assert record["prediction"]["prediction_layer"] == "seg prediction" and "checkpoint" not in record
    assert rounds.table.rowCount() == 1 and rounds.table.item(0, 3).text() == "first"
    assert rounds.table.item(0, 4).text() == f"{int(first_ink.sum()):,}"
    assert widget.status.text().startswith("Saved round 1")

    ink.data[10:60, 10:90] = 1
    ignore.data[100:140, 200:260] = 1
    ink.refresh()
    rounds.note_edit.setText("more ink")
    _click(qtbot, rounds.save_button)
    _wait(qtbot, widget)
    assert [r.number for r in list_rounds(seg)] == [1, 2] and rounds.table.rowCount() == 2
    np.testing.assert_array_equal(read_mask(seg / "label.png"), ink.data != 0)
    np.testing.assert_array_equal(read_mask(seg / "rounds" / "round-001" / "label.png"), first_ink)

    rounds.table.selectRow(0)
    _click(qtbot, rounds.load_button)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["round 1 label"].data, first_ink)
    np.testing.assert_array_equal(viewer.layers["round 1 ignore"].data, first_ignore)

    r1, r2 = list_rounds(seg)
    rounds.with_combo.setCurrentText("round 2")
    _click(qtbot, rounds.compare_button)  # shown in the Compare tab
    _wait(qtbot, widget)
    assert widget.tabs.currentWidget() is widget.compare
    diff, stats = compare_rounds(r1, r2)
    layer = viewer.layers["round 1 → round 2"]
    np.testing.assert_array_equal(layer.data, diff)
    assert set(np.unique(diff)) >= {1, 3} and widget.compare.stats == stats
    assert tuple(layer.colormap.map(np.array([1, 2, 3, 4]))[:, :3].argmax(axis=1)) == (1, 0, 2, 0)  # green red blue

    ink.data[200:220, 300:340] = 1  # compare round 2 with the layers as they are now
    ink.data[10:20, 10:20] = 0
    rounds.table.selectRow(1)
    rounds.with_combo.setCurrentText("current layers")
    _click(qtbot, rounds.compare_button)
    _wait(qtbot, widget)
    diff, stats = compare_rounds(r2, (ink.data, ignore.data))
    np.testing.assert_array_equal(viewer.layers["round 2 → current layers"].data, diff)
    assert "round 1 → round 2" not in viewer.layers  # one difference layer, reused
    assert stats["ink_removed"] == 100 and stats["ink_added"] > 0 and widget.compare.stats == stats

    rounds.table.selectRow(0)
    _click(qtbot, rounds.restore_button)
    _wait(qtbot, widget)
    np.testing.assert_array_equal(ink.data, first_ink)
    np.testing.assert_array_equal(ignore.data, first_ignore)
    assert [r.number for r in list_rounds(seg)] == [1, 2, 3] and rounds.table.rowCount() == 3
    np.testing.assert_array_equal(read_mask(seg / "label.png"), first_ink)
    assert rounds.table.item(2, 3).text() == "restored round 1"


def test_evaluation_table(make_napari_viewer, qtbot, seg, maps):
    viewer = make_napari_viewer()
    widget = _open(viewer, seg, maps)
    panel, prob = widget.evaluation, maps[0]
    label, ignore, mask = (viewer.layers[f"seg {r}"].data for r in ("label", "ignore", "mask"))
    _click(qtbot, panel.evaluate_button)
    panel.threshold_spin.setValue(0.3)
    _click(qtbot, panel.evaluate_button)
    _wait(qtbot, widget)
    assert panel.table.rowCount() == 2
    for row, threshold in enumerate((0.5, 0.3)):
        want = evaluate(prob, label, ignore, mask, threshold)
        assert panel.results[row] == {"prediction": "seg prediction", "threshold": threshold, **want}
        cells = [panel.table.item(row, c).text() for c in range(panel.table.columnCount())]
        assert cells == ["seg prediction", f"{threshold:.2f}", f"{want['iou']:.3f}", f"{want['f1']:.3f}",
                         f"{want['precision']:.3f}", f"{want['recall']:.3f}", f"{want['kept']:,}"]  # fmt: skip
    assert 0 < want["kept"] < label.size and want["iou"] > 0.5


def test_errors_are_red_sentences(make_napari_viewer, qtbot, seg, maps):
    viewer = make_napari_viewer()
    viewer.open(str(seg), plugin="napari-phoenix")
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Refine labels")
    _click(qtbot, widget.ink_propose_button)
    assert _red(widget) and widget.status.text().startswith("No prediction layer: predict one")
    _click(qtbot, widget.evaluation.evaluate_button)
    assert _red(widget) and widget.status.text().startswith("No prediction layer")
    _click(qtbot, widget.ink_accept_button)
    assert _red(widget) and widget.status.text() == "Nothing to accept: press Propose ink first."
    _click(qtbot, widget.rounds.load_button)
    assert widget.status.text().startswith("No round selected")

    other = make_napari_viewer()  # labels painted on a layer of no segment
    other.add_labels(np.zeros((64, 96), np.uint8), name="my ink")
    other.add_image(np.zeros((32, 32), np.float32), name="small prediction")
    _, w2 = other.window.add_plugin_dock_widget("napari-phoenix", "Refine labels")
    assert w2.layer("ink").name == "my ink"
    _click(qtbot, w2.rounds.save_button)
    assert _red(w2) and w2.status.text().startswith("My ink belongs to no segment folder")
    _click(qtbot, w2.evaluation.evaluate_button)
    assert _red(w2) and "prediction is 32 x 32 px, the labels 64 x 96 px" in w2.status.text()


def test_erase_on_a_full_size_segment(make_napari_viewer, qtbot):
    """A 10,000 x 14,000 segment: one erase, in bands, as one undo step (no timing asserted)."""
    viewer = make_napari_viewer()
    ink = np.zeros((10_000, 14_000), np.uint8)
    ink[2_000:2_100, 3_000:13_000] = 1
    ink[9_000:, :50] = 1
    viewer.add_labels(ink, name="big label", metadata={"phoenix": {"role": "label"}})
    viewer.add_labels(np.ones_like(ink), name="big ignore", metadata={"phoenix": {"role": "ignore"}})
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Refine labels")
    ignore = viewer.layers["big ignore"]
    _click(qtbot, widget.paint.erase_ignore_button)
    assert ignore.data[2_000:2_100, 3_000:13_000].max() == 0 and ignore.data[9_000:, :50].max() == 0
    assert int(ignore.data.sum()) == ignore.data.size - 1_050_000
    assert widget.status.text() == "Erased 1,050,000 px of big ignore under big label."


def test_screenshot_of_the_docked_widget(make_napari_viewer, qtbot, seg, maps):
    from PIL import Image

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1300, 950)
    widget = _open(viewer, seg, maps, windows=True)
    _click(qtbot, widget.ink_propose_button)
    _wait(qtbot, widget)
    viewer.reset_view()
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).save("/tmp/refine_widget.png")
    assert shot.ndim == 3 and widget.status.isVisible() and widget.ink_accept_button.isVisible()
    widget.rounds.note_edit.setText("threshold 0.5 proposal, specks removed by hand")
    _click(qtbot, widget.rounds.save_button)
    _wait(qtbot, widget)
    _click(qtbot, widget.ink_accept_button)
    _click(qtbot, widget.rounds.compare_button)  # round 1 -> the layers now
    _click(qtbot, widget.evaluation.evaluate_button)
    _wait(qtbot, widget)
    assert widget.evaluation.table.rowCount() == 1 and widget.compare.stats
    for i, name in ((1, "paint"), (2, "rounds"), (3, "compare"), (4, "evaluate")):
        widget.tabs.setCurrentIndex(i)
        qtbot.wait(30)
        Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(f"/tmp/refine_widget_{name}.png")
