"""The "Train ink model" dock widget through a real napari viewer, on a small phantom segment."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from qtpy.QtCore import QSettings, Qt, QTimer

from napari_phoenix._napari import predict_widget as pw
from napari_phoenix._napari import train_widget as tw
from napari_phoenix.core.phantom import make_phantom
from napari_phoenix.core.train import loop

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def own_settings(tmp_path, monkeypatch):
    """Both widgets remember into a file of this test, not the user's settings."""
    path = str(tmp_path / "settings.ini")
    monkeypatch.setattr(pw, "settings", lambda: QSettings(path, QSettings.Format.IniFormat))
    return path


@pytest.fixture
def segment(tmp_path):
    return make_phantom(tmp_path / "seg", height=256, width=448, seed=1)


@pytest.fixture
def spy_train(monkeypatch):
    """Records the thread, config and sources each training run gets."""
    calls, real = [], loop.iter_train

    def spy(config, sources=None, stop=None):
        calls.append({"thread": threading.get_ident(), "config": config, "label": sources[0].label.copy()})
        yield from real(config, sources, stop)

    monkeypatch.setattr(loop, "iter_train", spy)
    return calls


def _open(viewer, segment):
    viewer.open(str(segment), plugin="napari-phoenix")
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Train ink model")
    assert isinstance(widget, tw.TrainWidget)
    return widget


def _set(widget, epochs=1, steps=1, batch_size=2, checkpoint="", stride=64):
    widget.checkpoint_edit.setText(str(checkpoint))
    widget.model_combo.setCurrentText("demo")
    widget.augment_check.setChecked(False)
    widget.epochs_spin.setValue(epochs)
    widget.steps_spin.setValue(steps)
    widget.batch_spin.setValue(batch_size)
    widget.stride_spin.setValue(stride)
    widget.device_combo.setCurrentIndex(widget.device_combo.findData("cpu"))


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def test_training_runs_live_on_a_snapshot_and_sets_the_current_model(make_napari_viewer, qtbot, segment,
                                                                       spy_train, own_settings):  # fmt: skip
    from PIL import Image

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 1100)
    widget = _open(viewer, segment)
    assert [widget.stack_combo.currentText(), *(c.currentText() for c in widget.combos.values())] == [
        "seg", "seg label", "seg ignore", "seg mask"]  # fmt: skip
    assert widget.stride_spin.value() == 64  # the prize's patch grid by default
    assert (widget.lr_spin.value(), widget.depth_spin.value(), widget.ema_spin.value()) == (2e-4, 0, 0.0)  # the prize
    assert widget.ema_spin.text() == "off"
    _set(widget, epochs=2, stride=32)
    widget.lr_spin.setValue(0.003)
    widget.depth_spin.setValue(1)
    widget.ema_spin.setValue(0.9)
    ink = viewer.layers["seg label"]
    before = ink.data.copy()
    ticks = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(widget.worker is not None))
    timer.start()
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert widget.worker is not None and not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
    assert "snapshot taken at" in widget.snapshot_note.text()
    ink.data[0:40, 0:40] = 1  # the user keeps painting while the model trains
    ink.refresh()
    _wait(qtbot, widget)
    timer.stop()
    assert sum(ticks) > 20  # the Qt event loop kept running during training
    (call,) = spy_train
    assert call["thread"] != threading.get_ident()  # never on the GUI thread
    np.testing.assert_array_equal(call["label"], before)  # the snapshot, not the paint that came later
    assert ink.data[0:40, 0:40].all() and not before[0:40, 0:40].all()
    out = Path(call["config"].out)
    assert out.parent == segment / "runs" and call["config"].model == "demo" and call["config"].epochs == 2
    assert call["config"].stride == 32 and call["config"].lr == 0.003
    assert call["config"].depth_shift == 1 and call["config"].ema == 0.9
    for name in ("best.json", "epoch-001.json", "epoch-002.json", "state.pt", "log.csv"):
        assert (out / name).exists(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # the plot got every step's loss and every epoch's validation loss and IoU
    assert widget.plot.total == 2 and [s for s, _ in widget.plot.steps] == [1, 2]
    assert [(s, v, i) for s, v, i in widget.plot.epochs] == [(k + 1, r["val_loss"], r["iou"]) for k, r in
                                                              enumerate(log)]  # fmt: skip
    assert widget.progress.value() == widget.progress.maximum() == 2
    best = str(out / "best.json")
    assert widget.status.text().startswith("Done: best validation IoU") and str(out) in widget.status.text()
    assert widget.checkpoint_edit.text() == best and best in widget.current_label.text()
    assert tw.TrainWidget(viewer).checkpoint_edit.text() == best  # remembered, e.g. after restarting napari
    assert QSettings(own_settings, QSettings.Format.IniFormat).value(pw.CHECKPOINT_KEY) == best
    assert pw.PredictWidget(viewer).checkpoint_edit.text() == best  # the Predict widget continues from it
    assert widget.start_button.isEnabled() and widget.fine_tune_button.isEnabled()
    assert not widget.stop_button.isEnabled() and widget.out_edit.text() == ""

    viewer.reset_view()
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(shot).save("/tmp/train_widget.png")
    assert shot.ndim == 3 and widget.plot.isVisible() and widget.status.isVisible()


def test_stop_saves_the_run_and_start_resumes_it(make_napari_viewer, qtbot, segment, spy_train):
    viewer = make_napari_viewer()
    widget = _open(viewer, segment)
    _set(widget, epochs=2, steps=2, batch_size=1)  # 2 training patches: 2 steps an epoch
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(widget.plot.steps), timeout=30_000)
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    _wait(qtbot, widget)
    out = spy_train[0]["config"].out
    assert widget.result == {"kind": "stopped"} and widget.progress.value() < widget.progress.maximum() == 4
    assert widget.status.text().startswith("Stopped after step") and "resume" in widget.status.text()
    assert (Path(out) / "state.pt").exists() and widget.out_edit.text() == out
    assert widget.start_button.isEnabled() and widget.fine_tune_button.isEnabled()
    assert not widget.stop_button.isEnabled()
    widget.batch_spin.setValue(2)  # another run: refused in that folder
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    _wait(qtbot, widget)
    assert widget.status.text() == f"{out} holds a run with other settings; choose another out folder."
    assert "ff6060" in widget.status.styleSheet() and widget.start_button.isEnabled()
    widget.batch_spin.setValue(1)
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)  # resumes where it stopped
    _wait(qtbot, widget)
    assert spy_train[2]["config"].out == out and widget.result["kind"] == "done"
    assert widget.progress.value() == 4 and len(widget.result["history"]) == 2
    assert widget.out_edit.text() == ""  # the next Start makes a new run folder


