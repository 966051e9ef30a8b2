"""Comparisons of two label rounds or two predictions: difference images, statistics, a swipe composite.

Everything works in bands of :data:`STRIP` rows, so a 10,000 x 14,000 segment
needs a few MiB of temporaries besides the result, and lazy inputs (dask, zarr)
are read one band at a time. Difference codes are uint8 arithmetic on 0/1
masks (no fancy indexing), statistics are ``count_nonzero`` of the masks and
of their intersection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

STRIP = 1024  # rows per band

#: Values of :func:`compare_rounds`' difference image.
DIFF_CODES = {0: "unchanged", 1: "ink added", 2: "ink removed", 3: "ignore added", 4: "ignore removed"}
#: Values of :func:`compare_predictions`' difference image with ``codes=True``.
PREDICTION_CODES = {0: "unchanged", 1: "became ink", 2: "stopped being ink"}


def _error(message: str) -> Exception:
    """A :class:`~napari_phoenix.core.refine.RefineError` (imported here: refine imports this module)."""
    from .refine import RefineError

    return RefineError(message)


def _bands(height: int) -> Iterator[slice]:
    for y0 in range(0, height, STRIP):
        yield slice(y0, min(y0 + STRIP, height))


def _band(x: Any, key: Any) -> np.ndarray:
    """``x[key]`` as numpy (computes a dask band)."""
    part = x[key]
    return np.asarray(part.compute() if hasattr(part, "compute") else part)


def _nonzero(x: Any, key: Any) -> np.ndarray:
    """``x[key] != 0`` as 0/1 uint8 (a bool band is only viewed, not compared)."""
    band = _band(x, key)
    return (band if band.dtype == bool else band.astype(bool)).view(np.uint8)


def _as_array(x: Any) -> Any:
    """Array-likes that slice (numpy, dask, zarr) as they are; lists and the like as numpy."""
    return x if hasattr(x, "shape") and hasattr(x, "__getitem__") else np.asarray(x)


def _change_codes(a: np.ndarray, b: np.ndarray, added: int) -> np.ndarray:
    """uint8 ``added`` where only ``b`` is set, ``added + 1`` where only ``a`` is (0/1 uint8 inputs)."""
    changed = a ^ b
    gained = changed & b
    code = changed * np.uint8(added + 1)  # removed: added + 1
    code -= gained  # added: added + 1 - 1
    return code


def compare_masks(label_a: Any, ignore_a: Any, label_b: Any, ignore_b: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Difference and statistics of two (label, ignore) pairs of 2-D masks (nonzero = set).

    Parameters
    ----------
    label_a, ignore_a : array-like
        The older version's ink and ignore masks (numpy, dask or zarr).
    label_b, ignore_b : array-like
        The newer version's.

    Returns
    -------
    (numpy.ndarray, dict)
        See :func:`compare_rounds`.
    """
    arrays = [_as_array(x) for x in (label_a, label_b, ignore_a, ignore_b)]
    shape = tuple(arrays[0].shape)
    if len(shape) != 2:
        raise _error(f"masks must be 2-D; got {shape}")
    for x in arrays[1:]:
        if tuple(x.shape) != shape:
            raise _error(f"the rounds have different sizes: {shape} and {tuple(x.shape)}")
    diff = np.empty(shape, np.uint8)
    n = dict.fromkeys(("ink_a", "ink_b", "ignore_a", "ignore_b", "ink_both", "ignore_both"), 0)
    for rows in _bands(shape[0]):
        la, lb, ia, ib = (_nonzero(x, rows) for x in arrays)
        for key, m in (("ink_a", la), ("ink_b", lb), ("ignore_a", ia), ("ignore_b", ib)):
            n[key] += int(np.count_nonzero(m))
        n["ink_both"] += int(np.count_nonzero(la & lb))
        n["ignore_both"] += int(np.count_nonzero(ia & ib))
        ink, ign = _change_codes(la, lb, 1), _change_codes(ia, ib, 3)
        ign &= (la ^ lb) - np.uint8(1)  # ink changes win: 0xFF where the ink is unchanged, else 0
        np.bitwise_or(ink, ign, out=diff[rows])
    ink_union = n["ink_a"] + n["ink_b"] - n["ink_both"]
    ign_union = n["ignore_a"] + n["ignore_b"] - n["ignore_both"]
    stats = {"ink_a": n["ink_a"], "ink_b": n["ink_b"], "ignore_a": n["ignore_a"], "ignore_b": n["ignore_b"],
             "ink_added": n["ink_b"] - n["ink_both"], "ink_removed": n["ink_a"] - n["ink_both"],
             "ignore_added": n["ignore_b"] - n["ignore_both"], "ignore_removed": n["ignore_a"] - n["ignore_both"],
             "ink_iou": n["ink_both"] / ink_union if ink_union else 1.0,
             "ignore_iou": n["ignore_both"] / ign_union if ign_union else 1.0}  # fmt: skip
    return diff, stats


