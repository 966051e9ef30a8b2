"""Tiled inference: probability maps of one or several layer windows, region by region.

:func:`iter_predict` is the one job (a generator of :class:`~.progress.Progress`
events) behind :func:`predict`, :func:`predict_window`, ``phoenix infer`` and
the napari widget. It works on regions of output pixels (``region`` px square,
:func:`~.tiling.plan_regions`): for each, it reads only the input the
region's tiles need (all windows' layers at once), cuts the used tiles as
tensors on the device, runs the model on large batches with the TTA variants,
and blends them exactly as the prize did (:mod:`.tiling`). The next region is
read from disk while the current one computes. Results go to memory or to a
zarr store (one array per window plus the composite) as regions finish; an
interrupted run resumes from the finished regions.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from .errors import PhoenixError
from .progress import Progress
from .tiling import TILE, Region, check_settings, plan_regions

WINDOW_LAYERS = 16  #: layers per model input
_CPU_BAND_BYTES = 48 << 20  #: float input converted at a time on a CPU (a band of tile rows)
#: band rows transposed per copy when the CPU path turns a band: a whole-band transposed copy reads
#: each value from another page (about 2.3x slower on the benchmark's 16 x 352 x 2,048 band)
_TURN_ROWS = 8
ZARR_CHUNK = 1024


class PredictError(PhoenixError, ValueError):
    """Inference inputs or settings that cannot work, or an output store that holds other data."""


class Cancelled(PhoenixError):  # noqa: N818  (not an error of the user's)
    """The job was cancelled between two batches; finished regions are kept."""


@dataclass(frozen=True)
class PredictParams:
    """Settings of a prediction (shared by API, CLI, widget and the stored provenance).

    Parameters
    ----------
    windows : tuple of int
        First layer number of each 16-layer window (the prize title: 3, 4, 5).
    stride : int
        Grid step is ``128 // stride`` px (2 -> 64 px, 8 -> 16 px).
    tta : int
        0 none, 1 + horizontal flip, 2 + vertical flip, 3 + rot90.
    batch_size : int
        Patches per model call (TTA variants included).
    device : str
        ``"auto"`` (CUDA if any), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    precision : str
        ``"auto"`` (fp16 on CUDA, as the prize; fp32 on CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
    region : int
        Side of an output region in px (rounded down to a multiple of 128,
        and of the zarr chunk when writing a store).
    composite : str
        ``"mean"`` or ``"max"`` of the windows' maps.
    out : str or None
        zarr store to write (a directory); None keeps the maps in memory.
    overwrite : bool
        Replace an ``out`` store that was made with other settings.
    """

    windows: tuple[int, ...] = (3, 4, 5)
    stride: int = 2
    tta: int = 3
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    region: int = 2048
    composite: str = "mean"
    out: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(int(w) for w in self.windows))
        check_settings(self.stride, self.tta)
        if not self.windows:
            raise PredictError("give at least one layer window (its first layer number, e.g. 3)")
        if self.batch_size < 1:
            raise PredictError(f"batch_size must be at least 1; got {self.batch_size}")
        if self.composite not in ("mean", "max"):
            raise PredictError(f"composite must be 'mean' or 'max'; got {self.composite!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Prediction:
    """What :func:`iter_predict` produced: per-window maps and the composite (numpy or zarr arrays)."""

    windows: dict[int, Any]
    composite: Any
    provenance: dict[str, Any] = field(default_factory=dict)
    store: str | None = None


# --------------------------------------------------------------------------- input
def _layer_numbers(stack: Any) -> list[int]:
    numbers = getattr(stack, "layer_numbers", None)
    return list(numbers) if numbers is not None else list(range(stack.shape[0]))


def _array(stack: Any) -> Any:
    data = stack.data if hasattr(stack, "layer_numbers") else stack  # LayerStack (or alike) or an array
    if getattr(data, "ndim", 0) != 3:
        raise PredictError(f"a stack is (layers, height, width); got shape {getattr(data, 'shape', None)}")
    if np.dtype(data.dtype) not in (np.uint8, np.uint16):
        raise PredictError(f"stacks must be uint8 (contrasted) or uint16, not {data.dtype}")
    return data


def _window_rows(numbers: list[int], windows: Sequence[int]) -> tuple[list[int], dict[int, list[int | None]]]:
    """Stack indices to read (sorted, unique) and, per window, the positions of its 16 layers (None: pad)."""
    index = {n: i for i, n in enumerate(numbers)}
    per: dict[int, list[int | None]] = {}
    for w in windows:
        if w not in index:
            raise PredictError(f"window {w} starts at layer {w}, which the stack lacks (layers {numbers[0]}–{numbers[-1]})")
        per[w] = [index.get(n) for n in range(w, w + WINDOW_LAYERS)]
        if None in per[w] and any(p is not None for p in per[w][per[w].index(None) :]):
            raise PredictError(f"window {w} has a gap in its layers {w}–{w + WINDOW_LAYERS - 1}")
    need = sorted({i for rows in per.values() for i in rows if i is not None})
    pos = {i: k for k, i in enumerate(need)}
    return need, {w: [pos[i] if i is not None else None for i in rows] for w, rows in per.items()}


def uint16_ranges(data: Any, layers: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Per-layer (min, max) of a uint16 stack (reads those layers once, lazily if dask)."""
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.from_array(data, chunks=(1, 4096, 4096))
    sub = arr[list(layers)]
    lo, hi = da.compute(sub.min(axis=(1, 2)), sub.max(axis=(1, 2)))
    return {i: (int(a), int(b)) for i, a, b in zip(layers, lo, hi, strict=True)}


def to_uint8(block: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """A uint16 layer block min-max scaled to 0..255 and truncated to uint8 (the prize's 16-bit rule)."""
    if hi <= lo:
        return np.zeros(block.shape, np.uint8)
    scaled = (block.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def read_layers(data: Any, rows: list[int], box: tuple[slice, slice], ranges: dict | None) -> np.ndarray:
    """Layers ``rows`` (stack indices, ascending) of ``data`` in ``box`` as uint8: uint16 layers are
    min-max scaled with ``ranges[index] = (min, max)`` of their whole layer (see :func:`uint16_ranges`)."""
    block = data[rows[0] : rows[-1] + 1, box[0], box[1]]
    block = np.asarray(block.compute() if hasattr(block, "compute") else block)
    if rows != list(range(rows[0], rows[-1] + 1)) or not block.flags.writeable:  # else a view will do
        block = block[[r - rows[0] for r in rows]]
    if block.dtype == np.uint16:
        block = np.stack([to_uint8(b, *ranges[r]) for b, r in zip(block, rows, strict=True)])
    return block


# --------------------------------------------------------------------------- compute
class _Engine:
    """Per-run state: the model callable, device, weights, settings."""

    def __init__(self, model: Any, params: PredictParams, cancel: Any = None):
        import torch

        from .model.inference import as_callable, resolve_device
        from .tiling import gaussian_weight

        self.torch = torch
        self.params = params
        if isinstance(model, torch.nn.Module):
            self.fn = as_callable(model, params.device, precision=params.precision)
            self.device = self.fn.device
        else:
            self.fn = as_callable(model)
            self.device = getattr(model, "device", None) or resolve_device(params.device)
        self.weight = torch.from_numpy(gaussian_weight()).to(self.device)
        self.scale = torch.tensor(1 / 255, dtype=torch.float32, device=self.device)
        self.patches = 0
        self.cancel = cancel
        # a CPU feeds the model views of converted bands (_maps_cpu); a GPU gathers tiles into batches
        self.views = self.device.type == "cpu"
        # float buffers kept between batches (fresh tensors of this size cost more in page faults than
        # the arithmetic): 0-2 the CPU path's bands, 3 the GPU path's batch, 4-5 the CPU path's logits and
        # sums of a band, 6 the CPU path's tile maps (columns last)
        self._flat = [None] * 7

    def _buffer(self, rows: int, layers: int) -> Any:
        """The float input batch ``(rows, 1, 16, 128, 128)`` in a kept buffer; the layers past
        ``layers`` hold 0.0."""
        f32 = self._buffer_view(3, (rows, 1, WINDOW_LAYERS, TILE, TILE))
        if layers < WINDOW_LAYERS:
            f32[:, 0, layers:].zero_()
        return f32

    def _batch(self, tiles: Any, layers: int) -> Any:
        """GPU: uint8 tiles ``(B, L, 128, 128)`` -> the float model input with every TTA variant.

        Each variant is converted straight from a flipped view of the uint8
        tiles, then scaled in place: ``v * float32(1/255)``, the prize's numbers.
        """
        from .tiling import TTA_VARIANTS

        n, b = self.params.tta + 1, len(tiles)
        f32 = self._buffer(n * b, layers)
        for k in range(n):
            f32[k * b : (k + 1) * b, 0, :layers].copy_(TTA_VARIANTS[k](tiles))
        return f32.mul_(self.scale)

    def _band_variants(self, band: Any, n_var: int, layers: int) -> Iterator[tuple[int, Any]]:
        """CPU: ``(k, f)`` for the first ``n_var`` TTA variants of a uint8 band ``(L, hb, W)``: ``f``
        the variant as scaled float32 ``(16, hb, W)`` (``(16, W, hb)`` for the rotation), in buffers
        kept between bands. rot90 of the band is the transpose of its horizontal flip, so the flip
        keeps a buffer of its own until the rotation is copied from it (already scaled, a few rows
        at a time). Turning the flip's uint8 copy instead was faster alone but slower in the run."""
        from .tiling import TTA_VARIANTS

        flipped = None
        for k in range(n_var):
            if k == 3:
                f = self._buffer_view(2, (WINDOW_LAYERS, *flipped.shape[:0:-1]))
                for r in range(0, flipped.shape[1], _TURN_ROWS):
                    f[:, :, r : r + _TURN_ROWS].copy_(flipped[:, r : r + _TURN_ROWS].transpose(-2, -1))
            else:
                f = self._variant(TTA_VARIANTS[k](band), layers, slot=int(k == 1))  # a uint8 copy at most
                flipped = f if k == 1 else flipped
            yield k, f

    def _variant(self, band: Any, layers: int, slot: int = 0) -> Any:
        """CPU: a uint8 band of a TTA variant ``(L, a, b)`` as scaled float32 ``(16, a, b)``, in buffer
        ``slot`` (kept between bands: a fresh one would cost more in page faults); layers past
        ``layers`` are 0.0."""
        f = self._buffer_view(slot, (WINDOW_LAYERS, *band.shape[1:]))
        f[:layers].copy_(band).mul_(self.scale)  # v * float32(1/255), the prize's numbers
        if layers < WINDOW_LAYERS:
            f[layers:].zero_()
        return f

    def _buffer_view(self, slot: int, shape: tuple[int, ...]) -> Any:
        """A float32 view ``shape`` of kept buffer ``slot`` on the device, grown when too small."""
        need = math.prod(shape)
        if self._flat[slot] is None or self._flat[slot].numel() < need:
            self._flat[slot] = self.torch.zeros(need, dtype=self.torch.float32, device=self.device)
        return self._flat[slot][:need].view(shape)

    @staticmethod
    def _tile_view(f: Any, k: int, y: int, c0: int, c1: int, step: int) -> tuple[Any, bool]:
        """Tiles ``c0 .. c1 - 1`` of a row (top ``y`` in the band) of variant ``k`` as one strided,
        overlapping view ``(n, 1, 16, 128, 128)`` of ``f`` (no copy), and whether it runs backwards
        (flips and the rotation put the row's tiles in reverse order)."""
        n = c1 - c0
        if k == 3:  # rot90: tile j occupies rows w - 128 - j*step, columns y..y+127 of the turned band
            _, w, hb = f.shape
            return f.as_strided((n, 1, WINDOW_LAYERS, TILE, TILE), (step * hb, f.numel(), w * hb, hb, 1),
                                (w - TILE - (c1 - 1) * step) * hb + y), True  # fmt: skip
        _, hb, w = f.shape
        yy = hb - TILE - y if k == 2 else y
        x, back = (w - TILE - (c1 - 1) * step, True) if k == 1 else (c0 * step, False)
        return f.as_strided((n, 1, WINDOW_LAYERS, TILE, TILE), (step, f.numel(), hb * w, w, 1), yy * w + x), back

    def _maps_cpu(self, data: Any, lay: slice, layers: int, used: np.ndarray, step: int) -> Any:
        """CPU: the TTA-averaged maps of the used tiles, columns last ``(rows, 32, 32, cols)`` and 0.0
        at unused tiles (:func:`~.tiling.columns_last`), the model fed views.

        Tile rows go in bands of about ``_CPU_BAND_BYTES`` of float input. Each TTA variant of a
        band is converted to float32 once (:meth:`_band_variants`); every tile of it is then a
        view, and a run of neighbouring used tiles of a row is one strided view
        ``(n, 1, 16, 128, 128)`` whose tiles overlap in memory: the input is never copied tile by
        tile (with the prize's stride 8 a pixel lies in 64 tiles), so the engine's cost no longer
        grows with the overlap. A model call only stores its logits (in the variant's tile order);
        the sigmoid, the variant's inverse and the sum are then done once per band and variant, in
        the prize's variant order, then divided: the same numbers as :func:`~.tiling.tta_average`.
        The model must not write into its input.
        """
        from .tiling import OUT, columns_last

        torch, p = self.torch, self.params
        n_var, per_call = p.tta + 1, max(1, p.batch_size)
        n_i, n_j = used.shape
        width = data.shape[-1]
        maps = self._buffer_view(6, (n_i, OUT, OUT, n_j))
        used_t = torch.from_numpy(used)
        rows_per_band = max(1, (_CPU_BAND_BYTES // (4 * WINDOW_LAYERS * width) - TILE) // step + 1)
        for i0 in range(0, n_i, rows_per_band):
            i1 = min(n_i, i0 + rows_per_band)
            runs = [(i - i0, a, b) for i in range(i0, i1) for a, b in _runs(used[i])]
            if not runs:
                maps[i0:i1] = 0.0
                continue
            band = data[lay, i0 * step : (i1 - 1) * step + TILE]
            # the band's sum of maps (the identity's logits are stored there), and a variant's logits with
            # its tiles in its order; never-used tiles hold anything until columns_last puts 0.0 there
            total = self._buffer_view(5, (i1 - i0, n_j, OUT, OUT))
            logits = self._buffer_view(4, (i1 - i0, n_j, OUT, OUT))
            for k, f in self._band_variants(band, n_var, layers):
                into = total if k == 0 else logits
                for i, a, b in runs:
                    for c0 in range(a, b, per_call):
                        if self.cancel is not None and self.cancel.is_set():
                            raise Cancelled("prediction cancelled")
                        c1 = min(b, c0 + per_call)
                        x, back = self._tile_view(f, k, i * step, c0, c1, step)
                        (into[i, n_j - c1 : n_j - c0] if back else into[i, c0:c1]).copy_(self.fn(x))
                        self.patches += c1 - c0
                if k == 0:
                    total.sigmoid_()
                else:
                    total += _undo_band(logits.sigmoid_(), k)
            columns_last(total.div_(n_var) if p.tta else total, used_t[i0:i1], out=maps[i0:i1])
        return maps

    def release(self) -> None:
        """Free the GPU memory cached by this run (after a cancel or at the end)."""
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def region(self, region: Region, block: np.ndarray, used: np.ndarray, layout: dict) -> dict[int, Any]:
        """Every window's map of ``region`` (float32 tensors on the device)."""
        from .tiling import blend, blend_columns_last, tta_average

        torch, p = self.torch, self.params
        ri, rj = region.valid_tiles()
        used_t = torch.from_numpy(used).to(self.device)
        out = {}
        if not used.any():
            empty = torch.zeros((len(ri), len(rj), 32, 32), device=self.device)
            return {w: blend(region, empty, used_t, self.weight) for w in layout}
        data = torch.from_numpy(block).to(self.device)
        if self.views:
            for w, rows in layout.items():
                have = [r for r in rows if r is not None]  # consecutive positions in ``block``
                maps = self._maps_cpu(data, slice(have[0], have[-1] + 1), len(have), used, region.step)
                out[w] = blend_columns_last(region, maps, used_t, self.weight)
            return out
        ii, jj = (torch.from_numpy(a).to(self.device) for a in np.nonzero(used))
        per_call = max(1, p.batch_size // (p.tta + 1))
        for w, rows in layout.items():
            have = [r for r in rows if r is not None]  # consecutive positions in ``block``
            lay = slice(have[0], have[-1] + 1)
            # (L, ni, nj, 128, 128): views of every tile of these layers; a batch gathers the used ones
            tiles = data[lay].unfold(1, TILE, region.step).unfold(2, TILE, region.step)
            maps = torch.zeros((len(ri), len(rj), 32, 32), dtype=torch.float32, device=self.device)
            for k in range(0, len(ii), per_call):
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled("prediction cancelled")
                bi, bj = ii[k : k + per_call], jj[k : k + per_call]
                x = self._batch(tiles[:, bi, bj].transpose(0, 1), len(have))
                logits = self.fn(x)
                maps[bi, bj] = tta_average(torch.sigmoid(logits.float()), p.tta)
                self.patches += len(bi) * (p.tta + 1)
            out[w] = blend(region, maps, used_t, self.weight)
        return out


def _undo_band(probs: Any, k: int) -> Any:
    """A band's maps ``(rows, cols, 32, 32)`` of TTA variant ``k``, its tiles in the variant's order
    (the flips and the rotation reverse each row's tiles), back in the image's orientation and
    order: ``TTA_UNDO[k]`` of each tile, in one copy at most."""
    if k == 1:
        return probs.flip(1, -1)
    if k == 2:
        return probs.flip(-2)
    if k == 3:
        return probs.flip(1, -2).transpose(-2, -1)  # rot90(3) = flip rows, transpose
    return probs


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], row, [False]]).astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _composite(maps: Sequence[Any], how: str) -> Any:
    from .overlay import OverlaySettings, composite

    if len(maps) == 1:  # the mean or maximum of one map is that map
        return maps[0]
    return composite(maps, OverlaySettings(how=how))


# --------------------------------------------------------------------------- output
def _signature(params: PredictParams, model_info: dict, stack_info: dict, mask_info: dict) -> dict[str, Any]:
    """What decides the pixels: a store made with another signature is not resumed."""
    keep = ("windows", "stride", "tta", "precision", "composite", "region")
    return {**{k: getattr(params, k) for k in keep}, "model": model_info, "stack": stack_info, "mask": mask_info}


def _model_info(model: Any) -> dict[str, Any]:
    prov = dict(getattr(model, "provenance", None) or {})
    config = getattr(model, "config", None)
    source = prov.get("source")
    return {
        "checkpoint": Path(source).name if source else None,
        "checkpoint_path": source,
        "sha256": prov.get("sha256"),
        "architecture": getattr(config, "name", None) or type(model).__name__,
    }


def _stack_info(stack: Any, numbers: list[int]) -> dict[str, Any]:
    meta = {}
    with_meta = getattr(stack, "metadata", None)
    if callable(with_meta):
        meta = with_meta()
    return {
        "source": str(getattr(stack, "source", "") or "") or None,
        "shape": [int(n) for n in _array(stack).shape],
        "dtype": str(_array(stack).dtype),
        "layers": numbers,
        "contrast": (meta.get("contrast") or meta.get("contrast_points")) if isinstance(meta, dict) else None,
    }


def _mask_info(mask: Any, height: int) -> dict[str, Any]:
    import hashlib

    if mask is None:
        return {"mask": None}
    h = hashlib.sha256()
    for y0 in range(0, height, 2048):
        band = mask[y0 : y0 + 2048]
        band = np.asarray(band.compute() if hasattr(band, "compute") else band)
        h.update(np.packbits(band != 0).tobytes())
    return {"shape": [int(n) for n in mask.shape], "sha256_bits": h.hexdigest()}


class _Store:
    """The zarr output: one float32 array per window + the composite, region markers, provenance.

    ``regions_done`` (uint8, one chunk per region) marks a region finished once
    its maps are written, so separate processes may write separate regions.
    """

    def __init__(self, path: str, shape: tuple[int, int], windows: Sequence[int], region: int, signature: dict,
                 overwrite: bool):  # fmt: skip
        import zarr

        self.path, self.size = Path(path), region
        names = [f"window_{w:02d}" for w in windows] + ["composite"]
        if self.path.exists():
            try:
                old = zarr.open_group(str(self.path), mode="r").attrs.get("phoenix", {}).get("signature")
            except Exception:  # noqa: BLE001  (not a zarr group at all)
                old = "not a prediction store"
            if old != json.loads(json.dumps(signature)):
                if not overwrite:
                    raise PredictError(
                        f"{self.path} holds a prediction made with other settings, model or data; "
                        "choose another output or pass overwrite=True to replace it"
                    )
                shutil.rmtree(self.path)
        self.group = zarr.open_group(str(self.path), mode="a")
        chunks = (min(ZARR_CHUNK, shape[0]), min(ZARR_CHUNK, shape[1]))
        self.arrays = {
            name: self.group[name] if name in self.group
            else self.group.create_array(name, shape=shape, chunks=chunks, dtype="float32", fill_value=0.0)
            for name in names
        }  # fmt: skip
        grid = (-(-shape[0] // region), -(-shape[1] // region))
        self.marks = (self.group["regions_done"] if "regions_done" in self.group
                      else self.group.create_array("regions_done", shape=grid, chunks=(1, 1), dtype="uint8",
                                                   fill_value=0))  # fmt: skip
        attrs = dict(self.group.attrs.get("phoenix", {}))
        attrs.update(signature=signature, complete=False)
        self.group.attrs["phoenix"] = attrs

    def done(self, region: Region) -> bool:
        return bool(self.marks[region.y0 // self.size, region.x0 // self.size])

    def write(self, region: Region, maps: dict[str, np.ndarray]) -> None:
        box = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        for name, arr in maps.items():
            self.arrays[name][box] = arr
        self.marks[region.y0 // self.size, region.x0 // self.size] = 1  # after the data: 1 means complete

    def finish(self, provenance: dict) -> None:
        self.group.attrs["phoenix"] = {**provenance, "complete": True}
        for name, arr in self.arrays.items():
            arr.attrs["phoenix"] = {"map": name, "settings": provenance["settings"]}


# --------------------------------------------------------------------------- the job
def iter_predict(
    stack: Any,
    model: Any,
    params: PredictParams | None = None,
    mask: Any = None,
    *,
    input_ranges: dict[int, tuple[int, int]] | None = None,
    bounds: tuple[int, int, int, int] | None = None,
    provenance: dict[str, Any] | None = None,
    cancel: Any = None,
    client: Any = None,
) -> Iterator[Progress]:
    """Predict every window region by region; yield one :class:`Progress` per region.

    Parameters
    ----------
    stack : LayerStack or array-like
        ``(layers, height, width)`` uint8 (contrasted) or uint16 (min-max scaled
        per layer to 8 bits first, as the prize did); numpy, dask, zarr or a
        :class:`~.stack.LayerStack` (whose layer numbers name the windows).
    model : torch.nn.Module or callable
        ``(B, 1, 16, 128, 128)`` float in 0..1 -> ``(B, 32, 32)`` logits. A
        module is wrapped by :func:`~.model.inference.inference_model`. On a
        CPU the input is a strided view whose tiles overlap in memory: the
        model must not write into it (call ``.contiguous()`` if it needs a
        plain tensor).
    params : PredictParams, optional
    mask : array-like, optional
        ``(height, width)``; a tile is used if any of its pixels is nonzero.
        None: every tile.
    input_ranges : dict, optional
        uint16 only: ``{stack index: (min, max)}``; computed when missing.
    bounds : tuple of int, optional
        ``(y0, y1, x0, x1)``: predict only these pixels (e.g. what is on
        screen); the maps keep the full size, 0 outside.
    provenance : dict, optional
        Extra provenance (e.g. the contrast applied, file names).
    cancel : threading.Event, optional
        Set it to stop within a batch: the generator ends (no final result)
        after freeing the GPU's cached memory; regions already written stay
        and a later run resumes from them. Closing the generator between
        events (``worker.quit()``) also stops it.
    client : distributed.Client, optional
        Run the regions as tasks on a ``dask.distributed`` cluster (one GPU per
        worker: start each worker with its own ``CUDA_VISIBLE_DEVICES``). The
        model is sent to every worker once; this process reads the inputs and
        writes the outputs, the workers compute.

    Yields
    ------
    Progress
        ``result`` is ``{"region": (y0, y1, x0, x1), "maps": {name: array}, "patches": n,
        "seconds": s}`` for each region (``maps`` None when resumed from a store),
        and the last event's ``result`` is the :class:`Prediction`.
    """
    params = params or PredictParams()
    data = _array(stack)
    _, height, width = (int(n) for n in data.shape)
    if mask is not None and tuple(mask.shape) != (height, width):
        raise PredictError(f"the mask is {mask.shape[1]:,} x {mask.shape[0]:,} px, the stack {width:,} x {height:,}")
    numbers = _layer_numbers(stack)
    rows, layout = _window_rows(numbers, params.windows)
    engine = _Engine(model, params, cancel)
    region_size = params.region if not params.out else max(ZARR_CHUNK, params.region // ZARR_CHUNK * ZARR_CHUNK)
    regions = plan_regions(height, width, params.stride, region_size)
    if bounds is not None:
        y0, y1, x0, x1 = bounds
        regions = list(_crop_regions(regions, y0, y1, x0, x1))
    started = time.perf_counter()
    info = {
        "settings": {k: v for k, v in params.to_dict().items() if k not in ("out", "overwrite")},
        "model": _model_info(getattr(engine.fn, "module", model)),
        "stack": _stack_info(stack, numbers),
        "mask": _mask_info(mask, height),
        "bounds": list(bounds) if bounds else None,
        **dict(provenance or {}),
    }
    signature = {**_signature(params, info["model"], info["stack"], info["mask"]), "bounds": info["bounds"]}
    names = [f"window_{w:02d}" for w in params.windows]
    store = (_Store(params.out, (height, width), params.windows, region_size, signature, params.overwrite)
             if params.out else None)  # fmt: skip
    if store is None:
        out = {name: np.zeros((height, width), np.float32) for name in [*names, "composite"]}
    todo = [r for r in regions if store is None or not store.done(r)]
    resumed = len(regions) - len(todo)
    if todo and np.dtype(data.dtype) == np.uint16 and input_ranges is None:  # reads every layer: only if needed
        input_ranges = uint16_ranges(data, rows)

    def load(region: Region):
        box = region.input_box()
        if box is None:
            return region, None, None
        block = read_layers(data, rows, box, input_ranges)
        if mask is None:
            cut = None
        else:
            cut = mask[box]
            cut = np.asarray(cut.compute() if hasattr(cut, "compute") else cut)
        return region, block, cut

    yield Progress(resumed, len(regions), f"{len(regions)} regions, {resumed} already done" if resumed else f"{len(regions)} regions")
    try:
        if client is None:
            yield from _run_regions(todo, resumed, regions, load, engine, layout, params, store, None if store else out)
        else:
            yield from _run_remote(client, model, todo, resumed, regions, load, engine, layout, params, store,
                                   None if store else out)  # fmt: skip
    except Cancelled:
        return
    finally:
        engine.release()
    info.update(
        code_version=__version__,
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        device=str(engine.device),
        seconds=round(time.perf_counter() - started, 3),
        patches=engine.patches,
        regions=len(regions),
        resumed_regions=resumed,
        signature=signature,
    )
    if store is not None:
        store.finish(info)
        arrays = store.arrays
        result = Prediction({w: arrays[f"window_{w:02d}"] for w in params.windows}, arrays["composite"], info, str(store.path))
    else:
        result = Prediction({w: out[f"window_{w:02d}"] for w in params.windows}, out["composite"], info)
    yield Progress(len(regions), len(regions), f"done in {info['seconds']:.1f} s", result)


def _run_regions(todo, resumed, regions, load, engine, layout, params, store, out) -> Iterator[Progress]:
    from .tiling import tiles_used

    with cf.ThreadPoolExecutor(1) as pool:  # reads the next region while this one computes
        pending = pool.submit(load, todo[0]) if todo else None
        for k, _ in enumerate(todo):
            region, block, cut = pending.result()
            pending = pool.submit(load, todo[k + 1]) if k + 1 < len(todo) else None
            t0, before = time.perf_counter(), engine.patches
            maps = _region_maps(engine, region, block, None if block is None else tiles_used(region, cut), layout)
            yield _finish_region(region, maps, params, store, out, resumed + k + 1, len(regions),
                                 engine.patches - before, time.perf_counter() - t0)  # fmt: skip


def _region_maps(engine: _Engine, region: Region, block, used, layout) -> dict[int, np.ndarray]:
    if block is None:
        return {w: np.zeros((region.y1 - region.y0, region.x1 - region.x0), np.float32) for w in layout}
    return {w: t.cpu().numpy() for w, t in engine.region(region, block, used, layout).items()}


def _finish_region(region, maps, params, store, out, done, total, patches, seconds) -> Progress:
    named = {f"window_{w:02d}": m for w, m in maps.items()}
    named["composite"] = _composite(list(maps.values()), params.composite)
    if store is not None:
        store.write(region, named)
    else:
        for name, m in named.items():
            out[name][region.y0 : region.y1, region.x0 : region.x1] = m
    return Progress(
        done, total, f"region {done}/{total}: {patches:,} patches in {seconds:.1f} s",
        {"region": (region.y0, region.y1, region.x0, region.x1), "maps": named, "patches": patches,
         "seconds": seconds},
    )  # fmt: skip


_WORKER_ENGINES: dict = {}  # on a dask worker: (model id, settings) -> _Engine, built once


def _remote_region(model, params: PredictParams, region: Region, block, cut, layout) -> tuple[dict, int, float]:
    """One region on a dask worker: its maps, the patches computed, the seconds taken."""
    from .tiling import tiles_used

    key = (id(model), params)
    engine = _WORKER_ENGINES.get(key)
    if engine is None:
        engine = _WORKER_ENGINES[key] = _Engine(model, params)
    t0, before = time.perf_counter(), engine.patches
    used = None if block is None else tiles_used(region, cut)
    maps = _region_maps(engine, region, block, used, layout)
    return maps, engine.patches - before, time.perf_counter() - t0


def _run_remote(client, model, todo, resumed, regions, load, engine, layout, params, store, out) -> Iterator[Progress]:
    from distributed import as_completed

    # each worker picks its own device ("auto": the GPU it sees)
    remote_params = replace(params, out=None)
    shared = client.scatter(getattr(engine.fn, "module", model), broadcast=True)
    in_flight = max(2, 2 * len(client.scheduler_info().get("workers", {})))
    queue, futures, done = list(todo), as_completed(), resumed
    submitted = {}

    def submit() -> None:
        region, block, cut = load(queue.pop(0))
        fut = client.submit(_remote_region, shared, remote_params, region, block, cut, layout, pure=False)
        submitted[fut.key] = region
        futures.add(fut)

    try:
        for _ in range(min(in_flight, len(queue))):
            submit()
        for fut in futures:
            maps, patches, seconds = fut.result()
            region = submitted.pop(fut.key)
            engine.patches += patches
            done += 1
            if queue:
                submit()
            yield _finish_region(region, maps, params, store, out, done, len(regions), patches, seconds)
            if engine.cancel is not None and engine.cancel.is_set():
                raise Cancelled("prediction cancelled")
    finally:
        for fut in list(futures.futures):
            fut.cancel()


def _crop_regions(regions: list[Region], y0: int, y1: int, x0: int, x1: int) -> Iterator[Region]:
    """The parts of ``regions`` inside ``[y0, y1) x [x0, x1)`` (starts snapped down to the step)."""
    for r in regions:
        a, b = max(r.y0, y0 // r.step * r.step), min(r.y1, y1)
        c, d = max(r.x0, x0 // r.step * r.step), min(r.x1, x1)
        if a < b and c < d:
            yield replace(r, y0=a, y1=b, x0=c, x1=d)


def predict(
    stack: Any, model: Any, windows: Sequence[int] = (3, 4, 5), mask: Any = None, **kw: Any
) -> Prediction:
    """Predict several layer windows and their composite (drains :func:`iter_predict`).

    Parameters
    ----------
    stack, model, mask
        As for :func:`iter_predict`.
    windows : sequence of int
        First layer number of each window.
    **kw
        :class:`PredictParams` fields (``stride``, ``tta``, ``batch_size``,
        ``device``, ``out``...) and :func:`iter_predict` keywords
        (``input_ranges``, ``bounds``, ``provenance``).

    Returns
    -------
    Prediction
    """
    extra = {k: kw.pop(k) for k in ("input_ranges", "bounds", "provenance") if k in kw}
    params = PredictParams(windows=tuple(windows), **kw)
    last = None
    for ev in iter_predict(stack, model, params, mask, **extra):
        last = ev
    return last.result


def predict_window(
    stack: Any,
    model: Any,
    mask: Any = None,
    stride: int = 2,
    tta: int = 3,
    batch_size: int = 32,
    device: str = "auto",
    **kw: Any,
) -> np.ndarray:
    """The float32 probability map ``(Y, X)`` of one 16-layer stack, as the prize computed it.

    Parameters
    ----------
    stack : array-like
        ``(16, Y, X)`` uint8 (contrasted) or uint16; fewer layers are padded
        with zero layers at the deep end.
    model : torch.nn.Module or callable
        ``(B, 1, 16, 128, 128)`` -> ``(B, 32, 32)`` logits (on a CPU it gets a
        read-only strided view, see :func:`iter_predict`).
    mask : array-like, optional
        ``(Y, X)``; tiles with no mask pixel are skipped, pixels no tile covers stay 0.
    stride, tta, batch_size, device
        As in :class:`PredictParams`.
    **kw
        Further :class:`PredictParams` fields (``precision``, ``region``).

    Returns
    -------
    numpy.ndarray
        float32 ``(Y, X)``.
    """
    data = _array(stack)
    if data.shape[0] > WINDOW_LAYERS:
        raise PredictError(f"predict_window takes at most 16 layers; got {data.shape[0]} (use predict with windows)")
    numbers = list(range(data.shape[0]))
    pred = predict(_Numbered(data, numbers), model, windows=(0,), mask=mask, stride=stride, tta=tta,
                   batch_size=batch_size, device=device, **kw)  # fmt: skip
    return np.asarray(pred.windows[0])


@dataclass
class _Numbered:
    data: Any
    layer_numbers: list[int]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)
