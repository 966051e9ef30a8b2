"""The prize overlay: a composite of several windows' maps with boost, flip and invert.

As the prize's overlay viewer: the average (or maximum) of the per-window
maps, optionally flipped left-right, "boosted" (values below 1 multiplied by
``boost``, then capped at 1) and inverted (``1 - x``). Works lazily on dask
arrays (what napari shows), and on numpy arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PhoenixError


@dataclass(frozen=True)
class OverlaySettings:
    """How the composite is made from the windows' maps.

    Parameters
    ----------
    how : {"mean", "max"}
        Average or maximum over the windows.
    boost : float
        Multiply by this, then cap at 1 (1: unchanged; the title image used 3).
    flip : bool
        Mirror left-right (the title was read flipped).
    invert : bool
        ``1 - x`` (ink dark on light).
    """

    how: str = "mean"
    boost: float = 1.0
    flip: bool = False
    invert: bool = False

    def __post_init__(self) -> None:
        if self.how not in ("mean", "max"):
            raise PhoenixError(f"the composite is the 'mean' or the 'max' of the windows, not {self.how!r}")
        if not self.boost > 0:
            raise PhoenixError(f"boost must be positive; got {self.boost}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The settings of the First Title image: windows 3, 4, 5 averaged, flipped, boosted 3x.
TITLE = OverlaySettings(how="mean", boost=3.0, flip=True, invert=False)


def composite(maps: Sequence[Any], settings: OverlaySettings | None = None) -> Any:
    """The overlay of per-window maps (numpy in, numpy out; dask in, lazy dask out).

    Parameters
    ----------
    maps : sequence of array-like
        ``(Y, X)`` float maps of the same shape, or one ``(windows, Y, X)`` array.
    settings : OverlaySettings, optional

    Returns
    -------
    array
        float32 ``(Y, X)``.
    """
    s = settings or OverlaySettings()
    lazy = any(type(m).__module__.startswith("dask") for m in (maps if isinstance(maps, Sequence) else [maps]))
    if lazy:
        import dask.array as da

        stack = da.stack(list(maps)) if isinstance(maps, Sequence) else maps
        xp = da
    else:
        stack = np.stack([np.asarray(m) for m in maps]) if isinstance(maps, Sequence) else np.asarray(maps)
        xp = np
    out = stack.mean(axis=0, dtype=np.float32) if s.how == "mean" else stack.max(axis=0).astype(np.float32)
    if s.boost != 1:
        out = xp.minimum(out * np.float32(s.boost), np.float32(1))
    if s.flip:
        out = out[:, ::-1]
    if s.invert:
        out = np.float32(1) - out
    return out


def overlay_png(image: Any, path: str | os.PathLike, band_rows: int = 1024) -> Path:
    """Write a 0..1 map as an 8-bit gray PNG (``floor(255 * clip(x, 0, 1))``), a band of rows at a time.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` float map (numpy, dask or zarr).
    path : str or path-like
        ``.png`` file, written atomically.
    band_rows : int
        Rows read and encoded at a time.

    Returns
    -------
    Path
    """
    from .masks import gray_png_writer

    height, width = (int(n) for n in image.shape)
    with gray_png_writer(path, (height, width)) as out:
        for y0 in range(0, height, band_rows):
            band = image[y0 : y0 + band_rows]
            band = np.asarray(band.compute() if hasattr(band, "compute") else band, dtype=np.float32)
            out.write((np.clip(band, 0, 1) * 255).astype(np.uint8))
    return Path(path)
