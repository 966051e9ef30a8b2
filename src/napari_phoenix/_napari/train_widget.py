"""Dock widget "Train ink model": train or fine-tune from napari layers, live, off the GUI thread.

Thin glue over :func:`napari_phoenix.core.train.loop.iter_train`: Start copies
the ink / ignore / mask layers (a snapshot: the user can keep painting), makes
one :class:`~napari_phoenix.core.train.loop.TrainConfig` and runs the loop in
a napari ``thread_worker``; Stop sets the loop's ``stop`` event (a clean
checkpoint; Start resumes). "Fine-tune on my labels" is one round of the human
in the loop: a short fine-tune from the current model on a fresh snapshot, then
a prediction of the visible region with the new best model, shown as
"<stack> prediction (fine-tuned)" beside the earlier prediction.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import PhoenixError
from ..core.overlay import OverlaySettings
from ..core.predict import Prediction, PredictParams
from ..core.progress import Progress
from ..core.train.dataset import DatasetError, Source
from . import predict_widget
from .export_panel import Failed, browse_row, sentence, show_status
from .prediction_layers import (
    ROLES,
    LayerInput,
    PredictionLayers,
    device_choices,
    duration,
    visible_bounds,
)
from .train_plot import TrainPlot

CHECKPOINT_KEY = "train/checkpoint"
MODELS = ("demo", "b0", "b1", "b2", "b3", "b4", "b5")
TAG = "fine-tuned"
#: a fine-tune round: one epoch of at most this many steps, then a quick look at the screen
FINE_TUNE_STEPS = 20
FINE_TUNE_PREDICT = {"stride": 2, "tta": 0}
MASK_ROLES = {"ink": "label", "ignore": "ignore", "mask": "mask"}


def best_checkpoint(out: str | Path) -> str | None:
    """The run's best model (``best.json``), else its latest epoch's, else None."""
    out = Path(out)
    epochs = sorted(out.glob("epoch-*.json"))
    return str(out / "best.json") if (out / "best.json").exists() else (str(epochs[-1]) if epochs else None)


def default_run_folder(layer, suffix: str = "") -> str:
    """``<segment>/runs/<date-time><suffix>`` (a new folder), or the same in a temp dir without a segment."""
    meta = layer.metadata.get("phoenix", {})
    base = meta.get("segment") or (str(Path(meta["source"]).parent) if meta.get("source") else None)
    stamp = time.strftime("%Y%m%d-%H%M%S") + suffix
    if base:
        folder = Path(base) / "runs" / stamp
    else:
        safe = re.sub(r"[^\w.-]+", "_", layer.name)
        folder = Path(tempfile.gettempdir()) / "napari-phoenix" / "runs" / f"{safe}-{stamp}"
    k, found = 2, folder
    while found.exists():
        found, k = folder.with_name(f"{folder.name}-{k}"), k + 1
    return str(found)


def _train(config, sources, stop):
    """iter_train's events; Stop at the end of an epoch ends the run there (its state is saved)."""
    from ..core.train.loop import iter_train

    events = iter_train(config, sources, stop)
    for ev in events:
        yield ev
        kind = ev.result["kind"]
        if kind in ("stopped", "done"):
            return ev.result
        if kind == "epoch" and stop.is_set() and ev.result["epoch"] < config.epochs:
            events.close()
            yield Progress(ev.done, ev.total, "stopped; the run resumes from here", {"kind": "stopped"})
            return {"kind": "stopped"}
    return {}


def _job(config, sources, stop, predict=None):
    """Train (in the worker thread), then predict ``predict = (stack, params, mask, bounds)`` with the best model."""
    try:
        end = yield from _train(config, sources, stop)
        if predict is None or end.get("kind") != "done" or stop.is_set():
            return end
        from ..core.model.checkpoint import load_model
        from ..core.model.inference import resolve_device
        from ..core.predict import iter_predict

        stack, params, mask, bounds = predict
        best = best_checkpoint(config.out)
        model = load_model(best, device=str(resolve_device(params.device)))
        provenance = {"layer": sources[0].name, "checkpoint": Path(best).name, "checkpoint_path": best}
        for ev in iter_predict(stack, model, params, mask, bounds=bounds, provenance=provenance, cancel=stop):
            yield Progress(ev.done, ev.total, ev.message, {"kind": "predict", "event": ev.result})
        return end
    except (PhoenixError, OSError) as err:
        return Failed(err)


