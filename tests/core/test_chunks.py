"""Chunk export: layout, contrast, strips, resume, interruption and errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

import napari_phoenix as nx
from napari_phoenix.core import chunks as chunks_mod
from napari_phoenix.core.chunks import SplitError, SplitParams, chunk_bounds
from napari_phoenix.core.contrast import contrast_lut


@pytest.fixture
def segment(write_stack, write_png):
    """A 7-layer uint16 segment 250 px wide, 40 tall, numbered from 2, with a mask."""
    layers, data = write_stack(n=7, shape=(40, 250), dtype=np.uint16, start=2, folder="seg/layers")
    mask = np.zeros((40, 250), np.uint8)
    mask[5:35, 10:240] = 255
    write_png("seg/mask.png", mask)
    return layers.parent, data, mask > 0


def test_chunk_bounds():
    assert chunk_bounds(25_000) == [(1, 0, 10_000), (2, 10_000, 20_000), (3, 20_000, 25_000)]
    assert chunk_bounds(25_000, 10_000, 3_000) == [(1, 0, 7_000), (2, 7_000, 17_000), (3, 17_000, 25_000)]
    assert chunk_bounds(100, 100) == [(1, 0, 100)]


@pytest.mark.parametrize("workers", [1, 2])
def test_exports_requested_chunks_contrasted_with_source_names(segment, workers):
    root, data, mask = segment
    written = nx.split_segment(root, chunks=(1, 3), chunk_width=100, first_chunk_offset=30,
                               workers=workers, strip_bytes=1000)
    lut = contrast_lut("uint16")
    bounds = {1: (0, 70), 3: (170, 250)}
    for cid, (x0, x1) in bounds.items():
        folder = root / "parts_contrasted" / f"seg_{cid:02d}"
        names = sorted(p.name for p in (folder / "layers").iterdir() if not p.name.startswith("."))
        assert names == [f"{n:02d}.tif" for n in range(2, 9)]
        for z in range(7):
            got = tifffile.imread(folder / "layers" / f"{z + 2:02d}.tif")
            np.testing.assert_array_equal(got, lut[data[z, :, x0:x1]])
        np.testing.assert_array_equal(nx.read_mask(folder / "mask.png"), mask[:, x0:x1])
    assert not (root / "parts_contrasted" / "seg_02").exists()
    assert len(written) == 2 * 7 + 2


def test_plain_parts_copy_pixels_and_mask_from_a_layer(write_stack):
    layers, data = write_stack(n=3, shape=(20, 50), dtype=np.uint8, folder="s2/layers")
    data[1, :, :5] = 0
    tifffile.imwrite(layers / "01.tif", data[1])
    nx.split_segment(layers.parent, contrast=False, chunk_width=30, mask_layer=1, workers=1)
    folder = layers.parent / "parts" / "s2_01"
    np.testing.assert_array_equal(tifffile.imread(folder / "layers" / "00.tif"), data[0, :, :30])
    np.testing.assert_array_equal(nx.read_mask(folder / "mask.png"), data[1, :, :30] != 0)


def test_png_layers_are_exported_as_png(write_stack):
    from PIL import Image

    layers, data = write_stack(n=2, shape=(20, 50), ext="png", folder="s3/layers")
    nx.split_segment(layers.parent, chunk_width=25, workers=1)
    got = np.asarray(Image.open(layers.parent / "parts_contrasted" / "s3_02" / "layers" / "01.png"))
    np.testing.assert_array_equal(got, contrast_lut("uint8")[data[1, :, 25:]])


def test_second_run_writes_nothing(segment, monkeypatch):
    root = segment[0]
    nx.split_segment(root, chunk_width=100, workers=1)
    files = sorted(p for p in (root / "parts_contrasted").rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    calls = []
    monkeypatch.setattr(chunks_mod, "split_layer", lambda *a, **k: calls.append(a))
    assert nx.split_segment(root, chunk_width=100, workers=1) == []
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


def test_rerun_redoes_missing_truncated_and_corrupt_files(segment):
    root, data, _ = segment
    nx.split_segment(root, chunk_width=100, workers=1)
    layers = root / "parts_contrasted" / "seg_02" / "layers"
    (layers / "04.tif").unlink()
    truncated = layers / "05.tif"
    truncated.write_bytes(truncated.read_bytes()[:100])
    corrupt = layers / "06.tif"
    raw = bytearray(corrupt.read_bytes())
    raw[-50:] = b"\xff" * 50  # same size, different pixels: only a CRC check sees it
    corrupt.write_bytes(bytes(raw))
    written = nx.split_segment(root, chunk_width=100, workers=1)
    assert sorted(p.name for p in written) == ["04.tif", "05.tif"]
    written = nx.split_segment(root, chunk_width=100, workers=1, verify=True)
    assert [p.name for p in written] == ["06.tif"]
    lut = contrast_lut("uint16")
    for n in (4, 5, 6):
        np.testing.assert_array_equal(tifffile.imread(layers / f"{n:02d}.tif"), lut[data[n - 2, :, 100:200]])


def test_a_rerun_removes_the_temporary_files_an_interrupted_run_left(segment):
    """A kill during the manifest's or the mask's atomic write leaves its temporary file in the
    chunk folder itself (not in layers/): the next run removes those too."""
    root, _, _ = segment
    nx.split_segment(root, chunk_width=100, workers=1)
    chunk = root / "parts_contrasted" / "seg_02"
    stale = [chunk / "..phoenix-split.k1ll3d.partial.json", chunk / ".mask.k1ll3d.partial.png",
             chunk / "layers" / ".04.k1ll3d.partial.tif"]  # fmt: skip
    for path in stale:
        path.write_bytes(b"half")
    assert nx.split_segment(root, chunk_width=100, workers=1) == []  # nothing to redo
    assert not any(path.exists() for path in stale)


def test_interrupted_run_leaves_no_complete_looking_file_and_resumes(tmp_path):
    """Kill a real export mid-way; every file under its final name must be whole."""
    root = nx.make_phantom(tmp_path / "big", height=600, width=2400, layers=12, dtype="uint16", seed=1)
    script = (
        "import sys, napari_phoenix as nx\n"
        "from napari_phoenix.core.chunks import SplitParams, iter_split\n"
        f"p = SplitParams(segment={str(root)!r}, chunk_width=500, workers=1, strip_bytes=4096)\n"
        "for ev in iter_split(p):\n"
        "    print(ev.done, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1"  # the first layer is done, the rest under way
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stack = nx.open_stack(root)
    lut = contrast_lut("uint16")
    parts = root / "parts_contrasted"
    for path in parts.rglob("*.tif"):
        if path.name.startswith("."):
            continue  # a temporary name: not a finished file
        z = stack.index_of(int(path.stem))
        cid = int(path.parent.parent.name.split("_")[-1])
        x0 = (cid - 1) * 500
        np.testing.assert_array_equal(tifffile.imread(path), lut[np.asarray(stack.data[z, :, x0 : x0 + 500])])
    finished_before = {p for p in parts.rglob("[0-9]*.tif")}
    written = nx.split_segment(root, chunk_width=500, workers=1)
    assert finished_before and written  # some layers were done before the kill, the rest now
    assert not list(parts.rglob(".*partial*"))
    for cid in range(1, 6):
        x0 = (cid - 1) * 500
        for z, number in enumerate(stack.layer_numbers):
            got = tifffile.imread(parts / f"big_{cid:02d}" / "layers" / f"{number:02d}.tif")
            np.testing.assert_array_equal(got, lut[np.asarray(stack.data[z, :, x0 : x0 + 500])])


# ---- errors ----------------------------------------------------------------------------


def test_chunk_id_out_of_range(segment):
    with pytest.raises(SplitError, match=r"chunk id 4 is out of range: seg is 250 px wide.*chunks 1–3"):
        nx.split_segment(segment[0], chunks=(1, 4), chunk_width=100)


def test_offset_not_smaller_than_chunk_width(segment):
    with pytest.raises(SplitError, match="offset 100 must be >= 0 and smaller than the chunk width 100"):
        SplitParams(segment=str(segment[0]), chunk_width=100, first_chunk_offset=100)


def test_target_folder_with_different_data_is_refused(segment):
    root = segment[0]
    nx.split_segment(root, chunks=(1,), chunk_width=100, workers=1)
    with pytest.raises(SplitError, match="holds a different export.*x1: 100 -> 80"):
        nx.split_segment(root, chunks=(1,), chunk_width=80, workers=1)
    foreign = root / "parts_contrasted" / "seg_02" / "layers"
    foreign.mkdir(parents=True)
    tifffile.imwrite(foreign / "02.tif", np.zeros((40, 100), np.uint16))
    with pytest.raises(SplitError, match="not written by napari-phoenix"):
        nx.split_segment(root, chunks=(2,), chunk_width=100, workers=1)
    nx.split_segment(root, chunks=(1, 2), chunk_width=80, workers=1, overwrite=True)
    assert tifffile.imread(root / "parts_contrasted" / "seg_01" / "layers" / "02.tif").shape == (40, 80)


def test_not_enough_disk_space_is_refused_up_front(segment, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(SplitError, match=r"needs 0\.0 GB .* has 0\.0 GB free"):
        nx.split_segment(segment[0], chunk_width=100, workers=1)


def test_disk_full_mid_write_is_a_clear_error_and_loses_nothing(segment, monkeypatch):
    root, data, _ = segment
    real = os.pwrite
    budget = {"bytes": 40 * 100 * 2 * 9}  # room for 9 chunk files, then the disk is full

    def pwrite(fd, buf, pos):
        if budget["bytes"] < len(buf):
            raise OSError(errno.ENOSPC, "No space left on device")
        budget["bytes"] -= len(buf)
        return real(fd, buf, pos)

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(SplitError, match="disk is full while writing"):
        nx.split_segment(root, chunk_width=100, workers=1)
    parts = root / "parts_contrasted"
    finished = [p for p in parts.rglob("*.tif") if not p.name.startswith(".")]
    assert 0 < len(finished) < 21
    assert not list(parts.rglob(".*partial*"))
    lut = contrast_lut("uint16")
    for p in finished:  # what is there under a final name is complete
        cid = int(p.parent.parent.name[-2:])
        np.testing.assert_array_equal(tifffile.imread(p), lut[data[int(p.stem) - 2, :, (cid - 1) * 100 : cid * 100]])
    monkeypatch.setattr(os, "pwrite", real)
    written = nx.split_segment(root, chunk_width=100, workers=1)
    assert len([p for p in written if p.suffix == ".tif"]) == 21 - len(finished)


def test_disk_full_while_writing_masks_is_a_clear_error(segment, monkeypatch):
    from napari_phoenix.core import masks

    root, _, mask = segment
    real = masks.MaskWriter.write

    def write(self, band):
        if self.rows + len(band) > 20:  # the disk fills half way down
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, band)

    monkeypatch.setattr(masks.MaskWriter, "write", write)
    with pytest.raises(SplitError, match="disk is full while writing"):
        nx.split_segment(root, chunk_width=100, workers=1)
    parts = root / "parts_contrasted"
    assert not list(parts.rglob("mask.png")) and not list(parts.rglob(".*partial*"))
    monkeypatch.setattr(masks.MaskWriter, "write", real)
    written = nx.split_segment(root, chunk_width=100, workers=1)
    assert sorted(p.parent.name for p in written if p.name == "mask.png") == [f"{root.name}_0{i}" for i in (1, 2, 3)]
    np.testing.assert_array_equal(nx.read_mask(parts / f"{root.name}_03" / "mask.png"), mask[:, 200:])
