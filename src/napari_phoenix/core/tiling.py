"""The prize's tiled inference, region by region, vectorised: grid, tile choice, TTA, blending.

Conventions (``seed-conventions.md``, "Tiled inference"): 128 x 128 tiles on a
grid of step ``128 // stride``, y outer, x inner; a tile is used if any mask
pixel in it is set; TTA level ``t`` averages the sigmoid maps of the first
``t + 1`` of (identity, horizontal flip, vertical flip, ``rot90`` k=1), each
undone; the 32 x 32 map is replicated x4, multiplied by a round Gaussian
(sigma 32, centred at 64) and added into a float32 sum, the weight into a
float32 weight sum; the map is the sum divided by the weight sum where that is
positive, 0 elsewhere.

**Same numbers, in a different loop.** The prize added tile after tile into
the sums. Here a region of output pixels is computed at once: a pixel in step
block ``b`` is covered by the tiles ``b - s + 1 ... b`` (``s = stride``) of each
axis, so for every offset ``(di, dj)`` in ``range(s)^2`` (in that order) the
contribution of tile ``(b_y - s + 1 + di, b_x - s + 1 + dj)`` to every pixel is
one shifted view of the tile maps. Each pixel thus receives the same float32
products, added in the same order (tiles in y-outer, x-inner order), as in the
prize loop: the result is bit for bit the prize's, and it does not depend on
how the image is cut into regions. Tiles that are missing or unused add
``+0.0``, which leaves a float32 sum unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import PhoenixError

TILE = 128  #: input tile side (px)
OUT = 32  #: side of the model's output map
SCALE = TILE // OUT
_BLOCK_PIXELS = 1 << 20  # output pixels blended at a time (4 MiB per float32 sum; 1 MiB was 20 % slower)
_TRANSPOSE_COLUMNS = 8  # tile columns per transposed copy in columns_last on a CPU
TTA_NAMES = ("identity", "horizontal flip", "vertical flip", "rot90")


class TilingError(PhoenixError, ValueError):
    """Tiling settings that the prize's grid does not allow."""


