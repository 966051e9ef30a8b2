"""The "Export chunks" panel of the Contrast & chunks widget.

Its fields make one :class:`~napari_phoenix.core.chunks.SplitParams`; the export
runs :func:`~napari_phoenix.core.chunks.iter_split` in a napari
``thread_worker`` (never on the GUI thread), shows its progress events, and
cancels between two layers with ``worker.quit()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..core.chunks import SplitError, SplitParams, chunk_bounds, iter_split, parse_chunk_ids
from ..core.errors import PhoenixError

#: SplitParams defaults: the fields start from these (no second copy)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SplitParams)}
ERROR_STYLE = "color: #ff6060;"


def sentence(err: object) -> str:
    """An error message as a sentence: capital first letter, final full stop.

    Parameters
    ----------
    err : Exception or str
        The error.

    Returns
    -------
    str
        The message, ready for a label.
    """
    text = str(err).strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


@dataclasses.dataclass(frozen=True)
class Failed:
    """An expected error a worker job returns instead of raising (shown in a status line)."""

    error: Exception


def show_status(label: QLabel, text: str, error: bool = False) -> None:
    """Put a sentence in a widget's status line, red for errors."""
    label.setStyleSheet(ERROR_STYLE if error else "")
    label.setText(text)


def browse_row(edit: QLineEdit, browse: Callable[[], None]) -> QHBoxLayout:
    """A line edit with a "Browse…" button beside it that calls ``browse``."""
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


def run_job(events, expected: tuple[type[Exception], ...] = (PhoenixError,)):
    """Drain a job's events in the worker thread; an ``expected`` error is returned as :class:`Failed`, not raised.

    Returning it keeps expected errors (bad chunk id, full disk, a server that
    refuses) out of napari's traceback notifications: the widget shows them in
    its status line.
    """
    try:
        yield from events
    except expected as err:
        return Failed(err)
    return None


