"""Training patches sampled straight from lazy stacks and masks, by the prize's rules.

``seed-conventions.md``, "Dataset": 128 x 128 input patches with a 32 x 32
target on a 64 px grid over each chunk (zero-padded bottom / right to a
multiple of 128); a patch is kept only if every mask pixel in it is set and at
least 5 % of its 32 x 32 keep pixels are set; label and keep are shrunk by
taking pixel ``4 i + 2``; ``ink% = floor(100 * sum(label32) / 1024)``; all
patches with ink% >= 5 plus ``int(0.75 * that)`` drawn from those with ink% == 0
(0 < ink% < 5 unused); input layers 5..20. Nothing is pre-extracted: a
patch's pixels are read from the stack when a batch needs them (optionally from
a RAM or zarr cache of the 16 layers), and only the 32 x 32 targets (128
bytes each, bit-packed) are kept in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PhoenixError
from ..predict import read_layers, uint16_ranges

TILE, GRID, OUT = 128, 64, 32
INK_MIN, KEEP_MIN, INK_FREE_RATIO = 5, 0.05, 0.75


class DatasetError(PhoenixError, ValueError):
    """Training data that cannot be used as given."""


@dataclass
class Source:
    """One chunk to train on: a stack and its masks (arrays or lazy arrays, (Y, X)).

    ``ignore`` None: nothing ignored; ``mask`` None: the whole chunk is papyrus.
    """

    name: str
    stack: Any
    label: Any
    ignore: Any = None
    mask: Any = None
    layer_numbers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        data = self.stack.data if hasattr(self.stack, "layer_numbers") else self.stack
        if not self.layer_numbers:
            self.layer_numbers = list(getattr(self.stack, "layer_numbers", range(data.shape[0])))
        self.data = data
        shape = tuple(data.shape[1:])
        for role in ("label", "ignore", "mask"):
            arr = getattr(self, role)
            if arr is not None and tuple(arr.shape) != shape:
                raise DatasetError(
                    f"{self.name}: the {role} is {arr.shape[1]:,} x {arr.shape[0]:,} px, the layers "
                    f"{shape[1]:,} x {shape[0]:,}"
                )
        if self.label is None:
            raise DatasetError(f"{self.name} has no ink label to train on")


def source_from_folder(path: str | Path) -> Source:
    """A chunk / segment folder (``layers/`` + ``label.png``, ``ignore.png``, ``mask.png``) as a :class:`Source`."""
    from ..segment import open_segment

    seg = open_segment(path)
    label = seg.read("label")
    if label is None:
        raise DatasetError(f"{seg.root} has no label.png: paint ink labels first")
    return Source(seg.name, seg.stack, label, seg.read("ignore"), seg.read("mask"))


def _as_bool(arr: Any) -> np.ndarray:
    if arr is None:
        return None
    arr = arr.compute() if hasattr(arr, "compute") else arr
    return np.asarray(arr) != 0


@dataclass
class Patches:
    """The sampled patches: where they are and their 32 x 32 targets (bit-packed)."""

    source: np.ndarray  # (N,) index into the sources
    yx: np.ndarray  # (N, 2) top-left corner
    ink_percent: np.ndarray  # (N,)
    label_bits: np.ndarray  # (N, 128) uint8
    keep_bits: np.ndarray  # (N, 128) uint8

    def __len__(self) -> int:
        return len(self.yx)

    def subset(self, index: np.ndarray) -> Patches:
        return Patches(self.source[index], self.yx[index], self.ink_percent[index], self.label_bits[index],
                       self.keep_bits[index])  # fmt: skip

    def targets(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(B, 32, 32)`` ink and keep of patches ``index``."""
        unpack = lambda bits: np.unpackbits(bits[index], axis=1).reshape(-1, OUT, OUT).astype(np.float32)  # noqa: E731
        return unpack(self.label_bits), unpack(self.keep_bits)

    @staticmethod
    def concat(parts: list[Patches]) -> Patches:
        return Patches(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("source", "yx", "ink_percent", "label_bits", "keep_bits")))  # fmt: skip


def check_stride(stride: int) -> None:
    """Refuse a patch grid step that is not a positive multiple of 4 px (targets sit on ``4 i + 2``)."""
    if stride < 4 or stride % 4:
        raise DatasetError(f"the patch stride must be a positive multiple of 4 px (the prize: 64); got {stride}")


