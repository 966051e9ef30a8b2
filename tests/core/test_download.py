"""Mirroring a folder of an HTTP file server: listing, selection, resume, retries, safety, auth.

End to end against the loopback server of ``tests/loopback.py`` (Apache-style
listings of a phantom segment, with faults switched on per test), plus the
listing parser on its own.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from pathlib import Path

import pytest

from napari_phoenix.core.download import (
    MANIFEST,
    DownloadError,
    DownloadParams,
    download,
    iter_download,
    parse_layer_range,
)
from napari_phoenix.core.http_index import UnsafeLink, inside, links_of, parse_hrefs
from napari_phoenix.core.http_session import public_url
from napari_phoenix.core.phantom import make_phantom

FAST = {"backoff": 0.01, "timeout": 10}  # retries without waiting seconds
PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The served folder: the 21-layer phantom segment ``seg/`` (64 x 96 px, ~6 kB a layer),
    ``odd/`` (names with spaces and unicode) and ``top/`` (folders 3 deep)."""
    root = tmp_path_factory.mktemp("site")
    make_phantom(root / "seg", height=64, width=96, layers=21)
    (root / "odd" / "layers").mkdir(parents=True)
    (root / "odd" / "layers" / "00.tif").write_bytes(b"II*\x00" + bytes(500))
    (root / "odd" / "my scan.tif").write_bytes(b"scan")
    (root / "odd" / "papyrus-ä.txt").write_bytes("ä".encode())
    (root / "odd" / "notes").mkdir()
    (root / "odd" / "notes" / "n.txt").write_text("note")
    deep = root / "top" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    for folder in (root / "top", root / "top/a", root / "top/a/b", deep):
        (folder / "f.txt").write_text(folder.name)
    return root


@pytest.fixture(scope="module")
def server(site):
    """One loopback server for the module (``tests/loopback.py``; stopping one takes half a second)."""
    from loopback import start

    state, httpd = start(site)
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def srv(server):
    """The module's server with every switch and counter back to its default."""
    for f in dataclasses.fields(server):
        if f.name not in ("root", "url", "lock"):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(server, f.name, default)
    return server


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _file_bytes_sent(srv) -> int:
    """Body bytes of files sent (listing pages left out)."""
    return sum(n for path, n in srv.sent.items() if not path.endswith("/"))


class CancelMidFile(threading.Event):
    """A cancel event (a Ctrl-C) that sets itself once ``complete`` files are done and one is part-way.

    The job asks ``is_set`` before each read block; this one looks at the destination
    each time and sets itself when a ``.partial`` holds at least one block and lacks
    at least two. That file cannot finish: its thread checks before each further
    block and at most one block is already on its way (it cannot pass a check while
    this one holds the lock). So the run stops with complete files and a part-way
    file whatever the timing, unlike counting calls, which the job's 0.25 s polling
    loop also makes.
    """

    def __init__(self, dest: Path, sizes: dict[str, int], block: int, complete: int = 2):
        super().__init__()
        self.dest, self.sizes, self.block, self.complete = dest, sizes, block, complete
        self.lock = threading.Lock()

    def _mid_file(self) -> bool:
        if sum(1 for p in self.dest.rglob("*") if p.suffix == ".tif") < self.complete:
            return False
        for part in self.dest.rglob("*.partial"):
            size = self.sizes[part.relative_to(self.dest).as_posix().removesuffix(".partial")]
            try:
                if self.block <= part.stat().st_size <= size - 2 * self.block:
                    return True
            except FileNotFoundError:  # renamed meanwhile
                pass
        return False

    def is_set(self) -> bool:
        with self.lock:
            if not super().is_set() and self._mid_file():
                self.set()
            return super().is_set()


# ---- the listing on its own -------------------------------------------------------------------

