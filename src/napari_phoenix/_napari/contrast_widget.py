"""Dock widget "Contrast & chunks": live contrast preview, before/after, chunk export.

Thin glue over :mod:`napari_phoenix.core.contrast` and
:mod:`napari_phoenix.core.chunks`: the preview layer is ``contrast(level,
points)`` of every pyramid level (lazy, so only what is on screen is computed)
and the export (:mod:`.export_panel`) runs
:func:`~napari_phoenix.core.chunks.iter_split` in a napari ``thread_worker``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.contrast import SEED_POINTS, ContrastError, contrast, format_points, parse_points
from .curve_plot import CurvePlot
from .export_panel import ERROR_STYLE, ExportPanel, sentence


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
        self._sources: list = []
        self._source = None
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
        self.points_error = QLabel(wordWrap=True, styleSheet=ERROR_STYLE)
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

        self.export_panel = ExportPanel(lambda: self.source, lambda: self.points)
        root.addWidget(self.export_panel)
        root.addStretch(1)

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
        if self.source != self._source:  # napari hands plugins proxies: compare with ==
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
        if src == self._source:
            return
        self._source, self.preview = src, self._find_preview(src)
        self.points_edit.setText(format_points(self.points))
        self.points_error.hide()
        self.export_panel.source_changed(src)
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
        self.points_error.setText(f"{sentence(err)} The preview keeps the last valid points ({format_points(self.points)}).")
        self.points_error.show()
        self.plot.set_points(self.points)

    def _update_preview(self) -> None:
        src = self.source
        if src is None:
            return
        try:
            levels = list(src.data) if src.multiscale else [src.data]
            data = [contrast(level, self.points) for level in levels]
        except ContrastError as err:  # not a uint8 / uint16 layer
            self.points_error.setText(f"No preview of {src.name}: {sentence(err)}")
            return self.points_error.show()
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
