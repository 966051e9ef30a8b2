"""The "Predict ink" dock widget through a real napari viewer, on a small phantom segment."""

from __future__ import annotations

import functools
import threading

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from qtpy.QtCore import QSettings, Qt

from napari_phoenix._napari import predict_widget as pw
from napari_phoenix.core import stack as stack_mod
from napari_phoenix.core.model import checkpoint as ckpt_mod
from napari_phoenix.core.model.checkpoint import load_model
from napari_phoenix.core.overlay import OverlaySettings, composite
from napari_phoenix.core.phantom import make_phantom
from napari_phoenix.core.predict import PredictParams, iter_predict
from napari_phoenix.core.segment import open_segment

torch.set_num_threads(1)
FAST = {"windows": "3,5", "stride": 1, "tta": 0, "batch_size": 8}  # 4 patches of the demo network


@pytest.fixture(autouse=True)
def own_settings(tmp_path, monkeypatch):
    """The widget remembers into a file of this test, not the user's settings."""
    path = str(tmp_path / "settings.ini")
    monkeypatch.setattr(pw, "settings", lambda: QSettings(path, QSettings.Format.IniFormat))


@pytest.fixture
def segment(tmp_path):
    return make_phantom(tmp_path / "seg", height=192, width=300, seed=1)


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Predict ink")
    assert isinstance(widget, pw.PredictWidget)
    return widget


def _set(widget, checkpoint, windows="3,5", stride=1, tta=0, batch_size=8):
    widget.checkpoint_edit.setText(str(checkpoint))
    widget.checkpoint_edit.editingFinished.emit()
    widget.windows_edit.setText(windows)
    widget.stride_combo.setCurrentIndex(widget.stride_combo.findData(stride))
    widget.tta_combo.setCurrentIndex(widget.tta_combo.findData(tta))
    widget.batch_spin.setValue(batch_size)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))


def _run(qtbot, widget, button=None):
    qtbot.mouseClick(button or widget.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)


def _expected(segment, checkpoint, **kw):
    seg = open_segment(segment)
    params = PredictParams(windows=(3, 5), stride=1, tta=0, batch_size=8, device="cpu", **kw)
    return list(iter_predict(seg.stack, load_model(checkpoint), params, seg.read("mask")))[-1].result


def _zarr_arrays(data):
    return sorted(v.path for v in dict(data.__dask_graph__()).values() if isinstance(v, zarr.Array))