def candidate_patches(src: Source, index: int = 0, stride: int = GRID) -> Patches:
    """Every grid patch of a chunk that passes the mask and keep rules (before the ink sampling).

    ``stride``: the grid step in px (the prize: 64), a multiple of 4 so that targets stay on
    the ``4 i + 2`` pixels.
    """
    check_stride(stride)
    h, w = src.data.shape[1:]
    hp, wp = math.ceil(h / TILE) * TILE, math.ceil(w / TILE) * TILE

    def padded(arr, fill=False):
        out = np.full((hp, wp), fill, bool)
        if arr is not None:
            out[:h, :w] = _as_bool(arr)
        else:
            out[:h, :w] = not fill
        return out

    mask = padded(src.mask)
    ignore = padded(src.ignore, fill=False) if src.ignore is not None else np.zeros((hp, wp), bool)
    ink = padded(src.label) & ~ignore
    keep = ~ignore
    ys, xs = np.arange(0, hp - TILE + 1, stride), np.arange(0, wp - TILE + 1, stride)
    # every mask pixel set: windowed "all" via a summed-area table
    sat = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    full = (sat[ys[:, None] + TILE, xs[None] + TILE] - sat[ys[:, None], xs[None] + TILE]
            - sat[ys[:, None] + TILE, xs[None]] + sat[ys[:, None], xs[None]]) == TILE * TILE  # fmt: skip
    ink32, keep32 = ink[2::4, 2::4], keep[2::4, 2::4]  # pixel 4 i + 2 of every 4 x 4 block
    out_y, out_x = np.nonzero(full)
    gy, gx = ys[out_y] // 4, xs[out_x] // 4
    rows = (gy[:, None] + np.arange(OUT))[:, :, None]
    cols = (gx[:, None] + np.arange(OUT))[:, None, :]
    lab, kp = ink32[rows, cols], keep32[rows, cols]  # (N, 32, 32)
    ok = kp.mean(axis=(1, 2)) >= KEEP_MIN
    lab, kp = lab[ok], kp[ok]
    yx = np.stack([ys[out_y][ok], xs[out_x][ok]], 1)
    ink_pct = np.floor(100 * lab.sum(axis=(1, 2)) / (OUT * OUT)).astype(np.int16)
    return Patches(np.full(len(yx), index, np.int32), yx, ink_pct,
                   np.packbits(lab.reshape(len(yx), OUT * OUT), axis=1),
                   np.packbits(kp.reshape(len(yx), OUT * OUT), axis=1))  # fmt: skip


def sample_patches(cands: Patches, rng: np.random.Generator) -> Patches:
    """The prize's selection: all ink% >= 5, plus int(0.75 x that) drawn from ink% == 0."""
    inky = np.nonzero(cands.ink_percent >= INK_MIN)[0]
    free = np.nonzero(cands.ink_percent == 0)[0]
    n_free = min(len(free), int(INK_FREE_RATIO * len(inky)))
    chosen = np.concatenate([inky, rng.choice(free, n_free, replace=False)]) if n_free else inky
    return cands.subset(np.sort(chosen))


