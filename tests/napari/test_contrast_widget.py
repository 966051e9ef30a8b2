"""The "Contrast & chunks" dock widget through a real napari viewer."""

from __future__ import annotations

import threading
import time

import dask.array as da
import numpy as np
import pytest
import tifffile
from qtpy.QtCore import Qt

from napari_phoenix.core import chunks as chunks_mod
from napari_phoenix.core import stack as stack_mod
from napari_phoenix.core.contrast import SEED_POINTS, contrast_lut

STEEP = ((0.0, 0.0), (255.0, 128.0))  # a straight line to half range


@pytest.fixture
def segment(write_stack, write_png):
    """A 6-layer 16-bit segment 96 px wide, 64 tall, numbered from 3, with a mask."""
    layers, data = write_stack(n=6, shape=(64, 96), dtype=np.uint16, start=3)
    mask = np.zeros((64, 96), np.uint8)
    mask[4:60, 4:90] = 255
    write_png("segment/mask.png", mask)
    return layers.parent, data


def _dock(viewer):
    from napari_phoenix._napari.contrast_widget import ContrastWidget

    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Contrast & chunks")
    assert isinstance(widget, ContrastWidget)
    return widget


def _type(qtbot, edit, text):
    edit.clear()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def test_preview_is_a_lazy_contrasted_layer_that_follows_the_points(make_napari_viewer, qtbot, segment):
    root, data = segment
    viewer = make_napari_viewer()
    viewer.open(str(root), plugin="napari-phoenix")
    widget = _dock(viewer)
    src, prev = viewer.layers["segment"], viewer.layers["segment contrasted"]
    assert widget.layer_combo.currentText() == "segment" and widget.preview == prev  # a proxy of it
    assert isinstance(prev.data, da.Array) and prev.data.dtype == np.uint16
    np.testing.assert_array_equal(prev.data[2, 10:30, 20:70].compute(), contrast_lut("uint16")[data[2, 10:30, 20:70]])
    np.testing.assert_array_equal(prev.translate, src.translate)
    assert tuple(prev.axis_labels) == tuple(src.axis_labels) == ("layer", "y", "x")
    assert list(prev.contrast_limits) == [0, 65535]
    meta = prev.metadata["phoenix"]
    assert meta["role"] == "contrasted" and meta["segment"] == str(root)
    assert meta["layer_numbers"] == [3, 4, 5, 6, 7, 8] and meta["contrast_points"] == [list(p) for p in SEED_POINTS]
    # just above its source, so the mask and label layers stay on top
    assert viewer.layers.index(prev) == viewer.layers.index(src) + 1

    _type(qtbot, widget.points_edit, "0,0; 255,128")
    assert viewer.layers["segment contrasted"] is prev and widget.plot.points == STEEP
    np.testing.assert_array_equal(np.asarray(prev.data[0]), contrast_lut("uint16", STEEP)[data[0]])
    assert np.asarray(prev.data[0]).max() <= 128 * 257
    assert prev.metadata["phoenix"]["contrast_points"] == [[0, 0], [255, 128]]
    assert widget.points_error.isHidden()

    # invalid points: a plain message, the last good preview stays
    for text, message in (("0,0; 100,50; 90,200", "increase strictly"), ("0,0; oops", "must look like")):
        _type(qtbot, widget.points_edit, text)
        assert not widget.points_error.isHidden() and message in widget.points_error.text()
        assert widget.points == STEEP
        np.testing.assert_array_equal(np.asarray(prev.data[1]), contrast_lut("uint16", STEEP)[data[1]])

    qtbot.mouseClick(widget.reset_button, Qt.MouseButton.LeftButton)
    assert widget.points == SEED_POINTS and widget.points_error.isHidden()
    assert widget.points_edit.text() == "0,0; 128,64; 255,255"
    np.testing.assert_array_equal(np.asarray(prev.data[1]), contrast_lut("uint16")[data[1]])


def test_before_after_toggle_swaps_visibility(make_napari_viewer, qtbot, segment):
    viewer = make_napari_viewer()
    viewer.open(str(segment[0]), plugin="napari-phoenix")
    widget = _dock(viewer)
    src, prev = viewer.layers["segment"], viewer.layers["segment contrasted"]
    assert prev.visible and not src.visible
    widget.after_check.setChecked(False)
    assert src.visible and not prev.visible
    widget.after_check.setChecked(True)
    assert prev.visible and not src.visible
    viewer.layers.remove(prev)  # deleting the preview brings the original back
    assert src.visible and widget.preview is None
    # a layer the contrast cannot take: the widget says why, nothing is added
    viewer.add_image(np.zeros((4, 5), np.float32), name="floats")
    assert widget.layer_combo.currentText() == "segment"  # a new layer does not steal the choice
    n = len(viewer.layers)
    widget.layer_combo.setCurrentText("floats")
    assert len(viewer.layers) == n and widget.preview is None
    assert widget.points_error.text() == "No preview of floats: Contrast works on uint8 or uint16 layers, not float32."


def test_multiscale_stack_gets_a_multiscale_preview_and_no_export(make_napari_viewer, qtbot, write_stack, monkeypatch):
    monkeypatch.setattr(stack_mod, "MIN_LEVEL_SIDE", 256)
    layers, data = write_stack(n=2, shape=(1200, 900), dtype=np.uint8)
    viewer = make_napari_viewer()
    widget = _dock(viewer)  # docked first: the preview follows the layer being opened
    (src,) = viewer.open(str(layers), plugin="napari-phoenix")
    qtbot.waitUntil(lambda: widget.preview is not None, timeout=3000)
    prev = widget.preview
    assert prev.multiscale and len(prev.data) == len(src.data) == 4
    assert all(isinstance(level, da.Array) for level in prev.data)
    lut = contrast_lut("uint8")
    coarse = np.asarray(src.data[-1][1])
    np.testing.assert_array_equal(np.asarray(prev.data[-1][1]), lut[coarse])
    np.testing.assert_array_equal(prev.data[0][1, 500:520, 300:340].compute(), lut[data[1, 500:520, 300:340]])
    assert list(prev.contrast_limits) == [0, 255]
    # a layers/ folder opened alone has no segment folder: no export, and the widget says why
    panel = widget.export_panel
    assert not panel.export_button.isEnabled() and "segment folder" in panel.count_label.text()


