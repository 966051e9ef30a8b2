"""Dock widget "Predict ink": tiled inference of an ink model on a stack layer, shown live.

Thin glue over :func:`napari_phoenix.core.predict.iter_predict`: the fields make
one :class:`~napari_phoenix.core.predict.PredictParams`; the job loads the
checkpoint and predicts in a napari ``thread_worker`` (never on the GUI
thread), and Cancel sets the job's ``cancel`` event, which stops it within a
batch. The result layers (:mod:`.prediction_layers`) fill in region by region.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from qtpy.QtCore import QSettings, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
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
from ..core.predict import PredictError, Prediction, PredictParams, iter_predict
from ..core.tiling import TTA_NAMES
from .export_panel import Failed, browse_row, sentence, show_status
from .prediction_layers import (
    ROLES,
    LayerInput,
    OverlayControls,
    PredictionLayers,
    default_store,
    device_choices,
    duration,
    parse_windows,
    visible_bounds,
)

#: PredictParams defaults: the fields start from these (no second copy)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PredictParams)}
WARNING_STYLE = "color: #ffb040;"
CHECKPOINT_KEY = "predict/checkpoint"
CHECKPOINT_FILTER = "Ink models (*.ckpt *.pt *.pth *.safetensors *.json);;All files (*)"


def settings() -> QSettings:
    """Where the widget remembers the last checkpoint (tests point this at a temporary file)."""
    return QSettings("napari-phoenix", "napari-phoenix")


def _job(checkpoint, stack, params, mask, bounds, cancel, provenance):
    """Load the model and predict (in the worker thread); expected errors are returned, not raised."""
    from ..core.model import checkpoint as ckpt
    from ..core.model.inference import resolve_device

    try:
        model = ckpt.load_model(checkpoint, device=str(resolve_device(params.device)))
        if cancel.is_set():
            return None
        yield from iter_predict(stack, model, params, mask, bounds=bounds, provenance=provenance, cancel=cancel)
    except (PhoenixError, OSError) as err:
        return Failed(err)
    return None


class PredictWidget(QWidget):
    """Pick a stack, a mask and a checkpoint; predict ink maps live into the viewer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.results: dict[tuple[str, bool], PredictionLayers] = {}
        self._run: PredictionLayers | None = None
        self._cancel: threading.Event | None = None
        self._sources: list = []
        self._masks: list = []
        self._auto_out = ""
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ---- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        root = QVBoxLayout(self)
        data = QGroupBox("Input")
        form = QFormLayout(data)
        self.stack_combo = QComboBox(toolTip="The layer stack to predict")
        self.stack_combo.currentIndexChanged.connect(self._stack_changed)
        self.mask_combo = QComboBox(toolTip="Only tiles with a mask pixel are predicted")
        form.addRow("Stack", self.stack_combo)
        form.addRow("Mask", self.mask_combo)
        root.addWidget(data)

        model = QGroupBox("Model")
        form = QFormLayout(model)
        self.checkpoint_edit = QLineEdit(settings().value(CHECKPOINT_KEY, "", type=str),
                                         placeholderText="a .ckpt, or a .safetensors with its .json")  # fmt: skip
        self.checkpoint_edit.editingFinished.connect(self._checkpoint_changed)
        form.addRow("Checkpoint", browse_row(self.checkpoint_edit, self._browse_checkpoint))
        self.windows_edit = QLineEdit(",".join(map(str, _DEFAULTS["windows"])))
        self.windows_edit.setToolTip("First layer of each 16-layer window, e.g. 3,4,5")
        self.stride_combo = QComboBox(toolTip="Tiles every 128 / stride px: more overlap, smoother, slower")
        for s in (1, 2, 4, 8):
            self.stride_combo.addItem(f"{s}  (step {128 // s} px)", s)
        self.stride_combo.setCurrentIndex(self.stride_combo.findData(_DEFAULTS["stride"]))
        self.tta_combo = QComboBox(toolTip="Test-time augmentation: average the maps of flipped inputs")
        for t, label in enumerate(("none", "+ h flip", "+ h, v flips", "+ flips, rot90")):
            self.tta_combo.addItem(f"{t}  ({label})", t)
            self.tta_combo.setItemData(t, " + ".join(TTA_NAMES[: t + 1]), Qt.ItemDataRole.ToolTipRole)
        self.tta_combo.setCurrentIndex(_DEFAULTS["tta"])
        self.batch_spin = QSpinBox(minimum=1, maximum=4096, value=_DEFAULTS["batch_size"])
        self.batch_spin.setToolTip("Patches per model call, flips included")
        self.device_combo = QComboBox()
        for label, device in device_choices():
            self.device_combo.addItem(label, device)
        self.device_combo.currentIndexChanged.connect(self._device_changed)
        self.cpu_warning = QLabel("On the CPU a whole segment takes hours: use a CUDA GPU, "
                                  "or Predict visible region for a quick look.", wordWrap=True,
                                  styleSheet=WARNING_STYLE)  # fmt: skip
        for label, w in (("Windows", self.windows_edit), ("Stride", self.stride_combo), ("TTA", self.tta_combo),
                         ("Batch size", self.batch_spin), ("Device", self.device_combo), ("", self.cpu_warning)):
            form.addRow(label, w)
        root.addWidget(model)

        out = QGroupBox("Output")
        form = QFormLayout(out)
        self.out_edit = QLineEdit(placeholderText="zarr store (empty: in memory only)")
        form.addRow("Store", browse_row(self.out_edit, self._browse_out))
        self.overwrite_check = QCheckBox("Replace a store made with other settings",
                                         checked=_DEFAULTS["overwrite"])  # fmt: skip
        self.overwrite_check.setToolTip("Unchecked: a store from the same settings resumes, another one is refused")
        form.addRow("", self.overwrite_check)
        root.addWidget(out)

        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        self.visible_button = QPushButton("Predict visible region")
        self.visible_button.setToolTip("Only what is on screen, in memory: a quick look")
        self.visible_button.clicked.connect(self.predict_visible)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        for b in (self.predict_button, self.visible_button, self.cancel_button):
            row.addWidget(b)
        root.addLayout(row)
        self.progress = QProgressBar(minimum=0, maximum=1, value=0)
        root.addWidget(self.progress)
        self.status = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.status)

        self.overlay_box = OverlayControls()
        self.overlay_box.changed.connect(self._overlay_changed)
        root.addWidget(self.overlay_box)
        root.addStretch(1)
        self._device_changed()

    # ---- layers and fields ---------------------------------------------------------------

    @property
    def source(self):
        """The stack Image layer picked (None when there is none)."""
        i = self.stack_combo.currentIndex()
        return self._sources[i] if 0 <= i < len(self._sources) else None

    @property
    def mask(self):
        """The mask Labels layer picked (None: every tile)."""
        i = self.mask_combo.currentIndex() - 1
        return self._masks[i] if 0 <= i < len(self._masks) else None

    def _refresh_layers(self, event=None) -> None:
        from napari.layers import Image, Labels

        current, mask = self.source, self.mask
        self._sources = [ly for ly in self.viewer.layers
                         if isinstance(ly, Image) and ly.metadata.get("phoenix", {}).get("role") not in ROLES]  # fmt: skip
        if current not in self._sources:  # prefer a Phoenix stack
            stacks = [ly for ly in self._sources if ly.metadata.get("phoenix", {}).get("role") == "stack"]
            current = (stacks or self._sources or [None])[0]
        self.stack_combo.blockSignals(True)
        self.stack_combo.clear()
        self.stack_combo.addItems([ly.name for ly in self._sources])
        self.stack_combo.setCurrentIndex(self._sources.index(current) if current is not None else -1)
        self.stack_combo.blockSignals(False)
        self._masks = [ly for ly in self.viewer.layers if isinstance(ly, Labels)]
        self.mask_combo.clear()
        self.mask_combo.addItems(["none (every tile)", *(ly.name for ly in self._masks)])
        self._pick_mask(mask)
        self._stack_changed()

    def _pick_mask(self, mask=None) -> None:
        if mask is None or mask not in self._masks:  # the papyrus mask of the stack's segment
            segment = (self.source.metadata.get("phoenix", {}).get("segment") if self.source is not None else None)
            mine = [ly for ly in self._masks if ly.metadata.get("phoenix", {}).get("role") == "mask"
                    and segment and str(Path(ly.metadata["phoenix"].get("path") or "").parent) == segment]  # fmt: skip
            mask = mine[0] if mine else None
        self.mask_combo.setCurrentIndex(self._masks.index(mask) + 1 if mask is not None else 0)

    def _stack_changed(self, *_) -> None:
        if self.sender() is self.stack_combo:
            self._pick_mask()
        self._update_out()

    def _checkpoint_changed(self) -> None:
        path = self.checkpoint_edit.text().strip()
        if path:
            settings().setValue(CHECKPOINT_KEY, path)
        self._update_out()

    def _update_out(self) -> None:
        """Default the store to the stack's and checkpoint's, unless the user typed another."""
        text = self.out_edit.text().strip()
        if text and text != self._auto_out or self.source is None:
            return
        self._auto_out = default_store(self.source, self.checkpoint_edit.text().strip())
        self.out_edit.setText(self._auto_out)

    def _device_changed(self, *_) -> None:
        device = self.device_combo.currentData() or "auto"
        self.cpu_warning.setVisible(device == "cpu" or device == "auto" and "(cpu)" in self.device_combo.currentText())

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Ink model checkpoint", self.checkpoint_edit.text(),
                                              CHECKPOINT_FILTER)  # fmt: skip
        if path:
            self.checkpoint_edit.setText(path)
            self._checkpoint_changed()

    def _browse_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "zarr store for the maps", self.out_edit.text(), "zarr (*.zarr)")
        if path:
            self.out_edit.setText(path if path.endswith(".zarr") else path + ".zarr")

    def params(self, visible_only: bool = False) -> PredictParams:
        """The prediction the fields describe, as one :class:`PredictParams`.

        Parameters
        ----------
        visible_only : bool
            A quick look: no store (the maps stay in memory).

        Returns
        -------
        PredictParams
        """
        out = self.out_edit.text().strip() or None
        return PredictParams(
            windows=parse_windows(self.windows_edit.text()), stride=self.stride_combo.currentData(),
            tta=self.tta_combo.currentData(), batch_size=self.batch_spin.value(),
            device=self.device_combo.currentData(),
            out=None if visible_only else out, overwrite=self.overwrite_check.isChecked(),
        )  # fmt: skip

    def _overlay_changed(self, overlay: OverlaySettings) -> None:
        for result in self.results.values():
            result.set_overlay(overlay)

    # ---- the job -------------------------------------------------------------------------

    def predict(self) -> None:
        """Predict the whole stack into the store (progress and errors show below)."""
        self._start(visible_only=False)

    def predict_visible(self) -> None:
        """Predict only the part of the stack on screen, in memory, for a quick look."""
        self._start(visible_only=True)

    def _start(self, visible_only: bool) -> None:
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return
        src, checkpoint = self.source, self.checkpoint_edit.text().strip()
        try:
            if src is None:
                raise PredictError("open a layer stack first (a segment folder, layers/ folder, TIFF or zarr)")
            if not checkpoint:
                raise PredictError("choose a checkpoint: a .ckpt, or a .safetensors with its .json")
            params = self.params(visible_only)
            stack = LayerInput(src)
            bounds = visible_bounds(self.viewer, src) if visible_only else None
            run = PredictionLayers(self.viewer, src, params.windows, stack.layer_numbers, visible_only,
                                   self.overlay_box.settings())  # fmt: skip
        except PhoenixError as err:
            return self._set_status(sentence(err), error=True)
        settings().setValue(CHECKPOINT_KEY, checkpoint)
        self._run, self._params, self._done = run, params, None
        self._cancel, self._started, self._regions, self._patches = threading.Event(), 0.0, 0, 0
        mask = self.mask.data if self.mask is not None else None
        provenance = {"layer": src.name, "checkpoint": Path(checkpoint).name, "checkpoint_path": checkpoint}
        worker = thread_worker(_job, start_thread=False)(checkpoint, stack, params, mask, bounds, self._cancel,
                                                         provenance)  # fmt: skip
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda err: self._set_status(f"Prediction failed: {sentence(err)}", error=True))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress.setRange(0, 0)  # busy while the model loads
        self._set_status(f"Loading {Path(checkpoint).name}…")
        self._set_running(True)
        worker.start()

    def cancel(self) -> None:
        """Stop the running prediction within a batch (regions already stored are kept)."""
        if self.worker is not None and self._cancel is not None:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._set_status(f"Cancelling… {self.status.text()}")

    def _on_progress(self, ev) -> None:
        run = self._run
        if isinstance(ev.result, Prediction):
            run.finish(ev.result)
            self.results[(run.source.name, run.visible_only)] = run
            self._done = ev.result
        elif ev.result is None:  # the job has started: show the maps while they fill in
            run.start(self._params.out, self._params.to_dict())
            self.results[(run.source.name, run.visible_only)] = run
            self._started = time.perf_counter()
            self._set_status(f"{sentence(ev.message)[:-1]}: predicting…")
        else:
            run.paste(ev.result["region"], ev.result["maps"])
            run.refresh()
            self._regions += 1
            self._patches += ev.result["patches"]
        self.progress.setRange(0, max(ev.total, 1))
        self.progress.setValue(ev.done)
        if self._done is None and ev.result is not None:
            elapsed = time.perf_counter() - self._started
            left = elapsed / self._regions * (ev.total - ev.done)
            rate = self._patches / elapsed if elapsed > 0 else 0.0
            self._set_status(f"Region {ev.done} of {ev.total}: {rate:,.1f} patches/s, about {duration(left)} left.")

    def _on_returned(self, result) -> None:
        if isinstance(result, Failed):
            return self._set_status(sentence(result.error), error=True)
        if self._done is not None:
            prov, out = self._done.provenance, self._params.out
            self._set_status(f"Done in {prov['seconds']:.1f} s: {prov['patches']:,} patches on {prov['device']}, "
                             f"{f'maps in {out}' if out else 'in memory only'}.")  # fmt: skip
        elif self._params.out:
            self._set_status(f"Cancelled. Finished regions are kept in {self._params.out}: "
                             "Predict again with the same settings to resume.")  # fmt: skip
        else:
            self._set_status("Cancelled.")

    def _on_finished(self) -> None:
        if self._run is not None and self._done is None:
            self._run.abandon()
        self.worker = None
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        for w in (self.predict_button, self.visible_button):
            w.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self.status, text, error)

    def closeEvent(self, event) -> None:
        """Cancel a running prediction when the widget closes."""
        if self._cancel is not None:
            self._cancel.set()
        super().closeEvent(event)
