"""Dock widget "Contrast & chunks": live contrast preview, before/after, chunk export.

Thin glue over :mod:`napari_phoenix.core.contrast` and
:mod:`napari_phoenix.core.chunks`: the preview layer is ``contrast(level,
points)`` of every pyramid level (lazy, so only what is on screen is computed)
and the export builds one :class:`~napari_phoenix.core.chunks.SplitParams` and
runs :func:`~napari_phoenix.core.chunks.iter_split` in a napari
``thread_worker``, cancelled between two layers.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
    QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from ..core.chunks import SplitParams, chunk_bounds, iter_split, parse_chunk_ids
from ..core.contrast import SEED_POINTS, ContrastError, contrast, contrast_lut
from ..core.errors import PhoenixError
from .curve_plot import CurvePlot

#: SplitParams defaults: the widget's fields start from these (no second copy)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SplitParams)}
_ERROR_STYLE = "color: #ff6060;"


def parse_points(text: str) -> tuple[tuple[float, float], ...]:
    """``"0,0; 128,64; 255,255"`` -> ((0, 0), (128, 64), (255, 255)), checked.

    Parameters
    ----------
    text : str
        ``x,y`` pairs in 8-bit codes separated by ``;``.

    Returns
    -------
    tuple of (float, float)
        The control points.

    Raises
    ------
    ContrastError
        Text that is not pairs of numbers, or points the contrast cannot use.
    """
    try:
        pairs = [p for p in text.replace(" ", "").split(";") if p]
        points = tuple((float(x), float(y)) for x, y in (pair.split(",") for pair in pairs))
    except ValueError:
        raise ContrastError(f'points must look like "0,0; 128,64; 255,255", got {text.strip()!r}') from None
    contrast_lut("uint8", points)  # raises ContrastError with what is wrong
    return points


def format_points(points: Sequence[Sequence[float]]) -> str:
    """The text form of control points, e.g. ``"0,0; 128,64; 255,255"``.

    Parameters
    ----------
    points : sequence of (x, y)
        Control points.

    Returns
    -------
    str
        ``x,y`` pairs separated by ``"; "``.
    """
    return "; ".join(f"{x:g},{y:g}" for x, y in points)


def _run_job(events):
    """Drain a job's events in the worker thread; a PhoenixError is returned, not raised.

    Returning it keeps expected errors (bad chunk id, full disk) out of napari's
    traceback notifications: the widget shows them in its status line.
    """
    try:
        yield from events
    except PhoenixError as err:
        return _Failed(err)
    return None


@dataclasses.dataclass(frozen=True)
class _Failed:
    error: PhoenixError


class ContrastWidget(QWidget):
    """Pick a stack layer, tune the prize contrast on a lazy preview, export chunks.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.points: tuple[tuple[float, float], ...] = tuple(SEED_POINTS)
        self.preview = None  # the "<name> contrasted" layer of the current source
        self.worker = None
        self._sources: list = []
        self._source = None
        self._written = 0
        self._params: SplitParams | None = None
        self._build()
        self._defer = QTimer(self, singleShot=True, interval=0)
        self._defer.timeout.connect(self._source_changed)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self._refresh_layers()
        self._source_changed()

    # ---- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        root = QVBoxLayout(self)
        self.layer_combo = QComboBox(toolTip="The layer stack to contrast and export")
        self.layer_combo.currentIndexChanged.connect(self._source_changed)
        row = QHBoxLayout()
        row.addWidget(QLabel("Stack"))
        row.addWidget(self.layer_combo, 1)
        root.addLayout(row)

        box = QGroupBox("Contrast curve (8-bit codes)")
        lay = QVBoxLayout(box)
        self.plot = CurvePlot()
        self.plot.set_points(self.points)
        self.plot.points_edited.connect(self.set_points)
        lay.addWidget(self.plot)
        self.points_edit = QLineEdit(format_points(self.points), toolTip="Control points x,y; x,y; …")
        self.points_edit.editingFinished.connect(self._points_typed)
        self.reset_button = QPushButton("Reset to prize points")
        self.reset_button.clicked.connect(lambda: self.set_points(SEED_POINTS))
        form = QFormLayout()
        form.addRow("Points", self.points_edit)
        lay.addLayout(form)
        self.points_error = QLabel(wordWrap=True, styleSheet=_ERROR_STYLE)
        self.points_error.hide()
        lay.addWidget(self.points_error)
        self.after_check = QCheckBox("Show contrasted (after)", checked=True)
        self.after_check.setToolTip("Checked: the contrasted preview; unchecked: the original layer")
        self.after_check.toggled.connect(self._show_before_after)
        row = QHBoxLayout()
        row.addWidget(self.after_check, 1)
        row.addWidget(self.reset_button)
        lay.addLayout(row)
        root.addWidget(box)

        box = QGroupBox("Export chunks")
        form = QFormLayout(box)
        self.width_spin = QSpinBox(minimum=1, maximum=10_000_000, singleStep=1000, suffix=" px")
        self.width_spin.setValue(_DEFAULTS["chunk_width"])
        self.width_spin.setGroupSeparatorShown(True)
        self.offset_spin = QSpinBox(minimum=0, maximum=10_000_000, singleStep=100, suffix=" px")
        self.offset_spin.setValue(_DEFAULTS["first_chunk_offset"])
        self.offset_spin.setToolTip("The first chunk is (chunk width - offset) px wide")
        self.ids_edit = QLineEdit(placeholderText="all, or e.g. 1,3-5")
        self.count_label = QLabel(wordWrap=True)
        self.contrast_check = QCheckBox("Contrasted (parts_contrasted/)", checked=_DEFAULTS["contrast"])
        self.contrast_check.setToolTip("Unchecked: plain pixels under parts/")
        self.out_edit = QLineEdit(placeholderText="the segment folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.workers_spin = QSpinBox(minimum=0, maximum=256, specialValueText="one per core")
        self.workers_spin.setValue(_DEFAULTS["workers"])
        self.overwrite_check = QCheckBox("Overwrite other exports", checked=_DEFAULTS["overwrite"])
        self.verify_check = QCheckBox("Verify finished files", checked=_DEFAULTS["verify"])
        self.verify_check.setToolTip("On a rerun, check finished files by CRC-32, not only by size")
        for label, w in (("Chunk width", self.width_spin), ("First-chunk offset", self.offset_spin),
                         ("Chunk ids", self.ids_edit), ("", self.count_label),
                         ("", self.contrast_check), ("Output folder", out_row), ("Workers", self.workers_spin)):
            form.addRow(label, w)
        checks = QHBoxLayout()
        checks.addWidget(self.overwrite_check)
        checks.addWidget(self.verify_check)
        form.addRow(checks)
        self.export_button = QPushButton("Export chunks")
        self.export_button.clicked.connect(self.export)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button, 1)
        buttons.addWidget(self.cancel_button)
        form.addRow(buttons)
        self.progress = QProgressBar(minimum=0, maximum=1, value=0)
        form.addRow(self.progress)
        self.status = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.status)
        root.addWidget(box)
        root.addStretch(1)
        for sig in (self.width_spin.valueChanged, self.offset_spin.valueChanged, self.ids_edit.textChanged):
            sig.connect(self._update_export_state)

    # ---- source layer --------------------------------------------------------------------

    @property
    def source(self):
        """The Image layer picked in the combo (None when there is none)."""
        i = self.layer_combo.currentIndex()
        return self._sources[i] if 0 <= i < len(self._sources) else None

    def _layers_changed(self, event=None) -> None:
        self._refresh_layers()
        if self.preview is not None and self.preview not in self.viewer.layers:
            self.preview = None  # deleted by the user: show the original again
            if self._source is not None and self._source in self.viewer.layers:
                self._source.visible = True
        if self.source is not self._source:
            self._defer.start()  # not inside the layer list's own event: add layers later

    def _refresh_layers(self) -> None:
        from napari.layers import Image

        current = self.source
        self._sources = [
            ly for ly in self.viewer.layers
            if isinstance(ly, Image) and ly.metadata.get("phoenix", {}).get("role") != "contrasted"
        ]
        if current not in self._sources:  # prefer a Phoenix stack
            stacks = [ly for ly in self._sources if ly.metadata.get("phoenix", {}).get("role") == "stack"]
            current = (stacks or self._sources or [None])[0]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems([ly.name for ly in self._sources])
        self.layer_combo.setCurrentIndex(self._sources.index(current) if current is not None else -1)
        self.layer_combo.blockSignals(False)

    def _source_changed(self, *_) -> None:
        src = self.source
        if src is self._source:
            return
        self._source, self.preview = src, self._find_preview(src)
        segment = src.metadata.get("phoenix", {}).get("segment") if src is not None else None
        self.out_edit.setText(segment or "")
        self._update_export_state()
        if src is not None:
            self._update_preview()

    def _find_preview(self, src):
        name = f"{src.name} contrasted" if src is not None else None
        for ly in self.viewer.layers:
            if ly.name == name and ly.metadata.get("phoenix", {}).get("role") == "contrasted":
                return ly
        return None

    # ---- contrast preview ----------------------------------------------------------------

    def set_points(self, points: Sequence[Sequence[float]]) -> None:
        """Use these control points for the preview, the curve and the export.

        Parameters
        ----------
        points : sequence of (x, y)
            Control points in 8-bit codes; invalid ones show the error and change nothing.
        """
        try:
            self.points = parse_points(format_points(points))
        except ContrastError as err:
            return self._points_failed(err)
        self.points_edit.setText(format_points(self.points))
        self.plot.set_points(self.points)
        self.points_error.hide()
        self._update_preview()

    def _points_typed(self) -> None:
        try:
            points = parse_points(self.points_edit.text())
        except ContrastError as err:
            return self._points_failed(err)
        if points != self.points or not self.points_error.isHidden():
            self.set_points(points)

    def _points_failed(self, err: Exception) -> None:
        self.points_error.setText(f"{err} — the preview keeps the last valid points ({format_points(self.points)}).")
        self.points_error.show()
        self.plot.set_points(self.points)

    def _update_preview(self) -> None:
        src = self.source
        if src is None:
            return
        try:
            levels = list(src.data) if src.multiscale else [src.data]
            data = [contrast(level, self.points) for level in levels]
        except ContrastError as err:
            return self._points_failed(err)
        meta = copy.deepcopy(src.metadata.get("phoenix", {}))
        meta.update(role="contrasted", contrast_points=[list(p) for p in self.points])
        data = data if src.multiscale else data[0]
        if self.preview is not None and self.preview in self.viewer.layers:
            self.preview.data = data
            self.preview.metadata["phoenix"] = meta
        else:
            self.preview = self.viewer.add_image(
                data, name=f"{src.name} contrasted", multiscale=src.multiscale, colormap="gray",
                contrast_limits=[0, int(np.iinfo(levels[0].dtype).max)], metadata={"phoenix": meta},
                translate=src.translate, scale=src.scale, axis_labels=src.axis_labels, units=src.units,
            )
            self.viewer.layers.move(self.viewer.layers.index(self.preview), self.viewer.layers.index(src) + 1)
        self._show_before_after(self.after_check.isChecked())

    def _show_before_after(self, after: bool) -> None:
        """Show the contrasted preview and hide the source (after), or the reverse."""
        if self.source is None or self.preview is None or self.preview not in self.viewer.layers:
            return
        self.preview.visible = after
        self.source.visible = not after

    # ---- chunk export --------------------------------------------------------------------

    def split_params(self) -> SplitParams:
        """The export the fields describe, as one :class:`SplitParams`.

        Returns
        -------
        SplitParams
            Segment of the picked layer, chunking, contrast points and options.

        Raises
        ------
        PhoenixError
            No segment folder, chunk ids that do not parse, a bad offset.
        """
        from ..core.chunks import SplitError

        src = self.source
        segment = src.metadata.get("phoenix", {}).get("segment") if src is not None else None
        if not segment:
            raise SplitError("the export needs a segment: open the folder that holds layers/ with napari-phoenix")
        return SplitParams(
            segment=segment, chunks=parse_chunk_ids(self.ids_edit.text()), chunk_width=self.width_spin.value(),
            first_chunk_offset=self.offset_spin.value(), contrast=self.contrast_check.isChecked(),
            points=self.points, out=self.out_edit.text().strip() or None, workers=self.workers_spin.value(),
            verify=self.verify_check.isChecked(), overwrite=self.overwrite_check.isChecked(),
        )

    def _update_export_state(self, *_) -> None:
        src, running = self.source, self.worker is not None
        try:
            self.split_params()
        except PhoenixError as err:
            self.count_label.setText(str(err)[:1].upper() + str(err)[1:] + ".")
            self.export_button.setEnabled(False)
            return
        width = int(src.level_shapes[0][-1])
        cw, off = self.width_spin.value(), self.offset_spin.value()
        n = len(chunk_bounds(width, cw, off))
        ids = parse_chunk_ids(self.ids_edit.text())
        text = f"{n} chunk{'s' * (n != 1)} of {cw:,} px" + (f" (the first {cw - off:,} px)" if off else "")
        if ids is not None:
            text = f"{len(set(ids))} of {text}"
        self.count_label.setText(f"{text}; the layer is {width:,} px wide")
        self.export_button.setEnabled(not running)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder that receives parts/", self.out_edit.text())
        if folder:
            self.out_edit.setText(folder)

    def export(self) -> None:
        """Start the chunk export in a worker thread (progress and errors show below)."""
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return
        try:
            params = self.split_params()
        except PhoenixError as err:
            return self._set_status(str(err), error=True)
        events = iter_split(params)  # a generator: nothing runs until the worker asks
        worker = thread_worker(_run_job, start_thread=False)(events)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda err: self._set_status(f"Export failed: {err}", error=True))
        worker.aborted.connect(self._on_aborted)
        # close the job in the worker thread as soon as it stops, so worker processes are joined there
        worker.aborted.connect(events.close, Qt.ConnectionType.DirectConnection)
        worker.finished.connect(self._on_finished)
        self.worker, self._params, self._written = worker, params, 0
        self.progress.setRange(0, 0)  # busy until the first layer is done
        self._set_status("Opening the segment…")
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.start()

    def cancel(self) -> None:
        """Stop the running export after the layer being written (finished files are kept)."""
        if self.worker is not None:
            self.worker.quit()
            self.cancel_button.setEnabled(False)
            self._set_status(f"Cancelling after the current layer… {self.status.text()}")

    def _on_progress(self, ev) -> None:
        self._written += len(ev.result or [])
        self.progress.setRange(0, ev.total)
        self.progress.setValue(ev.done)
        self._set_status(f"{ev.message} — {ev.done}/{ev.total}")

    def _where(self) -> Path:
        p = self._params
        return Path(p.out or p.segment) / ("parts_contrasted" if p.contrast else "parts")

    def _on_returned(self, result) -> None:
        if isinstance(result, _Failed):
            return self._set_status(str(result.error), error=True)
        files = f"{self._written} files written" if self._written else "everything was already there"
        self._set_status(f"Done: the chunks are in {self._where()} ({files}).")

    def _on_aborted(self) -> None:
        done, total = self.progress.value(), self.progress.maximum()
        self._set_status(
            f"Cancelled after {max(done, 0)}/{total} steps. Finished files in {self._where()} are kept; "
            "export again to write the rest."
        )

    def _on_finished(self) -> None:
        self.worker = None
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self._update_export_state()

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.setStyleSheet(_ERROR_STYLE if error else "")
        self.status.setText(text)