def test_predict_fills_layers_live_and_ends_zarr_backed(make_napari_viewer, qtbot, segment, checkpoint, monkeypatch):
    threads = set()
    load = ckpt_mod.load_model

    def recording(*args, **kwargs):
        threads.add(threading.get_ident())
        return load(*args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "load_model", recording)
    viewer = make_napari_viewer()
    viewer.open(str(segment), plugin="napari-phoenix")
    widget = _dock(viewer)
    assert widget.stack_combo.currentText() == "seg" and widget.mask_combo.currentText() == "seg mask"
    _set(widget, checkpoint)
    store = segment / "predictions" / "m.zarr"
    assert widget.out_edit.text() == str(store)  # next to the segment, named after the checkpoint
    seen = []
    on_progress = widget._on_progress

    def spy(ev):  # what the user sees after each event
        on_progress(ev)
        names = [ly.name for ly in viewer.layers]
        seen.append((ev.done, "seg prediction" in names, viewer.layers["seg prediction"].metadata["phoenix"]["complete"]))

    widget._on_progress = spy
    _run(qtbot, widget)
    assert threads and threading.get_ident() not in threads  # never on the GUI thread
    assert seen[0] == (0, True, False) and seen[-2] == (1, True, False) and seen[-1] == (1, True, True)
    windows, comp = viewer.layers["seg prediction windows"], viewer.layers["seg prediction"]
    assert windows.data.shape == (2, 192, 300) and comp.data.shape == (192, 300)
    assert isinstance(windows.data, da.Array) and isinstance(comp.data, da.Array)
    assert _zarr_arrays(windows.data) == _zarr_arrays(comp.data) == ["window_03", "window_05"]
    # the window axis is the stack's layer axis: window 3 at layer 3, window 5 at layer 5
    assert tuple(windows.axis_labels) == ("layer", "y", "x") and viewer.dims.axis_labels[0] == "layer"
    np.testing.assert_array_equal(windows.translate, (3, 0, 0))
    np.testing.assert_array_equal(windows.scale, (2, 1, 1))
    assert viewer.dims.range[0].start == 0 and viewer.dims.range[0].stop == 20
    assert list(comp.contrast_limits) == [0, 1] and list(windows.contrast_limits) == [0, 1]

    expected = _expected(segment, checkpoint)
    np.testing.assert_array_equal(np.asarray(windows.data), np.stack([expected.windows[3], expected.windows[5]]))
    np.testing.assert_allclose(np.asarray(comp.data), expected.composite, rtol=1e-6, atol=1e-7)
    assert np.asarray(comp.data).max() > 0
    meta = comp.metadata["phoenix"]
    assert meta["complete"] and meta["store"] == str(store) and meta["overlay"] == OverlaySettings().to_dict()
    assert meta["settings"]["windows"] == (3, 5) and meta["settings"]["stride"] == 1
    assert meta["checkpoint"] == "m.json" and meta["checkpoint_path"] == str(checkpoint)
    assert meta["model"]["sha256"] == load_model(checkpoint).provenance["sha256"] and meta["layer"] == "seg"
    assert meta["device"] == "cpu" and meta["patches"] == expected.provenance["patches"] > 0
    assert windows.metadata["phoenix"]["model"] == meta["model"] and "overlay" not in windows.metadata["phoenix"]
    assert zarr.open_group(str(store), mode="r").attrs["phoenix"]["complete"] is True
    assert widget.status.text().startswith("Done in") and str(store) in widget.status.text()
    assert widget.progress.value() == widget.progress.maximum() == 1
    assert widget.predict_button.isEnabled() and not widget.cancel_button.isEnabled()

    # the composite controls replace the composite layer's data, lazily
    widget.overlay_box.boost_spin.setValue(3.0)
    widget.overlay_box.flip_check.setChecked(True)
    assert viewer.layers["seg prediction"] is comp and isinstance(comp.data, da.Array)
    maps = [expected.windows[3], expected.windows[5]]
    np.testing.assert_allclose(np.asarray(comp.data), composite(maps, OverlaySettings(boost=3, flip=True)), rtol=1e-6)
    widget.overlay_box.how_combo.setCurrentText("max")
    widget.overlay_box.invert_check.setChecked(True)
    want = composite(maps, OverlaySettings(how="max", boost=3, flip=True, invert=True))
    np.testing.assert_allclose(np.asarray(comp.data), want, rtol=1e-6)
    assert comp.metadata["phoenix"]["overlay"] == {"how": "max", "boost": 3.0, "flip": True, "invert": True}

    # a second run with the same settings resumes from the store and reuses the layers
    n = len(viewer.layers)
    _run(qtbot, widget)
    assert len(viewer.layers) == n and viewer.layers["seg prediction"].metadata["phoenix"]["resumed_regions"] == 1


