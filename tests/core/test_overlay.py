"""The prize overlay: mean / max, boost, flip, invert; lazily on dask; streamed PNG."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from PIL import Image

from napari_phoenix.core.errors import PhoenixError
from napari_phoenix.core.overlay import TITLE, OverlaySettings, composite, overlay_png


def _maps():
    rng = np.random.default_rng(0)
    return [rng.random((40, 60), dtype=np.float32) * 0.6 for _ in range(3)]


def test_settings_as_the_prize_overlay():
    maps = _maps()
    np.testing.assert_allclose(composite(maps), np.mean(maps, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(composite(maps, OverlaySettings(how="max")), np.max(maps, axis=0))
    title = composite(maps, TITLE)
    expected = np.minimum(np.mean(maps, axis=0) * 3, 1)[:, ::-1]
    np.testing.assert_allclose(title, expected, rtol=1e-6)
    assert title.max() == 1.0 and title.dtype == np.float32
    inv = composite(maps, OverlaySettings(invert=True))
    np.testing.assert_allclose(inv, 1 - np.mean(maps, axis=0), rtol=1e-6)


def test_dask_stays_lazy_and_agrees():
    maps = _maps()
    lazy = composite([da.from_array(m, chunks=(16, 16)) for m in maps], TITLE)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), composite(maps, TITLE), rtol=1e-6)


def test_bad_settings():
    with pytest.raises(PhoenixError, match="mean"):
        OverlaySettings(how="median")
    with pytest.raises(PhoenixError, match="boost"):
        OverlaySettings(boost=0)


def test_overlay_png_in_bands(tmp_path):
    m = np.linspace(-0.5, 1.5, 50 * 30, dtype=np.float32).reshape(50, 30)
    path = overlay_png(m, tmp_path / "c.png", band_rows=7)
    got = np.asarray(Image.open(path))
    np.testing.assert_array_equal(got, (np.clip(m, 0, 1) * 255).astype(np.uint8))