APACHE = """<html><head><title>Index of /scrolls/s5/seg/</title></head><body><h1>Index of /scrolls/s5/seg/</h1>
<table><tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td><a href="/scrolls/s5/">Parent Directory</a></td></tr>
<tr><td><a href="../">Up</a></td><td><a href="./">here</a></td><td><a href="#top">top</a></td></tr>
<tr><td><a href="layers/">layers/</a></td></tr>
<tr><td><a href="layers/">layers/</a></td></tr>
<tr><td><a href="mask.png">mask.png</a></td><td><a HREF='mask.png'>again</a></td></tr>
<tr><td><a href="my%20scan%201.tif">my scan 1.tif</a></td><td><a href="caf%C3%A9.tif">café.tif</a></td></tr>
<tr><td><a href="Tom&amp;Jerry.txt">Tom&amp;Jerry.txt</a></td><td><a href="zarr">zarr (no slash)</a></td></tr>
<tr><td><a href="/scrolls/s5/seg/meta.json">absolute but inside</a></td></tr>
<tr><td><a href="mailto:admin@example.org">mail</a></td><td><a href="javascript:void(0)">js</a></td></tr>
<tr><td><a href="../../etc/passwd">evil</a></td><td><a href="/abs">evil</a></td></tr>
<tr><td><a href="http://other.host/scrolls/s5/seg/x.tif">evil</a></td><td><a href="%2e%2e/%2e%2e/x">evil</a></td></tr>
<tr><td><a href="..\\..\\x.tif">evil</a></td><td><a href="a%5c..%5c..%5cb.tif">evil</a></td></tr>
<tr><td><a href="https://u:p@dl.example.org/scrolls/s5/seg/y.tif">evil</a></td></tr>
<tr><td><a href="sub/%2e%2e/%2e%2e/z.tif">evil</a></td></tr>
</table></body></html>"""
BASE = "https://dl.example.org/scrolls/s5/seg/"


def test_listing_keeps_entries_below_the_folder_and_refuses_escapes():
    assert parse_hrefs('<a href="a">x</a><A HREF="a">y</A><a name="n">z</a><a href="b&amp;c">') == ["a", "b&c"]
    links, rejected = links_of(APACHE, BASE, "")
    got = {ln.rel: ln.is_dir for ln in links}
    # parent, self, sort, anchor, mailto and javascript links are navigation: neither kept nor refused
    assert got == {
        "layers": True, "mask.png": None, "my scan 1.tif": None, "café.tif": None, "Tom&Jerry.txt": None,
        "zarr": None, "meta.json": None,
    }  # fmt: skip
    by_href = dict(rejected)
    assert set(by_href) == {
        "../../etc/passwd", "/abs", "http://other.host/scrolls/s5/seg/x.tif", "%2e%2e/%2e%2e/x", "..\\..\\x.tif",
        "a%5c..%5c..%5cb.tif", "https://u:p@dl.example.org/scrolls/s5/seg/y.tif", "sub/%2e%2e/%2e%2e/z.tif",
    }  # fmt: skip
    assert "another host" in by_href["http://other.host/scrolls/s5/seg/x.tif"]
    assert "outside the folder" in by_href["../../etc/passwd"]
    # below a sub-folder, paths keep the sub-folder; another host only when allowed
    links, rejected = links_of(APACHE, BASE + "layers/", "layers", allow_hosts=("other.host",))
    assert all(ln.rel.startswith("layers/") for ln in links)
    links, _ = links_of(APACHE, BASE, "", allow_hosts=("other.host",))
    assert "x.tif" in {ln.rel for ln in links}


def test_destination_paths_cannot_leave_the_destination(tmp_path):
    for rel in ("../x", "/etc/passwd", "a/../../x", "a\\b", "", "a//b", "C:/x", "x.partial", "./a"):
        with pytest.raises(UnsafeLink):
            inside(tmp_path, rel)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)  # a link in the destination to its parent
    with pytest.raises(UnsafeLink, match="outside"):
        inside(tmp_path / "out", "link/x.tif")
    assert inside(tmp_path / "out", "layers/05.tif") == tmp_path / "out" / "layers" / "05.tif"