class PatchReader:
    """Reads the 16 input layers of patches from the sources (optionally cached in RAM or zarr).

    ``depth_shift`` k > 0 also reads the k layers on either side of the window, so that
    :meth:`read` can move each patch's 16-layer window by up to k layers (a depth
    augmentation: ink lies at other depths in other chunks). Only windows that lie wholly
    inside a source's stack are drawn by :meth:`draw_offsets`.
    """

    def __init__(self, sources: list[Source], first_layer: int, layers: int = 16, cache: str = "none",
                 cache_dir: str | None = None, depth_shift: int = 0):  # fmt: skip
        if depth_shift < 0:
            raise DatasetError(f"depth_shift must be 0 or more layers; got {depth_shift}")
        self.sources, self.layers, self.shift = sources, layers, int(depth_shift)
        self.rows, self.lead, self.offsets = [], [], []
        for s in sources:
            idx = {n: i for i, n in enumerate(s.layer_numbers)}
            span = range(first_layer - self.shift, first_layer + layers + self.shift)
            have = [idx[n] for n in span if n in idx]
            if not any(n in idx for n in range(first_layer, first_layer + layers)):
                raise DatasetError(f"{s.name} has none of the layers {first_layer}–{first_layer + layers - 1}")
            self.rows.append(have)
            self.lead.append(next(j for j, n in enumerate(span) if n in idx))  # missing shallow layers
            whole = [o for o in range(-self.shift, self.shift + 1)
                     if all(first_layer + o + j in idx for j in range(layers))]  # fmt: skip
            self.offsets.append(np.asarray(whole or [0], np.int64))
        self.ranges: list[dict | None] = []  # uint16: each layer's (min, max) over the whole chunk, read once
        for s, rows in zip(sources, self.rows, strict=True):
            dtype = np.dtype(s.data.dtype)
            if dtype not in (np.uint8, np.uint16):
                raise DatasetError(f"{s.name}: training layers must be uint8 or uint16, not {dtype}")
            self.ranges.append(uint16_ranges(s.data, rows) if dtype == np.uint16 else None)
        self.cached: list[Any] = [None] * len(sources)
        if cache == "memory":
            self.cached = [self._load(i) for i in range(len(sources))]
        elif cache == "zarr":
            self.cached = [self._zarr(i, Path(cache_dir or ".phoenix-cache")) for i in range(len(sources))]
        elif cache != "none":
            raise DatasetError(f"cache must be 'none', 'memory' or 'zarr'; got {cache!r}")

    def _block(self, i: int, rows: slice, cols: slice) -> np.ndarray:
        """uint8 ``(layers, rows, cols)`` of source ``i``."""
        return read_layers(self.sources[i].data, self.rows[i], (rows, cols), self.ranges[i])

    def _load(self, i: int) -> np.ndarray:
        return self._block(i, slice(None), slice(None))

    def _zarr(self, i: int, folder: Path) -> Any:
        import zarr

        src = self.sources[i]
        rows = self.rows[i]
        h, w = src.data.shape[1:]
        path = folder / f"{src.name}-layers{rows[0]}-{rows[-1]}.zarr"
        arr = zarr.open_array(str(path), mode="a", shape=(len(rows), h, w), chunks=(len(rows), TILE, TILE),
                              dtype="uint8", fill_value=0)  # fmt: skip
        if not arr.attrs.get("complete"):
            for y0 in range(0, h, 1024):
                arr[:, y0 : y0 + 1024] = self._block(i, slice(y0, y0 + 1024), slice(None))
            arr.attrs["complete"] = True
        return arr

    def targets128(self, patches: Patches, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(B, 128, 128)`` ink (label and not ignored) and keep (not ignored), for augmenting."""
        ink = np.zeros((len(index), TILE, TILE), np.float32)
        keep = np.ones((len(index), TILE, TILE), np.float32)
        for k, n in enumerate(index):
            src, (y, x) = self.sources[patches.source[n]], patches.yx[n]
            lab = _as_bool(src.label[y : y + TILE, x : x + TILE])
            ign = _as_bool(src.ignore[y : y + TILE, x : x + TILE]) if src.ignore is not None else None
            h, w = lab.shape
            ink[k, :h, :w] = lab & ~ign if ign is not None else lab
            if ign is not None:
                keep[k, :h, :w] = ~ign
        return ink, keep

    def draw_offsets(self, patches: Patches, index: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """A random window offset (layers, -k..k) for each patch ``index``; None without ``depth_shift``."""
        if not self.shift:
            return None
        return np.array([rng.choice(self.offsets[patches.source[n]]) for n in index], np.int64)

    def read(self, patches: Patches, index: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(B, 16, 128, 128)``; missing deep layers (a short stack) are zeros.

        ``offsets``: each patch's window moved by that many layers (from :meth:`draw_offsets`);
        default 0, the window at ``first_layer``.
        """
        span = self.layers + 2 * self.shift
        out = np.zeros((len(index), span, TILE, TILE), np.uint8)
        for k, n in enumerate(index):
            s, (y, x) = patches.source[n], patches.yx[n]
            src = self.cached[s]
            if src is None:
                block = self._block(s, slice(y, y + TILE), slice(x, x + TILE))
            else:
                block = np.asarray(src[:, y : y + TILE, x : x + TILE])
            z0 = self.lead[s]  # bottom / right padding and missing layers: 0
            out[k, z0 : z0 + block.shape[0], : block.shape[1], : block.shape[2]] = block
        if not self.shift:
            return out
        start = self.shift + (np.zeros(len(index), np.int64) if offsets is None else np.asarray(offsets))
        return np.ascontiguousarray(out[np.arange(len(index))[:, None], start[:, None] + np.arange(self.layers)])


def build_patches(sources: list[Source], seed: int, stride: int = GRID) -> Patches:
    """Candidates of every source on a ``stride`` px grid, then the prize's ink sampling per source."""
    rng = np.random.default_rng(seed)
    parts = [sample_patches(candidate_patches(s, i, stride), rng) for i, s in enumerate(sources)]
    if not parts or not sum(len(p) for p in parts):
        raise DatasetError("no patch passes the rules (full mask, >= 5 % kept, ink >= 5 % or none): "
                           "check the label, ignore and mask layers")  # fmt: skip
    return Patches.concat(parts)


def split_validation(patches: Patches, sources: list[Source], val_chunks: list[str], val_fraction: float,
                     seed: int) -> tuple[Patches, Patches, str]:  # fmt: skip
    """(train, validation, how): whole chunks held out if named, else a random fraction of patches."""
    if val_chunks:
        names = [s.name for s in sources]
        missing = [c for c in val_chunks if c not in names]
        if missing:
            raise DatasetError(f"validation chunks {missing} are not among the sources {names}")
        held = np.isin(patches.source, [names.index(c) for c in val_chunks])
        how = f"held-out chunks: {', '.join(val_chunks)}"
    else:
        rng = np.random.default_rng(seed + 1)
        held = np.zeros(len(patches), bool)
        held[rng.choice(len(patches), max(1, round(val_fraction * len(patches))), replace=False)] = True
        how = f"random {100 * val_fraction:g} % of the patches (neighbouring patches may leak)"
    return patches.subset(np.nonzero(~held)[0]), patches.subset(np.nonzero(held)[0]), how
