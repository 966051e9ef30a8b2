"""`phoenix download`: a segment's layers from a (loopback) data server, resuming, clear errors."""

from __future__ import annotations

import json

import pytest

from napari_phoenix.cli import main
from napari_phoenix.core.phantom import make_phantom

PASSWORD = "cli-s3cret"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_phantom(root / "scrolls" / "s5" / "seg", height=64, width=96, layers=21)
    return root


@pytest.fixture
def srv(site, http_server, monkeypatch):
    monkeypatch.delenv("PHOENIX_HTTP_USER", raising=False)
    monkeypatch.delenv("PHOENIX_HTTP_PASSWORD", raising=False)
    return http_server(site)


def test_download_layers_then_info_and_a_rerun_that_fetches_nothing(srv, site, tmp_path, capsys):
    url, dest = srv.url + "scrolls/s5/seg/", tmp_path / "seg"
    assert main(["download", url, str(dest), "--layers", "5-20", "--exclude", "*.json", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"19 files in {dest}: 19 downloaded, 0 already complete" in out and f"phoenix info {dest}" in out
    assert sorted(p.name for p in (dest / "layers").iterdir()) == [f"{i:02d}.tif" for i in range(5, 21)]
    assert (dest / "layers/12.tif").read_bytes() == (site / "scrolls/s5/seg/layers/12.tif").read_bytes()
    assert not (dest / "phantom.json").exists()
    manifest = json.loads((dest / ".phoenix-download.json").read_text())
    assert manifest["params"]["layers"] == [5, 20] and manifest["params"]["exclude"] == ["*.json"]
    assert main(["info", str(dest)]) == 0
    assert "16 layers (5–20)" in capsys.readouterr().out

    srv.reset_counts()
    assert main(["download", url, str(dest), "--layers", "5-20", "--exclude", "*.json"]) == 0
    assert "0 downloaded, 19 already complete" in capsys.readouterr().out
    assert sum(n for path, n in srv.sent.items() if not path.endswith("/")) == 0


def test_errors_are_messages_naming_the_file(srv, site, tmp_path, capsys):
    srv.status["/scrolls/s5/seg/layers/07.tif"] = 404
    url = srv.url + "scrolls/s5/seg/"
    assert main(["download", url, str(tmp_path / "a"), "--layers", "6-8", "--include", "layers/*"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phoenix: error: 1 of 3 files failed: layers/07.tif: HTTP 404 Not Found")
    assert "Traceback" not in err
    assert (tmp_path / "a/layers/06.tif").is_file() and (tmp_path / "a/layers/08.tif").is_file()
    for args, message in ((["--layers", "5to20"], "layers must look like 5-20"),
                          (["--workers", "0"], "workers must be at least 1")):  # fmt: skip
        assert main(["download", url, str(tmp_path / "b"), *args]) == 2
        assert message in capsys.readouterr().err
    assert main(["download", "ftp://example.org/x/", str(tmp_path / "c")]) == 2
    assert "must start with http:// or https://" in capsys.readouterr().err
    assert main(["download", srv.url + "nowhere/", str(tmp_path / "d")]) == 2
    assert "HTTP 404 Not Found (check the URL)" in capsys.readouterr().err


def test_login_from_the_environment_is_never_printed(srv, tmp_path, capsys, monkeypatch):
    srv.auth = ("reader", PASSWORD)
    url = srv.url + "scrolls/s5/seg/"
    assert main(["download", url, str(tmp_path / "a"), "--include", "mask.png"]) == 2
    assert "PHOENIX_HTTP_USER and PHOENIX_HTTP_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("PHOENIX_HTTP_USER", "reader")
    monkeypatch.setenv("PHOENIX_HTTP_PASSWORD", PASSWORD)
    assert main(["download", url, str(tmp_path / "b"), "--include", "mask.png"]) == 0
    monkeypatch.delenv("PHOENIX_HTTP_USER")
    monkeypatch.delenv("PHOENIX_HTTP_PASSWORD")
    with_login = url.replace("http://", f"http://reader:{PASSWORD}@")
    srv.status["/scrolls/s5/seg/label.png"] = 404
    assert main(["download", with_login, str(tmp_path / "c"), "--include", "*.png"]) == 2
    printed = capsys.readouterr()
    assert "label.png: HTTP 404" in printed.err
    assert PASSWORD not in printed.out + printed.err
    assert PASSWORD not in (tmp_path / "c/.phoenix-download.json").read_text()


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(srv, site, tmp_path, capsys, monkeypatch):
    import tqdm

    real_update = tqdm.tqdm.update

    def interrupted(self, n=1):  # Ctrl-C at the first progress of the transfer
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm.tqdm, "update", interrupted)
    args = ["download", srv.url + "scrolls/s5/seg/", str(tmp_path / "seg"), "--include", "*.tif"]
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    source = site / "scrolls/s5/seg/layers"
    for p in (tmp_path / "seg/layers").iterdir():  # complete files or .partial, never a truncated final file
        original = (source / p.name.removesuffix(".partial")).read_bytes()
        assert p.read_bytes() == original if p.suffix == ".tif" else original.startswith(p.read_bytes())
    assert not json.loads((tmp_path / "seg/.phoenix-download.json").read_text())["complete"]
    monkeypatch.setattr(tqdm.tqdm, "update", real_update)
    assert main(args) == 0
    assert "21 files in" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "seg/layers").iterdir()) == [f"{i:02d}.tif" for i in range(21)]