def compare_rounds(a: Any, b: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Difference and statistics between two rounds (or two (label, ignore) pairs).

    Parameters
    ----------
    a, b : Round or tuple of array-like
        The older and the newer version.

    Returns
    -------
    (numpy.ndarray, dict)
        uint8 difference image (codes in :data:`DIFF_CODES`; ink changes win over
        ignore changes) and statistics: ink and ignore areas of both
        (``ink_a``, ``ink_b``, ``ignore_a``, ``ignore_b``), pixels added / removed
        (``ink_added``, ``ink_removed``, ``ignore_added``, ``ignore_removed``) and
        the IoU of the two ink masks and of the two ignore masks (``ink_iou``,
        ``ignore_iou``; 1 when both are empty).
    """
    (la, ia), (lb, ib) = (_pair(x) for x in (a, b))
    return compare_masks(la, ia, lb, ib)


def _pair(x: Any) -> tuple[Any, Any]:
    if hasattr(x, "masks"):  # a Round
        return x.masks()
    label, ignore = x
    return label, ignore


def _float_band(x: Any, key: Any) -> np.ndarray:
    """A band of probabilities as float32; integer maps are scaled to 0..1 (uint8 255 -> 1)."""
    band = _band(x, key)
    if band.dtype.kind in "ui":
        return band.astype(np.float32) / np.float32(np.iinfo(band.dtype).max)
    return band.astype(np.float32, copy=False)


def compare_predictions(a: Any, b: Any, threshold: float = 0.5, mask: Any = None, *,
                        codes: bool = False) -> tuple[np.ndarray, dict[str, float]]:  # fmt: skip
    """Difference and statistics between two probability maps.

    Parameters
    ----------
    a, b : array-like
        ``(Y, X)`` probabilities, the older and the newer (numpy, dask or zarr;
        integer maps are scaled to 0..1).
    threshold : float
        Ink where ``probability >= threshold``.
    mask : array-like, optional
        Papyrus mask: statistics and codes only inside it.
    codes : bool
        False: the signed difference ``b - a`` (float32). True: a uint8 image of
        :data:`PREDICTION_CODES` (1 became ink, 2 stopped being ink at ``threshold``).

    Returns
    -------
    (numpy.ndarray, dict)
        The difference and statistics: ``mean_abs_change``, ``ink_a``, ``ink_b``,
        ``became_ink``, ``stopped_being_ink`` and ``ink_iou`` of the two
        thresholded maps, over ``mask`` if given.
    """
    pa, pb = _as_array(a), _as_array(b)
    if tuple(pa.shape) != tuple(pb.shape) or len(pa.shape) != 2:
        raise _error(f"the predictions have different sizes: {tuple(pa.shape)} and {tuple(pb.shape)}")
    m = None if mask is None else _as_array(mask)
    if m is not None and tuple(m.shape) != tuple(pa.shape):
        raise _error(f"the mask is {tuple(m.shape)}, the predictions {tuple(pa.shape)}")
    diff = np.empty(pa.shape, np.uint8 if codes else np.float32)
    n_a = n_b = n_both = 0
    abs_sum, inside_n = 0.0, 0
    for rows in _bands(pa.shape[0]):
        fa, fb = _float_band(pa, rows), _float_band(pb, rows)
        inside = None if m is None else _nonzero(m, rows).view(bool)
        ia, ib = fa >= threshold, fb >= threshold
        if inside is not None:
            ia &= inside
            ib &= inside
        n_a, n_b = n_a + int(np.count_nonzero(ia)), n_b + int(np.count_nonzero(ib))
        n_both += int(np.count_nonzero(ia & ib))
        delta = fb - fa  # new arrays only: the bands may be views of the inputs
        if codes:
            diff[rows] = _change_codes(ia.view(np.uint8), ib.view(np.uint8), 1)
        else:
            diff[rows] = delta
        change = np.abs(delta, out=delta)
        abs_sum += float(change.sum(dtype=np.float64) if inside is None else change[inside].sum(dtype=np.float64))
        inside_n += change.size if inside is None else int(np.count_nonzero(inside))
    union = n_a + n_b - n_both
    stats = {"mean_abs_change": abs_sum / inside_n if inside_n else 0.0, "ink_a": n_a, "ink_b": n_b,
             "became_ink": n_b - n_both, "stopped_being_ink": n_a - n_both,
             "ink_iou": n_both / union if union else 1.0}  # fmt: skip
    return diff, stats


class Swipe:
    """Layer A left of a column and layer B right of it, in arrays that a move updates in place.

    Moving the line copies only the columns it passed over (``H x |moved|``
    pixels at full resolution, less at each coarser level), so the sources are
    never copied whole after the first composite. With ``levels > 1`` the
    composite is a pyramid (each level every other row and column of the one
    above), which a viewer shows as a multiscale layer: after a move it reads
    and uploads only the part in view at the level that fits the screen, so the
    cost of a move hardly grows with the image.

    Parameters
    ----------
    a, b : array-like
        ``(Y, X)`` sources of one shape (anything that slices: numpy, dask, zarr).
    column : int, optional
        Where the line starts (default: the middle).
    convert : callable, optional
        Applied to every block read from ``a`` or ``b`` (e.g. probabilities to uint8).
    levels : int
        Pyramid levels (1: full resolution only; see :meth:`levels_for`).
    line : int, optional
        Draw the line into every level with this value, :data:`LINE_PX` pixels wide
        (so it looks about as wide at any zoom).
    """

    LINE_PX = 2

    def __init__(self, a: Any, b: Any, column: int | None = None, convert: Callable | None = None,
                 levels: int = 1, line: int | None = None):  # fmt: skip
        self.a, self.b = _as_array(a), _as_array(b)
        if tuple(self.a.shape) != tuple(self.b.shape) or len(self.a.shape) != 2:
            raise _error(f"swipe needs two 2-D layers of one size; got {tuple(self.a.shape)} and "
                         f"{tuple(self.b.shape)}")  # fmt: skip
        self.convert = convert or (lambda block: block)
        self.shape = tuple(int(n) for n in self.a.shape)
        self.line = line
        sample = np.asarray(self.convert(_band(self.a, (slice(0, 1), slice(0, 1)))))
        h, w = self.shape
        self.levels = [np.empty((-(-h // 2**k), -(-w // 2**k)), sample.dtype) for k in range(max(1, int(levels)))]
        self.data = self.levels[0]
        self.column = self._clip(w // 2 if column is None else column)
        for k in range(len(self.levels)):
            self._redraw(k, 0, self.levels[k].shape[1])

    @staticmethod
    def levels_for(shape: tuple[int, ...], smallest: int = 1024) -> int:
        """Levels of a pyramid whose coarsest level is at most ``smallest`` px on its longer side."""
        n, side = 1, max(shape)
        while side > smallest:
            side, n = -(-side // 2), n + 1
        return n

    def _clip(self, column: int) -> int:
        return int(min(max(int(column), 0), self.shape[1]))

    def _copy(self, k: int, src: Any, c0: int, c1: int) -> None:
        """Level ``k``'s columns ``c0:c1`` from ``src`` (every ``2**k``-th row and column)."""
        if c1 <= c0:
            return
        step, level = 2**k, self.levels[k]
        for rows in _bands(level.shape[0]):
            key = (slice(rows.start * step, rows.stop * step, step), slice(c0 * step, c1 * step, step))
            level[rows, c0:c1] = self.convert(_band(src, key))

    def _redraw(self, k: int, lo: int, hi: int) -> None:
        """Level ``k``'s columns ``lo:hi``: A left of the line, B right of it, then the line."""
        width = self.levels[k].shape[1]
        lo, hi = max(lo, 0), min(hi, width)
        split = min(max(-(-self.column // 2**k), lo), hi)  # first level column at or right of the line
        self._copy(k, self.a, lo, split)
        self._copy(k, self.b, split, hi)
        if self.line is not None:
            at = -(-self.column // 2**k)
            half = self.LINE_PX // 2
            self.levels[k][:, max(at - half, lo) : min(at + self.LINE_PX - half, hi)] = self.line

    def move(self, column: int) -> tuple[slice, slice] | None:
        """Put the line at ``column``; returns the full-resolution region that changed (None: nothing did)."""
        column = self._clip(column)
        if column == self.column:
            return None
        old, self.column = self.column, column
        pad = self.LINE_PX + 1 if self.line is not None else 1
        for k in range(len(self.levels)):
            step = 2**k
            self._redraw(k, min(old, column) // step - pad, -(-max(old, column) // step) + pad)
        lo, hi = max(min(old, column) - pad, 0), min(max(old, column) + pad, self.shape[1])
        return slice(0, self.shape[0]), slice(lo, hi)