def test_selection_by_layers_patterns_and_subfolder():
    p = DownloadParams("http://h/seg/", "d", layers=parse_layer_range("5-20"), exclude=("*.ppm",))
    assert [p.wants(r) for r in ("layers/04.tif", "layers/05.tif", "layers/20.tif", "layers/21.tif")] == [
        False, True, True, False]  # fmt: skip
    assert p.wants("mask.png") and p.wants("layers/notes.txt") and not p.wants("seg.ppm")
    p = DownloadParams("http://h/", "d", include=("*.tif", "meta/*.json"), exclude=("layers/1*",))
    assert p.wants("layers/05.tif") and not p.wants("layers/12.tif") and not p.wants("mask.png")
    assert p.wants("meta/a.json") and not p.wants("a.json")
    p = DownloadParams("http://h/", "d", subfolder="/layers/")
    assert p.subfolder == "layers" and p.wants("layers/00.tif") and not p.wants("mask.png")
    assert parse_layer_range("7") == (7, 7) and parse_layer_range(" ") is None
    for bad, message in ((dict(layers=(9, 3)), "first <= last"), (dict(workers=0), "workers must be at least 1"),
                         (dict(subfolder="../x"), "unsafe path"), (dict(url="ftp://h/x"), "http:// or https://")):
        with pytest.raises(DownloadError, match=message):
            DownloadParams(**{"url": "http://h/", "dest": "d", **bad})
    with pytest.raises(DownloadError, match="must look like 5-20"):
        parse_layer_range("5 to 20")
    assert public_url("https://me:pw@dl.example.org:8443/a/") == "https://dl.example.org:8443/a/"


# ---- against the loopback server --------------------------------------------------------------


def test_full_mirror_is_byte_identical_and_a_rerun_sends_no_file_bytes(site, srv, tmp_path):
    events = list(iter_download(DownloadParams(srv.url + "seg/", str(tmp_path / "out"), **FAST)))
    result = events[-1].result
    got = _files(tmp_path / "out")
    assert got.pop(MANIFEST)
    assert got == _files(site / "seg") and len(got) == 25  # 21 layers, 3 masks, phantom.json
    assert result.ok and len(result.downloaded) == 25 and result.skipped == ()
    # progress: listing events, then files and bytes done / total, speed and time left
    last_status = events[-2].result
    assert (last_status.files_done, last_status.files_total) == (25, 25)
    assert last_status.bytes_done == last_status.bytes_total == sum(len(b) for b in got.values())
    assert events[0].result.phase == "listing" and "files" in events[-2].message and "left" in events[-2].message
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["source"] == srv.url + "seg/" and manifest["complete"] and manifest["version"]
    assert manifest["files"]["layers/07.tif"] == {"size": (site / "seg/layers/07.tif").stat().st_size}
    assert not list((tmp_path / "out").rglob("*.partial"))

    srv.reset_counts()
    again = download(srv.url + "seg", tmp_path / "out", **FAST)  # no trailing slash: found to be a folder
    assert again.ok and len(again.skipped) == 25 and again.downloaded == ()
    assert _file_bytes_sent(srv) == 0 and srv.range_requests.total() == 0


def test_layer_range_and_patterns_select_files(site, srv, tmp_path):
    res = download(srv.url + "seg/", tmp_path / "a", layers=(5, 20), exclude=("phantom.json",), **FAST)
    layers = sorted(p.name for p in (tmp_path / "a" / "layers").iterdir())
    assert layers == [f"{i:02d}.tif" for i in range(5, 21)]
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"layers", "mask.png", "label.png", "ignore.png", MANIFEST}
    assert len(res.files) == 19
    assert "/seg/layers/04.tif" not in srv.sent and srv.requests["/seg/layers/04.tif"] == 0  # not even probed

    res = download(srv.url + "seg/", tmp_path / "b", include=("*.png",), exclude=("label*",), **FAST)
    assert sorted(res.files) == ["ignore.png", "mask.png"]
    res = download(srv.url + "seg/", tmp_path / "c", subfolder="layers", layers=(0, 1), **FAST)
    assert res.files == ("layers/00.tif", "layers/01.tif") and srv.requests["/seg/"] == 2  # seg/ not read again
    assert (tmp_path / "c" / "layers" / "01.tif").read_bytes() == (site / "seg/layers/01.tif").read_bytes()


