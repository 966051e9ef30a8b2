"""Open a scroll segment's layer stack lazily as a dask array ``(Z, Y, X)``.

Accepted inputs (see :func:`open_stack`): a segment folder holding ``layers/``,
a ``layers/`` folder of ``NN.tif/.tiff/.png/.jpg`` files, a multi-page TIFF,
and a zarr / OME-Zarr array or group. Layer numbers are kept: ``stack.layers(5, 20)``
means the files ``05`` … ``20``, whatever the first file is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import LayerStackError
from .sources import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    ImageFileSource,
    LayerSource,
    layer_source,
    tiff_sources,
)

if TYPE_CHECKING:
    import dask.array as da

LAYER_NAME = re.compile(r"^(\d+)\.(tif|tiff|png|jpg|jpeg)$", re.IGNORECASE)
#: default dask chunk (rows, columns) of a layer: a few viewer tiles
DEFAULT_CHUNKS = (1024, 1024)
#: multiscale levels are added until the largest side is at most this
MIN_LEVEL_SIDE = 2048


@dataclass(frozen=True)
class LayerStack:
    """A lazily read layer stack.

    Attributes
    ----------
    data : dask.array.Array
        The full-resolution stack ``(Z, Y, X)``; nothing is read until computed.
    layer_numbers : tuple of int
        The layer number of each index along Z (file ``07.tif`` is layer 7).
    paths : tuple of Path
        The file each layer comes from (the container for TIFF / zarr stacks).
    source : Path
        What was opened.
    kind : str
        ``"layers"``, ``"tiff"`` or ``"zarr"``.
    levels : tuple of dask.array.Array
        Multiscale pyramid, ``levels[0] is data``; coarser levels are strided
        views (every 2nd, 4th, … pixel) read without touching skipped rows.
    """

    data: da.Array
    layer_numbers: tuple[int, ...]
    paths: tuple[Path, ...]
    source: Path
    kind: str
    levels: tuple[da.Array, ...]
    sources: tuple[LayerSource, ...] = field(default=(), repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def bytes_read(self) -> int:
        """Bytes read from the layer files so far (TIFF / image sources)."""
        return sum(s.bytes_read for s in self.sources)

    def index_of(self, number: int) -> int:
        """Z index of layer ``number``."""
        try:
            return self.layer_numbers.index(number)
        except ValueError:
            raise LayerStackError(
                f"layer {number} is not in this stack (layers {self.layer_numbers[0]}"
                f"–{self.layer_numbers[-1]})"
            ) from None

    def layers(self, first: int, last: int) -> da.Array:
        """The layers numbered ``first`` … ``last`` (inclusive), as a dask array.

        Slicing the result again reads whole dask chunks; to read a window of
        pixels exactly use :meth:`read`, or slice :attr:`data` once
        (``stack.data[5:21, y0:y1, x0:x1]``), which dask fuses into the read.
        """
        i0, i1 = self.index_of(first), self.index_of(last)
        if i1 < i0:
            raise LayerStackError(f"layer range {first}–{last} is empty")
        return self.data[i0 : i1 + 1]

    def read(
        self, first: int, last: int, rows: slice, cols: slice, workers: int | None = None
    ) -> np.ndarray:
        """Read a window of layers ``first`` … ``last`` (inclusive) into memory.

        Only the window's pixels are read (for uncompressed TIFF layers, byte for
        byte), several layers at a time: reads are I/O bound, so ``workers``
        threads (default: one per layer, at most 16) keep the disk busy.

        Parameters
        ----------
        first, last : int
            Layer numbers (file numbers), inclusive.
        rows, cols : slice
            The window, in pixels of the full-resolution stack.
        workers : int, optional
            Threads reading layers in parallel.

        Returns
        -------
        numpy.ndarray
            ``(last - first + 1, rows, cols)``.
        """
        i0, i1 = self.index_of(first), self.index_of(last)
        if i1 < i0:
            raise LayerStackError(f"layer range {first}–{last} is empty")
        if not self.sources:
            return np.asarray(self.data[i0 : i1 + 1, rows, cols])
        from concurrent.futures import ThreadPoolExecutor

        picked = self.sources[i0 : i1 + 1]
        with ThreadPoolExecutor(max_workers=workers or min(16, len(picked))) as pool:
            planes = list(pool.map(lambda src: src.read(rows, cols), picked))
        return np.stack(planes)

    def contrast_limits(self) -> tuple[float, float]:
        """Display range: the dtype's for 8 bit, a cheap sampled percentile range otherwise."""
        if self.dtype == np.uint8:
            return 0.0, 255.0
        sample = self._sample()
        sample = sample[sample > 0]
        if sample.size == 0:
            info = np.iinfo(self.dtype) if self.dtype.kind in "ui" else None
            return (0.0, float(info.max)) if info else (0.0, 1.0)
        lo, hi = np.percentile(sample, [0.5, 99.5])
        return float(lo), float(max(hi, lo + 1))

    def _sample(self, pixels: int = 256) -> np.ndarray:
        """About ``pixels`` x ``pixels`` values of the middle layer, read strided."""
        z, h, w = self.shape
        step = max(1, math.ceil(max(h, w) / pixels))
        if self.sources:
            return self.sources[z // 2].read(slice(0, h, step), slice(0, w, step))
        return np.asarray(self.levels[-1][z // 2, :: max(1, step // 2 ** (len(self.levels) - 1))])

    def metadata(self) -> dict:
        """Provenance of the stack, for ``layer.metadata`` and result files."""
        return {
            "source": str(self.source),
            "kind": self.kind,
            "layer_numbers": list(self.layer_numbers),
            "paths": [str(p) for p in self.paths],
            "shape": list(self.shape),
            "dtype": str(self.dtype),
        }


class _StridedStack:
    """Array-like ``(Z, Y, X)`` over the layer sources at one pyramid level.

    One 3-D array-like (rather than a ``da.stack`` of 2-D ones) lets dask fuse
    a slice of the stack into the read itself, so a window reads only its own
    pixels, not the whole chunks around it.
    """

    def __init__(self, sources: list[LayerSource], step: int):
        self.sources = sources
        self.step = step
        h, w = sources[0].shape
        self.shape = (len(sources), math.ceil(h / step), math.ceil(w / step))
        self.dtype = sources[0].dtype.newbyteorder("=")
        self.ndim = 3

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        zs, ys, xs = key
        if not all(isinstance(k, slice) for k in (ys, xs)):
            raise IndexError("a layer stack window takes slices along y and x")
        if isinstance(zs, slice):
            zlist, squeeze = list(range(*zs.indices(self.shape[0]))), False
        elif np.ndim(zs) == 0:
            zlist, squeeze = [int(zs)], True
        else:
            zlist, squeeze = [int(z) for z in np.asarray(zs).ravel()], False
        s = self.step
        y0, y1, ystep = ys.indices(self.shape[1])
        x0, x1, xstep = xs.indices(self.shape[2])
        rows = slice(y0 * s, y1 * s, ystep * s)
        cols = slice(x0 * s, x1 * s, xstep * s)
        planes = [self.sources[z].read(rows, cols) for z in zlist]
        if squeeze:
            return planes[0]
        if not planes:
            return np.empty((0, len(range(y0, y1, ystep)), len(range(x0, x1, xstep))), self.dtype)
        return np.stack(planes)


def _level_count(shape: tuple[int, int]) -> int:
    levels = 1
    while max(shape) / 2 ** (levels - 1) > MIN_LEVEL_SIDE:
        levels += 1
    return levels


def _pyramid(sources: list[LayerSource], chunks: tuple[int, int]) -> tuple[da.Array, ...]:
    import dask.array as da
    from dask.base import tokenize

    whole_layers = any(isinstance(src, ImageFileSource) for src in sources)
    levels = []
    for level in range(_level_count(sources[0].shape)):
        arr = _StridedStack(sources, 2**level)
        # PNG / JPEG cannot be read by window: one chunk per layer
        level_chunks = (1, *(arr.shape[1:] if whole_layers else chunks))
        levels.append(
            da.from_array(
                arr,
                chunks=level_chunks,
                name="phoenix-stack-"
                + tokenize([src.token() for src in sources], level, level_chunks),
                meta=np.empty((0, 0, 0), dtype=arr.dtype),
                asarray=False,
                fancy=True,
                lock=False,
                inline_array=True,
            )
        )
    return tuple(levels)


def _check_same(sources: list[LayerSource], names: list[str]) -> None:
    shape, dtype = sources[0].shape, sources[0].dtype.newbyteorder("=")
    for src, name in zip(sources, names, strict=True):
        if src.shape != shape:
            h, w = src.shape
            raise LayerStackError(
                f"layer {name} is {w:,} x {h:,} px (width x height), "
                f"but layer {names[0]} is {shape[1]:,} x {shape[0]:,}; all layers must have one size"
            )
        if src.dtype.newbyteorder("=") != dtype:
            raise LayerStackError(
                f"layer {name} is {src.dtype.name}, but layer {names[0]} is {dtype.name}; "
                "all layers must have one bit depth"
            )


def stack_from_sources(
    sources: list[LayerSource], names: list[str], numbers, paths, source, kind: str, chunks
) -> LayerStack:
    """A :class:`LayerStack` over layer ``sources``, checked to share one size and bit depth.

    ``names`` name the layers in errors; ``numbers``, ``paths``, ``source`` and
    ``kind`` are the stack's attributes; ``chunks`` as in :func:`open_stack`.
    Local and remote stacks (:mod:`.remote`) are built by it.
    """
    _check_same(sources, names)
    levels = _pyramid(sources, chunks)
    return LayerStack(levels[0], tuple(numbers), tuple(paths), source, kind, levels, tuple(sources))


def find_layer_files(folder: Path) -> list[tuple[int, Path]]:
    """The numbered layer files of a folder, sorted by number, checked for gaps."""
    entries = list(folder.iterdir())
    files = [p.name for p in entries if p.is_file()]
    numbered = number_layers(files, str(folder), sorted(p.name for p in entries))
    return [(n, folder / name) for n, name in numbered]


def number_layers(names: list[str], where: str, listed: list[str]) -> list[tuple[int, str]]:
    """The layer file names among ``names`` with their numbers, sorted, checked for gaps.

    ``where`` names the folder in error messages; ``listed`` is everything in it.
    """
    found: dict[int, str] = {}
    for name in names:
        m = LAYER_NAME.match(name)
        if not m:
            continue
        number = int(m.group(1))
        if number in found:
            raise LayerStackError(
                f"{where}: layer {number} is there twice ({found[number]} and {name}); "
                "remove one of them"
            )
        found[number] = name
    if not found:
        others = sorted(listed)[:5]
        hint = f" (it holds {', '.join(others)}…)" if others else " (it is empty)"
        raise LayerStackError(f"{where}: no layer files named like 00.tif, 07.png or 12.jpg{hint}")
    numbers = sorted(found)
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(str(n) for n in missing[:10])
        raise LayerStackError(
            f"{where}: layers {numbers[0]}–{numbers[-1]} have gaps: missing {shown}"
            f"{' …' if len(missing) > 10 else ''}"
        )
    return [(n, found[n]) for n in numbers]


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (".zarray", ".zgroup", "zarr.json"))


def open_stack(path: str | Path, *, chunks: tuple[int, int] = DEFAULT_CHUNKS) -> LayerStack:
    """Open a layer stack lazily.

    Parameters
    ----------
    path : str or Path
        A segment folder (with ``layers/``), a folder of layer files
        (``NN.tif/.tiff/.png/.jpg``, zero-padded or not, 8 or 16 bit), a
        multi-page TIFF, or a zarr / OME-Zarr array or group; on disk or at an
        ``http://`` / ``https://`` address (fetched by byte ranges into an
        on-disk cache, see ``docs/reading.md#remote-data``).
    chunks : tuple of int
        Dask chunk ``(rows, columns)`` per layer for TIFF layers; PNG / JPEG
        layers are always one chunk, zarr keeps its own chunks.

    Returns
    -------
    LayerStack
        ``.data`` is the dask array ``(Z, Y, X)``; nothing is read until computed.

    Raises
    ------
    LayerStackError
        With the file and the problem: layers of different sizes or bit
        depths, gaps in the numbering, unreadable or truncated files, empty
        folders; for addresses also unreachable servers, HTTP errors (404,
        401) and listings without layers.
    """
    from .remote_http import is_url

    if is_url(str(path)):
        from .remote import open_remote_stack

        return open_remote_stack(str(path), chunks=chunks)
    path = Path(path).expanduser()
    if not path.exists():
        raise LayerStackError(f"{path}: no such file or folder")
    if _is_zarr(path):
        return _open_zarr(path)
    if path.is_dir():
        folder = path / "layers" if (path / "layers").is_dir() else path
        files = find_layer_files(folder)
        sources = [layer_source(p) for _, p in files]
        numbers, paths = [n for n, _ in files], [p for _, p in files]
        names = [p.name for p in paths]
        return stack_from_sources(sources, names, numbers, paths, path, "layers", chunks)
    if path.suffix.lower() in TIFF_SUFFIXES:
        sources = tiff_sources(path)
        pages = range(len(sources))
        names = [f"page {i}" for i in pages]
        return stack_from_sources(sources, names, pages, [path] * len(pages), path, "tiff", chunks)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        source = layer_source(path)
        return stack_from_sources([source], [path.name], [0], [path], path, "layers", chunks)
    raise LayerStackError(
        f"{path}: not a layer stack; open a segment folder, a layers/ folder, a TIFF or a zarr"
    )


def _as_zyx(arr, name: str):
    import dask.array as da

    data = da.from_zarr(arr) if not isinstance(arr, da.Array) else arr
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise LayerStackError(f"{name}: array of shape {tuple(arr.shape)} is not (Z, Y, X)")
    if data.dtype.kind not in "uif":
        raise LayerStackError(f"{name}: {data.dtype} values are not an image")
    return data


def _open_zarr(path: Path, store=None) -> LayerStack:
    import zarr

    try:
        node = zarr.open(store if store is not None else str(path), mode="r")
    except LayerStackError:
        raise
    except Exception as err:
        raise LayerStackError(f"{path}: not a readable zarr ({err})") from err
    attrs = dict(node.attrs)
    if isinstance(node, zarr.Array):
        arrays = [node]
    else:
        ome = attrs.get("ome", attrs)
        multiscales = ome.get("multiscales")
        if multiscales:
            keys = [d["path"] for d in multiscales[0]["datasets"]]
        else:
            keys = sorted((k for k, v in node.arrays()), key=lambda k: -int(np.prod(node[k].shape)))
        if not keys:
            raise LayerStackError(f"{path}: the zarr group holds no arrays")
        if not multiscales and not all(k.isdigit() for k in keys) and len(keys) > 1:
            raise LayerStackError(
                f"{path}: the zarr group holds several arrays ({', '.join(keys[:5])}) and no "
                f"multiscales metadata; open one of them (e.g. {path}/{keys[0]})"
            )
        arrays = [node[k] for k in keys]
    levels = tuple(_as_zyx(a, str(path)) for a in arrays)
    z = levels[0].shape[0]
    numbers = tuple(attrs.get("layer_numbers", range(z)))
    if len(numbers) != z:
        raise LayerStackError(f"{path}: layer_numbers has {len(numbers)} entries for {z} layers")
    return LayerStack(levels[0], numbers, (path,) * z, path, "zarr", levels)
