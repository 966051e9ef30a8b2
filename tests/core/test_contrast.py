"""The prize contrast LUT, exactly, on numpy and lazily on dask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

import napari_phoenix as nx
from napari_phoenix.core.contrast import ContrastError, contrast_lut


def test_8bit_lut_is_the_prize_parabola():
    x = np.arange(256)
    np.testing.assert_array_equal(contrast_lut("uint8"), x * (x - 1) // 254)


def test_16bit_lut_follows_the_float_spline_and_differs_from_integers_at_one_code():
    lut = contrast_lut("uint16")
    x = np.arange(65536, dtype=np.int64)
    exact_int = np.clip(x * (x - 257) // (254 * 257), 0, None)
    assert np.flatnonzero(lut != exact_int).tolist() == [32639]
    assert int(exact_int[32639]) - int(lut[32639]) == 1
    # and it is the not-a-knot spline through the points x 257, clipped and truncated
    spline = CubicSpline([0, 128 * 257, 255 * 257], [0, 64 * 257, 255 * 257])
    np.testing.assert_array_equal(lut, np.clip(spline(x.astype(float)), 0, 65535).astype(np.uint16))


def test_other_points_use_the_same_spline_rule():
    pts = [(0, 0), (60, 20), (200, 230), (255, 255)]
    spline = CubicSpline([p[0] for p in pts], [p[1] for p in pts])  # not-a-knot by default
    expected = np.clip(spline(np.arange(256.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(contrast_lut("uint8", pts), expected)
    np.testing.assert_array_equal(contrast_lut("uint8", [(0, 0), (255, 255)]), np.arange(256))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_contrast_on_numpy_keeps_dtype(dtype):
    rng = np.random.default_rng(0)
    a = rng.integers(0, np.iinfo(dtype).max, (33, 17), dtype=dtype, endpoint=True)
    out = nx.contrast(a)
    assert out.dtype == dtype and out.shape == a.shape
    np.testing.assert_array_equal(out, contrast_lut(dtype)[a])


def test_contrast_on_dask_is_lazy_and_computes_only_what_is_read():
    import dask.array as da

    calls = []

    def load(block_id=None):
        calls.append(block_id)
        return np.full((10, 10), 200, np.uint8)

    arr = da.map_blocks(load, chunks=((10,) * 5, (10,) * 5), dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    out = nx.contrast(arr)
    assert calls == [] and out.dtype == np.uint8 and out.shape == (50, 50)
    window = out[12:18, 31:39].compute()
    assert len(calls) == 1  # one chunk of 25
    assert (window == 200 * 199 // 254).all()


@pytest.mark.parametrize(
    "points,match",
    [
        ([(0, 0)], "at least 2"),
        ([(0, 0), (128, 64), (100, 255)], "increase strictly"),
        ([(0, 0), (300, 255)], "outside 0..255"),
        (["ab"], "pairs"),
    ],
)
def test_bad_points_are_clear_errors(points, match):
    with pytest.raises(ContrastError, match=match):
        contrast_lut("uint8", points)


def test_float_data_is_refused():
    with pytest.raises(ContrastError, match="uint8 or uint16"):
        nx.contrast(np.zeros(3, np.float32))


def test_points_text_round_trip_and_errors():
    from napari_phoenix.core.contrast import format_points, parse_points

    assert parse_points("0,0; 128,64 ;255,255") == ((0, 0), (128, 64), (255, 255))
    assert format_points(((0, 0), (128.5, 64), (255, 255))) == "0,0; 128.5,64; 255,255"
    with pytest.raises(ContrastError, match="must look like"):
        parse_points("0,0; banana")
    with pytest.raises(ContrastError, match="increase strictly"):
        parse_points("0,0; 200,10; 100,255")
