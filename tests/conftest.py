"""Shared fixtures: factories that write synthetic layer stacks and segments to tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _layer(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(0, info.max, size=shape, dtype=dtype, endpoint=True)


@pytest.fixture
def write_stack(tmp_path):
    """Write numbered layer files; returns ``(folder, array (Z, Y, X))``.

    Keyword arguments: ``n`` layers, ``shape`` (rows, cols), ``dtype``, ``ext``
    (``tif``, ``png``, ``jpg``), ``start`` (first layer number), ``pad``
    (zero-padding width; 0 = unpadded), ``folder`` (relative to tmp_path),
    ``tiff_kwargs`` (passed to ``tifffile.imwrite``), ``seed``.
    """

    def make(
        n=21,
        shape=(64, 96),
        dtype=np.uint8,
        ext="tif",
        start=0,
        pad=2,
        folder="segment/layers",
        tiff_kwargs=None,
        seed=0,
    ):
        import tifffile
        from PIL import Image

        out = Path(tmp_path) / folder
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        arrays = []
        for i in range(n):
            a = _layer(rng, shape, dtype)
            if ext == "jpg":
                a = np.full(shape, 10 * i + 7, dtype)  # flat: JPEG is lossy
            name = f"{start + i:0{pad}d}.{ext}" if pad else f"{start + i}.{ext}"
            if ext in ("tif", "tiff"):
                tifffile.imwrite(out / name, a, **(tiff_kwargs or {}))
            else:
                Image.fromarray(a).save(out / name)
            arrays.append(a)
        return out, np.stack(arrays)

    return make


@pytest.fixture
def write_png(tmp_path):
    """Write a 2-D uint8 array (0/255 or any) as an L-mode PNG; returns the path."""

    def make(name, array):
        from PIL import Image

        path = Path(tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(array, np.uint8)).save(path)
        return path

    return make


@pytest.fixture
def http_server():
    """Start loopback HTTP servers (see ``tests/loopback.py``): ``http_server(root, **switches)``."""
    from loopback import start

    servers = []

    def make(root, **switches):
        state, server = start(root, **switches)
        servers.append(server)
        return state

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()
