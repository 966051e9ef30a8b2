"""The reader, writer and sample data through a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import napari_phoenix as nx
from napari_phoenix.core import stack as stack_mod


@pytest.fixture
def segment(write_stack, write_png):
    """A small 16-bit segment starting at layer 3 with mask, label and ignore."""
    layers, expected = write_stack(n=6, shape=(64, 96), dtype=np.uint16, start=3)
    root = layers.parent
    yy, xx = np.mgrid[:64, :96]
    mask = np.where((yy > 4) & (xx > 4), 255, 0)
    label = np.where((yy > 20) & (yy < 30) & (xx > 10) & (xx < 60), 255, 0)
    ignore = np.where((yy > 25) & (yy < 40) & (xx > 50) & (xx < 80), 255, 0)
    write_png("segment/mask.png", mask)
    write_png("segment/label.png", label)
    write_png("segment/ignore.png", ignore)
    return root, expected, mask > 0, label > 0, ignore > 0


def test_segment_opens_as_stack_and_three_mask_layers(make_napari_viewer, segment):
    root, expected, mask, label, ignore = segment
    viewer = make_napari_viewer()
    layers = viewer.open(str(root), plugin="napari-phoenix")
    names = [ly.name for ly in layers]
    assert names == ["segment", "segment mask", "segment label", "segment ignore"]
    img = viewer.layers["segment"]
    assert img._type_string == "image" and not img.multiscale
    np.testing.assert_array_equal(np.asarray(img.data), expected)
    assert img.metadata["phoenix"]["layer_numbers"] == [3, 4, 5, 6, 7, 8]
    assert img.metadata["phoenix"]["paths"][0].endswith("layers/03.tif")
    # the slider counts layer numbers: world z 3..8
    assert viewer.dims.range[0].start == 3 and viewer.dims.range[0].stop == 8
    assert viewer.dims.axis_labels[0] == "layer"
    for role, truth in (("mask", mask), ("label", label), ("ignore", ignore)):
        ly = viewer.layers[f"segment {role}"]
        assert ly._type_string == "labels"
        np.testing.assert_array_equal(ly.data.astype(bool), truth)
        assert ly.metadata["phoenix"]["path"] == str(root / f"{role}.png")
        np.testing.assert_array_equal(ly.scale, img.scale[1:])


def test_large_stack_opens_multiscale_and_lazy(make_napari_viewer, write_stack, monkeypatch):
    monkeypatch.setattr(stack_mod, "MIN_LEVEL_SIDE", 256)
    layers, expected = write_stack(n=3, shape=(1200, 900), dtype=np.uint16)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(layers), plugin="napari-phoenix")
    assert layer.multiscale and len(layer.data) == 4
    assert layer.data[0].__class__.__module__.startswith("dask")
    lo, hi = layer.contrast_limits
    assert 0 <= lo < hi <= 65535


def test_viewer_reads_only_what_it_shows(make_napari_viewer, write_stack, monkeypatch, qtbot):
    from napari_phoenix.core.sources import RawTiffSource

    monkeypatch.setattr(stack_mod, "MIN_LEVEL_SIDE", 256)
    layers, _ = write_stack(n=3, shape=(2400, 3200), dtype=np.uint16)
    pixels = []
    original = RawTiffSource.read

    def counting(self, ys, xs):
        out = original(self, ys, xs)
        pixels.append(out.size)
        return out

    monkeypatch.setattr(RawTiffSource, "read", counting)
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(layers), plugin="napari-phoenix")
    viewer.reset_view()
    viewer.screenshot(canvas_only=True, flash=False)
    assert pixels, "nothing was read"
    # zoomed out: napari shows a coarse level; zoomed in far from the corner it
    # first showed (and cached): a window of level 0
    viewer.camera.center = (0, 1900, 2600)
    viewer.camera.zoom = 8
    pixels.clear()
    viewer.screenshot(canvas_only=True, flash=False)  # draws, which re-slices for the view
    qtbot.waitUntil(lambda: layer.data_level == 0 and bool(pixels), timeout=5000)
    assert 0 < sum(pixels) < 2400 * 3200 / 4  # a window, not the layer


def test_label_shape_mismatch_is_a_clear_error(segment, write_png):
    root = segment[0]
    write_png("segment/label.png", np.zeros((64, 90), np.uint8))
    with pytest.raises(nx.MaskError, match=r"label\.png is 90 x 64 px .* layers are 96 x 64"):
        nx.open_segment(root)


def test_reader_declines_what_is_not_a_stack(tmp_path):
    from napari_phoenix._napari.reader import get_reader

    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None
    assert get_reader([str(tmp_path), str(tmp_path)]) is None


def test_writer_saves_labels_png_and_keeps_history(make_napari_viewer, segment):
    root, _, _, label, ignore = segment
    viewer = make_napari_viewer()
    viewer.open(str(root), plugin="napari-phoenix")
    ink = viewer.layers["segment label"]
    # paint more ink, including under the ignore mask
    ink.paint((35, 70), 1, refresh=True)
    painted = ink.data.astype(bool)
    assert (painted & ignore).any()
    ink.save(str(root / "label.png"), plugin="napari-phoenix")
    saved = nx.read_mask(root / "label.png")
    np.testing.assert_array_equal(saved, painted)
    assert Image.open(root / "label.png").mode == "L"
    history = sorted((root / ".history").glob("label-*.png"))
    assert len(history) == 1
    np.testing.assert_array_equal(nx.read_mask(history[0]), label)
    # ignore was not touched, so ink under ignore survives a reload
    viewer2 = make_napari_viewer()
    viewer2.open(str(root), plugin="napari-phoenix")
    np.testing.assert_array_equal(viewer2.layers["segment label"].data.astype(bool), painted)
    np.testing.assert_array_equal(viewer2.layers["segment ignore"].data.astype(bool), ignore)


def test_sample_data_is_the_phantom_in_the_real_layout(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_PHOENIX_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-phoenix", "phantom")
    kinds = [(ly._type_string, ly.metadata["phoenix"]["role"]) for ly in viewer.layers]
    assert kinds == [("image", "stack"), ("labels", "mask"), ("labels", "label"), ("labels", "ignore")]
    seg = tmp_path / "cache" / "sample-uint8"
    assert (seg / "layers" / "20.tif").is_file() and (seg / "label.png").is_file()
    assert viewer.layers[0].data.shape[0] == 21
    assert viewer.layers["sample-uint8 label"].data.any()


def test_screenshot_of_the_canvas_is_not_blank(make_napari_viewer, segment):
    root = segment[0]
    viewer = make_napari_viewer(show=True)
    viewer.open(str(root), plugin="napari-phoenix")
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot.shape[2] == 4
    rgb = shot[..., :3].astype(int)
    background = rgb[0, 0]
    differs = np.abs(rgb - background).sum(axis=2) > 30
    assert differs.mean() > 0.2, "the canvas shows (almost) nothing"
    # the ink label is drawn in red somewhere
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 120) & (rgb[..., 2] < 120)
    assert red.any()


def test_show_segment_opens_it_at_the_middle_layer(make_napari_viewer, segment):
    from napari_phoenix._napari.viewer import show_segment

    root = segment[0]
    viewer = make_napari_viewer()
    assert show_segment(root, viewer) is viewer
    assert len(viewer.layers) == 4
    assert viewer.dims.point[0] == 6  # layers 3..8, middle is the 4th


def test_scripted_session_example_runs(tmp_path, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "scripted_session.py"
    monkeypatch.setattr(sys, "argv", [str(example), "--out", str(tmp_path), "--headless"])
    runpy.run_path(str(example), run_name="__main__")
    assert len(list((tmp_path / "segment" / ".history").glob("label-*.png"))) == 1