def test_cancel_stops_within_a_batch_and_marks_layers_incomplete(make_napari_viewer, qtbot, segment, checkpoint,
                                                                  monkeypatch):  # fmt: skip
    started = threading.Event()
    calls = []
    widget = None

    def blocking(x):  # the first batch waits for Cancel, as a slow GPU would
        calls.append(len(x))
        started.set()
        widget._cancel.wait(10)
        return torch.zeros((len(x), 32, 32))

    monkeypatch.setattr(ckpt_mod, "load_model", lambda *a, **k: blocking)
    viewer = make_napari_viewer()
    viewer.open(str(segment), plugin="napari-phoenix")
    widget = _dock(viewer)
    _set(widget, checkpoint, batch_size=1)  # one patch per batch: several batches
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert not widget.predict_button.isEnabled() and not widget.visible_button.isEnabled()
    assert started.wait(10) and widget.cancel_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert len(calls) == 1  # stopped before the next batch
    assert widget.status.text().startswith("Cancelled") and "resume" in widget.status.text()
    assert widget.predict_button.isEnabled() and not widget.cancel_button.isEnabled()
    for name in ("seg prediction windows (incomplete)", "seg prediction (incomplete)"):
        assert viewer.layers[name].metadata["phoenix"]["complete"] is False
    store = zarr.open_group(str(segment / "predictions" / "m.zarr"), mode="r")
    assert store.attrs["phoenix"]["complete"] is False and not store["regions_done"][:].any()


def test_errors_show_as_a_sentence(make_napari_viewer, qtbot, segment, checkpoint, tmp_path):
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)  # nothing open
    assert widget.worker is None and widget.status.text().startswith("Open a layer stack first")
    assert "ff6060" in widget.status.styleSheet()

    viewer.open(str(segment), plugin="napari-phoenix")
    _set(widget, tmp_path / "nowhere" / "model.ckpt")
    _run(qtbot, widget)
    assert widget.status.text() == f"No model at {tmp_path / 'nowhere' / 'model.ckpt'}."
    assert "ff6060" in widget.status.styleSheet() and "Traceback" not in widget.status.text()
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    _set(widget, junk)
    _run(qtbot, widget)
    assert "junk.ckpt" in widget.status.text() and "ff6060" in widget.status.styleSheet()
    assert not [ly for ly in viewer.layers if "prediction" in ly.name]  # no layer of a job that never ran

    widget.windows_edit.setText("3, x")
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert widget.worker is None and widget.status.text().startswith("Windows are first-layer numbers")
    widget.windows_edit.setText("3,30")
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert widget.worker is None and widget.status.text() == "Window 30 starts at layer 30, which seg lacks (layers 0–20)."
    # the job's own errors (here a mask of another size) come back from the worker the same way
    viewer.add_labels(np.ones((50, 60), np.uint8), name="small mask")
    _set(widget, checkpoint)
    widget.mask_combo.setCurrentText("small mask")
    _run(qtbot, widget)
    assert widget.status.text() == "The mask is 60 x 50 px, the stack 300 x 192."
    assert "ff6060" in widget.status.styleSheet() and widget.predict_button.isEnabled()


def test_device_choices_and_remembered_checkpoint(make_napari_viewer, segment, checkpoint):
    viewer = make_napari_viewer()
    viewer.open(str(segment), plugin="napari-phoenix")
    widget = _dock(viewer)
    devices = [widget.device_combo.itemData(i) for i in range(widget.device_combo.count())]
    assert devices[:2] == ["auto", "cpu"] and all(d.startswith("cuda:") for d in devices[2:])
    assert len(devices) - 2 == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    widget.device_combo.setCurrentIndex(1)
    assert not widget.cpu_warning.isHidden() and "CPU" in widget.cpu_warning.text()
    assert widget.checkpoint_edit.text() == ""
    widget.checkpoint_edit.setText(str(checkpoint))
    widget.checkpoint_edit.editingFinished.emit()
    again = pw.PredictWidget(viewer)  # e.g. after restarting napari
    assert again.checkpoint_edit.text() == str(checkpoint)
    assert again.out_edit.text() == str(segment / "predictions" / "m.zarr")


