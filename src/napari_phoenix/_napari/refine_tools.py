"""Tools of the "Refine labels" widget: vectorised mask edits, proposal layers, a job runner, the Paint tab.

Every edit of a Labels layer here is numpy on the layer's own array, in bands
of :data:`STRIP` rows (temporaries stay a few MiB on a 10,000 x 14,000
segment), recorded as one undo step where napari allows it, then shown with
``layer.refresh()``. Slow work (reading a prediction, proposals, rounds) goes
through :class:`Jobs`, one napari ``thread_worker`` at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal
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

from ..core.errors import PhoenixError
from ..core.refine import RefineError
from .export_panel import sentence

STRIP = 1024  # rows per band of an edit
TRANSPARENT = {None: "transparent", 0: "transparent"}
COLORS = {"ink proposal": "#ff40ff", "ignore proposal": "#ff9020", "ink under ignore": "#00ffff",
          "round label": "#ff3030", "round ignore": "#ffd000"}  # fmt: skip
#: difference codes of :func:`~napari_phoenix.core.refine.compare_rounds` -> colour
DIFF_COLORS = {1: "#30e030", 2: "#ff3030", 3: "#3080ff", 4: "#ffd000"}
OPACITIES = (0.3, 0.6, 1.0)
BRUSH_SIZES = (5, 15, 40)
KEYS = {"I": "ink brush", "G": "ignore brush", "E": "eraser"}


def defaults(fn: Callable) -> dict[str, Any]:
    """The keyword defaults of ``fn`` (the widget's fields start from these: no second copy)."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def level0(layer: Any) -> Any:
    """A layer's full-resolution data (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def load_float(data: Any) -> np.ndarray:
    """Probabilities as a numpy float32 array (integers scaled to 0..1); computes dask arrays."""
    arr = np.asarray(data.compute() if hasattr(data, "compute") else data)
    if arr.dtype.kind in "ui":
        return arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    return arr.astype(np.float32, copy=False)


def editable(layer: Any, shape: Sequence[int] | None = None) -> np.ndarray:
    """The 2-D numpy array of a Labels layer, edited in place (else a RefineError that says why)."""
    data = layer.data
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise RefineError(f"{layer.name} is not a 2-D in-memory labels layer; edit a label, ignore or "
                          "proposal layer of a segment")  # fmt: skip
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise RefineError(f"{layer.name} is {data.shape[0]:,} x {data.shape[1]:,} px, the other mask "
                          f"{shape[0]:,} x {shape[1]:,} px: pick layers of the same segment")  # fmt: skip
    return data


def paint_where(layer: Any, rules: Sequence[tuple[Callable, int]]) -> int:
    """Set pixels of a Labels layer by rules, band by band, as one undo step; returns pixels changed.

    Parameters
    ----------
    layer : napari.layers.Labels
        A 2-D layer with numpy data.
    rules : sequence of (callable, int)
        ``cond(rows, band) -> bool array`` (``band`` is ``data[rows]``) and the value set there.

    Returns
    -------
    int
    """
    data = editable(layer)
    atom = getattr(layer, "_history_atom_for_mask_paint", None)  # napari's undo record (private API)
    changed = 0
    with layer.block_history():
        for y0 in range(0, data.shape[0], STRIP):
            rows = slice(y0, min(y0 + STRIP, data.shape[0]))
            for cond, value in rules:
                band = data[rows]
                mask = np.asarray(cond(rows, band), dtype=bool) & (band != value)
                rows_hit = np.flatnonzero(mask.any(axis=1))
                if not rows_hit.size:
                    continue
                cols = np.flatnonzero(mask.any(axis=0))
                ys, xs = slice(rows_hit[0], rows_hit[-1] + 1), slice(cols[0], cols[-1] + 1)
                local, region = np.ascontiguousarray(mask[ys, xs]), band[ys, xs]
                if atom is not None:
                    key = (slice(y0 + ys.start, y0 + ys.stop), xs)
                    layer._save_history(atom(key, region, local, value))
                region[local] = value
                changed += int(np.count_nonzero(local))
    layer.refresh()
    return changed


def erase_under(target: Any, source: Any) -> int:
    """Set ``target`` to 0 wherever ``source`` is nonzero (e.g. ignore where ink is painted)."""
    src = editable(source)
    editable(target, src.shape)
    return paint_where(target, [(lambda rows, band: src[rows] != 0, 0)])


def accept(target: Any, proposal: np.ndarray, union: bool) -> int:
    """Copy a proposal (nonzero = set) into ``target``: replace it, or add to it (union)."""
    editable(target, proposal.shape)
    add = (lambda rows, band: (proposal[rows] != 0) & (band == 0)) if union else \
          (lambda rows, band: proposal[rows] != 0)  # fmt: skip
    rules = [(add, 1)] if union else [(lambda rows, band: proposal[rows] == 0, 0), (add, 1)]
    return paint_where(target, rules)


def overlap(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 1 where both masks are nonzero (band by band, into ``out`` when given)."""
    out = np.empty(a.shape, np.uint8) if out is None or out.shape != a.shape or out.dtype != np.uint8 else out
    for y0 in range(0, a.shape[0], STRIP):
        rows = slice(y0, y0 + STRIP)
        np.logical_and(a[rows] != 0, b[rows] != 0, out=out[rows].view(bool))
    return out


def find_layer(viewer: Any, role: str, **match) -> Any:
    """The layer whose Phoenix metadata has this role (and these values), else None."""
    for ly in viewer.layers:
        m = ly.metadata.get("phoenix", {})
        if m.get("role") == role and all(m.get(k) == v for k, v in match.items()):
            return ly
    return None


def show_mask(viewer: Any, data: np.ndarray, name: str, role: str, color: str, like: Any = None,
              opacity: float = 0.6, **meta) -> Any:  # fmt: skip
    """Show a mask as a Labels layer of this role (reused, else added; placed like ``like``)."""
    data = data.view(np.uint8) if data.dtype == bool else data
    layer = find_layer(viewer, role, **{k: v for k, v in meta.items() if k in ("source_layer", "round")})
    metadata = {"phoenix": {"role": role, **meta}}
    if layer is not None:
        layer.data, layer.name, layer.metadata = data, name, metadata
        return layer
    place = {"translate": tuple(like.translate[-2:]), "scale": tuple(like.scale[-2:])} if like is not None else {}
    return viewer.add_labels(data, name=name, colormap={**TRANSPARENT, 1: color}, opacity=opacity,
                             metadata=metadata, **place)  # fmt: skip


class Maps:
    """numpy copies of prediction and windows layers, kept while the layer keeps the same data.

    The jobs read a layer's level 0 once (a dask composite may take a while);
    later proposals and evaluations of the same data reuse the copy.
    """

    def __init__(self):
        self._cache: dict[int, tuple] = {}  # id(layer) -> (layer, its data object, numpy array)

    def _get(self, layer: Any) -> np.ndarray | None:
        entry = self._cache.get(id(layer))
        return entry[2] if entry and entry[0] is layer and entry[1] is layer.data else None

    def remember(self, layer: Any, array: np.ndarray | None, keep: Sequence = ()) -> None:
        """Keep ``layer``'s array (and those of the ``keep`` layers; others are dropped)."""
        self._cache = {k: v for k, v in self._cache.items() if v[0] in (layer, *keep)}
        if array is not None:
            self._cache[id(layer)] = (layer, layer.data, array)

    def prob(self, layer: Any, shape: Sequence[int] | None = None) -> Any:
        """A prediction layer's kept array, else its level-0 data (for :func:`load_float` in a job)."""
        data = level0(layer)
        if data.ndim != 2:
            raise RefineError(f"{layer.name} is not a 2-D probability map; pick '<stack> prediction'")
        if shape is not None and tuple(data.shape) != tuple(shape):
            raise RefineError(f"{layer.name} is {data.shape[0]:,} x {data.shape[1]:,} px, the labels "
                              f"{shape[0]:,} x {shape[1]:,} px: pick the prediction of this segment")  # fmt: skip
        cached = self._get(layer)
        return data if cached is None else cached

    def windows(self, layer: Any) -> Any:
        """A windows layer's maps: only the slots of the layer slider that hold a window."""
        cached = self._get(layer)
        if cached is not None:
            return cached
        data = level0(layer)
        windows = layer.metadata.get("phoenix", {}).get("windows") or []
        slots = [round((w - float(layer.translate[0])) / float(layer.scale[0])) for w in windows]
        return data[slots] if slots and all(0 <= s < data.shape[0] for s in slots) else data


def _call(fn: Callable, args: tuple) -> Any:
    """Run a job in the worker thread; expected errors are returned, not raised."""
    try:
        return fn(*args)
    except (PhoenixError, OSError) as err:
        return err


class Jobs(QObject):
    """Runs slow work one job at a time in a ``thread_worker``; a newer job of a kind replaces a queued one.

    Parameters
    ----------
    on_error : callable
        Gets a sentence when a job fails (shown in red).
    """

    idle = Signal()

    def __init__(self, on_error: Callable[[str], None]):
        super().__init__()
        self.on_error, self.worker, self._queue = on_error, None, []

    @property
    def busy(self) -> bool:
        """A job runs or waits."""
        return self.worker is not None or bool(self._queue)

    def submit(self, kind: str, fn: Callable, *args, done: Callable[[Any], None]) -> None:
        """Run ``fn(*args)`` off the GUI thread, then ``done(result)`` on it.

        Parameters
        ----------
        kind : str
            What it does, for error messages ("Ink proposal"); replaces a queued job of this kind.
        fn : callable
            The work.
        *args
            Its arguments.
        done : callable
            Gets the result on the GUI thread.
        """
        self._queue = [j for j in self._queue if j[0] != kind] + [(kind, fn, args, done)]
        self._next()

    def _next(self) -> None:
        from napari.qt.threading import thread_worker

        if self.worker is not None or not self._queue:
            return
        kind, fn, args, done = self._queue.pop(0)
        worker = thread_worker(_call, start_thread=False)(fn, args)
        worker.returned.connect(lambda result: self._returned(kind, done, result))
        worker.errored.connect(lambda err: self.on_error(f"{kind} failed: {sentence(err)}"))
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()

    def _returned(self, kind: str, done: Callable, result: Any) -> None:
        if isinstance(result, PhoenixError | OSError):
            return self.on_error(f"{kind}: {sentence(result)}")
        try:
            done(result)
        except PhoenixError as err:
            self.on_error(f"{kind}: {sentence(err)}")

    def _finished(self) -> None:
        self.worker = None
        self._next()
        if not self.busy:
            self.idle.emit()


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
        if self.overlap_check.isChecked():
            self.host.later("overlap", self.update_overlap)

    def update_overlap(self) -> None:
        """Show (or remove) the layer of pixels both inked and ignored."""
        viewer = self.host.viewer
        layer = find_layer(viewer, "ink under ignore")
        ink, ignore = self.host.layer("ink"), self.host.layer("ignore")
        if not self.overlap_check.isChecked() or ink is None or ignore is None:
            if layer is not None:
                viewer.layers.remove(layer)
            return
        try:
            a = editable(ink)
            b = editable(ignore, a.shape)
        except RefineError as err:
            return self.host.set_status(sentence(err), error=True)
        if layer is not None and layer.data.shape == a.shape:
            overlap(a, b, layer.data)
            layer.refresh()
        else:
            show_mask(viewer, overlap(a, b), "ink under ignore", "ink under ignore", COLORS["ink under ignore"],
                      like=ink, opacity=1.0)  # fmt: skip
        self.host.set_status(f"{int(np.count_nonzero(find_layer(viewer, 'ink under ignore').data)):,} px of ink "
                             "lie under ignore (cyan).")  # fmt: skip
