"""Tests of the synthetic segment ("phantom") generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi

from napari_phoenix.core.errors import LayerStackError, PhoenixError
from napari_phoenix.core.phantom import (
    PHANTOM_VERSION,
    PhantomParams,
    iter_phantom,
    make_phantom,
    phantom_arrays,
)
from napari_phoenix.core.sources import RawTiffSource, layer_source

SMALL = PhantomParams(height=256, width=384, columns=1)  # 32 px letters, 3 lines of text
TINY = PhantomParams(height=96, width=128)


@pytest.fixture(scope="module")
def small():
    return phantom_arrays(SMALL)


@pytest.fixture(scope="module")
def small_no_ink():
    return phantom_arrays(SMALL, ink_strength=0.0, ink_smoothing=0.0)


def _files(folder):
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_writes_the_segment_layout(tmp_path):
    events = list(iter_phantom(tmp_path / "seg", TINY))
    dest = tmp_path / "seg"
    assert [e.done for e in events] == list(range(1, 26)) and events[-1].total == 25
    assert events[-1].result == dest / "phantom.json"
    names = [f"{z:02d}.tif" for z in range(21)]
    assert sorted(p.name for p in (dest / "layers").iterdir()) == names
    assert sorted(_files(dest)) == sorted(
        ["ignore.png", "label.png", "mask.png", "phantom.json"] + [f"layers/{n}" for n in names]
    )  # no temporary files left behind
    arrays = phantom_arrays(TINY)
    for z, name in enumerate(names):
        with tifffile.TiffFile(dest / "layers" / name) as tif:
            page = tif.pages[0]
            assert len(tif.pages) == 1 and page.compression == 1
            layer = page.asarray()
        assert layer.shape == (96, 128) and layer.dtype == np.uint8
        np.testing.assert_array_equal(layer, arrays["layers"][z])
    for key in ("mask", "label", "ignore"):
        with Image.open(dest / f"{key}.png") as im:
            assert im.mode == "L" and im.size == (128, 96)
            values = np.asarray(im)
        assert set(np.unique(values)) <= {0, 255}
        np.testing.assert_array_equal(values == 255, arrays[key])


def test_layers_are_read_by_the_raw_window_reader(tmp_path):
    dest = make_phantom(tmp_path / "seg", TINY, layers=3)
    source = layer_source(dest / "layers" / "01.tif")
    assert isinstance(source, RawTiffSource)
    expected = phantom_arrays(TINY, layers=3)["layers"][1]
    np.testing.assert_array_equal(source.read(slice(10, 50), slice(7, 99)), expected[10:50, 7:99])


def test_same_parameters_give_identical_files(tmp_path):
    a = _files(make_phantom(tmp_path / "a", TINY))
    b = _files(make_phantom(tmp_path / "b", TINY))
    assert a == b
    c = _files(make_phantom(tmp_path / "c", TINY, seed=1))
    assert a["layers/10.tif"] != c["layers/10.tif"] and a["mask.png"] != c["mask.png"]
    assert a["phantom.json"] != c["phantom.json"]


def test_rewriting_a_phantom_in_place_and_refusing_foreign_layers(tmp_path):
    dest = make_phantom(tmp_path / "seg", TINY, layers=4)
    make_phantom(dest, TINY, layers=4, seed=3)  # the same file names: replaced
    assert json.loads((dest / "phantom.json").read_text())["seed"] == 3
    with pytest.raises(LayerStackError, match="already holds other layers .*03.tif"):
        make_phantom(dest, TINY, layers=3)
    assert json.loads((dest / "phantom.json").read_text())["seed"] == 3  # nothing written


def test_phantom_json_records_what_made_it(tmp_path):
    params = PhantomParams(height=64, width=80, layers=7, seed=5, ink_layers=[2, 3], dtype="uint16")
    info = json.loads((make_phantom(tmp_path / "seg", params) / "phantom.json").read_text())
    assert info["phantom_version"] == PHANTOM_VERSION and info["seed"] == 5
    assert info["generator"] == "napari_phoenix.core.phantom"
    assert PhantomParams(**info["params"]) == params
    assert info["resolved"] == {"ink_layers": [2, 3], "glyph_height": 24, "stroke_width": [3, 6]}
    bundled = PhantomParams()  # the sample segment's size: letters and pens as wide as the prize's real labels
    assert bundled.resolved_glyph_height() == 128 and bundled.resolved_stroke_width() == (16, 32)
    info = json.loads((make_phantom(tmp_path / "surface", height=64, width=80) / "phantom.json").read_text())
    assert info["resolved"]["ink_layers"] == "surface"


def test_mask_is_ragged_papyrus_with_zero_outside(small):
    mask, layers = small["mask"], small["layers"]
    assert 0.5 < mask.mean() < 0.97
    rows = np.flatnonzero(mask.any(1))
    left = np.array([np.flatnonzero(mask[r])[0] for r in rows])
    assert len(np.unique(left)) > 10  # a ragged edge, not a rectangle
    ys, xs = np.nonzero(mask)
    assert mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].mean() < 0.97
    for layer in layers:  # 0 exactly where there is no papyrus: a mask can be made from a layer
        np.testing.assert_array_equal(layer != 0, mask)


def test_ink_and_ignore_lie_inside_the_mask(small):
    mask, label, ignore = small["mask"], small["label"], small["ignore"]
    assert 0.02 < label[mask].mean() < 0.4
    assert not (label & ~mask).any() and not (ignore & ~mask).any()
    assert phantom_arrays(SMALL, layers=1, uncertain_fraction=0.5)["ignore"].any()


def test_ink_brightens_only_under_label_or_ignore(small, small_no_ink):
    diff = small["layers"].astype(np.int32) - small_no_ink["layers"]
    np.testing.assert_array_equal(small["label"], small_no_ink["label"])
    under = small["label"] & ~small["ignore"]
    assert not diff[:, ~(small["label"] | small["ignore"])].any()
    assert max(diff[z][under].mean() for z in range(21)) > 2  # brighter under ink
    assert not diff[:3].any() and not diff[-3:].any()  # far from the surface: no ink


def test_ink_lies_on_the_surface_wherever_it_drifts():
    """The layer where ink adds most follows the brightest layer (the surface) across the image."""
    params = PhantomParams(height=512, width=1536, columns=3, seed=3)
    ink, plain = phantom_arrays(params), phantom_arrays(params, ink_strength=0.0, ink_smoothing=0.0)
    under = ndi.binary_erosion(ink["label"] & ~ink["ignore"], iterations=2)
    gain = ndi.uniform_filter(ink["layers"].astype(np.float32) - plain["layers"], (1, 9, 9))
    surface = ndi.uniform_filter(plain["layers"].astype(np.float32), (1, 31, 31)).argmax(0)
    peak = gain.argmax(0)
    assert np.ptp(surface[under]) >= 3  # the surface drifts over several layers under the text ...
    assert np.corrcoef(peak[under], surface[under])[0, 1] > 0.7  # ... and the ink goes with it
    assert np.abs(np.median(peak[under] - surface[under])) <= 1
    for z in range(21):  # never more than 3 layers from the surface
        far = under & (np.abs(z - surface) > 4)
        assert not (ink["layers"][z][far] != plain["layers"][z][far]).any()


def test_ink_smooths_the_fibre_texture():
    params = PhantomParams(height=256, width=384, columns=1, glyph_height=60)  # strokes 7-15 px wide
    small, small_no_ink = phantom_arrays(params), phantom_arrays(params, ink_strength=0.0, ink_smoothing=0.0)
    under = ndi.binary_erosion(small["label"] & ~small["ignore"], iterations=2)

    def energy(layers):  # fibre texture: squared high-pass, per layer and pixel
        layers = layers.astype(np.float32)
        return np.square(layers - ndi.uniform_filter(layers, (1, 5, 5)))

    surface = ndi.uniform_filter(small_no_ink["layers"].astype(np.float32), (1, 31, 31)).argmax(0)
    at_surface = lambda e: np.take_along_axis(e, surface[None], 0)[0][under].mean()  # noqa: E731
    ink, plain = energy(small["layers"]), energy(small_no_ink["layers"])
    assert at_surface(ink) < 0.8 * at_surface(plain)  # on the surface, ink hides much of the texture
    np.testing.assert_array_equal(ink[2], plain[2])  # far from the surface it changes nothing


@pytest.mark.parametrize("seed", [0, 1])
def test_ink_is_not_visible_on_any_single_layer(seed):
    arrays = phantom_arrays(SMALL, seed=seed)
    ink = arrays["label"] & ~arrays["ignore"]
    around = ndi.binary_dilation(ink, iterations=6) & ~ndi.binary_dilation(ink, iterations=2)
    around &= arrays["mask"] & ~arrays["ignore"]
    for z, layer in enumerate(arrays["layers"].astype(np.float32)):
        contrast = layer[ink].mean() - layer[around].mean()
        # below the texture's spread (measured: at most 0.59 and 0.48 of it; 0.72 at the bundled size)
        assert abs(contrast) < 0.8 * layer[around].std(), f"ink stands out on layer {z}"


def test_16_bit_uses_the_range_with_finer_steps_than_8_bit():
    arrays = phantom_arrays(SMALL, dtype="uint16", layers=21)
    layers, mask = arrays["layers"], arrays["mask"]
    assert layers.dtype == np.uint16
    inside = layers[:, mask]
    assert inside.min() > 0 and inside.max() > 50_000 and inside.min() < 15_000
    assert (inside % 257 == 0).mean() < 0.05  # not an 8-bit image times 257
    assert len(np.unique(layers[10][mask])) > 5_000
    eight = phantom_arrays(SMALL, layers=21)
    np.testing.assert_array_equal(eight["label"], arrays["label"])
    np.testing.assert_allclose(layers[10] / 257.0, eight["layers"][10], atol=1.01)


def test_default_size_gives_patches_for_the_prize_sampling_rules():
    """128 px patches, stride 64, fully in the mask: some >= 5 % ink, many with none."""
    arrays = phantom_arrays(layers=1)
    mask, label, ignore = arrays["mask"], arrays["label"], arrays["ignore"]
    assert mask.shape == (1024, 1536)
    ink_patches = empty_patches = 0
    for y in range(0, 1024 - 128 + 1, 64):
        for x in range(0, 1536 - 128 + 1, 64):
            if not mask[y : y + 128, x : x + 128].all():
                continue
            keep = ~ignore[y + 2 : y + 128 : 4, x + 2 : x + 128 : 4]
            ink = label[y + 2 : y + 128 : 4, x + 2 : x + 128 : 4] & keep
            if keep.sum() < 0.05 * 1024:
                continue
            percent = 100 * int(ink.sum()) // 1024
            ink_patches += percent >= 5
            empty_patches += percent == 0
    assert ink_patches >= 40 and empty_patches >= 30


@pytest.mark.parametrize("shape", [(16, 16), (37, 53), (300, 17)])
def test_any_size_works(shape):
    arrays = phantom_arrays(height=shape[0], width=shape[1], layers=2)
    assert arrays["layers"].shape == (2, *shape)
    assert arrays["mask"].shape == arrays["label"].shape == arrays["ignore"].shape == shape
    assert arrays["mask"].any()


def test_custom_ink_layers():
    params = PhantomParams(height=128, width=192, layers=6, columns=1, ink_layers=(4, 1))
    assert params.ink_layers == (1, 4)
    no_ink = phantom_arrays(params, ink_strength=0, ink_smoothing=0)["layers"]
    diff = phantom_arrays(params)["layers"].astype(int) - no_ink
    assert [z for z in range(6) if diff[z].any()] == [1, 4]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"height": 0}, "at least 16 x 16 px; height must be at least 16, got 0"),
        ({"width": -5}, "width must be at least 16"),
        ({"height": 100.5}, "height must be an integer"),
        ({"layers": 0}, "layers must be at least 1"),
        ({"dtype": "float32"}, "dtype must be 'uint8' or 'uint16'"),
        ({"dtype": "bogus"}, "dtype must be 'uint8' or 'uint16'"),
        ({"ink_layers": (30,)}, r"ink_layers must be some of the layers 0..20"),
        ({"ink_layers": ()}, "ink_layers must be some of the layers"),
        ({"ink_strength": -0.1}, "ink_strength must be a number from 0 to 1"),
        ({"ink_smoothing": "a lot"}, "ink_smoothing must be a number from 0 to 1"),
        ({"stroke_width": (6, 2)}, "min <= max"),
        ({"stroke_width": 4}, r"stroke_width must be \(min, max\)"),
        ({"glyph_height": 4}, "glyph_height must be at least 8"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"colour": "red"}, r"unknown phantom parameter\(s\) \['colour'\]"),
    ],
)
def test_bad_parameters_say_what_is_wrong(overrides, message, tmp_path):
    with pytest.raises(LayerStackError, match=message) as err:
        make_phantom(tmp_path / "seg", **overrides)
    assert isinstance(err.value, PhoenixError) and isinstance(err.value, ValueError)
    assert not (tmp_path / "seg").exists()


def test_the_surface_wanders_about_the_middle_with_the_same_spread_everywhere():
    """Version 4: the bundled segment's halves (the training and held-out chunks of bench_train)
    show the same spread of surface depths, so a held-out chunk's ink lies at depths the other
    chunk shows too (version 3 drifted by whole regions: its halves' ink lay two layers apart)."""
    params = PhantomParams()
    arrays = phantom_arrays(params, ink_strength=0.0, ink_smoothing=0.0)
    surface = ndi.uniform_filter(arrays["layers"].astype(np.float32), (1, 31, 31)).argmax(0)
    inside = ndi.binary_erosion(arrays["mask"], iterations=20)
    half = params.width // 2
    spreads = []
    for part in (np.s_[:, :half], np.s_[:, half:]):
        depth = surface[part][inside[part]]
        lo, mid, hi = np.percentile(depth, [5, 50, 95])
        assert abs(mid - (params.layers - 1) / 2) <= 1 and 2 <= hi - lo <= 6  # about the middle, a few layers
        spreads.append((lo, hi))
    assert abs(spreads[0][0] - spreads[1][0]) <= 1 and abs(spreads[0][1] - spreads[1][1]) <= 1