def _plane(layer) -> np.ndarray:
    """A copy of a Labels layer as (Y, X) uint8; a 3-D one counts a pixel painted on any layer."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    arr = np.array(data, copy=True)
    return (arr != 0).any(axis=0).astype(np.uint8) if arr.ndim == 3 else arr


class TrainWidget(QWidget):
    """Pick a stack and its ink / ignore / mask layers; train or fine-tune an ink model live.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.sources: list[Source] = []  # the snapshot of the running (or last) job
        self.config = None
        self._stop: threading.Event | None = None
        self._run: PredictionLayers | None = None
        self._stacks, self._labels, self._auto, self._auto_out = [], [], {}, ""
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ---- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        from ..core.train.loop import TrainConfig

        d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # the one copy of the defaults
        root = QVBoxLayout(self)
        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.stack_combo = QComboBox(toolTip="The layer stack to train on")
        self.stack_combo.currentIndexChanged.connect(lambda *_: self._pick_masks())
        form.addRow("Stack", self.stack_combo)
        self.combos = {role: QComboBox(toolTip=tip) for role, tip in (
            ("ink", "Labels layer: ink painted (nonzero) where there is ink"),
            ("ignore", "Labels layer: pixels left out of the loss"),
            ("mask", "Labels layer: papyrus; patches must lie wholly inside"))}  # fmt: skip
        for role, combo in self.combos.items():
            form.addRow(role.capitalize(), combo)
        root.addWidget(data)

        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.checkpoint_edit = QLineEdit(predict_widget.settings().value(CHECKPOINT_KEY, "", type=str),
                                         placeholderText="empty: a fresh network")  # fmt: skip
        self.checkpoint_edit.setToolTip("The model to fine-tune; set to the best model when a run finishes")
        self.checkpoint_edit.textChanged.connect(lambda t: self.model_combo.setEnabled(not t.strip()))
        form.addRow("Start from", browse_row(self.checkpoint_edit, self._browse_checkpoint))
        self.model_combo = QComboBox(toolTip="Architecture of a fresh network (b3: the prize's; demo: tiny, fast)")
        self.model_combo.addItems(MODELS)
        self.model_combo.setCurrentText(d["model"])
        self.model_combo.setEnabled(not self.checkpoint_edit.text().strip())
        form.addRow("Network", self.model_combo)
        root.addWidget(model)

        train = QGroupBox("Training")
        form = QFormLayout(train)
        self.epochs_spin = QSpinBox(minimum=1, maximum=10_000, value=d["epochs"])
        self.steps_spin = QSpinBox(minimum=0, maximum=1_000_000, value=d["steps_per_epoch"], specialValueText="all")
        self.steps_spin.setToolTip("Batches per epoch; all: every training patch once")
        self.batch_spin = QSpinBox(minimum=1, maximum=4096, value=d["batch_size"])
        self.stride_spin = QSpinBox(minimum=4, maximum=128, singleStep=4, value=d["stride"], suffix=" px")
        self.stride_spin.setToolTip("Grid step of the training patches (the prize: 64). Smaller: more, "
                                    "overlapping patches from few labels (multiples of 4)")
        self.lr_spin = QDoubleSpinBox(minimum=1e-6, maximum=1.0, decimals=6, singleStep=1e-4, value=d["lr"])
        self.lr_spin.setToolTip("AdamW learning rate (the prize: 0.0002 at batch 32; the CPU demo recipe: 0.003 "
                                "at batch 4)")
        self.depth_spin = QSpinBox(minimum=0, maximum=8, value=d["depth_shift"], prefix="± ")
        self.depth_spin.setToolTip("Move each training patch's 16 layers by up to this many layers, at random, "
                                   "where the stack has them: ink at other depths (0: off, the prize)")
        self.ema_spin = QDoubleSpinBox(minimum=0.0, maximum=0.9999, decimals=4, singleStep=0.01, value=d["ema"])
        self.ema_spin.setSpecialValueText("off")
        self.ema_spin.setToolTip("Decay of a moving average of the weights, e.g. 0.99: validated and saved "
                                 "instead of the last step's weights (off: the prize)")
        self.first_spin = QSpinBox(minimum=0, maximum=10_000, value=d["first_layer"])
        self.first_spin.setToolTip("The network reads this layer and the 15 above it (the prize: 5, layers 5–20)")
        self.device_combo = QComboBox()
        for label, device in device_choices():
            self.device_combo.addItem(label, device)
        self.augment_check = QCheckBox("Augment (flips, rotations, noise…)", checked=d["augment"])
        self.out_edit = QLineEdit(placeholderText="empty: <segment>/runs/<date-time>")
        self.out_edit.setToolTip("Run folder: checkpoints, log, state. A stopped run there resumes")
        for label, w in (("Epochs", self.epochs_spin), ("Steps per epoch", self.steps_spin),
                         ("Batch size", self.batch_spin), ("Learning rate", self.lr_spin),
                         ("Patch stride", self.stride_spin), ("First layer", self.first_spin),
                         ("Depth shift (layers)", self.depth_spin), ("Weight averaging", self.ema_spin),
                         ("Device", self.device_combo), ("", self.augment_check)):  # fmt: skip
            form.addRow(label, w)
        form.addRow("Run folder", browse_row(self.out_edit, self._browse_out))
        root.addWidget(train)

        self.start_button = QPushButton("Start", toolTip="Train on a snapshot of the layers")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop", enabled=False, toolTip="Save a checkpoint and stop; Start resumes")
        self.stop_button.clicked.connect(self.stop)
        self.fine_tune_button = QPushButton("Fine-tune on my labels")
        self.fine_tune_button.setToolTip(f"From the current model: 1 epoch (at most {FINE_TUNE_STEPS} steps) on "
                                         "the labels as they are now, then predict what is on screen")  # fmt: skip
        self.fine_tune_button.clicked.connect(self.fine_tune)
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.stop_button)
        root.addLayout(row)
        root.addWidget(self.fine_tune_button)
        self.progress = QProgressBar(minimum=0, maximum=1, value=0, format="%v / %m steps")
        root.addWidget(self.progress)
        flags = Qt.TextInteractionFlag.TextSelectableByMouse
        self.status = QLabel(wordWrap=True, textInteractionFlags=flags)
        self.snapshot_note = QLabel(wordWrap=True, styleSheet="color: gray;")
        self.current_label = QLabel(wordWrap=True, textInteractionFlags=flags)
        self.plot = TrainPlot()
        for w in (self.status, self.snapshot_note, self.current_label, self.plot):
            root.addWidget(w)
        root.addStretch(1)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model to fine-tune", self.checkpoint_edit.text(),
                                              predict_widget.CHECKPOINT_FILTER)  # fmt: skip
        if path:
            self.checkpoint_edit.setText(path)

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder", self.out_edit.text())
        if path:
            self.out_edit.setText(path)

    # ---- layers --------------------------------------------------------------------------

    @property
    def source(self):
        """The stack Image layer picked (None when there is none)."""
        i = self.stack_combo.currentIndex()
        return self._stacks[i] if 0 <= i < len(self._stacks) else None

    def layer(self, role: str):
        """The Labels layer picked for ``role`` ("ink", "ignore" or "mask"; None: none)."""
        i = self.combos[role].currentIndex() - (role != "ink")
        return self._labels[i] if 0 <= i < len(self._labels) else None

    def _refresh_layers(self, event=None) -> None:
        from napari.layers import Image, Labels

        current, picked = self.source, {role: self.layer(role) for role in MASK_ROLES}
        self._stacks = [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly.ndim == 3
                        and ly.metadata.get("phoenix", {}).get("role") not in ROLES]  # fmt: skip
        if current not in self._stacks:  # prefer a Phoenix stack
            stacks = [ly for ly in self._stacks if ly.metadata.get("phoenix", {}).get("role") == "stack"]
            current = (stacks or self._stacks or [None])[0]
        self._labels = [ly for ly in self.viewer.layers if isinstance(ly, Labels)]
        for combo in (self.stack_combo, *self.combos.values()):
            combo.blockSignals(True)
            combo.clear()
        self.stack_combo.addItems([ly.name for ly in self._stacks])
        self.stack_combo.setCurrentIndex(self._stacks.index(current) if current is not None else -1)
        for role, combo in self.combos.items():
            combo.addItems([*([] if role == "ink" else ["none"]), *(ly.name for ly in self._labels)])
        for combo in (self.stack_combo, *self.combos.values()):
            combo.blockSignals(False)
        self._pick_masks(picked)

    def _pick_masks(self, picked: dict | None = None) -> None:
        """Keep the layers picked; else the stack's segment's label / ignore / mask layers."""
        segment = self.source.metadata.get("phoenix", {}).get("segment") if self.source is not None else None
        for role, combo in self.combos.items():
            layer = (picked or {}).get(role)
            if layer not in self._labels or layer is self._auto.get(role):  # not the user's choice
                mine = [ly for ly in self._labels if ly.metadata.get("phoenix", {}).get("role") == MASK_ROLES[role]
                        and (not segment or str(Path(ly.metadata["phoenix"].get("path") or "").parent) == segment)]
                if role == "ink" and not mine:  # a Labels layer the user added
                    mine = [ly for ly in self._labels if ly.metadata.get("phoenix", {}).get("role") is None]
                layer = self._auto[role] = mine[0] if mine else None  # fmt: skip
            combo.setCurrentIndex(self._labels.index(layer) + (role != "ink") if layer is not None
                                  else (0 if role != "ink" else -1))  # fmt: skip

    def snapshot(self) -> list[Source]:
        """Copies of the ink / ignore / mask layers as they are now, with the stack, as training sources."""
        src, ink = self.source, self.layer("ink")
        if src is None:
            raise DatasetError("open a layer stack first (a segment folder, layers/ folder, TIFF or zarr)")
        if ink is None:
            raise DatasetError("paint ink first: add a Labels layer and choose it as Ink")
        label = _plane(ink)
        if not label.any():
            raise DatasetError(f"no ink painted: every pixel of {ink.name} is 0; paint some ink on it first")
        ignore, mask = (_plane(ly) if ly is not None else None for ly in (self.layer("ignore"), self.layer("mask")))
        return [Source(src.name, LayerInput(src), label, ignore, mask)]

    # ---- the job -------------------------------------------------------------------------

    def make_config(self, out: str, **changes):
        """The run the fields describe (``changes``: other field values), as one TrainConfig."""
        from ..core.train.loop import TrainConfig

        fields = {"out": out, "model": self.model_combo.currentText(),
                  "init": self.checkpoint_edit.text().strip() or None, "epochs": self.epochs_spin.value(),
                  "steps_per_epoch": self.steps_spin.value(), "batch_size": self.batch_spin.value(),
                  "stride": self.stride_spin.value() // 4 * 4, "lr": self.lr_spin.value(),
                  "depth_shift": self.depth_spin.value(), "ema": self.ema_spin.value(),
                  "first_layer": self.first_spin.value(), "device": self.device_combo.currentData(),
                  "augment": self.augment_check.isChecked()}  # fmt: skip
        return TrainConfig(**{**fields, **changes})

    def start(self) -> None:
        """Train (or fine-tune from "Start from", or resume a stopped run) on a snapshot of the layers."""
        self._launch(fine_tune=False)

    def fine_tune(self) -> None:
        """One round: a short fine-tune on the labels as they are now, then predict the visible region."""
        self._launch(fine_tune=True)

    def _launch(self, fine_tune: bool) -> None:
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return
        try:
            sources, src, predict, self._run = self.snapshot(), self.source, None, None
            if fine_tune:
                if not self.checkpoint_edit.text().strip():
                    raise DatasetError("fine-tuning needs a model: choose one in Start from, or train one first")
                steps = min(self.steps_spin.value() or FINE_TUNE_STEPS, FINE_TUNE_STEPS)
                config = self.make_config(default_run_folder(src, "-fine-tune"), epochs=1, steps_per_epoch=steps)
                params = PredictParams(windows=(config.first_layer,), device=config.device, **FINE_TUNE_PREDICT)
                stack = sources[0].stack
                predict = (stack, params, sources[0].mask, visible_bounds(self.viewer, src))
                self._run = PredictionLayers(self.viewer, src, params.windows, stack.layer_numbers, True,
                                             OverlaySettings(), tag=TAG)  # fmt: skip
            else:
                config = self.make_config(self.out_edit.text().strip() or default_run_folder(src))
        except PhoenixError as err:
            return self._set_status(sentence(err), error=True)
        if config.init:
            predict_widget.settings().setValue(CHECKPOINT_KEY, config.init)
        self.sources, self.config, self._predict, self._stop = sources, config, predict, threading.Event()
        self.result, self._predicted = None, False
        self.snapshot_note.setText(f"Training on a snapshot taken at {time.strftime('%H:%M:%S')}: keep painting, "
                                   "the next run or fine-tune takes a new one.")  # fmt: skip
        self.plot.clear()
        worker = thread_worker(_job, start_thread=False)(config, sources, self._stop, predict)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda err: self._set_status(f"Training failed: {sentence(err)}", error=True))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress.setRange(0, 0)  # busy while the patches are sampled
        self._set_status(f"{'Fine-tuning' if fine_tune else 'Training'} in {config.out}: sampling patches…")
        self._set_running(True)
        worker.start()

    def stop(self) -> None:
        """Stop after the current step: a checkpoint and the state are saved; Start resumes."""
        if self.worker is not None and self._stop is not None:
            self._stop.set()
            self.stop_button.setEnabled(False)
            self._set_status(f"Stopping after this step… {self.status.text()}")

    def _on_progress(self, ev) -> None:
        r = ev.result
        if r["kind"] == "predict":
            return self._on_predict(ev, r["event"])
        self.progress.setRange(0, max(ev.total, 1))
        self.progress.setValue(ev.done)
        text = None
        if r["kind"] == "start":
            self.plot.set_total(ev.total)
            text = f"{r['train']:,} training patches, {r['val']:,} for validation: training…"
        elif r["kind"] == "step":
            self.plot.add_step(ev.done, r["loss"])
            left = (ev.total - ev.done) / r["steps_per_s"] if r["steps_per_s"] > 0 else math.inf
            text = (f"Epoch {r['epoch'] + 1}, step {r['step'] + 1}: loss {r['loss']:.4f}; "
                    f"{r['steps_per_s']:.2f} steps/s, about {duration(left)} left.")  # fmt: skip
        elif r["kind"] == "epoch":
            self.plot.add_epoch(ev.done, r["val_loss"], r["iou"])
            text = (f"Epoch {r['epoch']}: loss {r['train_loss']:.4f}, validation loss {r['val_loss']:.4f}, "
                    f"IoU {r['iou']:.3f}{' (best so far)' if r['best'] else ''}.")  # fmt: skip
        elif r["kind"] == "stopped":
            self.result = r
            self.out_edit.setText(self.config.out)
            self._auto_out = self.config.out
            text = (f"Stopped after step {ev.done} of {ev.total}; saved in {self.config.out}. "
                    "Start again with the same settings to resume.")  # fmt: skip
        elif r["kind"] == "done":
            self.result = r
            if self.out_edit.text().strip() == self._auto_out:
                self.out_edit.clear()  # the next Start makes a new run folder
            best = best_checkpoint(self.config.out)
            if best:
                self._set_current(best, r["best_iou"])
            text = f"Done: best validation IoU {r['best_iou']:.3f}; the run is in {self.config.out}."
        self._set_status(text or ev.message)

    def _on_predict(self, ev, result) -> None:
        run = self._run
        if result is None:  # the prediction has started: show the maps as they fill in
            run.start(None, self._predict[1].to_dict())
            self._place(run)
            self._set_status("Fine-tuned: predicting the visible region with the new model…")
        elif isinstance(result, Prediction):
            run.finish(result)
            self._predicted = True
        else:
            run.paste(result["region"], result["maps"])
            run.refresh()
        self.progress.setRange(0, max(ev.total, 1))
        self.progress.setValue(ev.done)

    def _place(self, run: PredictionLayers) -> None:
        """Put the fine-tuned layers just above the stack's earlier prediction (kept as it is)."""
        layers = self.viewer.layers
        earlier = [ly for ly in layers if ly.metadata.get("phoenix", {}).get("role") == ROLES[1]
                   and ly.metadata["phoenix"].get("source_layer") == run.source.name and ly not in run.layers]
        if not earlier or not run.alive():  # fmt: skip
            return
        for ly in run.layers:  # the composite right above it, the (hidden) windows above the composite
            layers.move(layers.index(ly), layers.index(earlier[-1]) + 1)

    def _on_returned(self, result) -> None:
        if isinstance(result, Failed):
            return self._set_status(sentence(result.error), error=True)
        if self._predicted:
            self._set_status(f"Fine-tuned in {self.config.out} (validation IoU {self.result['best_iou']:.3f}); "
                             f"the visible region is shown as '{self._run.names[1]}'.")  # fmt: skip

    def _on_finished(self) -> None:
        if self._run is not None and not self._predicted:
            self._run.abandon()
        self.worker = None
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self._set_running(False)

    def _set_current(self, path: str, iou: float) -> None:
        """Make ``path`` the current model: here, in the Predict widget, and remembered for both."""
        self.checkpoint_edit.setText(path)
        predict_widget.settings().setValue(CHECKPOINT_KEY, path)
        predict_widget.settings().setValue(predict_widget.CHECKPOINT_KEY, path)
        for w in getattr(self.viewer.window, "dock_widgets", {}).values():
            if isinstance(w, predict_widget.PredictWidget):
                w.checkpoint_edit.setText(path)
                w.checkpoint_edit.editingFinished.emit()
        self.current_label.setText(f"Current model: {path} (validation IoU {iou:.3f})")

    def _set_running(self, running: bool) -> None:
        for w in (self.start_button, self.fine_tune_button):
            w.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self.status, text, error)

    def closeEvent(self, event) -> None:
        """Stop a running job when the widget closes."""
        if self._stop is not None:
            self._stop.set()
        super().closeEvent(event)
