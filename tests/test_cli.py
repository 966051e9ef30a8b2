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
    assert main(["demo", "--out", str(out), "--viewer", "no", "--train-steps", "0"]) == 0
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
    assert main(["demo", "--out", str(out), "--viewer", "no", "--train-steps", "0"]) == 0
    assert (out / "sample-segment-uint8" / "layers" / "00.tif").stat().st_mtime_ns == mtime
    assert not (out / "run").exists() and not (out / "prediction.zarr").exists()  # 0 steps: no training


def test_demo_trains_the_demo_network_and_predicts_the_segment(tmp_path, capsys, monkeypatch, make_napari_viewer):
    import zarr

    from napari_phoenix.cli import demo_viewer
    from napari_phoenix.core.model.checkpoint import read_model_info

    monkeypatch.delenv("DISPLAY", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--viewer", "no", "--train-steps", "3", "--stride", "1",
                 "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "best validation IoU" in printed and str(out / "prediction.zarr") in printed
    info = read_model_info(out / "run" / "best.json")
    from napari_phoenix.core.train.loop import CPU_DEMO

    assert info["provenance"]["train_config"]["stride"] == 16 and info["provenance"]["train_config"]["lr"] == CPU_DEMO["lr"] == 3e-3
    store = zarr.open_group(str(out / "prediction.zarr"), mode="r")
    composite = np.asarray(store["composite"])
    assert composite.shape == (1024, 1536) and composite.max() > 0  # predicted inside the papyrus
    settings = store.attrs["phoenix"]["settings"]
    assert settings["windows"] == [5] and settings["stride"] == 1 and settings["tta"] == 0
    png = np.asarray(Image.open(out / "previews" / "prediction.png"))
    assert png.shape == (1024, 1536) and png.max() > 0
    viewer = demo_viewer(out / "sample-segment-uint8", out / "prediction.zarr", make_napari_viewer())
    assert [ly.name for ly in viewer.layers][-1] == "prediction"  # over the segment's layers
    shown = viewer.layers["prediction"]
    assert shown.data.shape == (1024, 1536) and shown.metadata["phoenix"]["settings"]["stride"] == 1


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


def test_split_command_exports_and_resumes(write_stack, capsys):
    import tifffile

    from napari_phoenix.core.contrast import contrast_lut

    layers, data = write_stack(n=3, shape=(20, 50), folder="seg/layers")
    root = layers.parent
    assert main(["split", str(root), "--chunk-width", "20", "--chunks", "1,3", "--workers", "1"]) == 0
    assert "wrote 8 files" in capsys.readouterr().out  # 2 chunks x (3 layers + mask)
    got = tifffile.imread(root / "parts_contrasted" / "seg_03" / "layers" / "02.tif")
    np.testing.assert_array_equal(got, contrast_lut("uint8")[data[2, :, 40:]])
    assert main(["split", str(root), "--chunk-width", "20", "--chunks", "1,3", "--workers", "1"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["split", str(root), "--chunks", "9"]) == 2


def test_split_command_bad_arguments_are_messages(write_stack, capsys):
    layers, _ = write_stack(n=2, shape=(10, 20), folder="s/layers")
    assert main(["split", str(layers.parent), "--chunks", "1,x"]) == 2
    assert "chunk ids must look like 1,3-5" in capsys.readouterr().err
    assert main(["split", str(layers.parent), "--points", "0,0;banana"]) == 2
    assert "points must look like" in capsys.readouterr().err


def test_infer_writes_a_store_with_provenance_and_a_png(tmp_path, capsys):
    import torch
    import zarr

    from napari_phoenix.core.model.checkpoint import file_sha256, save_model
    from napari_phoenix.core.model.config import ModelConfig
    from napari_phoenix.core.model.network import build_network
    from napari_phoenix.core.phantom import make_phantom

    seg = make_phantom(tmp_path / "seg", height=192, width=300, seed=1)
    torch.manual_seed(0)
    meta = save_model(build_network(ModelConfig.demo()), tmp_path / "demo-model")
    weights = meta.with_suffix(".safetensors")
    args = ["infer", str(seg), str(meta), "--out", str(tmp_path / "pred.zarr"), "--windows", "3,5",
            "--stride", "1", "--tta", "1", "--device", "cpu", "--png", str(tmp_path / "c.png")]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "pred.zarr" in out.out and "CPU" in out.err
    group = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
    assert sorted(group.array_keys()) == ["composite", "regions_done", "window_03", "window_05"]
    attrs = group.attrs["phoenix"]
    assert attrs["complete"] and attrs["model"]["sha256"] == file_sha256(weights)
    assert attrs["settings"]["windows"] == [3, 5] and attrs["mask_file"].endswith("mask.png")
    comp = group["composite"][:]
    assert comp.shape == (192, 300) and comp[:128, :256].min() > 0 and not comp[128:].any()
    assert np.asarray(Image.open(tmp_path / "c.png")).shape == (192, 300)
    # the same command again: everything is there, nothing is recomputed
    assert main(args) == 0 and zarr.open_group(str(tmp_path / "pred.zarr")).attrs["phoenix"]["resumed_regions"] == 1