def test_dropped_connection_resumes_with_a_range_request(site, srv, tmp_path):
    path, size = "/seg/layers/07.tif", (site / "seg/layers/07.tif").stat().st_size
    srv.drop[path] = 2500
    res = download(srv.url + "seg/", tmp_path / "out", layers=(7, 8), **FAST)
    assert res.ok and (tmp_path / "out/layers/07.tif").read_bytes() == (site / "seg/layers/07.tif").read_bytes()
    assert srv.range_requests[path] == 1 and srv.sent[path] == size  # the rest only, not the file twice

    # without retries the file fails, its .partial stays, and the next run continues it
    srv.reset_counts()
    srv.drop[path] = 3000
    with pytest.raises(DownloadError, match=r"1 of 6 files failed: layers/07.tif: connection closed after 3,000 of") as err:
        download(srv.url + "seg/", tmp_path / "again", layers=(7, 8), retries=0, **FAST)
    assert err.value.result.failed.keys() == {"layers/07.tif"} and "layers/08.tif" in err.value.result.files
    assert (tmp_path / "again/layers/07.tif.partial").stat().st_size == 3000
    assert not (tmp_path / "again/layers/07.tif").exists()
    assert not json.loads((tmp_path / "again" / MANIFEST).read_text())["complete"]
    res = download(srv.url + "seg/", tmp_path / "again", layers=(7, 8), **FAST)
    assert res.downloaded == ("layers/07.tif",) and "layers/08.tif" in res.skipped
    assert (tmp_path / "again/layers/07.tif").read_bytes() == (site / "seg/layers/07.tif").read_bytes()
    assert srv.range_requests[path] == 1 and srv.sent[path] == size


def test_server_without_range_support_starts_again_from_zero(site, srv, tmp_path):
    srv.range_support = False
    path = "/seg/layers/03.tif"
    original = (site / "seg/layers/03.tif").read_bytes()
    partial = tmp_path / "out/layers/03.tif.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(original[:1000])  # left by an interrupted run
    srv.drop[path] = 1500  # and this run is interrupted too
    res = download(srv.url + "seg/", tmp_path / "out", layers=(3, 3), include=("*.tif",), **FAST)
    assert res.ok and (tmp_path / "out/layers/03.tif").read_bytes() == original and not partial.exists()
    assert srv.range_requests[path] == 2 and srv.sent[path] == 1500 + len(original)


def test_5xx_is_retried_and_404_fails_only_that_file(site, srv, tmp_path):
    srv.flaky["/seg/layers/02.tif"] = [500, 2]  # the HEAD fails twice, then works
    srv.flaky["/seg/layers/03.tif"] = [503, 1]
    srv.status["/seg/layers/04.tif"] = 404
    with pytest.raises(DownloadError) as err:
        download(srv.url + "seg/", tmp_path / "out", layers=(2, 5), include=("layers/*",), **FAST)
    message = str(err.value)
    assert message.startswith("1 of 4 files failed: layers/04.tif: HTTP 404 Not Found")
    assert "run the same download again" in message
    assert sorted(err.value.result.files) == ["layers/02.tif", "layers/03.tif", "layers/05.tif"]
    for n in (2, 3, 5):
        assert (tmp_path / f"out/layers/0{n}.tif").read_bytes() == (site / f"seg/layers/0{n}.tif").read_bytes()
    assert srv.requests["/seg/layers/02.tif"] == 4  # 2 x 500, HEAD, GET
    # a 500 that does not go away is a failure after the retries, named like a 404
    srv.status["/seg/layers/05.tif"] = 500
    with pytest.raises(DownloadError, match=r"layers/05.tif: HTTP 500, still after 2 retries"):
        download(srv.url + "seg/", tmp_path / "x", layers=(5, 5), include=("layers/*",), retries=2, **FAST)
    srv.status["/seg/"] = 404
    with pytest.raises(DownloadError, match="HTTP 404 Not Found"):
        download(srv.url + "seg/", tmp_path / "y", **FAST)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"connection failed \(\[Errno \d+\] Connection refused\), still after 1"):
        download(f"http://127.0.0.1:{port}/seg/", tmp_path / "z", retries=1, **FAST)