def test_export_runs_in_a_worker_with_the_widget_points(make_napari_viewer, qtbot, segment, monkeypatch):
    root, data = segment
    threads = set()
    split_layer = chunks_mod.split_layer

    def recording(*args, **kwargs):
        threads.add(threading.get_ident())
        return split_layer(*args, **kwargs)

    monkeypatch.setattr(chunks_mod, "split_layer", recording)
    viewer = make_napari_viewer()
    viewer.open(str(root), plugin="napari-phoenix")
    widget = _dock(viewer)
    panel = widget.export_panel
    assert panel.out_edit.text() == str(root) and panel.width_spin.value() == 10_000
    assert panel.count_label.text().startswith("1 chunk of 10,000 px")
    widget.set_points(STEEP)
    panel.width_spin.setValue(40)
    panel.offset_spin.setValue(10)
    panel.ids_edit.setText("1,3")
    panel.workers_spin.setValue(1)
    assert panel.count_label.text().startswith("2 of 3 chunks of 40 px (the first 30 px)")
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    assert panel.worker is not None and not panel.export_button.isEnabled()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    assert threads and threading.get_ident() not in threads  # never on the GUI thread
    lut = contrast_lut("uint16", STEEP)
    for cid, (x0, x1) in {1: (0, 30), 3: (70, 96)}.items():
        folder = root / "parts_contrasted" / f"segment_{cid:02d}"
        for z in range(6):
            np.testing.assert_array_equal(tifffile.imread(folder / "layers" / f"{z + 3:02d}.tif"), lut[data[z, :, x0:x1]])
        assert (folder / "mask.png").is_file()
    assert not (root / "parts_contrasted" / "segment_02").exists()
    assert panel.progress.maximum() == 7 and panel.progress.value() == 7
    assert panel.status.text().startswith("Done") and str(root / "parts_contrasted") in panel.status.text()
    assert panel.export_button.isEnabled() and not panel.cancel_button.isEnabled()


def test_cancel_stops_between_layers_and_a_rerun_finishes(make_napari_viewer, qtbot, write_stack, monkeypatch):
    layers, data = write_stack(n=12, shape=(32, 50), dtype=np.uint8, folder="big/layers")
    root = layers.parent
    split_layer = chunks_mod.split_layer

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return split_layer(*args, **kwargs)

    monkeypatch.setattr(chunks_mod, "split_layer", slow)
    viewer = make_napari_viewer()
    viewer.open(str(root), plugin="napari-phoenix")
    widget = _dock(viewer)
    panel = widget.export_panel
    panel.width_spin.setValue(20)
    panel.workers_spin.setValue(1)
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=10_000)
    assert panel.cancel_button.isEnabled()
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    assert panel.status.text().startswith("Cancelled")
    lut = contrast_lut("uint8")
    folder = root / "parts_contrasted" / "big_01" / "layers"
    names = sorted(p.name for p in folder.iterdir())
    assert 1 <= len(names) < 12, names  # stopped early, and left no temporary files
    for name in names:  # every file with a final name is complete
        np.testing.assert_array_equal(tifffile.imread(folder / name), lut[data[int(name[:2]), :, :20]])
    assert not (root / "parts_contrasted" / "big_01" / "mask.png").exists()

    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    assert panel.status.text().startswith("Done")
    for cid, x0 in ((1, 0), (2, 20), (3, 40)):
        got = tifffile.imread(root / "parts_contrasted" / f"big_{cid:02d}" / "layers" / "11.tif")
        np.testing.assert_array_equal(got, lut[data[11, :, x0 : x0 + 20]])


def test_export_error_is_shown_in_plain_words(make_napari_viewer, qtbot, segment):
    root = segment[0]
    viewer = make_napari_viewer()
    viewer.open(str(root), plugin="napari-phoenix")
    panel = _dock(viewer).export_panel
    panel.width_spin.setValue(40)
    panel.ids_edit.setText("2, 9")
    assert "no chunk 9 (ids go 1–3)" in panel.count_label.text()
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.worker is None, timeout=10_000)
    assert panel.status.text().startswith("Chunk id 9 is out of range: segment is 96 px wide")
    assert "ff6060" in panel.status.styleSheet()
    assert not (root / "parts_contrasted").exists()
    panel.ids_edit.setText("1-x")  # does not parse: no export, and why
    assert not panel.export_button.isEnabled() and "1,3-5" in panel.count_label.text()


def test_screenshot_of_the_docked_widget(make_napari_viewer, qtbot, segment):
    from PIL import Image

    viewer = make_napari_viewer(show=True)
    viewer.open(str(segment[0]), plugin="napari-phoenix")
    viewer.window._qt_window.resize(1300, 950)
    widget = _dock(viewer)
    widget.export_panel.ids_edit.setText("1")
    viewer.reset_view()
    qtbot.waitUntil(widget.plot.isVisible, timeout=3000)
    qtbot.wait(50)  # let word-wrapped labels settle
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).save("/tmp/contrast_widget.png")
    assert shot.ndim == 3 and shot[..., :3].std() > 20
    assert widget.plot.isVisible() and widget.plot.height() >= 150