def check_settings(stride: int, tta: int) -> int:
    """Validate ``stride`` and ``tta``; return the grid step in pixels."""
    if not isinstance(stride, int | np.integer) or stride < 1 or TILE % stride or (TILE // stride) % SCALE:
        raise TilingError(f"stride must be 1, 2, 4, 8, 16 or 32 (a step of 128 / stride px, a multiple of 4); got {stride}")
    if tta not in (0, 1, 2, 3):
        raise TilingError(f"tta must be 0 (none) to 3 (flips and rot90); got {tta}")
    return TILE // int(stride)


def grid_count(length: int, step: int) -> int:
    """Number of tile positions ``range(0, length - 128 + 1, step)``."""
    return max(0, (length - TILE) // step + 1)


def gaussian_weight() -> np.ndarray:
    """The round Gaussian ``exp(-((x-64)^2 + (y-64)^2) / (2 * 32^2))``, float32 (128, 128)."""
    y, x = np.mgrid[:TILE, :TILE]
    return np.exp(-((x - 64.0) ** 2 + (y - 64.0) ** 2) / (2 * 32.0**2)).astype(np.float32)


@dataclass(frozen=True)
class Region:
    """Output pixels ``[y0, y1) x [x0, x1)`` and the tiles and input pixels they need.

    ``y0`` / ``x0`` are multiples of the step. Tile rows ``ti0 ... ti0 + nty - 1``
    (``nty = nby + s - 1``, some outside the image) cover the region's ``nby``
    step blocks; the input rows to read are ``[ry0, ry1)``.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    step: int
    stride: int
    height: int
    width: int

    @property
    def nb(self) -> tuple[int, int]:
        return math.ceil((self.y1 - self.y0) / self.step), math.ceil((self.x1 - self.x0) / self.step)

    @property
    def first_tile(self) -> tuple[int, int]:
        return self.y0 // self.step - self.stride + 1, self.x0 // self.step - self.stride + 1

    def valid_tiles(self) -> tuple[range, range]:
        """Tile indices (global, inside the image) this region needs, per axis."""
        ni, nj = grid_count(self.height, self.step), grid_count(self.width, self.step)
        (ti, tj), (nby, nbx) = self.first_tile, self.nb
        return (range(max(0, ti), min(ni, ti + nby + self.stride - 1)),
                range(max(0, tj), min(nj, tj + nbx + self.stride - 1)))  # fmt: skip

    def input_box(self) -> tuple[slice, slice] | None:
        """Rows and columns of input the valid tiles read; None if there are none."""
        ri, rj = self.valid_tiles()
        if not ri or not rj:
            return None
        return (slice(ri.start * self.step, (ri.stop - 1) * self.step + TILE),
                slice(rj.start * self.step, (rj.stop - 1) * self.step + TILE))  # fmt: skip


def plan_regions(height: int, width: int, stride: int, size: int) -> list[Region]:
    """Cut the output into regions of ``size`` x ``size`` px (rounded to a multiple of 128), row by row."""
    step = check_settings(stride, 0)
    size = max(TILE, size // TILE * TILE)
    return [
        Region(y0, min(height, y0 + size), x0, min(width, x0 + size), step, stride, height, width)
        for y0 in range(0, height, size)
        for x0 in range(0, width, size)
    ]


def tiles_used(region: Region, mask: np.ndarray | None) -> np.ndarray:
    """bool ``(len(rows), len(cols))`` over :meth:`Region.valid_tiles`: any mask pixel set.

    ``mask`` is the mask cut to :meth:`Region.input_box` (None: every tile is used).
    """
    ri, rj = region.valid_tiles()
    if mask is None:
        return np.ones((len(ri), len(rj)), bool)
    step, s = region.step, region.stride
    h, w = len(ri) + s - 1, len(rj) + s - 1  # step blocks under the valid tiles
    blocks = np.zeros((h * step, w * step), bool)
    blocks[: mask.shape[0], : mask.shape[1]] = mask != 0
    anyb = blocks.reshape(h, step, w, step).any(axis=(1, 3))
    used = np.zeros((len(ri), len(rj)), bool)
    for a in range(s):  # a tile spans s x s step blocks
        for b in range(s):
            used |= anyb[a : a + len(ri), b : b + len(rj)]
    return used


#: The TTA transforms of the input, in the prize's order (on the last two axes).
TTA_VARIANTS = (lambda x: x, lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.rot90(1, (-2, -1)))
#: Their inverses, applied to the ``(B, 32, 32)`` maps.
TTA_UNDO = (lambda p: p, lambda p: p.flip(-1), lambda p: p.flip(-2), lambda p: p.rot90(3, (-2, -1)))


def tta_average(probs: torch.Tensor, tta: int) -> torch.Tensor:
    """Undo each variant of ``(n_variants * B, 32, 32)`` maps and average them, in variant order."""
    parts = probs.chunk(tta + 1)
    total = parts[0].clone()
    for k in range(1, tta + 1):
        total += TTA_UNDO[k](parts[k])
    return total / (tta + 1) if tta else total


def blend(region: Region, maps: torch.Tensor, used: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The region's probability map from its tiles' maps (see the module docstring).

    Parameters
    ----------
    region : Region
    maps : torch.Tensor
        float32 ``(len(rows), len(cols), 32, 32)`` TTA-averaged sigmoid maps of
        the region's valid tiles (anything where ``used`` is False).
    used : torch.Tensor
        bool ``(len(rows), len(cols))``.
    weight : torch.Tensor
        :func:`gaussian_weight` on the same device.

    Returns
    -------
    torch.Tensor
        float32 ``(y1 - y0, x1 - x0)``.
    """
    return blend_columns_last(region, columns_last(maps, used), used, weight)


def columns_last(maps: torch.Tensor, used: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Tile maps ``(rows, cols, 32, 32)`` as ``(rows, 32, 32, cols)``, 0.0 where ``used`` is False
    (into ``out`` when given), the layout :func:`blend_columns_last` sums."""
    n, cols = maps.shape[:2]
    if out is None:
        out = torch.empty((n, OUT, OUT, cols), dtype=torch.float32, device=maps.device)
    zero = torch.zeros((), device=maps.device)
    flat, src, keep = out.view(n, OUT * OUT, cols), maps.view(n, cols, OUT * OUT), used[:, None]
    # on a CPU a few columns at a time: the transposed reads then stay on a few pages (about 1.6x faster)
    chunk = _TRANSPOSE_COLUMNS if maps.device.type == "cpu" else cols
    for j in range(0, cols, chunk):
        torch.where(keep[..., j : j + chunk], src[:, j : j + chunk].transpose(1, 2), zero, out=flat[..., j : j + chunk])
    return out


def blend_columns_last(region: Region, maps_t: torch.Tensor, used: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """:func:`blend` of maps already in the layout of :func:`columns_last`: float32
    ``(len(rows), 32, 32, len(cols))``, 0.0 where ``used`` is False."""
    s, step, q = region.stride, region.step, region.step // SCALE
    (nby, nbx), (ti, tj) = region.nb, region.first_tile
    ri, rj = region.valid_tiles()
    dev = maps_t.device
    # the sum is kept as (block row, q, 4, q, 4, block column): the block columns are the innermost,
    # contiguous axis of the maps and of the sum, so each offset's products are long vector
    # operations; the pixel layout is made once at the end.
    total = torch.zeros((nby, q, SCALE, q, SCALE, nbx), dtype=torch.float32, device=dev)
    on = torch.zeros((nby + s - 1, nbx + s - 1), dtype=torch.float32, device=dev)  # tiles used, padded
    # weight sub-block (a, b) of a tile, split as (32-res row, 4, 32-res column, 4): the x4
    # replication is a broadcast in the product, which is the prize's pred_up * w, element for element.
    w6 = weight.reshape(s, q, SCALE, s, q, SCALE)
    if len(ri) and len(rj):
        oi, oj = ri.start - ti, rj.start - tj  # block row r at offset di is covered by valid tile r + di - oi
        on[oi : oi + len(ri), oj : oj + len(rj)] = used.float()
        rows = max(1, _BLOCK_PIXELS // max(1, nbx * step * step))  # block rows at a time: sums stay in cache
        prod = torch.empty((min(rows, nby), q, SCALE, q, SCALE, nbx), dtype=torch.float32, device=dev)
        for r0 in range(0, nby, rows):
            r1 = min(nby, r0 + rows)
            for di in range(s):
                y0, y1 = max(r0, oi - di), min(r1, oi - di + len(ri))  # blocks whose tile exists
                for dj in range(s):
                    x0, x1 = max(0, oj - dj), min(nbx, oj - dj + len(rj))
                    if y0 >= y1 or x0 >= x1:
                        continue  # no tile here: the prize added +0.0
                    a, b = s - 1 - di, s - 1 - dj
                    part = maps_t[y0 + di - oi : y1 + di - oi, a * q : (a + 1) * q, b * q : (b + 1) * q,
                                  x0 + dj - oj : x1 + dj - oj]  # fmt: skip
                    tmp = prod[: y1 - y0, ..., : x1 - x0]
                    torch.mul(part[:, :, None, :, None, :], w6[a, :, :, b, :, :, None], out=tmp)
                    total[y0:y1, ..., x0:x1] += tmp
    wsum = _weight_sums(on, w6, nby, nbx)
    total = total.permute(0, 1, 2, 5, 3, 4).reshape(nby * step, nbx * step)
    wsum = wsum.permute(0, 2, 3, 1, 4, 5).reshape(nby * step, nbx * step)
    # where no tile adds, the sum is 0 and stays 0; elsewhere the weight sum is at least exp(-4)
    out = total.div_(wsum.clamp_min_(torch.finfo(torch.float32).tiny))
    return out[: region.y1 - region.y0, : region.x1 - region.x0]


def _weight_sums(on: torch.Tensor, w6: torch.Tensor, nby: int, nbx: int) -> torch.Tensor:
    """The float32 weight sums of every step block, ``(nby, nbx, q, 4, q, 4)``, as the prize adds them.

    A block's sum depends only on which of the ``s x s`` tiles over it are used. Where all are
    (the inside of the mask) it is one block of numbers, summed once in the prize's order; where
    none is, 0; only the blocks at the mask's edges are summed one by one. Every sum adds the
    same float32 weights in the same order as the tile-by-tile loop (an unused tile adds +0.0,
    which changes nothing), so the result is bit for bit the same.
    """
    s = w6.shape[0]
    pattern = on.unfold(0, s, 1).unfold(1, s, 1)  # (nby, nbx, s, s): tile (by + di, bx + dj) used?
    count = pattern.sum((-2, -1))
    out = torch.zeros((nby, nbx, *w6.shape[1:3], *w6.shape[4:]), dtype=torch.float32, device=on.device)

    def ordered(p: torch.Tensor) -> torch.Tensor:  # (n, s, s) patterns -> (n, q, 4, q, 4) sums
        acc = torch.zeros((len(p), *out.shape[2:]), dtype=torch.float32, device=on.device)
        for di in range(s):
            for dj in range(s):
                acc += p[:, di, dj, None, None, None, None] * w6[s - 1 - di, :, :, s - 1 - dj, :, :]
        return acc

    full = count == s * s
    if bool(full.any()):
        out[full] = ordered(torch.ones((1, s, s), dtype=torch.float32, device=on.device))[0]
    edge = (count > 0) & ~full
    if bool(edge.any()):
        out[edge] = ordered(pattern[edge])
    return out
