"""open_stack on every layout and format, laziness, pyramids and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import napari_phoenix as nx
from napari_phoenix import LayerStackError
from napari_phoenix.core import stack as stack_mod


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_segment_folder_and_layers_folder_give_the_same_stack(write_stack, dtype):
    layers, expected = write_stack(dtype=dtype)
    for path in (layers.parent, layers):
        st = nx.open_stack(path)
        assert st.shape == expected.shape and st.dtype == dtype
        assert st.layer_numbers == tuple(range(21))
        np.testing.assert_array_equal(st.data.compute(), expected)


def test_nothing_is_read_when_opening(write_stack):
    layers, _ = write_stack(shape=(300, 400), dtype=np.uint16)
    st = nx.open_stack(layers)
    assert st.bytes_read == 0


def test_unpadded_names_keep_their_numbers_and_order(write_stack):
    # 5.tif ... 25.tif: numeric, not lexical, order; numbers kept
    layers, expected = write_stack(n=21, start=5, pad=0)
    st = nx.open_stack(layers)
    assert st.layer_numbers == tuple(range(5, 26))
    np.testing.assert_array_equal(st.layers(10, 12).compute(), expected[5:8])
    assert [p.name for p in st.paths[:6]] == ["5.tif", "6.tif", "7.tif", "8.tif", "9.tif", "10.tif"]


def test_65_layers(write_stack):
    layers, expected = write_stack(n=65, shape=(16, 24))
    st = nx.open_stack(layers)
    assert st.shape == (65, 16, 24)
    np.testing.assert_array_equal(st.layers(60, 64).compute(), expected[60:])


@pytest.mark.parametrize("ext,dtype", [("png", np.uint8), ("png", np.uint16), ("tiff", np.uint8), ("jpg", np.uint8)])
def test_other_layer_formats(write_stack, ext, dtype):
    layers, expected = write_stack(n=4, ext=ext, dtype=dtype)
    st = nx.open_stack(layers)
    assert st.dtype == dtype
    np.testing.assert_array_equal(st.data.compute(), expected)


@pytest.mark.parametrize(
    "tiff_kwargs",
    [
        {"compression": "zlib", "rowsperstrip": 8},
        {"tile": (32, 32)},
        {"byteorder": ">"},
        {"rowsperstrip": 5},  # uncompressed, many strips
    ],
    ids=["zlib-strips", "tiled", "big-endian", "strips"],
)
def test_tiff_variants_read_windows_exactly(write_stack, tiff_kwargs):
    layers, expected = write_stack(n=3, shape=(70, 90), dtype=np.uint16, tiff_kwargs=tiff_kwargs)
    st = nx.open_stack(layers, chunks=(16, 32))
    np.testing.assert_array_equal(st.data.compute(), expected)
    np.testing.assert_array_equal(st.data[:, 13:51, 7:66].compute(), expected[:, 13:51, 7:66])
    assert st.data.dtype.byteorder in ("=", "|")


def test_window_reads_only_the_window(write_stack):
    # 21 uint16 layers of 2048 x 3072; 512 x 512 windows through layers 5..20
    layers, expected = write_stack(n=21, shape=(2048, 3072), dtype=np.uint16)
    st = nx.open_stack(layers)
    window = st.data[5:21, 700:1212, 1000:1512].compute()
    np.testing.assert_array_equal(window, expected[5:21, 700:1212, 1000:1512])
    # exactly the window's bytes: the slice is fused into the read, whole
    # layers (or even the dask chunks around the window) are never read
    assert st.bytes_read == 16 * 512 * 512 * 2
    before = st.bytes_read
    direct = st.read(5, 20, slice(700, 1212), slice(1000, 1512))
    np.testing.assert_array_equal(direct, window)
    assert st.bytes_read - before == 16 * 512 * 512 * 2
    before = st.bytes_read
    np.testing.assert_array_equal(st.data[3, 10:20, 5:7].compute(), expected[3, 10:20, 5:7])
    assert st.bytes_read - before == 10 * 2 * 2


def test_pyramid_levels_are_strided_views_reading_fewer_rows(write_stack, monkeypatch):
    monkeypatch.setattr(stack_mod, "MIN_LEVEL_SIDE", 64)
    layers, expected = write_stack(n=3, shape=(300, 500), dtype=np.uint16)
    st = nx.open_stack(layers, chunks=(64, 64))
    assert [lv.shape for lv in st.levels] == [(3, 300, 500), (3, 150, 250), (3, 75, 125), (3, 38, 63)]
    for k, lv in enumerate(st.levels):
        np.testing.assert_array_equal(lv.compute(), expected[:, :: 2**k, :: 2**k])
    before = st.bytes_read
    st.levels[3][1].compute()
    # every 8th row of one layer, full width
    assert st.bytes_read - before == 38 * 500 * 2


def test_multipage_tiff(tmp_path):
    data = np.random.default_rng(1).integers(0, 65535, (5, 40, 50), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data)
    st = nx.open_stack(path)
    assert st.kind == "tiff" and st.layer_numbers == (0, 1, 2, 3, 4)
    np.testing.assert_array_equal(st.data[:, 5:20, 10:45].compute(), data[:, 5:20, 10:45])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array(tmp_path, zarr_format):
    import zarr

    data = np.arange(4 * 30 * 40, dtype=np.uint16).reshape(4, 30, 40)
    arr = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(1, 16, 16), dtype=data.dtype, zarr_format=zarr_format)
    arr[:] = data
    arr.attrs["layer_numbers"] = [5, 6, 7, 8]
    st = nx.open_stack(tmp_path / "a.zarr")
    assert st.kind == "zarr" and st.layer_numbers == (5, 6, 7, 8)
    np.testing.assert_array_equal(st.layers(6, 7).compute(), data[1:3])


def test_ome_zarr_multiscale_group(tmp_path):
    import zarr

    data = np.arange(3 * 64 * 80, dtype=np.uint8).reshape(3, 64, 80)
    root = zarr.open_group(tmp_path / "v.ome.zarr", mode="w", zarr_format=2)
    datasets = []
    for level in range(3):
        s = 2**level
        a = root.create_array(str(level), shape=data[:, ::s, ::s].shape, chunks=(1, 32, 32), dtype=data.dtype)
        a[:] = data[:, ::s, ::s]
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": [1, s, s]}]})
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "zyx"], "datasets": datasets}]
    st = nx.open_stack(tmp_path / "v.ome.zarr")
    assert [lv.shape for lv in st.levels] == [(3, 64, 80), (3, 32, 40), (3, 16, 20)]
    np.testing.assert_array_equal(st.data.compute(), data)


def test_zarr_group_of_unrelated_arrays_is_refused(tmp_path):
    import zarr

    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    root.create_array("volume", shape=(2, 8, 8), dtype="u1")
    root.create_array("labels", shape=(8, 8), dtype="u1")
    with pytest.raises(LayerStackError, match="several arrays"):
        nx.open_stack(tmp_path / "g.zarr")


# ---- bad input ---------------------------------------------------------------------------


def test_layers_of_different_sizes(write_stack):
    layers, _ = write_stack(n=8, shape=(50, 100))
    tifffile.imwrite(layers / "07.tif", np.zeros((50, 94), np.uint8))
    with pytest.raises(LayerStackError, match=r"layer 07\.tif is 94 x 50 px.*00\.tif is 100 x 50"):
        nx.open_stack(layers)


def test_layers_of_different_bit_depths(write_stack):
    layers, _ = write_stack(n=4)
    tifffile.imwrite(layers / "02.tif", np.zeros((64, 96), np.uint16))
    with pytest.raises(LayerStackError, match=r"02\.tif is uint16.*uint8"):
        nx.open_stack(layers)


def test_missing_layer_numbers(write_stack):
    layers, _ = write_stack(n=10)
    (layers / "04.tif").unlink()
    (layers / "07.tif").unlink()
    with pytest.raises(LayerStackError, match="missing 4, 7"):
        nx.open_stack(layers)


def test_same_number_twice(write_stack):
    layers, _ = write_stack(n=3, pad=2)
    tifffile.imwrite(layers / "1.tif", np.zeros((64, 96), np.uint8))
    with pytest.raises(LayerStackError, match="layer 1 is there twice"):
        nx.open_stack(layers)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayerStackError, match="no layer files.*empty"):
        nx.open_stack(tmp_path / "empty")


def test_folder_without_layer_files_lists_what_is_there(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hi")
    with pytest.raises(LayerStackError, match="notes.txt"):
        nx.open_stack(tmp_path / "x")


def test_missing_path(tmp_path):
    with pytest.raises(LayerStackError, match="no such file"):
        nx.open_stack(tmp_path / "nope")


def test_unreadable_tiff_names_the_file(write_stack):
    layers, _ = write_stack(n=3)
    (layers / "01.tif").write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(LayerStackError, match=r"01\.tif: not a readable TIFF"):
        nx.open_stack(layers)


def test_truncated_tiff_is_caught_at_open(write_stack):
    layers, _ = write_stack(n=3, shape=(200, 300))
    path = layers / "02.tif"
    raw = path.read_bytes()
    # tifffile writes the header first and the pixels after; cut the pixels short
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LayerStackError, match=r"02\.tif.*truncated"):
        nx.open_stack(layers)


def test_truncated_after_open_gives_clear_error_on_read(write_stack):
    layers, _ = write_stack(n=2, shape=(200, 300))
    st = nx.open_stack(layers, chunks=(50, 300))
    path = layers / "01.tif"
    path.write_bytes(path.read_bytes()[: 40_000])
    with pytest.raises(LayerStackError, match=r"01\.tif.*truncated"):
        st.data[1, 150:200].compute()


def test_color_layer_is_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "layers"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"{i:02d}.png")
    with pytest.raises(LayerStackError, match="RGB image; layers must be 8- or 16-bit grayscale"):
        nx.open_stack(folder)


def test_layer_number_out_of_range(write_stack):
    layers, _ = write_stack(n=5)
    with pytest.raises(LayerStackError, match="layer 9 is not in this stack"):
        nx.open_stack(layers).layers(2, 9)


def test_contrast_limits_are_cheap_and_sane(write_stack):
    layers, _ = write_stack(n=3, shape=(2000, 3000), dtype=np.uint16)
    st = nx.open_stack(layers)
    lo, hi = st.contrast_limits()
    assert 0 <= lo < 2000 and 63000 < hi <= 65535
    assert st.bytes_read < 2000 * 3000 * 2 / 4  # a strided sample, not a full pass
    layers8, _ = write_stack(n=2, dtype=np.uint8, folder="b/layers")
    assert nx.open_stack(layers8).contrast_limits() == (0.0, 255.0)
