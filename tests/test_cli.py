"""The `phoenix` command line: the demo job, phantom, info and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from napari_phoenix.cli import main


def test_demo_writes_layer_images_headless(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--viewer", "no"]) == 0
    printed = capsys.readouterr().out
    previews = out / "previews"
    assert str(previews) in printed
    layers = sorted(previews.glob("layer-*.png"))
    assert [p.name for p in layers[:2]] == ["layer-00.png", "layer-01.png"] and len(layers) == 21
    img = np.asarray(Image.open(layers[10]))
    assert img.dtype == np.uint8 and img.std() > 5  # a real image, not a blank
    masks = np.asarray(Image.open(previews / "masks.png"))
    assert masks.ndim == 3 and (masks[..., 0].astype(int) - masks[..., 1] > 100).any()  # red ink
    assert (out / "sample-segment-uint8" / "layers" / "20.tif").is_file()
    # a second run reuses the segment instead of regenerating it
    mtime = (out / "sample-segment-uint8" / "layers" / "00.tif").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--viewer", "no"]) == 0
    assert (out / "sample-segment-uint8" / "layers" / "00.tif").stat().st_mtime_ns == mtime


def test_info_describes_a_segment(write_stack, write_png, capsys):
    layers, _ = write_stack(n=4, start=5, pad=2)
    write_png("segment/label.png", np.zeros((64, 96)))
    assert main(["info", str(layers.parent)]) == 0
    out = capsys.readouterr().out
    assert "4 layers (5–8)" in out and "96 x 64 px" in out and "label.png" in out


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).with_name("phoenix")), "info", str(tmp_path / "empty")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("phoenix: error:") and "no layer files" in result.stderr
    assert "Traceback" not in result.stderr