class ExportPanel(QGroupBox):
    """Chunk width, offset, ids, contrast, output folder; Export / Cancel; progress.

    Parameters
    ----------
    get_source : callable
        Returns the picked Image layer (or None).
    get_points : callable
        Returns the contrast control points in use.
    parent : QWidget, optional
        The parent widget.
    """

    def __init__(self, get_source: Callable, get_points: Callable, parent: QWidget | None = None):
        super().__init__("Export chunks", parent)
        self._get_source, self._get_points = get_source, get_points
        self.worker = None
        self._params: SplitParams | None = None
        self._written = 0
        form = QFormLayout(self)
        self.width_spin = QSpinBox(minimum=1, maximum=10_000_000, singleStep=1000, suffix=" px")
        self.width_spin.setValue(_DEFAULTS["chunk_width"])
        self.width_spin.setGroupSeparatorShown(True)
        self.offset_spin = QSpinBox(minimum=0, maximum=10_000_000, singleStep=100, suffix=" px")
        self.offset_spin.setValue(_DEFAULTS["first_chunk_offset"])
        self.offset_spin.setGroupSeparatorShown(True)
        self.offset_spin.setToolTip("The first chunk is (chunk width - offset) px wide")
        self.ids_edit = QLineEdit(placeholderText="all, or e.g. 1,3-5")
        self.count_label = QLabel(wordWrap=True)
        self.contrast_check = QCheckBox("Contrasted (into parts_contrasted/)", checked=_DEFAULTS["contrast"])
        self.contrast_check.setToolTip("Unchecked: plain pixels, into parts/")
        self.out_edit = QLineEdit(placeholderText="the segment folder")
        out_row = browse_row(self.out_edit, self._browse)
        self.workers_spin = QSpinBox(minimum=0, maximum=256, specialValueText="one per core")
        self.workers_spin.setValue(_DEFAULTS["workers"])
        self.workers_spin.setToolTip("Worker processes (1: in the worker thread itself)")
        self.overwrite_check = QCheckBox("Overwrite", checked=_DEFAULTS["overwrite"])
        self.overwrite_check.setToolTip("Replace chunk folders that hold a different export")
        self.verify_check = QCheckBox("Verify", checked=_DEFAULTS["verify"])
        self.verify_check.setToolTip("On a rerun, check finished files by CRC-32, not only by size")
        for label, w in (("Chunk width", self.width_spin), ("First-chunk offset", self.offset_spin),
                         ("Chunk ids", self.ids_edit), ("", self.count_label), ("", self.contrast_check),
                         ("Output folder", out_row), ("Workers", self.workers_spin)):
            form.addRow(label, w)
        checks = QHBoxLayout()
        checks.addWidget(self.overwrite_check)
        checks.addWidget(self.verify_check)
        checks.addStretch(1)
        form.addRow("", checks)
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
        for sig in (self.width_spin.valueChanged, self.offset_spin.valueChanged, self.ids_edit.textChanged):
            sig.connect(self.update_state)

    def source_changed(self, src) -> None:
        """Default the output folder to the new layer's segment folder and recount chunks.

        Parameters
        ----------
        src : napari.layers.Image or None
            The newly picked layer.
        """
        segment = src.metadata.get("phoenix", {}).get("segment") if src is not None else None
        self.out_edit.setText(segment or "")
        self.update_state()

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
        src = self._get_source()
        segment = src.metadata.get("phoenix", {}).get("segment") if src is not None else None
        if not segment:
            raise SplitError(
                "export needs a segment folder: open the folder that holds layers/ with napari-phoenix"
            )
        return SplitParams(
            segment=segment, chunks=parse_chunk_ids(self.ids_edit.text()), chunk_width=self.width_spin.value(),
            first_chunk_offset=self.offset_spin.value(), contrast=self.contrast_check.isChecked(),
            points=self._get_points(), out=self.out_edit.text().strip() or None,
            workers=self.workers_spin.value(), verify=self.verify_check.isChecked(),
            overwrite=self.overwrite_check.isChecked(),
        )

    def update_state(self, *_) -> None:
        """Recount the chunks the fields give; enable Export when they make an export."""
        try:
            params = self.split_params()
        except PhoenixError as err:
            self.count_label.setText(sentence(err))
            self.export_button.setEnabled(False)
            return
        width = int(self._get_source().level_shapes[0][-1])
        cw, off = params.chunk_width, params.first_chunk_offset
        n = len(chunk_bounds(width, cw, off))
        text = f"{n} chunk{'s' * (n != 1)} of {cw:,} px" + (f" (the first {cw - off:,} px)" if off else "")
        if params.chunks is not None:
            text = f"{len(set(params.chunks))} of {text}"
            bad = sorted(c for c in set(params.chunks) if not 1 <= c <= n)
            text += f"; no chunk {', '.join(map(str, bad))} (ids go 1–{n})" if bad else ""
        self.count_label.setText(f"{text}; the layer is {width:,} px wide.")
        self.export_button.setEnabled(self.worker is None)

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
            return self._set_status(sentence(err), error=True)
        events = iter_split(params)  # a generator: nothing runs until the worker asks
        worker = thread_worker(run_job, start_thread=False)(events)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda err: self._set_status(f"Export failed: {sentence(err)}", error=True))
        worker.aborted.connect(self._on_aborted)
        # close the job in the worker thread as soon as it stops, so its worker processes are joined there
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
        if isinstance(result, Failed):
            return self._set_status(sentence(result.error), error=True)
        files = f"{self._written} files written" if self._written else "all were already complete"
        self._set_status(f"Done: the chunks are in {self._where()} ({files}).")

    def _on_aborted(self) -> None:
        self._set_status(
            f"Cancelled. The finished files in {self._where()} are kept: export again to write the rest."
        )

    def _on_finished(self) -> None:
        self.worker = None
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.update_state()

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self.status, text, error)
