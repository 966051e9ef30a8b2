"""npe2 writer: a Labels layer -> a 0/255 PNG mask, keeping the previous file."""

from __future__ import annotations

import numpy as np

from ..core.masks import write_mask


def write_mask_layer(path: str, data, attributes: dict) -> list[str]:
    """Write a 2-D Labels layer as an L-mode PNG (nonzero -> 255), atomically.

    Parameters
    ----------
    path : str
        Target file, e.g. ``SEGMENT/label.png`` or ``SEGMENT/ignore.png``. An
        existing file is moved to ``.history/`` first, never overwritten.
    data : array-like
        The layer data (2-D; a 3-D layer with one plane is accepted).
    attributes : dict
        The layer attributes napari passes (unused).

    Returns
    -------
    list of str
        The path written.
    """
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    return [str(write_mask(path, arr))]
