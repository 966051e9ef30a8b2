"""Dock widget "Download segment": mirror a folder of the scroll data server, then open it.

Thin glue over :func:`napari_phoenix.core.download.iter_download`: the fields
make one :class:`~napari_phoenix.core.download.DownloadParams`; the download
runs in a napari ``thread_worker`` (never on the GUI thread), Cancel sets the
job's ``cancel`` event (it stops within one read block and keeps the
``.partial`` files, which the next run resumes), and the segment downloaded
can be opened in the viewer with the Phoenix reader.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.download import (
    DownloadError,
    DownloadParams,
    DownloadResult,
    DownloadStatus,
    iter_download,
    parse_layer_range,
)
from ..core.errors import PhoenixError
from ..core.http_session import public_url
from .export_panel import Failed, browse_row, run_job, sentence, show_status

#: DownloadParams defaults: the fields start from these (no second copy)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DownloadParams)}
EXAMPLE_URL = "https://dl.ash2txt.org/community-uploads/<user>/scrolls/s5/autogens/<segment>/"


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[,\s]+", text.strip()) if p)


def openable_folder(dest: Path) -> Path | None:
    """The folder of a download that the Phoenix reader opens: a segment (holding ``layers/``) or a stack.

    Parameters
    ----------
    dest : Path
        The download's destination folder.

    Returns
    -------
    Path or None
        ``dest`` itself, or the first segment folder below it (3 levels at most).
    """
    from .reader import get_reader

    candidates = [dest]
    for depth in range(1, 4):
        candidates += sorted(p.parent for p in dest.glob("/".join(["*"] * depth) + "/layers") if p.is_dir())
    for folder in candidates:
        if folder.is_dir() and get_reader(str(folder)) is not None:
            return folder
    return None


class DownloadWidget(QWidget):
    """Download a segment (or any folder) from an HTTP file server, resumably, and open it.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.result: DownloadResult | None = None
        self.openable: Path | None = None
        self._cancel: threading.Event | None = None
        self._build()

    def _build(self) -> None:
        root = QVBoxLayout(self)
        form = QFormLayout()
        self.url_edit = QLineEdit(placeholderText=EXAMPLE_URL)
        self.url_edit.setToolTip("A folder listing of the data server (a segment folder, or any folder), or one file")
        self.dest_edit = QLineEdit(placeholderText="local folder that receives the files")
        self.layers_edit = QLineEdit(placeholderText="all, or e.g. 5-20")
        self.layers_edit.setToolTip("Only these layer files of layers/ (other files are not affected)")
        self.include_edit = QLineEdit(placeholderText="all files, or e.g. *.tif *.png")
        self.include_edit.setToolTip("Glob patterns, separated by spaces or commas; with a '/' they match the path")
        self.exclude_edit = QLineEdit(placeholderText="e.g. *.ppm *.obj")
        self.workers_spin = QSpinBox(minimum=1, maximum=64)
        self.workers_spin.setValue(_DEFAULTS["workers"])
        self.workers_spin.setToolTip("Parallel connections")
        self.open_check = QCheckBox("Open in napari when done", checked=True)
        for label, w in (("URL", self.url_edit), ("Destination", browse_row(self.dest_edit, self._browse)),
                         ("Layers", self.layers_edit), ("Include", self.include_edit),
                         ("Exclude", self.exclude_edit), ("Connections", self.workers_spin), ("", self.open_check)):
            form.addRow(label, w)
        root.addLayout(form)
        login = QLabel("Login, if the server asks: PHOENIX_HTTP_USER / PHOENIX_HTTP_PASSWORD or ~/.netrc.",
                       wordWrap=True)  # fmt: skip
        login.setStyleSheet("color: gray;")
        root.addWidget(login)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button = QPushButton("Open in napari", enabled=False)
        self.open_button.setToolTip("Open the downloaded segment with the Phoenix reader")
        self.open_button.clicked.connect(self.open_result)
        buttons = QHBoxLayout()
        for b in (self.download_button, self.cancel_button, self.open_button):
            buttons.addWidget(b)
        root.addLayout(buttons)
        self.progress = QProgressBar(minimum=0, maximum=1, value=0)
        root.addWidget(self.progress)
        self.status = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.status)
        root.addStretch(1)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder that receives the download", self.dest_edit.text())
        if folder:
            self.dest_edit.setText(folder)

    def params(self) -> DownloadParams:
        """The download the fields describe.

        Returns
        -------
        DownloadParams
            URL, destination, layer range, patterns and connections.

        Raises
        ------
        PhoenixError
            A missing URL or destination, a layer range that does not parse.
        """
        url, dest = self.url_edit.text().strip(), self.dest_edit.text().strip()
        if not url:
            raise DownloadError(f"enter the URL of a folder of the data server, like {EXAMPLE_URL}")
        if not dest:
            raise DownloadError("choose the destination folder (Browse…)")
        return DownloadParams(
            url=url, dest=dest, layers=parse_layer_range(self.layers_edit.text()),
            include=_patterns(self.include_edit.text()), exclude=_patterns(self.exclude_edit.text()),
            workers=self.workers_spin.value(),
        )  # fmt: skip

    def download(self) -> None:
        """Start the download in a worker thread (progress and errors show below)."""
        from napari.qt.threading import thread_worker

        if self.worker is not None:
            return
        try:
            params = self.params()
        except PhoenixError as err:
            return self._set_status(sentence(err), error=True)
        self._cancel, self.result, self.openable = threading.Event(), None, None
        worker = thread_worker(run_job, start_thread=False)(iter_download(params, self._cancel), (PhoenixError, OSError))
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda err: self._set_status(f"Download failed: {sentence(err)}", error=True))
        worker.finished.connect(self._on_finished)
        self.worker, self._params = worker, params
        self.progress.setRange(0, 0)  # busy while the listing is read
        self._set_status(f"Reading {public_url(params.url)}…")
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.open_button.setEnabled(False)
        worker.start()

    def cancel(self) -> None:
        """Stop the download within a read block (finished files and ``.partial`` files are kept)."""
        if self.worker is not None and self._cancel is not None:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._set_status(f"Cancelling… {self.status.text()}")

    def _on_progress(self, ev) -> None:
        if isinstance(ev.result, DownloadResult):
            self.result = ev.result
        elif isinstance(ev.result, DownloadStatus) and ev.result.phase == "downloading":
            self.progress.setRange(0, max(1, ev.total))
            self.progress.setValue(ev.done)
        self._set_status(sentence(ev.message))

    def _on_returned(self, outcome) -> None:
        if isinstance(outcome, Failed):
            self.result = getattr(outcome.error, "result", None) or self.result
            self._set_status(sentence(outcome.error), error=True)
        elif self.result is not None and self.result.cancelled:
            self._set_status(f"Cancelled. {len(self.result.files)} files are complete in {self.result.dest}; "
                             "the .partial files resume when you download again.")  # fmt: skip
        elif self.result is not None:
            r = self.result
            text = f"Done: {len(r.files)} files in {r.dest} ({len(r.downloaded)} downloaded, {len(r.skipped)} already there)."
            if r.rejected_links:
                text += f" {len(r.rejected_links)} unsafe links were ignored."
            if r.too_deep:
                text += f" Folders too deep to read: {', '.join(r.too_deep[:3])}."
            self._set_status(text)
        if self.result is not None and self.result.files:
            self.openable = openable_folder(Path(self.result.dest))
        self.open_button.setEnabled(self.openable is not None)
        if self.openable is not None and self.open_check.isChecked() and self.result.ok:
            self.open_result()

    def open_result(self) -> list:
        """Open the downloaded segment in the viewer (the stack and its masks, lazily).

        Returns
        -------
        list of napari.layers.Layer
            The layers added.
        """
        if self.openable is None:
            return []
        layers = self.viewer.open(str(self.openable), plugin="napari-phoenix")
        numbers = layers[0].metadata.get("phoenix", {}).get("layer_numbers") if layers else None
        if numbers:
            self.viewer.dims.set_point(0, numbers[len(numbers) // 2])
        return layers

    def _on_finished(self) -> None:
        self.worker = None
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _set_status(self, text: str, error: bool = False) -> None:
        show_status(self.status, text, error)

    def closeEvent(self, event) -> None:
        """Cancel a running download when the widget closes (its ``.partial`` files are kept)."""
        if self._cancel is not None:
            self._cancel.set()
        super().closeEvent(event)
