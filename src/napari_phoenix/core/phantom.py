"""Synthetic scroll segments ("phantoms") written in the real segment layout.

``DEST/layers/00.tif ...`` (uncompressed 8- or 16-bit), ``mask.png``,
``label.png``, ``ignore.png`` (L mode, 0 / 255) and ``phantom.json``
(parameters, seed, version). Papyrus is two crossed sheets of long fibres,
horizontal in front of the surface and vertical behind it; the surface wanders
in depth about the middle layer (about a layer either way, over ~100 px, the same
spread in every part of the segment), so the brightest layer changes smoothly
across the image, and layers
far from it are dark and noisy. Outside the ragged papyrus mask every layer is
0. Ink is rows of pseudo-Greek letters lying on the papyrus surface (or on
fixed ``ink_layers``), as some brightening and a smoother fibre texture fading
in and out over about 5 layers: below the texture's contrast on any one layer,
but consistent over several. Layers are made one at a time in bands of rows, so memory is a few
full-size 2-D fields whatever the number of layers.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._version import __version__
from .atomic import atomic_path
from .errors import LayerStackError
from .progress import Progress

PHANTOM_VERSION = 4  # 2: ink on the surface, stronger, larger letters; 3: letters and pen widths of real labels;
# 4: the surface wanders about the middle layer (std ~1 layer over ~100 px) instead of drifting by whole regions
_BAND = 512  # rows per band; fixed, as it is part of the noise stream
_BASE, _PEAK = 0.14, 0.58  # brightness far from / at the papyrus surface (0..1)
_TEXTURE, _NOISE = 0.22, 0.035  # fibre contrast (relative) and scanner noise (absolute)
_INK_HALF_DEPTH = 2.5  # layers: surface ink fades out this far from its centre
_LAYER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class PhantomParams:
    """Everything that determines a phantom: equal parameters give identical files.

    Parameters
    ----------
    height, width : int
        Layer size in pixels, at least 16 each.
    layers : int
        Number of depth layers.
    dtype : str
        ``"uint8"`` or ``"uint16"``.
    seed : int
        Seed of every random choice (texture, mask, text, noise).
    ink_layers : tuple of int, optional
        Layers that carry ink. Default: none fixed; the ink lies on the papyrus
        surface wherever it drifts in depth, fading over about 5 layers around it
        (as real ink does).
    ink_strength : float
        Brightening of papyrus under full ink (0.18 = 18 %).
    ink_smoothing : float
        Share of the fibre texture that full ink hides.
    glyph_height : int, optional
        Letter height in px; default ``max(24, height // 8)`` (128 px for the
        bundled 1,024 px segment).
    stroke_width : tuple of int, optional
        Range of pen widths in px (one per letter); default from the letter height,
        ``(max(2, gh // 8), max(3, gh // 4))``: 16-32 px for 128 px letters, the
        widths of the prize's real labels (the median width along the strokes
        of each of its 31 labelled chunks is 21-60 px, 21-43 px in those of the
        final model's segment).
    text_lines : int, optional
        Lines per column; default (and at most) as many as fit.
    columns : int
        Columns of text.
    uncertain_fraction : float
        Share of letters drawn faint, labelled partly and covered by ignore.
    """

    height: int = 1024
    width: int = 1536
    layers: int = 21
    dtype: str = "uint8"
    seed: int = 0
    ink_layers: tuple[int, ...] | None = None
    ink_strength: float = 0.18
    ink_smoothing: float = 0.8
    glyph_height: int | None = None
    stroke_width: tuple[int, int] | None = None
    text_lines: int | None = None
    columns: int = 2
    uncertain_fraction: float = 0.06

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name, low in (("height", 16), ("width", 16), ("layers", 1), ("seed", 0), ("columns", 1),
                          ("glyph_height", 8), ("text_lines", 0)):
            if getattr(self, name) is not None or name not in ("glyph_height", "text_lines"):
                fix(name, _integer(name, getattr(self, name), low))
        try:
            dtype = np.dtype(self.dtype).name
        except TypeError:
            dtype = None
        if dtype not in ("uint8", "uint16"):
            raise LayerStackError(f"dtype must be 'uint8' or 'uint16', got {self.dtype!r}")
        fix("dtype", dtype)
        if self.ink_layers is not None:
            given = self.ink_layers
            given = [given] if np.ndim(given) == 0 else list(given)
            ink = tuple(sorted({_integer("ink_layers", z, 0) for z in given}))
            if not ink or ink[-1] >= self.layers:
                raise LayerStackError(
                    f"ink_layers must be some of the layers 0..{self.layers - 1}, got {given}"
                )
            fix("ink_layers", ink)
        for name in ("ink_strength", "ink_smoothing", "uncertain_fraction"):
            value = getattr(self, name)
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not (number and 0 <= value <= 1):
                raise LayerStackError(f"{name} must be a number from 0 to 1, got {value!r}")
            fix(name, float(value))
        if self.stroke_width is not None:
            widths = tuple(self.stroke_width) if np.ndim(self.stroke_width) == 1 else ()
            if len(widths) != 2:
                raise LayerStackError(f"stroke_width must be (min, max) px, got {self.stroke_width!r}")
            lo, hi = (_integer("stroke_width", v, 1) for v in widths)
            if lo > hi:
                raise LayerStackError(f"stroke_width must be (min, max) with min <= max, got {lo, hi}")
            fix("stroke_width", (lo, hi))

    def resolved_glyph_height(self) -> int:
        """The letter height, with the default ``max(24, height // 8)`` filled in."""
        return self.glyph_height or max(24, self.height // 8)

    def resolved_stroke_width(self) -> tuple[int, int]:
        """The pen widths, with the default from the letter height filled in."""
        gh = self.resolved_glyph_height()
        return self.stroke_width or (max(2, gh // 8), max(3, gh // 4))


def _integer(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LayerStackError(f"{name} must be an integer, got {value!r}")
    if value < low:
        what = "a phantom needs at least 16 x 16 px; " if name in ("height", "width") else ""
        raise LayerStackError(f"{what}{name} must be at least {low}, got {value}")
    return int(value)


def _params(params: PhantomParams | None, overrides: dict) -> PhantomParams:
    known = {f.name for f in dataclasses.fields(PhantomParams)}
    if unknown := sorted(set(overrides) - known):
        raise LayerStackError(f"unknown phantom parameter(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(params or PhantomParams(), **overrides)


def phantom_arrays(params: PhantomParams | None = None, **overrides) -> dict[str, np.ndarray]:
    """Build a phantom in memory: exactly what :func:`make_phantom` writes.

    Parameters
    ----------
    params : PhantomParams, optional
        The parameters (default ``PhantomParams()``).
    **overrides
        Fields of :class:`PhantomParams` to change.

    Returns
    -------
    dict
        ``layers`` (Z, H, W) of ``params.dtype``; ``mask``, ``label``, ``ignore`` (H, W) bool.
    """
    p = _params(params, overrides)
    fields = _fields(p)
    stack = np.empty((p.layers, p.height, p.width), dtype=p.dtype)
    for z, layer in _layers(p, fields):
        stack[z] = layer
    return {"layers": stack, **{k: fields[k] for k in ("mask", "label", "ignore")}}


def make_phantom(dest: str | Path, params: PhantomParams | None = None, **overrides) -> Path:
    """Write a phantom segment into ``dest`` (drains :func:`iter_phantom`).

    Parameters
    ----------
    dest : path-like
        Segment folder, created if missing; an earlier phantom's files are replaced.
    params : PhantomParams, optional
        The parameters (default ``PhantomParams()``).
    **overrides
        Fields of :class:`PhantomParams` to change.

    Returns
    -------
    Path
        ``dest``.
    """
    for _ in iter_phantom(dest, params, **overrides):
        pass
    return Path(dest)


def iter_phantom(
    dest: str | Path, params: PhantomParams | None = None, **overrides
) -> Iterator[Progress]:
    """Write a phantom segment into ``dest``, each file atomically, yielding progress.

    Parameters
    ----------
    dest : path-like
        Segment folder, created if missing; an earlier phantom's files are replaced.
    params : PhantomParams, optional
        The parameters (default ``PhantomParams()``).
    **overrides
        Fields of :class:`PhantomParams` to change.

    Yields
    ------
    Progress
        One event per file written; ``result`` is its path.

    Raises
    ------
    LayerStackError
        On bad parameters, or when ``dest/layers`` holds other layer files
        (they would mix with the phantom's into one stack).
    """
    import tifffile
    from PIL import Image

    p = _params(params, overrides)
    dest = Path(dest)
    names = [f"{z:02d}.tif" for z in range(p.layers)]
    if (dest / "layers").is_dir():
        stale = sorted(f.name for f in (dest / "layers").iterdir() if not f.name.startswith(".")
                       and f.suffix.lower() in _LAYER_SUFFIXES and f.name not in names)
        if stale:
            shown = ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else "")
            raise LayerStackError(
                f"{dest / 'layers'} already holds other layers ({shown}); choose an empty folder"
            )
    fields = _fields(p)
    for i, key in enumerate(("mask", "label", "ignore")):
        with atomic_path(dest / f"{key}.png") as tmp:
            Image.fromarray(fields[key].astype(np.uint8) * np.uint8(255)).save(tmp)  # mode L
        yield Progress(i + 1, p.layers + 4, f"{key}.png", dest / f"{key}.png")
    for z, layer in _layers(p, fields):
        with atomic_path(dest / "layers" / names[z]) as tmp:
            tifffile.imwrite(tmp, layer, photometric="minisblack", metadata=None)
        yield Progress(z + 4, p.layers + 4, names[z], dest / "layers" / names[z])
    info = {"generator": "napari_phoenix.core.phantom", "phantom_version": PHANTOM_VERSION,
            "napari_phoenix_version": __version__, "seed": p.seed, "params": dataclasses.asdict(p),
            "resolved": {"ink_layers": list(p.ink_layers) if p.ink_layers else "surface",
                         "glyph_height": p.resolved_glyph_height(),
                         "stroke_width": list(p.resolved_stroke_width())}}
    with atomic_path(dest / "phantom.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    yield Progress(p.layers + 4, p.layers + 4, "phantom.json", dest / "phantom.json")


# --------------------------------------------------------------------------- 2-D fields


def _margin(p: PhantomParams) -> int:
    return int(np.ceil(0.7 * (p.layers - 1) / 2)) + 1


def _rng(p: PhantomParams, *stream: int) -> np.random.Generator:
    """An independent random stream per purpose, so that e.g. ink never moves the fibres."""
    return np.random.default_rng([p.seed, *stream])


def _unit(a: np.ndarray) -> np.ndarray:
    """Scale ``a`` in place to zero mean and unit std (estimated on a subsample)."""
    s = a[:: max(1, a.shape[0] // 512), :: max(1, a.shape[1] // 512)]
    a -= s.mean()
    a *= 1.0 / max(float(s.std()), 1e-6)
    return a


def _upsampled(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with aligned pixel centres (as ``ndi.zoom(grid_mode=True)``, faster)."""
    for axis in (1, 0):
        m, n = small.shape[axis], shape[axis]
        if m == n:
            continue
        x = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
        i = np.minimum(x.astype(np.intp), m - 2)
        f = (x - i).astype(np.float32)
        lo, hi = np.take(small, i, axis=axis), np.take(small, i + 1, axis=axis)
        hi -= lo
        hi *= f if axis == 1 else f[:, None]
        lo += hi
        small = lo
    return small


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Unit-std noise varying over about ``cell`` px: made on a coarse grid, upsampled."""
    step = max(1.0, cell / 4)
    small = (max(2, round(shape[0] / step)), max(2, round(shape[1] / step)))
    noise = ndi.gaussian_filter(rng.standard_normal(small, dtype=np.float32), cell / step)
    return _upsampled(_unit(noise), shape)


def _fibres(rng: np.random.Generator, shape: tuple[int, int], axis: int) -> np.ndarray:
    """Unit-std float32 streaks along ``axis``: fibres, bundles and strips, bright-skewed.

    Fibres are long, so they are made on a grid 4 times coarser along them and
    interpolated: the same look at a quarter of the cost.
    """
    small = list(shape)
    small[axis] = max(2, -(-shape[axis] // 4))
    out = np.zeros(small, np.float32)
    for across, along, weight in ((0.8, 15, 1.0), (2.5, 51, 0.8), (12.0, 101, 0.5)):
        f = rng.standard_normal(small, dtype=np.float32)
        ndi.gaussian_filter1d(f, across, axis=1 - axis, output=f, truncate=3.0)
        for _ in range(2):  # two box passes: a triangular profile along the fibre
            ndi.uniform_filter1d(f, along, axis=axis, output=f)
        out += weight * _unit(f)
        del f
    out = _unit(_upsampled(out, shape))
    out += 0.2 * (np.square(out) - 1)  # sparse bright fibres on a darker ground
    return _unit(out)


def _distance(strokes: list[np.ndarray], pad: int) -> tuple[tuple[int, int], np.ndarray]:
    """Distance to polylines of (y, x) points on a local canvas, and the canvas origin."""
    from skimage.draw import line

    pts = np.concatenate(strokes)
    y0, x0 = np.floor(pts.min(0)).astype(int) - pad
    y1, x1 = np.ceil(pts.max(0)).astype(int) + pad + 1
    free = np.ones((y1 - y0, x1 - x0), bool)
    for s in strokes:
        q = np.rint(s - (y0, x0)).astype(int)
        for (a, b), (c, d) in zip(q[:-1], q[1:]):
            free[line(a, b, c, d)] = False
    return (int(y0), int(x0)), ndi.distance_transform_edt(free).astype(np.float32)


def _blob(rng: np.random.Generator, centre, radii) -> tuple[tuple[int, int], np.ndarray]:
    """A ragged ellipse around ``centre`` (y, x): canvas origin and bool canvas."""
    (cy, cx), (ry, rx) = centre, radii
    y0, x0 = round(cy - 1.3 * ry), round(cx - 1.3 * rx)
    yy = (np.arange(y0, round(cy + 1.3 * ry) + 1) - cy)[:, None] / ry
    xx = (np.arange(x0, round(cx + 1.3 * rx) + 1) - cx)[None, :] / rx
    rag = _smooth(rng, (yy.size, xx.size), max(3.0, min(ry, rx) / 2))
    return (y0, x0), np.hypot(yy, xx) + 0.12 * rag < 1


def _paste(full: np.ndarray, origin: tuple[int, int], local: np.ndarray, op) -> None:
    """``full[window] = op(full[window], local)``, clipped to ``full``."""
    (y0, x0), (h, w) = origin, local.shape
    ys, xs, ye, xe = max(y0, 0), max(x0, 0), min(y0 + h, full.shape[0]), min(x0 + w, full.shape[1])
    if ye > ys and xe > xs:
        win = full[ys:ye, xs:xe]
        op(win, local[ys - y0 : ye - y0, xs - x0 : xe - x0], out=win)


def _arc(cx, cy, rx, ry, a0, a1, n=12):
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip(cx + rx * np.cos(t), cy - ry * np.sin(t)))


# Pseudo-Greek capitals in a unit box (x right 0..0.75, y down 0..1), as polylines.
_GLYPHS = (
    [[(0, 1), (0.35, 0), (0.7, 1)], [(0.17, 0.6), (0.53, 0.6)]],
    [[(0.1, 0), (0.1, 1)], [(0.1, 0), (0.6, 0)], [(0.1, 0.5), (0.5, 0.5)], [(0.1, 1), (0.6, 1)]],
    [[(0.35, 0), (0.35, 1)]], [_arc(0.35, 0.5, 0.33, 0.5, 0, 360, 16)],
    [[(0.05, 0), (0.65, 0)], [(0.15, 0), (0.15, 1)], [(0.55, 0), (0.55, 1)]],
    [[(0, 0), (0.7, 0)], [(0.35, 0), (0.35, 1)]], [[(0, 1), (0.35, 0), (0.7, 1)]],
    [[(0.1, 1), (0.1, 0), (0.6, 1), (0.6, 0)]], [[(0.1, 1), (0.1, 0), (0.6, 0)]],
    [[(0.1, 0), (0.1, 1)], [(0.6, 0), (0.6, 1)], [(0.1, 0.5), (0.6, 0.5)]],
    [[(0.1, 0), (0.1, 1)], [(0.6, 0), (0.1, 0.55), (0.6, 1)]],
    [[(0.05, 1), (0.12, 0), (0.4, 0.7), (0.68, 0), (0.75, 1)]],
    [[(0.1, 1), (0.1, 0)], _arc(0.1, 0.27, 0.45, 0.27, 90, -90, 9)],
    [[(0, 0), (0.35, 0.5), (0.7, 0)], [(0.35, 0.5), (0.35, 1)]],
    [[(0, 0), (0.7, 1)], [(0.7, 0), (0, 1)]],
    [_arc(0.42, 0.5, 0.4, 0.5, 50, 310, 13)], [[(0, 1), (0.35, 0), (0.7, 1), (0, 1)]],
    [_arc(0.35, 0.5, 0.33, 0.5, 0, 360, 16), [(0.12, 0.5), (0.58, 0.5)]],
    [[(0, 1), (0.2, 1)] + _arc(0.37, 0.5, 0.35, 0.45, 240, -60, 14) + [(0.5, 1), (0.72, 1)]],
)


def _text(p: PhantomParams, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns of letters: ink alpha (uint8, 255 = full ink), label and ignore (bool)."""
    rng, (h, w), gh = _rng(p, 3), mask.shape, p.resolved_glyph_height()
    alpha = np.zeros((h, w), np.uint8)
    label, ignore = np.zeros((h, w), bool), np.zeros((h, w), bool)
    pitch, advance, gutter = round(1.8 * gh), 0.8 * gh, 1.5 * gh
    top, bottom = round(0.2 * h), round(0.8 * h) - gh
    n_lines = (bottom - top) // pitch + 1 if bottom >= top else 0
    n_lines = n_lines if p.text_lines is None else min(n_lines, p.text_lines)
    col_w = (0.7 * w - (p.columns - 1) * gutter) / p.columns
    for col in range(p.columns if col_w >= gh else 0):
        x_start = 0.15 * w + col * (col_w + gutter)
        for line in range(n_lines):
            y = top + line * pitch + rng.normal(0, 0.04 * gh)
            if rng.random() < 0.15:  # a lacuna: the line is lost
                continue
            end = x_start + col_w * (rng.uniform(0.3, 0.8) if rng.random() < 0.2 else 1.0)
            x = x_start + rng.uniform(0, 0.3 * gh)
            while x + 0.75 * gh <= end:
                if rng.random() > 0.06:  # else a gap in the scriptio continua
                    _letter(rng, p, gh, (y, x), alpha, label, ignore)
                x += advance * rng.uniform(0.85, 1.15)
    alpha[~mask] = 0
    return alpha, label & mask, ignore & mask


def _letter(rng, p: PhantomParams, gh: int, at, alpha, label, ignore) -> None:
    """Draw one letter with its top-left corner at ``at``: ink, label and maybe ignore."""
    glyph = _GLYPHS[rng.integers(len(_GLYPHS))]
    sx, slant = rng.uniform(0.85, 1.15), rng.normal(0, 0.08)
    strokes = []
    for stroke in glyph:
        u = np.asarray(stroke) + rng.normal(0, 0.025, (len(stroke), 2))
        xx = at[1] + gh * (sx * u[:, 0] + slant * (1 - u[:, 1]))
        strokes.append(np.stack([at[0] + gh * u[:, 1], xx], 1))
    radius = rng.uniform(*p.resolved_stroke_width()) / 2
    origin, dist = _distance(strokes, pad=int(radius) + 3)
    ink = np.clip(radius + 0.5 - dist, 0, 1)
    ink *= np.clip(0.85 + 0.15 * _smooth(rng, dist.shape, max(4.0, gh / 5)), 0.5, 1.0)  # patchy
    if rng.random() < p.uncertain_fraction:  # faint, partly labelled, covered by ignore
        ink *= rng.uniform(0.25, 0.5)
        half = np.array(dist.shape) / 2
        _paste(ignore, *_blob(rng, origin + half, 1.2 * half + 0.1 * gh), np.logical_or)
        painted = [s for s in strokes if rng.random() < 0.5]
        if painted:
            origin_p, dist_p = _distance(painted, pad=int(radius) + 3)
            _paste(label, origin_p, dist_p <= radius + 1, np.logical_or)
    else:  # a painted label is ~1 px wider than the ink
        _paste(label, origin, dist <= radius + 1, np.logical_or)
    _paste(alpha, origin, np.rint(ink * 255).astype(np.uint8), np.maximum)


def _mask(p: PhantomParams) -> np.ndarray:
    """Papyrus: a rounded blob with a ragged edge, a few holes and cracks along the fibres."""
    rng, h, w, gh = _rng(p, 2), p.height, p.width, p.resolved_glyph_height()
    sh, sw = max(2, -(-h // 4)), max(2, -(-w // 4))
    v = np.abs(np.linspace(-1, 1, sh, dtype=np.float32))[:, None] / 0.96
    u = np.abs(np.linspace(-1, 1, sw, dtype=np.float32))[None, :] / 0.96
    field = 1 - (v**4 + u**4) ** 0.25
    field += 0.07 * _smooth(rng, (sh, sw), max(sh, sw) / 12)
    field += 0.025 * _smooth(rng, (sh, sw), 4.0) + 0.012 * _smooth(rng, (sh, sw), 1.0)
    mask = _upsampled(field, (h, w)) > 0
    scale = h * w / (1024 * 1536)
    for _ in range(rng.poisson(3 * scale)):  # holes
        r = rng.uniform(0.3, 1.2) * gh
        origin, hole = _blob(rng, rng.uniform((0, 0), (h, w)), (r, r))
        _paste(mask, origin, ~hole, np.logical_and)
    for _ in range(rng.poisson(2 * scale)):  # cracks follow the fibres
        n, axis = rng.integers(8, 20), rng.integers(2)
        length = rng.uniform(0.1, 0.35) * (h, w)[axis]
        steps = np.zeros((n, 2))
        steps[:, axis] = length / n
        steps[:, 1 - axis] = rng.normal(0, 0.15 * length / n, n)
        origin, dist = _distance([rng.uniform((0, 0), (h, w)) + np.cumsum(steps, 0)], pad=4)
        _paste(mask, origin, dist > rng.uniform(1.0, 2.5), np.logical_and)
    return mask


def _fields(p: PhantomParams) -> dict[str, np.ndarray]:
    """The 2-D fields every layer is made from (a few float32 images of full size)."""
    h, w, m = p.height, p.width, _margin(p)  # m: overhang for the per-layer fibre shift
    mask = _mask(p)
    alpha, label, ignore = _text(p, mask)
    rng = _rng(p, 0)
    th, tv = _fibres(rng, (h + 2 * m, w), axis=1), _fibres(rng, (h, w + 2 * m), axis=0)
    mottle = _smooth(rng, (h, w), 32)
    th[m : m + h] += 0.4 * mottle
    tv[:, m : m + w] += 0.4 * mottle
    del mottle
    # the surface wanders about the middle layer, as in a surface volume sampled around its
    # segmented sheet: std 0.05 x layers (1 layer of 21) over ~100 px, so every part of a
    # segment (and every chunk) shows the same spread of depths
    depth = _smooth(_rng(p, 4), (h, w), 100)
    depth *= 0.05 * p.layers
    depth += (p.layers - 1) / 2
    return {"mask": mask, "label": label, "ignore": ignore, "alpha": alpha,
            "th": th, "tv": tv, "depth": depth}


def _surface_profile(dz: np.ndarray) -> np.ndarray:
    """Ink weight over depth around the surface (``dz`` = layer - surface depth): 1 half a
    layer in front of it, fading to 0 at 3 layers in front and 2 behind (5 layers carry it)."""
    u = np.clip((dz + np.float32(0.5)) * np.float32(1 / _INK_HALF_DEPTH), -1, 1)
    return np.square(np.cos(u * np.float32(np.pi / 2)))


def _layers(p: PhantomParams, f: dict[str, np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(z, layer)`` one layer at a time, each made band by band."""
    h, w, m = p.height, p.width, _margin(p)
    top = 255 if p.dtype == "uint8" else 65535
    surface, profile = p.ink_layers is None, np.zeros(p.layers)  # ink fades in and out over depth
    if not surface:
        ink = p.ink_layers
        profile[list(ink)] = np.sin(np.pi * np.arange(1, len(ink) + 1) / (len(ink) + 1))
    thick, centre = max(1.0, 0.12 * p.layers), (p.layers - 1) / 2
    for z in range(p.layers):
        rng, out = _rng(p, 1, z), np.empty((h, w), p.dtype)
        shift = round(0.7 * (z - centre))  # fibres wander across through the depth
        for y0 in range(0, h, _BAND):
            y1 = min(h, y0 + _BAND)
            dz = z - f["depth"][y0:y1]
            env = _BASE + (_PEAK - _BASE) * np.exp(-0.5 * np.square(dz * np.float32(1 / thick)))
            th = f["th"][m + shift + y0 : m + shift + y1]
            back = np.clip(dz * np.float32(0.25) + np.float32(0.5), 0, 1)  # 1: behind the surface
            tex = th + back * (f["tv"][y0:y1, m - shift : m - shift + w] - th)
            if surface:  # ink lies on the papyrus surface, wherever it drifts in depth
                a = _surface_profile(dz) * f["alpha"][y0:y1] * np.float32(1 / 255)
            elif profile[z] > 0:
                a = f["alpha"][y0:y1] * np.float32(profile[z] / 255)
            else:
                a = None
            if a is not None:  # ink: a little brighter, a little smoother
                env *= 1 + p.ink_strength * a
                tex *= 1 - p.ink_smoothing * a
            env *= 1 + _TEXTURE * tex
            raw = np.frombuffer(rng.bytes(2 * env.size), np.uint8).reshape(2, *env.shape)
            env += (np.add(raw[0], raw[1], dtype=np.float32) - 255) * np.float32(_NOISE / 104.5)
            env = np.clip(np.rint(env * top), 1, top)  # 0 is kept for "no papyrus"
            out[y0:y1] = env * f["mask"][y0:y1]
        yield z, out
