"""The "Download segment" dock widget through a real napari viewer and a loopback data server."""

from __future__ import annotations

import threading

import pytest
from qtpy.QtCore import Qt

from napari_phoenix.core.phantom import make_phantom


@pytest.fixture
def served(tmp_path, http_server):
    make_phantom(tmp_path / "site" / "scrolls" / "seg", height=64, width=96, layers=21)
    return http_server(tmp_path / "site"), tmp_path / "site" / "scrolls" / "seg"


def _dock(viewer):
    from napari_phoenix._napari.download_widget import DownloadWidget

    _, widget = viewer.window.add_plugin_dock_widget("napari-phoenix", "Download segment")
    assert isinstance(widget, DownloadWidget)
    return widget


def _fill(qtbot, widget, url, dest, layers=""):
    for edit, text in ((widget.url_edit, url), (widget.dest_edit, str(dest)), (widget.layers_edit, layers)):
        edit.clear()
        qtbot.keyClicks(edit, text)


def _run(qtbot, widget):
    qtbot.mouseClick(widget.download_button, Qt.MouseButton.LeftButton)
    assert widget.worker is not None and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20_000)


def test_download_layers_and_open_the_segment(make_napari_viewer, qtbot, served, tmp_path):
    srv, source = served
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    qtbot.mouseClick(widget.download_button, Qt.MouseButton.LeftButton)  # nothing filled in: a plain message
    assert widget.worker is None and "Enter the URL" in widget.status.text()

    dest = tmp_path / "data" / "seg"
    _fill(qtbot, widget, srv.url + "scrolls/seg/", dest, layers="5-20")
    widget.open_check.setChecked(False)
    _run(qtbot, widget)
    assert widget.status.text().startswith(f"Done: 20 files in {dest} (20 downloaded, 0 already there)")
    assert sorted(p.name for p in (dest / "layers").iterdir()) == [f"{i:02d}.tif" for i in range(5, 21)]
    assert (dest / "layers/09.tif").read_bytes() == (source / "layers/09.tif").read_bytes()
    assert widget.progress.value() == widget.progress.maximum() == 20

    # the widget offers the segment: the Phoenix reader opens it lazily, layers 5..20 on the slider
    assert widget.open_button.isEnabled() and widget.openable == dest
    qtbot.mouseClick(widget.open_button, Qt.MouseButton.LeftButton)
    stack = viewer.layers["seg"]
    assert stack.metadata["phoenix"]["layer_numbers"] == list(range(5, 21))
    assert {"seg mask", "seg label", "seg ignore"} <= {ly.name for ly in viewer.layers}

    # a rerun downloads nothing and, ticked, opens the result by itself
    viewer.layers.clear()
    srv.reset_counts()
    widget.open_check.setChecked(True)
    _run(qtbot, widget)
    assert "(0 downloaded, 20 already there)" in widget.status.text()
    assert sum(n for path, n in srv.sent.items() if not path.endswith("/")) == 0
    assert "seg" in viewer.layers


def test_errors_and_cancel_keep_partial_files(make_napari_viewer, qtbot, served, tmp_path, monkeypatch):
    from napari_phoenix._napari import download_widget as dw

    srv, source = served
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    srv.status["/scrolls/seg/layers/07.tif"] = 404
    _fill(qtbot, widget, srv.url + "scrolls/seg/", tmp_path / "a", layers="6-8")
    _run(qtbot, widget)
    text = widget.status.text()
    assert text.startswith("1 of 7 files failed: layers/07.tif: HTTP 404 Not Found")
    assert "#ff6060" in widget.status.styleSheet()
    assert (tmp_path / "a/layers/06.tif").is_file() and widget.open_button.isEnabled()  # what arrived can be opened
    del srv.status["/scrolls/seg/layers/07.tif"]

    # Cancel: the job's cancel event stops it within a read block; a later run finishes
    started = threading.Event()
    real = dw.iter_download

    def slow_start(params, cancel):  # hold the job until the test has pressed Cancel
        for ev in real(params, cancel):
            started.set()
            cancel.wait(5)
            yield ev

    monkeypatch.setattr(dw, "iter_download", slow_start)
    _fill(qtbot, widget, srv.url + "scrolls/seg/", tmp_path / "b")
    qtbot.mouseClick(widget.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(started.is_set, timeout=10_000)
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert widget.status.text().startswith("Cancelled.") and "resume" in widget.status.text()
    for p in (tmp_path / "b").rglob("*.tif"):  # never a truncated file under its final name
        assert p.read_bytes() == (source / p.relative_to(tmp_path / "b")).read_bytes()
    monkeypatch.setattr(dw, "iter_download", real)
    widget.open_check.setChecked(False)
    _run(qtbot, widget)
    assert widget.status.text().startswith(f"Done: 25 files in {tmp_path / 'b'}")
