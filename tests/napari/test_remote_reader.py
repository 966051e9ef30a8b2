"""napari opens a segment at an http:// address through the plugin's reader, lazily."""

from __future__ import annotations

import numpy as np
import pytest

import napari_phoenix as nx
from napari_phoenix._napari.reader import get_reader
from napari_phoenix.core import remote, remote_http
from napari_phoenix.core import stack as stack_mod
from napari_phoenix.core.phantom import make_phantom


@pytest.fixture
def served(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("NAPARI_PHOENIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(remote_http, "_multi_range", {})
    monkeypatch.setattr(stack_mod, "MIN_LEVEL_SIDE", 256)  # a pyramid, as for real segments
    monkeypatch.setattr(remote, "READAHEAD", 4096)  # header reads: a tiny layer is mostly header
    make_phantom(tmp_path / "site" / "seg", height=768, width=1024, layers=21)
    return http_server(
        tmp_path / "site", validators=True, multi_range=True
    ), tmp_path / "site" / "seg"


def test_reader_takes_stack_addresses_only():
    assert (
        get_reader("https://dl.example.org/full-scrolls/Scroll1/segments/20230827161847/")
        is not None
    )
    assert get_reader(["https://dl.example.org/volumes/scroll.zarr"]) is not None
    assert get_reader("http://dl.example.org/a/layers/07.tif") is not None
    assert get_reader("https://dl.example.org/a/photo.png") is None
    assert get_reader("https://dl.example.org/index.html") is None


def test_napari_opens_a_remote_segment_and_pans_without_fetching_it_all(
    make_napari_viewer, qtbot, served
):
    srv, local_root = served
    viewer = make_napari_viewer()
    layers = viewer.open(srv.url + "seg/", plugin="napari-phoenix")
    assert [ly.name for ly in layers] == ["seg", "seg mask", "seg label", "seg ignore"]
    img = viewer.layers["seg"]
    assert img.multiscale and all(
        level.__class__.__module__.startswith("dask") for level in img.data
    )
    assert img.metadata["phoenix"]["paths"][0] == srv.url + "seg/layers/00.tif"
    local = nx.open_segment(local_root)
    np.testing.assert_array_equal(viewer.layers["seg label"].data.astype(bool), local.read("label"))
    np.testing.assert_array_equal(
        np.asarray(img.data[0][10, 300:340, 500:560]),
        np.asarray(local.stack.data[10, 300:340, 500:560]),
    )
    total = sum((local_root / "layers" / f"{i:02d}.tif").stat().st_size for i in range(21))
    viewer.dims.set_point(0, 10)
    camera = getattr(getattr(viewer, "scene", None), "camera", None) or viewer.camera
    for center, zoom in [
        ((100, 100), 4.0),
        ((600, 900), 4.0),
        ((400, 500), 2.0),
        ((100, 100), 4.0),
    ]:
        camera.center = center
        camera.zoom = zoom
        img.refresh()
        qtbot.wait(20)
    sent = sum(n for p, n in srv.sent.items() if p.endswith(".tif"))
    # one layer of 21 is on screen (one 1024 x 1024 dask chunk here), nothing else is fetched
    assert 0 < sent < total / 8
    before = srv.bytes_sent
    camera.center = (100, 100)  # back where it was: from the cache
    img.refresh()
    qtbot.wait(20)
    assert (
        sum(n for p, n in srv.sent.items() if p.endswith(".tif")) == sent
        and srv.bytes_sent == before
    )