def test_fine_tune_on_my_labels_predicts_the_visible_region(make_napari_viewer, qtbot, segment, checkpoint,
                                                              spy_train):  # fmt: skip
    viewer = make_napari_viewer()
    widget = _open(viewer, segment)
    _, predict = viewer.window.add_plugin_dock_widget("napari-phoenix", "Predict ink")
    h, w = viewer.canvas.size
    camera = viewer.scene.camera
    camera.center, camera.zoom = (camera.center[0], 128, 220), max(w / 180, h / 120)  # about x 130..310, y 68..188
    predict.checkpoint_edit.setText(str(checkpoint))
    predict.windows_edit.setText("5")
    predict.stride_combo.setCurrentIndex(predict.stride_combo.findData(1))
    predict.tta_combo.setCurrentIndex(0)
    predict.device_combo.setCurrentIndex(predict.device_combo.findData("cpu"))
    qtbot.mouseClick(predict.visible_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: predict.worker is None, timeout=30_000)
    earlier = viewer.layers["seg prediction (visible)"]
    earlier_data = np.asarray(earlier.data).copy()
    assert earlier_data.any()

    _set(widget, checkpoint=checkpoint)
    bounds = tw.visible_bounds(viewer, viewer.layers["seg"])
    qtbot.mouseClick(widget.fine_tune_button, Qt.MouseButton.LeftButton)
    _wait(qtbot, widget)
    config = spy_train[0]["config"]
    assert config.init == str(checkpoint) and config.epochs == 1 and config.steps_per_epoch == 1
    assert Path(config.out).name.endswith("-fine-tune") and Path(config.out).parent == segment / "runs"
    tuned = viewer.layers["seg prediction (fine-tuned)"]
    got = np.asarray(tuned.data)
    y0, y1, x0, x1 = bounds
    inside = np.zeros((256, 448), bool)
    inside[y0 // 64 * 64 : y1, x0 // 64 * 64 : x1] = True  # the screen, its start on the 64 px grid
    assert got[inside].any() and not got[~inside].any()
    meta = tuned.metadata["phoenix"]
    assert meta["complete"] and meta["tag"] == "fine-tuned" and meta["checkpoint_path"] == str(Path(config.out) /
                                                                                              "best.json")  # fmt: skip
    # the earlier prediction is kept, untouched, just below the fine-tuned one
    assert viewer.layers["seg prediction (visible)"] is earlier
    np.testing.assert_array_equal(np.asarray(earlier.data), earlier_data)
    assert viewer.layers.index(tuned) == viewer.layers.index(earlier) + 1
    assert widget.checkpoint_edit.text() == str(Path(config.out) / "best.json")
    assert predict.checkpoint_edit.text() == widget.checkpoint_edit.text()
    assert widget.status.text().startswith("Fine-tuned in") and "seg prediction (fine-tuned)" in widget.status.text()


def test_errors_show_as_red_sentences(make_napari_viewer, qtbot, segment, tmp_path, spy_train):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Train ink model")
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)  # nothing open
    assert widget.worker is None and widget.status.text().startswith("Open a layer stack first")
    assert "ff6060" in widget.status.styleSheet()

    viewer.open(str(segment), plugin="napari-phoenix")
    _set(widget)
    label = viewer.layers["seg label"]
    label.data = np.zeros_like(label.data)
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert widget.worker is None and widget.status.text().startswith("No ink painted: every pixel of seg label")
    assert "ff6060" in widget.status.styleSheet() and not spy_train
    label.data[100:200, 100:250] = 1

    qtbot.mouseClick(widget.fine_tune_button, Qt.MouseButton.LeftButton)  # no model yet
    assert widget.worker is None and widget.status.text().startswith("Fine-tuning needs a model")

    _set(widget, checkpoint=tmp_path / "nowhere" / "model.ckpt")  # the worker's own errors
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    _wait(qtbot, widget)
    assert widget.status.text() == f"No model at {tmp_path / 'nowhere' / 'model.ckpt'}."
    assert "ff6060" in widget.status.styleSheet() and widget.start_button.isEnabled()

    viewer.add_labels(np.ones((50, 60), np.uint8), name="small")
    widget.combos["ink"].setCurrentText("small")
    qtbot.mouseClick(widget.start_button, Qt.MouseButton.LeftButton)
    assert widget.worker is None and widget.status.text() == "Seg: the label is 60 x 50 px, the layers 448 x 256."
    assert "ff6060" in widget.status.styleSheet() and len(spy_train) == 1