def test_malicious_links_never_write_outside_the_destination(site, srv, tmp_path):
    evil = ["../../etc/passwd", "/abs", "http://other.host/x", "%2e%2e/%2e%2e/escaped.txt", "..\\..\\win.txt",
            "..%5c..%5cwin2.txt", "/seg/%2e%2e/outside.txt", "layers/../../up.txt"]  # fmt: skip
    links = "".join(f'<a href="{h}">{h}</a>' for h in evil)
    srv.pages["/seg/"] = f'<html><body><a href="../">Parent</a>{links}<a href="mask.png">mask.png</a></body></html>'
    (tmp_path / "out").mkdir()
    before = {p for p in tmp_path.rglob("*")}
    res = download(srv.url + "seg/", tmp_path / "out", **FAST)
    assert res.files == ("mask.png",)
    assert {h for h, _ in res.rejected_links} == set(evil)
    written = {p for p in tmp_path.rglob("*")} - before
    assert written == {tmp_path / "out" / "mask.png", tmp_path / "out" / MANIFEST}
    assert sum(srv.requests[p] for p in ("/abs", "/etc/passwd", "/x", "/escaped.txt", "/outside.txt")) == 0


def test_odd_listings_folders_without_slash_spaces_unicode_duplicates(site, srv, tmp_path):
    srv.pages["/odd/"] = ('<a href="layers">layers</a><a href="layers">layers</a><a href="my scan.tif">x</a>'
                          '<a href="my%20scan.tif">x</a><a href="papyrus-%C3%A4.txt">ä</a><a href="notes">n</a>')
    srv.pages["/odd/notes"] = "<html><body>a folder answered without a redirect</body></html>"
    res = download(srv.url + "odd/", tmp_path / "out", **FAST)
    # "layers" is found to be a folder by its redirect to layers/, "notes" by its HTML answer
    assert sorted(res.files) == ["layers/00.tif", "my scan.tif", "notes/n.txt", "papyrus-ä.txt"]
    assert _files(tmp_path / "out") | {MANIFEST: b""} == _files(site / "odd") | {MANIFEST: b""}
    assert srv.requests["/odd/my scan.tif"] == 2  # HEAD + GET once, though listed twice


def test_depth_and_file_count_caps(site, srv, tmp_path):
    res = download(srv.url + "top/", tmp_path / "out", max_depth=2, **FAST)
    assert sorted(res.files) == ["a/b/f.txt", "a/f.txt", "f.txt"] and res.too_deep == ("a/b/c",)
    assert srv.requests["/top/a/b/c/"] == 0
    with pytest.raises(DownloadError, match="more than 2 files"):
        download(srv.url + "top/", tmp_path / "x", max_files=2, **FAST)


