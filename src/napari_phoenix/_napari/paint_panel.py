"""The Paint tab of the "Refine labels" widget: brushes, erase one mask under the other, ink under ignore.

Erases go through :func:`~.refine_tools.paint_where` (bands of rows, one undo
step). The ink-under-ignore layer follows painting: a stroke recomputes and
re-uploads only its bounding box (:func:`~.refine_tools.event_region`,
:func:`~.refine_tools.refresh_region`); new data recomputes the whole layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.refine import RefineError
from .export_panel import sentence
from .refine_tools import (
    BRUSH_SIZES,
    COLORS,
    KEYS,
    OPACITIES,
    editable,
    erase_under,
    event_region,
    find_layer,
    overlap,
    refresh_region,
    show_mask,
)


class PaintPanel(QWidget):
    """Brush presets, erase ink / ignore under the other, ink under ignore, opacity presets.

    Parameters
    ----------
    host : RefineWidget
        Gives the viewer, the ink / ignore layers (``host.layer(role)``) and the status line.
    """

    def __init__(self, host: Any):
        super().__init__()
        self.host = host
        self._watched: list = []
        self.overlap_px = 0  # pixels in the ink-under-ignore layer
        self._overlap_layer = None  # that layer, once shown
        self._pending = None  # box painted since the last update of that layer
        root = QVBoxLayout(self)
        form = QFormLayout()
        self.brush_buttons = {}
        row = QHBoxLayout()
        for role, text in (("ink", "Ink (I)"), ("ignore", "Ignore (G)"), ("eraser", "Eraser (E)")):
            self.brush_buttons[role] = b = QPushButton(text)
            b.clicked.connect(lambda _=False, r=role: self.eraser() if r == "eraser" else self.brush(r))
            row.addWidget(b)
        form.addRow("Brush", row)
        self.size_spin = QSpinBox(minimum=1, maximum=500, value=BRUSH_SIZES[1], suffix=" px")
        self.size_spin.valueChanged.connect(self._size_changed)
        row = QHBoxLayout()
        row.addWidget(self.size_spin, 1)
        for size in BRUSH_SIZES:
            b = QPushButton(str(size), toolTip=f"Brush size {size} px")
            b.clicked.connect(lambda _=False, s=size: self.size_spin.setValue(s))
            row.addWidget(b)
        form.addRow("Size", row)
        row = QHBoxLayout()
        self.opacity_buttons = []
        for value in OPACITIES:
            b = QPushButton(f"{value:.1f}", toolTip=f"Ink and ignore layers at opacity {value}")
            b.clicked.connect(lambda _=False, v=value: self.set_opacity(v))
            row.addWidget(b)
            self.opacity_buttons.append(b)
        form.addRow("Opacity", row)
        root.addLayout(form)
        self.erase_ignore_button = QPushButton("Erase ignore where ink is painted")
        self.erase_ignore_button.clicked.connect(lambda: self.erase("ignore", "ink"))
        self.erase_ink_button = QPushButton("Erase ink under ignore")
        self.erase_ink_button.clicked.connect(lambda: self.erase("ink", "ignore"))
        self.overlap_check = QCheckBox("Show ink under ignore")
        self.overlap_check.setToolTip("A layer on top: pixels that are both ink and ignored")
        self.overlap_check.toggled.connect(lambda _: self.update_overlap())
        keys = ", ".join(f"{k} {v}" for k, v in KEYS.items())
        self.keys_label = QLabel(f"Keys: {keys}; [ and ] brush size; Ctrl+Z undoes an erase or accept.",
                                 wordWrap=True, styleSheet="color: gray;")  # fmt: skip
        for w in (self.erase_ignore_button, self.erase_ink_button, self.overlap_check, self.keys_label):
            root.addWidget(w)
        root.addStretch(1)

    def _layer(self, role: str) -> Any:
        layer = self.host.layer(role)
        if layer is None:
            raise RefineError(f"choose an {role} layer first (Layers, above)")
        return layer

    def brush(self, role: str) -> None:
        """Select the ink or ignore layer and paint label 1 with the preset brush size."""
        try:
            layer = self._layer(role)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self._select(layer, "paint")
        layer.selected_label = 1
        self.host.set_status(f"Painting {role} on {layer.name}, {layer.brush_size:g} px.")

    def eraser(self) -> None:
        """Erase on the active ink / ignore layer (else the ink layer) with the preset brush size."""
        active = self.host.viewer.layers.selection.active
        layer = active if active is not None and active in (self.host.layer("ink"), self.host.layer("ignore")) \
            else self.host.layer("ink")  # fmt: skip
        if layer is None:
            return self.host.set_status("Choose an ink layer first (Layers, above).", error=True)
        self._select(layer, "erase")
        self.host.set_status(f"Erasing on {layer.name}, {layer.brush_size:g} px.")

    def _select(self, layer: Any, mode: str) -> None:
        self.host.viewer.layers.selection.active = layer
        layer.visible = True
        layer.brush_size = self.size_spin.value()
        layer.mode = mode

    def _size_changed(self, size: int) -> None:
        active = self.host.viewer.layers.selection.active
        if active is not None and active in (self.host.layer("ink"), self.host.layer("ignore")):
            active.brush_size = size

    def set_opacity(self, value: float) -> None:
        """Ink and ignore layers at this opacity."""
        for role in ("ink", "ignore"):
            if self.host.layer(role) is not None:
                self.host.layer(role).opacity = value

    def erase(self, target: str, source: str) -> None:
        """Clear ``target`` ("ignore" or "ink") wherever ``source`` is set (one undo step)."""
        try:
            t, s = self._layer(target), self._layer(source)
            n = erase_under(t, s)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        self.update_overlap()
        self.host.set_status(f"Erased {n:,} px of {t.name} under {s.name}.")

    def watch(self) -> None:
        """Follow painting on the ink / ignore layers picked (for the ink-under-ignore layer)."""
        for ly in self._watched:
            for ev in (ly.events.paint, ly.events.data):
                ev.disconnect(self._painted)
        self._watched = [ly for ly in (self.host.layer("ink"), self.host.layer("ignore")) if ly is not None]
        for ly in self._watched:
            for ev in (ly.events.paint, ly.events.data):
                ev.connect(self._painted)
        self.update_overlap()

    def _painted(self, event=None) -> None:
        """A stroke on the ink or ignore layer: update the overlap layer in the stroke's box only."""
        if not self.overlap_check.isChecked():
            return
        layer = find_layer(self.host.viewer, "ink under ignore")
        region = None if layer is None else event_region(event, layer.data.shape)
        if region is None:  # new data, or an edit of unknown extent: all of it, a moment later
            return self.host.later("overlap", self.update_overlap)
        # napari announces a brush dab before writing it: update right after, boxes of dabs merged
        old = self._pending
        self._pending = region if old is None else tuple(slice(min(o.start, r.start), max(o.stop, r.stop))
                                                         for o, r in zip(old, region, strict=True))  # fmt: skip
        self.host.later("overlap region", self._flush, ms=0)

    def _flush(self) -> None:
        region, self._pending = self._pending, None
        if region is not None:
            self.update_overlap(region)

    def update_overlap(self, region: tuple[slice, slice] | None = None) -> None:
        """Show (or remove) the layer of pixels both inked and ignored (only ``region`` changed, if given)."""
        viewer = self.host.viewer
        layer = find_layer(viewer, "ink under ignore")
        if layer is None and self._overlap_layer is not None:  # removed from the viewer (or it closes)
            self._overlap_layer = None
            self.overlap_check.blockSignals(True)
            self.overlap_check.setChecked(False)
            self.overlap_check.blockSignals(False)
            return
        ink, ignore = self.host.layer("ink"), self.host.layer("ignore")
        if not self.overlap_check.isChecked() or ink is None or ignore is None:
            self._overlap_layer = None
            if layer is not None:
                viewer.layers.remove(layer)
            return
        try:
            a = editable(ink)
            b = editable(ignore, a.shape)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        if layer is not None and layer.data.shape == a.shape and region is not None:
            before = int(np.count_nonzero(layer.data[region]))
            overlap(a[region], b[region], layer.data[region])
            self.overlap_px += int(np.count_nonzero(layer.data[region])) - before
            refresh_region(layer, region)
        elif layer is not None and layer.data.shape == a.shape:
            overlap(a, b, layer.data)
            layer.refresh()
            self.overlap_px = int(np.count_nonzero(layer.data))
        else:
            layer = show_mask(viewer, overlap(a, b), "ink under ignore", "ink under ignore",
                              COLORS["ink under ignore"], like=ink, opacity=1.0)  # fmt: skip
            self._overlap_layer = layer
            self.overlap_px = int(np.count_nonzero(layer.data))
        self.host.set_status(f"{self.overlap_px:,} px of ink lie under ignore (cyan).")
