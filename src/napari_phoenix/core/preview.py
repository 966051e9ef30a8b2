"""PNG previews of a segment's layers and masks, for headless runs and reports."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .progress import Progress
from .segment import Segment


def _to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _save_png(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return path


def iter_previews(segment: Segment, out_dir: str | Path, max_side: int = 2048) -> Iterator[Progress]:
    """Write ``layer-NN.png`` for every layer and ``masks.png``; yield progress per file.

    Parameters
    ----------
    segment : Segment
        The opened segment.
    out_dir : str or Path
        Output folder (created).
    max_side : int
        Previews are subsampled so that their longest side is at most this.

    Yields
    ------
    Progress
        ``result`` is the path written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stack = segment.stack
    z, h, w = stack.shape
    step = max(1, math.ceil(max(h, w) / max_side))
    lo, hi = stack.contrast_limits()
    width = len(str(max(stack.layer_numbers)))
    total = z + 1
    for i, number in enumerate(stack.layer_numbers):
        plane = np.asarray(stack.data[i, ::step, ::step])
        path = _save_png(out / f"layer-{number:0{max(2, width)}d}.png", _to_uint8(plane, lo, hi))
        yield Progress(i + 1, total, f"layer {number}", path)
    # masks: papyrus blue, ink red, ignore yellow, over the middle layer
    base = _to_uint8(np.asarray(stack.data[z // 2, ::step, ::step]), lo, hi)
    rgb = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
    colours = {"mask": (60, 120, 255), "label": (255, 40, 40), "ignore": (255, 210, 0)}
    alpha = {"mask": 0.2, "label": 0.6, "ignore": 0.5}
    for role, colour in colours.items():
        mask = segment.read(role)
        if mask is None:
            continue
        m = mask[::step, ::step]
        rgb[m] = (1 - alpha[role]) * rgb[m] + alpha[role] * np.asarray(colour, np.float32)
    path = _save_png(out / "masks.png", rgb.astype(np.uint8))
    yield Progress(total, total, "masks", path)