def test_basic_auth_from_environment_or_netrc_never_shows_the_password(site, srv, tmp_path, monkeypatch):
    srv.auth = ("reader", PASSWORD)
    monkeypatch.delenv("PHOENIX_HTTP_USER", raising=False)
    monkeypatch.delenv("PHOENIX_HTTP_PASSWORD", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(DownloadError, match="HTTP 401.*PHOENIX_HTTP_USER and PHOENIX_HTTP_PASSWORD"):
        download(srv.url + "seg/", tmp_path / "no", **FAST)

    monkeypatch.setenv("PHOENIX_HTTP_USER", "reader")
    monkeypatch.setenv("PHOENIX_HTTP_PASSWORD", PASSWORD)
    srv.status["/seg/layers/09.tif"] = 404
    messages = []
    with pytest.raises(DownloadError) as err:
        for ev in iter_download(DownloadParams(srv.url + "seg/", str(tmp_path / "env"), layers=(8, 9), **FAST)):
            messages.append(ev.message + repr(ev.result))
    messages.append(str(err.value) + repr(err.value.result))
    assert (tmp_path / "env/layers/08.tif").read_bytes() == (site / "seg/layers/08.tif").read_bytes()
    manifest = (tmp_path / "env" / MANIFEST).read_text()
    assert PASSWORD not in manifest and all(PASSWORD not in m for m in messages)
    del srv.status["/seg/layers/09.tif"]

    monkeypatch.delenv("PHOENIX_HTTP_USER")
    monkeypatch.delenv("PHOENIX_HTTP_PASSWORD")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login reader password {PASSWORD}\n")
    netrc.chmod(0o600)
    res = download(srv.url + "seg/", tmp_path / "netrc-param", layers=(1, 1), include=("layers/*",), netrc=str(netrc),
                   **FAST)  # fmt: skip
    assert res.files == ("layers/01.tif",)
    monkeypatch.setenv("NETRC", str(netrc))  # requests' own netrc lookup
    assert download(srv.url + "seg/", tmp_path / "netrc-env", layers=(1, 1), include=("layers/*",), **FAST).ok
    # credentials in the URL work too, and are stored nowhere
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    url = srv.url.replace("http://", f"http://reader:{PASSWORD}@") + "seg/"
    assert PASSWORD not in repr(DownloadParams(url, str(tmp_path / "url")))
    res = download(url, tmp_path / "url", include=("mask.png",), **FAST)
    assert res.ok and PASSWORD not in (tmp_path / "url" / MANIFEST).read_text() and PASSWORD not in repr(res)
    with pytest.raises(DownloadError, match="no entry for 127.0.0.1"):
        (tmp_path / "other").write_text("machine example.org login a password b\n")
        download(srv.url + "seg/", tmp_path / "o", netrc=str(tmp_path / "other"), **FAST)


def test_cancel_keeps_partial_files_and_a_later_run_completes(site, srv, tmp_path):
    params = DownloadParams(srv.url + "seg/", str(tmp_path / "out"), include=("*.tif",), block_size=512, workers=3,
                            **FAST)  # fmt: skip
    original = _files(site / "seg")
    cancel = CancelMidFile(tmp_path / "out", {k: len(v) for k, v in original.items()}, params.block_size)
    events = list(iter_download(params, cancel=cancel))
    first = events[-1].result
    assert first.cancelled and 2 <= len(first.files) < 21 and "run again to resume" in events[-1].message
    for rel, data in _files(tmp_path / "out").items():
        if rel.endswith(".partial"):  # a prefix of the file, never under the final name
            assert original[rel.removesuffix(".partial")].startswith(data)
        elif rel != MANIFEST:
            assert data == original[rel]
    partials = {p: p.stat().st_size for p in (tmp_path / "out").rglob("*.partial")}
    assert any(n > 0 for n in partials.values())
    srv.reset_counts()
    res = download(params)
    assert res.ok and len(res.files) == 21 and not list((tmp_path / "out").rglob("*.partial"))
    assert {k: v for k, v in _files(tmp_path / "out").items() if k != MANIFEST} == {
        k: v for k, v in original.items() if k.endswith(".tif")}  # fmt: skip
    # the .partial files were continued, not fetched again
    assert srv.range_requests.total() == sum(1 for n in partials.values() if n > 0)
    tifs = sum(len(v) for k, v in original.items() if k.endswith(".tif"))
    assert _file_bytes_sent(srv) == tifs - sum(partials.values()) - sum(len(original[r]) for r in first.files)


def test_a_single_file_url(site, srv, tmp_path):
    res = download(srv.url + "seg/layers/05.tif", tmp_path / "one", **FAST)
    assert res.files == ("05.tif",)
    assert (tmp_path / "one/05.tif").read_bytes() == (site / "seg/layers/05.tif").read_bytes()