def test_predict_visible_region_fills_in_region_by_region(make_napari_viewer, qtbot, segment, checkpoint, monkeypatch):
    monkeypatch.setattr(stack_mod, "MIN_LEVEL_SIDE", 128)  # a multiscale stack: 300, 150, 75 px wide
    monkeypatch.setattr(pw, "PredictParams", functools.partial(PredictParams, region=128))  # several regions
    viewer = make_napari_viewer()
    viewer.open(str(segment), plugin="napari-phoenix")
    widget = _dock(viewer)
    _set(widget, checkpoint, stride=2)  # 64 px steps
    h, w = viewer.canvas.size
    camera = viewer.scene.camera
    camera.center, camera.zoom = (camera.center[0], 96, 225), max(w / 150, h / 112)  # at most x 150..300, y 40..152
    half_h, half_w = h / 2 / camera.zoom, w / 2 / camera.zoom
    bounds = pw.visible_bounds(viewer, viewer.layers["seg"])
    assert bounds == (int(np.floor(96.5 - half_h)), int(np.ceil(96.5 + half_h)),
                      int(np.floor(225.5 - half_w)), min(300, int(np.ceil(225.5 + half_w))))  # fmt: skip
    assert 40 <= bounds[0] and bounds[1] <= 153 and bounds[2] >= 150
    snapshots = []
    on_progress = widget._on_progress

    def spy(ev):  # what the layer shows after each region
        on_progress(ev)
        if isinstance(ev.result, dict):
            layer = viewer.layers["seg prediction windows (visible)"]
            snapshots.append((ev.result["region"], np.asarray(layer.data[0]).copy()))

    widget._on_progress = spy
    _run(qtbot, widget, widget.visible_button)
    assert widget.status.text().startswith("Done") and "in memory" in widget.status.text()
    windows, comp = viewer.layers["seg prediction windows (visible)"], viewer.layers["seg prediction (visible)"]
    assert viewer.layers["seg"].multiscale and windows.multiscale and comp.multiscale
    assert [d.shape for d in windows.data] == [(2, 192, 300), (2, 96, 150), (2, 48, 75)]
    got = np.asarray(windows.data[0])
    np.testing.assert_array_equal(np.asarray(windows.data[2]), got[:, ::4, ::4])
    np.testing.assert_array_equal(np.asarray(comp.data[1]), composite(list(got), OverlaySettings())[::2, ::2])
    meta = comp.metadata["phoenix"]
    assert meta["bounds"] == list(bounds) and meta["store"] is None and not (segment / "predictions").exists()
    # only the screen (its start snapped down to the 64 px grid) is predicted
    y0, y1, x0, x1 = bounds
    inside = np.zeros((192, 300), bool)
    inside[y0 // 64 * 64 : y1, x0 // 64 * 64 : x1] = True
    assert got[:, inside].any() and not got[:, ~inside].any()
    seg = open_segment(segment)
    params = PredictParams(windows=(3, 5), stride=2, tta=0, batch_size=8, device="cpu")
    ref = list(iter_predict(seg.stack, load_model(checkpoint), params, seg.read("mask"), bounds=bounds))
    np.testing.assert_array_equal(got, np.stack([ref[-1].result.windows[3], ref[-1].result.windows[5]]))
    # live: after each region the regions done so far show their final values, the others are still empty
    assert len(snapshots) == 4
    done = np.zeros((192, 300), bool)
    for (a, b, c, d), shown in snapshots:
        done[a:b, c:d] = True
        np.testing.assert_array_equal(shown[:, done], got[:, done])
        assert not shown[:, ~done].any()


def test_screenshot_of_the_docked_widget(make_napari_viewer, qtbot, segment, checkpoint):
    from PIL import Image

    viewer = make_napari_viewer(show=True)
    viewer.open(str(segment), plugin="napari-phoenix")
    viewer.window._qt_window.resize(1300, 1000)
    widget = _dock(viewer)
    _set(widget, checkpoint)
    _run(qtbot, widget)
    widget.overlay_box.boost_spin.setValue(3.0)
    viewer.reset_view()
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).save("/tmp/predict_widget.png")
    assert shot.ndim == 3 and shot[..., :3].std() > 20
    assert widget.status.isVisible() and widget.status.text().startswith("Done")
