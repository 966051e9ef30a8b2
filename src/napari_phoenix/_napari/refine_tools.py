"""Tools of the "Refine labels" widget: vectorised mask edits, partial refreshes, proposal layers, a job runner.

Every edit of a Labels layer here is numpy on the layer's own array, in bands
of :data:`STRIP` rows (temporaries stay a few MiB on a 10,000 x 14,000
segment), recorded as one undo step where napari allows it, then shown with
:func:`refresh_region` (only the box that changed). Slow work (reading a prediction, proposals, rounds) goes
through :class:`Jobs`, one napari ``thread_worker`` at a time.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal

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
    changed, box = 0, [data.shape[0], data.shape[1], 0, 0]  # rows and columns changed: y0, x0, y1, x1
    with layer.block_history():
        for y0 in range(0, data.shape[0], STRIP):
            rows = slice(y0, min(y0 + STRIP, data.shape[0]))
            for cond, value in rules:
                band = data[rows]
                mask = np.asarray(cond(rows, band), dtype=bool)
                if value == 0:
                    np.logical_and(mask, band, out=mask)  # only pixels not 0 yet: one pass
                else:
                    mask &= band != value
                rows_hit = np.flatnonzero(mask.any(axis=1))
                if not rows_hit.size:
                    continue
                cols = np.flatnonzero(np.logical_or.reduce(mask[rows_hit[0] : rows_hit[-1] + 1], axis=0))
                ys, xs = slice(rows_hit[0], rows_hit[-1] + 1), slice(cols[0], cols[-1] + 1)
                local, region = mask[ys, xs], band[ys, xs]  # the record owns ``mask``: never reused
                if atom is not None:
                    key = (slice(y0 + ys.start, y0 + ys.stop), xs)
                    layer._save_history(atom(key, region, local, value))
                np.copyto(region, value, where=local)  # no index arrays, unlike region[local] = value
                changed += int(np.count_nonzero(local))
                box = [min(box[0], y0 + ys.start), min(box[1], xs.start),
                       max(box[2], y0 + ys.stop), max(box[3], xs.stop)]  # fmt: skip
    if changed:
        refresh_region(layer, (slice(box[0], box[2]), slice(box[1], box[3])))
    return changed


def refresh_region(layer: Any, region: tuple[slice, slice]) -> None:
    """Show a changed region of a 2-D numpy Labels layer, uploading only that part of its texture.

    napari's own partial update (what ``Labels.data_setitem`` and painting use:
    ``_partial_labels_refresh``, private API); a full ``layer.refresh()`` where it
    does not apply (other napari versions, contours, other data).
    """
    try:
        with warnings.catch_warnings():  # napari >= 0.9 warns that private attributes may go (>= 0.10)
            warnings.simplefilter("ignore", FutureWarning)
            image = layer._slice.image
            ok = (layer.ndim == 2 and layer.contour == 0 and isinstance(layer.data, np.ndarray)
                  and image.view.shape == layer.data.shape and layer._slicing_state.loaded)  # fmt: skip
            if ok:
                if not np.shares_memory(image.view, layer.data):  # a converted texture copy: update it
                    image.view[region] = layer.colormap._data_to_texture(layer.data[region])
                layer._accumulate_updated_slice(region)
                layer._partial_labels_refresh()
                return
    except Exception:  # noqa: BLE001  (any change of those internals: the full refresh below)
        pass
    layer.refresh()


def event_region(event: Any, shape: Sequence[int]) -> tuple[slice, slice] | None:
    """The bounding box of a Labels ``paint`` event's edits (None: unknown, e.g. a data event)."""
    atoms = getattr(event, "value", None)
    if not isinstance(atoms, list) or not atoms:
        return None
    lo, hi = [shape[0], shape[1]], [0, 0]
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None and len(key) == 2 and all(isinstance(k, slice) for k in key):
            bounds = [(k.start or 0, shape[i] if k.stop is None else k.stop) for i, k in enumerate(key)]
        elif isinstance(atom, tuple) and len(atom) == 3 and len(atom[0]) == 2 and np.size(atom[0][0]):
            bounds = [(int(np.min(ix)), int(np.max(ix)) + 1) for ix in atom[0]]
        else:
            return None
        for i, (b0, b1) in enumerate(bounds):
            lo[i], hi[i] = min(lo[i], b0), max(hi[i], b1)
    if hi[0] <= lo[0] or hi[1] <= lo[1]:
        return None
    return slice(max(lo[0], 0), min(hi[0], shape[0])), slice(max(lo[1], 0), min(hi[1], shape[1]))


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


def threshold_into(prob: np.ndarray, threshold: float, out: np.ndarray) -> None:
    """``out = prob >= threshold`` (0/1), band by band, in place: a quick preview of an ink proposal."""
    for y0 in range(0, prob.shape[0], STRIP):
        rows = slice(y0, y0 + STRIP)
        np.greater_equal(prob[rows], threshold, out=out[rows].view(bool))


def overlap(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 1 where both masks are nonzero (band by band, into ``out`` when given)."""
    out = np.empty(a.shape, np.uint8) if out is None or out.shape != a.shape or out.dtype != np.uint8 else out
    for y0 in range(0, a.shape[0], STRIP):
        rows = slice(y0, y0 + STRIP)
        np.logical_and(a[rows], b[rows], out=out[rows].view(bool))  # nonzero = True, one pass
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

    def get(self, layer: Any) -> np.ndarray | None:
        """The kept array of ``layer`` (None: not read yet, or its data changed)."""
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
        cached = self.get(layer)
        return data if cached is None else cached

    def windows(self, layer: Any) -> Any:
        """A windows layer's maps: only the slots of the layer slider that hold a window."""
        cached = self.get(layer)
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
