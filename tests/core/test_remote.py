"""Remote stacks over HTTP: equal to the local ones, window reads fetch the window, cached."""

from __future__ import annotations

import os
import shutil
import socket
import threading

import numpy as np
import pytest
import tifffile
import zarr
from dask.base import tokenize

import napari_phoenix as nx
from napari_phoenix.core import remote, remote_cache, remote_file, remote_http
from napari_phoenix.core.errors import LayerStackError
from napari_phoenix.core.phantom import make_phantom
from napari_phoenix.core.remote_cache import clear_remote_cache, remote_cache_size

H, W, Z = 200, 300, 21


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_PHOENIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(remote_http, "_multi_range", {})
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Segments written once per module; tests serve copies they may change."""
    root = tmp_path_factory.mktemp("phantoms")
    make_phantom(root / "small", height=H, width=W, layers=Z)
    make_phantom(root / "wide", height=240, width=1600, layers=Z, dtype="uint16")
    return root


@pytest.fixture
def site(tmp_path, http_server, phantoms):
    """A phantom segment (21 x 200 x 300, uint8) served with ETags and multi-range."""
    root = tmp_path / "site"
    shutil.copytree(phantoms / "small", root / "seg")
    srv = http_server(root, validators=True, multi_range=True)
    return srv, root


def layer_bytes(srv):
    """Body bytes sent of layer files (not listings)."""
    return sum(n for p, n in srv.sent.items() if p.endswith(".tif"))


@pytest.mark.parametrize("suffix", ["seg/", "seg", "seg/layers/", "seg/layers"])
def test_segment_and_layers_urls_equal_the_local_stack(site, suffix):
    srv, root = site
    local = nx.open_stack(root / "seg")
    stack = nx.open_stack(srv.url + suffix)
    assert stack.shape == local.shape == (Z, H, W) and stack.dtype == local.dtype
    assert stack.layer_numbers == local.layer_numbers and stack.kind == "layers"
    assert stack.paths[3] == srv.url + "seg/layers/03.tif" and stack.paths[3].name == "03.tif"
    assert stack.data.__class__.__module__.startswith("dask")
    np.testing.assert_array_equal(np.asarray(stack.data), np.asarray(local.data))
    np.testing.assert_array_equal(
        stack.read(4, 9, slice(10, 90), slice(33, 250)),
        local.read(4, 9, slice(10, 90), slice(33, 250)),
    )


def test_remote_segment_brings_its_masks(site):
    srv, root = site
    seg, local = nx.open_segment(srv.url + "seg/"), nx.open_segment(root / "seg")
    assert seg.name == "seg" and set(seg.files) == set(local.files) == {"mask", "label", "ignore"}
    for role in ("mask", "label", "ignore"):
        np.testing.assert_array_equal(seg.read(role), local.read(role))
    assert nx.open_segment(srv.url + "seg/layers/").files.keys() == seg.files.keys()
    assert remote.is_remote_segment(srv.url + "seg") and not remote.is_remote_segment(
        srv.url + "seg/layers/"
    )


@pytest.fixture
def volume(tmp_path):
    rng = np.random.default_rng(1)
    return rng.integers(0, 65535, (5, 100, 150), dtype=np.uint16)


TIFF_VARIANTS = {
    "multi.tif": {},
    "strips.tif": {"rowsperstrip": 7},
    "bigendian.tif": {"byteorder": ">"},
    "zlib.tif": {"compression": "zlib", "rowsperstrip": 16},
    "tiled.tiff": {"compression": "zlib", "tile": (32, 32)},
}


@pytest.mark.parametrize("name", list(TIFF_VARIANTS))
def test_remote_tiffs_equal_the_data(tmp_path, http_server, volume, name):
    (tmp_path / "site").mkdir()
    tifffile.imwrite(
        tmp_path / "site" / name, volume, photometric="minisblack", **TIFF_VARIANTS[name]
    )
    srv = http_server(tmp_path / "site", validators=True, multi_range=True)
    stack = nx.open_stack(srv.url + name)
    assert stack.kind == "tiff" and stack.layer_numbers == (0, 1, 2, 3, 4)
    np.testing.assert_array_equal(np.asarray(stack.data), volume)
    np.testing.assert_array_equal(
        stack.read(1, 3, slice(5, 60, 3), slice(7, 140, 2)), volume[1:4, 5:60:3, 7:140:2]
    )
    assert stack.data.dtype == np.uint16 and stack.data.dtype.isnative


def _write_zarr(root, name, volume):
    if name == "v2.zarr":
        zarr.create_array(
            root / name, shape=volume.shape, chunks=(1, 32, 32), dtype=volume.dtype, zarr_format=2
        )[:] = volume
    elif name == "v3.zarr":
        arr = zarr.create_array(
            root / name, shape=volume.shape, chunks=(1, 32, 32), dtype=volume.dtype
        )
        arr[:] = volume
        arr.attrs["layer_numbers"] = list(range(10, 15))
    elif name == "sharded.zarr":
        zarr.create_array(
            root / name,
            shape=volume.shape,
            shards=(1, 64, 64),
            chunks=(1, 32, 32),
            dtype=volume.dtype,
        )[:] = volume
    else:  # OME-Zarr pyramids, v3 ("ome" attribute) and v2 (multiscales at the top)
        fmt = 3 if name == "v3.ome.zarr" else 2
        group = zarr.open_group(root / name, mode="w", zarr_format=fmt)
        group.create_array("0", shape=volume.shape, chunks=(1, 32, 32), dtype=volume.dtype)[:] = (
            volume
        )
        group.create_array("1", shape=(5, 50, 75), chunks=(1, 32, 32), dtype=volume.dtype)[:] = (
            volume[:, ::2, ::2]
        )
        multiscales = [{"datasets": [{"path": "0"}, {"path": "1"}]}]
        group.attrs.update(
            {"ome": {"multiscales": multiscales}} if fmt == 3 else {"multiscales": multiscales}
        )


@pytest.mark.parametrize(
    "name", ["v2.zarr", "v3.zarr", "sharded.zarr", "v3.ome.zarr", "v2.ome.zarr"]
)
def test_remote_zarr_equals_the_data(tmp_path, http_server, volume, name):
    root = tmp_path / "site"
    root.mkdir()
    _write_zarr(root, name, volume)
    srv = http_server(root, validators=True, multi_range=True)
    stack = nx.open_stack(srv.url + name)
    local = nx.open_stack(root / name)
    assert stack.kind == "zarr" and stack.layer_numbers == local.layer_numbers
    assert len(stack.levels) == len(local.levels)
    np.testing.assert_array_equal(np.asarray(stack.data), volume)
    np.testing.assert_array_equal(np.asarray(stack.levels[-1]), np.asarray(local.levels[-1]))
    # read again through a new store: the chunks come from the cache (304s, no body bytes)
    srv.reset_counts()
    np.testing.assert_array_equal(np.asarray(nx.open_stack(srv.url + name).data), volume)
    assert sum(n for p, n in srv.sent.items() if "/c" in p or p[-1].isdigit()) == 0


def test_zarr_group_without_multiscales_is_listed_from_the_index(tmp_path, http_server, volume):
    root = tmp_path / "site"
    group = zarr.open_group(root / "plain.zarr", mode="w")
    group.create_array("0", shape=volume.shape, chunks=(1, 50, 50), dtype=volume.dtype)[:] = volume
    srv = http_server(root)
    np.testing.assert_array_equal(np.asarray(nx.open_stack(srv.url + "plain.zarr/").data), volume)


@pytest.fixture
def wide(tmp_path, http_server, monkeypatch, phantoms):
    """A 16-bit segment 240 x 1,600 px: a window of 400 columns is 1/4 of each row."""
    root = tmp_path / "site"
    shutil.copytree(phantoms / "wide", root / "seg")
    monkeypatch.setattr(remote, "READAHEAD", 4096)  # headers only, not the pixels near them
    return http_server(root, validators=True, multi_range=True), root


def test_a_window_fetches_about_its_own_bytes_once(wide):
    srv, root = wide
    stack = nx.open_stack(srv.url + "seg/")
    srv.reset_counts()
    window = stack.read(5, 20, slice(60, 200), slice(600, 1000))
    np.testing.assert_array_equal(
        window, nx.open_stack(root / "seg").read(5, 20, slice(60, 200), slice(600, 1000))
    )
    assert window.nbytes <= layer_bytes(srv) <= 1.5 * window.nbytes
    assert sum(srv.range_requests.values()) == 2 * 16  # 140 row pieces per layer, 128 per request
    # the same window again, from this stack or a new one: no body bytes
    srv.reset_counts()
    stack.read(5, 20, slice(60, 200), slice(600, 1000))
    assert srv.bytes_sent == 0 and sum(srv.requests.values()) == 0
    again = nx.open_stack(srv.url + "seg/")
    srv.reset_counts()
    np.testing.assert_array_equal(again.data[5:21, 60:200, 600:1000].compute(), window)
    assert layer_bytes(srv) == 0
    # a window overlapping the cached one fetches only what is new
    srv.reset_counts()
    again.read(5, 5, slice(60, 200), slice(600, 1200))
    assert layer_bytes(srv) <= 140 * (200 * 2 + 150)  # the new 200 columns (+ part headers)


def test_concurrent_reads_of_one_window_fetch_it_once(wide):
    srv, _ = wide
    source = nx.open_stack(srv.url + "seg/").sources[7]
    srv.reset_counts()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(source.read(slice(0, 240), slice(0, 400))))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(np.array_equal(r, results[0]) for r in results)
    assert layer_bytes(srv) <= 1.2 * results[0].nbytes


def test_a_changed_file_is_fetched_again(site):
    srv, root = site
    first = nx.open_stack(srv.url + "seg/")
    token = tokenize(first.data)
    before = first.read(0, 20, slice(0, H), slice(0, W))
    layer = root / "seg" / "layers" / "05.tif"
    new = 255 - tifffile.imread(layer)
    tifffile.imwrite(layer, new)  # same size, new mtime: a new ETag
    os.utime(layer, ns=(layer.stat().st_atime_ns, layer.stat().st_mtime_ns + 10**9))
    srv.reset_counts()
    second = nx.open_stack(srv.url + "seg/")
    after = second.read(0, 20, slice(0, H), slice(0, W))
    np.testing.assert_array_equal(after[5], new)
    np.testing.assert_array_equal(np.delete(after, 5, 0), np.delete(before, 5, 0))
    assert (
        srv.sent["/seg/layers/05.tif"] >= new.nbytes
        and layer_bytes(srv) == srv.sent["/seg/layers/05.tif"]
    )
    assert tokenize(second.data) != token and tokenize(
        nx.open_stack(srv.url + "seg/").data
    ) == tokenize(second.data)
    assert srv.url + "seg/layers/05.tif" in second.sources[5].token()


def test_without_validators_a_new_size_is_fetched_again(tmp_path, http_server, volume):
    root = tmp_path / "site"
    root.mkdir()
    tifffile.imwrite(root / "v.tif", volume[:2], photometric="minisblack")
    srv = http_server(root)  # no ETag / Last-Modified
    np.testing.assert_array_equal(np.asarray(nx.open_stack(srv.url + "v.tif").data), volume[:2])
    tifffile.imwrite(root / "v.tif", volume[1:4], photometric="minisblack")
    np.testing.assert_array_equal(np.asarray(nx.open_stack(srv.url + "v.tif").data), volume[1:4])


def test_server_without_multi_range_answers_one_range_at_a_time(wide, monkeypatch):
    srv, root = wide
    srv.multi_range = False
    monkeypatch.setattr(remote_file, "WHOLE_FILE_LIMIT", 0)  # as if the layers were 1 GB
    stack = nx.open_stack(srv.url + "seg/")
    window = stack.read(3, 6, slice(20, 120), slice(0, 400))
    np.testing.assert_array_equal(
        window, nx.open_stack(root / "seg").read(3, 6, slice(20, 120), slice(0, 400))
    )
    assert remote_http._multi_range[srv.url.split("/")[2]] is False


def test_server_without_range_support(wide, monkeypatch):
    srv, root = wide
    srv.range_support = False
    # small files are fetched whole, once
    stack = nx.open_stack(srv.url + "seg/layers/")
    np.testing.assert_array_equal(
        stack.read(0, 2, slice(0, 10), slice(0, 10)),
        nx.open_stack(root / "seg").read(0, 2, slice(0, 10), slice(0, 10)),
    )
    size = (root / "seg" / "layers" / "00.tif").stat().st_size
    assert srv.sent["/seg/layers/00.tif"] == size
    # big ones cannot be read by window: a clear error
    clear_remote_cache()
    monkeypatch.setattr(remote_file, "WHOLE_FILE_LIMIT", 0)
    with pytest.raises(
        LayerStackError, match=r"00\.tif: the server does not support range requests.*download"
    ):
        nx.open_stack(srv.url + "seg/layers/")


def test_flaky_server_and_dropped_connections_are_retried(site):
    srv, root = site
    srv.flaky["/seg/layers/02.tif"] = [503, 2]
    srv.drop["/seg/layers/04.tif"] = 1000
    stack = nx.open_stack(srv.url + "seg/")
    np.testing.assert_array_equal(
        np.asarray(stack.data), np.asarray(nx.open_stack(root / "seg").data)
    )


def test_http_errors_say_what_to_do(site, tmp_path):
    srv, root = site
    with pytest.raises(LayerStackError, match=r"/nothing/: not found on the server \(HTTP 404\)"):
        nx.open_stack(srv.url + "nothing/")
    srv.status["/seg/layers/03.tif"] = 404
    with pytest.raises(LayerStackError, match=r"seg/layers/03\.tif: not found.*404"):
        nx.open_stack(srv.url + "seg")
    del srv.status["/seg/layers/03.tif"]
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(LayerStackError, match=r"notes/: no layers/ folder.*readme\.txt"):
        nx.open_stack(srv.url + "notes/")
    with pytest.raises(LayerStackError, match="not a segment folder"):
        nx.open_segment(srv.url + "notes/")
    (root / "seg" / "layers" / "07.tif").unlink()
    with pytest.raises(LayerStackError, match="missing 7"):
        nx.open_stack(srv.url + "seg/")


def test_unreachable_host():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        LayerStackError, match=rf"127\.0\.0\.1:{port}/seg/: cannot reach 127\.0\.0\.1.*network"
    ):
        nx.open_stack(f"http://127.0.0.1:{port}/seg/")


def test_login_from_the_address_or_netrc_and_masked_in_errors(site, tmp_path, monkeypatch):
    srv, root = site
    srv.auth = ("reader", "s3cret")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("PHOENIX_HTTP_USER", raising=False)
    monkeypatch.delenv("PHOENIX_HTTP_PASSWORD", raising=False)
    with pytest.raises(LayerStackError, match=r"HTTP 401, a login is required.*netrc"):
        nx.open_stack(srv.url + "seg/")
    with pytest.raises(LayerStackError, match="401") as err:
        nx.open_stack(srv.url.replace("//", "//reader:wrong@") + "seg/")
    assert "wrong" not in str(err.value) and "reader:***@" in str(err.value)
    stack = nx.open_stack(srv.url.replace("//", "//reader:s3cret@") + "seg/")
    assert stack.shape == (Z, H, W) and "s3cret" not in str(stack.metadata())
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login reader password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    np.testing.assert_array_equal(
        nx.open_stack(srv.url + "seg/").read(0, 1, slice(0, 5), slice(0, 5)),
        stack.read(0, 1, slice(0, 5), slice(0, 5)),
    )
    # the environment, as for downloads (docs/data-server.md#logins)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("PHOENIX_HTTP_USER", "reader")
    with pytest.raises(LayerStackError, match="PHOENIX_HTTP_PASSWORD go together"):
        nx.open_stack(srv.url + "seg/")
    monkeypatch.setenv("PHOENIX_HTTP_PASSWORD", "s3cret")
    assert nx.open_stack(srv.url + "seg/").shape == (Z, H, W)


def test_odd_listings_link_nowhere_else(site):
    srv, root = site
    page = (
        '<a href="?C=N;O=D">Name</a><a href="../">Parent</a><a href="http://evil.example/00.tif">x</a>'
        '<a href="/elsewhere/01.tif">y</a><a href="00.tif">00.tif</a><a href="01.tif">01.tif</a>'
    )
    srv.pages["/seg/layers/"] = page
    stack = nx.open_stack(srv.url + "seg/layers/")
    assert stack.layer_numbers == (0, 1)
    assert stack.paths == (srv.url + "seg/layers/00.tif", srv.url + "seg/layers/01.tif")
    assert "/elsewhere/01.tif" not in srv.requests and "/seg/00.tif" not in srv.requests


def test_cache_can_be_measured_trimmed_and_cleared(site, cache):
    srv, root = site
    stack = nx.open_stack(srv.url + "seg/")
    expected = np.asarray(stack.data)
    assert remote_cache_size() > 0 and (cache / "remote").is_dir()
    assert clear_remote_cache(max_bytes=10**12) == 0
    assert clear_remote_cache(max_bytes=remote_cache_size() // 2) > 0
    clear_remote_cache()
    assert remote_cache_size() == 0
    srv.reset_counts()
    np.testing.assert_array_equal(np.asarray(nx.open_stack(srv.url + "seg/").data), expected)
    assert layer_bytes(srv) > 0


def test_extents_know_what_is_missing_and_where_the_rest_is():
    ext = remote_cache.Extents()
    ext.add(10, 20, fd=3, offset=0)
    ext.add(20, 25, fd=3, offset=10)  # continues in the same pack: one extent
    ext.add(30, 40, fd=4, offset=100)
    ext.add(35, 60, fd=5, offset=0)  # only 40..60 is new, stored at 5..25 of fd 5
    assert ext.starts == [10, 30, 40] and ext.stops == [25, 40, 60]
    assert ext.missing(0, 70) == [(0, 10), (25, 30), (60, 70)] and ext.missing(12, 24) == []
    assert ext.pieces(15, 25) == [(3, 5, 10)]
    assert ext.pieces(33, 45) == [(4, 103, 7), (5, 5, 5)]
    with pytest.raises(KeyError):
        ext.pieces(20, 31)


def test_plan_merges_small_gaps_and_caps_parts():
    pieces = [(i * 2000, i * 2000 + 600) for i in range(300)]
    batches = remote_http.plan(pieces, multi=True)
    assert [len(b) for b in batches] == [128, 128, 44] and batches[0][1] == (2000, 2600)
    assert remote_http.plan(pieces, multi=False) == [[(0, 299 * 2000 + 600)]]
    assert remote_http.plan([(0, 10), (100, 200)], multi=True) == [[(0, 200)]]
