"""Checkpoints: prize .ckpt, own safetensors + JSON format, safety, clear errors."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from napari_phoenix.core.errors import PhoenixError
from napari_phoenix.core.model import (
    CheckpointError,
    InkNet,
    ModelConfig,
    convert_checkpoint,
    file_sha256,
    infer_config,
    load_model,
    read_model_info,
    save_model,
)

MARKER_NAME = "pickle-code-ran.txt"


def _touch(path):
    Path(path).write_text("the pickle ran code")
    return {}


class Booby:
    """Unpickling this runs ``_touch``: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


class MyOrderedDict(collections.OrderedDict):
    pass


def _out(model, x):
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------ prize .ckpt
def test_prize_style_ckpt_loads_and_gives_identical_outputs(small_model, small_input, write_ckpt):
    path = write_ckpt(small_model)
    loaded = load_model(path)
    assert isinstance(loaded, InkNet) and not loaded.training
    assert loaded.config == small_model.config
    assert torch.equal(_out(loaded, small_input), _out(small_model, small_input))
    assert loaded.provenance["epoch"] == 13
    assert loaded.provenance["sha256"] == file_sha256(path)
    assert loaded.provenance["hyper_parameters"]["model_name"] == "unetr-sf-tiny"


@pytest.mark.parametrize("variant", ["b0", "b3"])
def test_prize_architecture_is_read_off_the_weights(variant):
    with torch.device("meta"):
        state = InkNet(ModelConfig.prize(variant)).state_dict()
    assert infer_config(state) == ModelConfig.prize(variant)  # no hyper-parameters needed
    assert infer_config(state, {"backbone": f"mit_{variant}"}) == ModelConfig.prize(variant)


def test_hyper_parameters_naming_another_variant_are_refused():
    with torch.device("meta"):
        state = InkNet(ModelConfig.prize("b0")).state_dict()
    with pytest.raises(CheckpointError, match="name MiT-b3, but the weights"):
        infer_config(state, {"model_name": "unetr-sf-b3"})


# ------------------------------------------------------------------ own format
def test_own_format_round_trip(small_model, small_input, tmp_path):
    meta = save_model(
        small_model,
        tmp_path / "run1" / "ink-v1",
        provenance={
            "training_data": ["03192025_05", "02110815_03"],
            "epochs": 3,
            "metrics": {"val_iou": 0.5},
        },
    )
    assert meta == tmp_path / "run1" / "ink-v1.json"
    weights = tmp_path / "run1" / "ink-v1.safetensors"
    info = json.loads(meta.read_text())
    assert info["config"] == small_model.config.to_dict()
    assert info["weights"]["sha256"] == file_sha256(weights)
    assert info["provenance"]["training_data"] == ["03192025_05", "02110815_03"]
    assert info["provenance"]["code_version"]
    assert not list((tmp_path / "run1").glob(".*partial*"))  # no temporary files left
    expected = _out(small_model, small_input)
    for spelling in (weights, meta, tmp_path / "run1" / "ink-v1", tmp_path / "run1"):
        loaded = load_model(spelling)
        assert torch.equal(_out(loaded, small_input), expected), spelling
    assert loaded.provenance["metrics"] == {"val_iou": 0.5}
    assert read_model_info(weights)["architecture"] == "unetr-sf-tiny"


def test_ckpt_conversion_round_trip(small_model, small_input, write_ckpt, tmp_path):
    ckpt = write_ckpt(small_model)
    meta = convert_checkpoint(ckpt, tmp_path / "converted", provenance={"notes": "prize model"})
    info = read_model_info(meta)
    assert info["provenance"]["parent_sha256"] == file_sha256(ckpt)
    assert info["provenance"]["parent_name"] == "best.ckpt"
    assert info["provenance"]["epochs"] == 14
    assert info["provenance"]["notes"] == "prize model"
    converted = load_model(meta)
    assert torch.equal(_out(converted, small_input), _out(small_model, small_input))


def test_cli_convert(small_model, small_input, write_ckpt, tmp_path, capsys):
    from napari_phoenix.cli import main

    ckpt = write_ckpt(small_model)
    assert main(["convert", str(ckpt), str(tmp_path / "prize"), "--note", "from the CLI"]) == 0
    out = capsys.readouterr().out
    assert "prize.safetensors" in out and "unetr-sf-tiny" in out and file_sha256(ckpt)[:12] in out
    info = read_model_info(tmp_path / "prize.json")
    assert info["provenance"]["note"] == "from the CLI" and info["provenance"]["parent_name"] == "best.ckpt"
    assert torch.equal(_out(load_model(tmp_path / "prize.safetensors"), small_input), _out(small_model, small_input))
    # an unsafe file is an error message (exit 2), never unpickled without --trusted
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "junk.ckpt"), str(tmp_path / "junk")]) == 2
    assert "phoenix: error:" in capsys.readouterr().err and not (tmp_path / "junk.json").exists()


# ---------------------------------------------------------------------- safety
def test_unsafe_pickle_is_refused_and_nothing_runs(small_model, write_ckpt, tmp_path):
    marker = tmp_path / MARKER_NAME
    path = write_ckpt(small_model, extra={"callbacks": {"evil": Booby(marker)}})
    with pytest.raises(CheckpointError, match="trusted=True") as err:
        load_model(path)
    assert "_touch" in str(err.value)  # names what it found
    assert isinstance(err.value, PhoenixError)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        convert_checkpoint(path, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out.json").exists()
    # the caller's explicit trust unpickles fully (and the code in the file runs)
    model = load_model(path, trusted=True)
    assert marker.exists()
    assert isinstance(model, InkNet)


def test_ordered_dict_subclass_needs_trust(small_model, write_ckpt):
    state = MyOrderedDict((f"model.{k}", v) for k, v in small_model.state_dict().items())
    path = write_ckpt(small_model, state=state)
    with pytest.raises(CheckpointError, match="MyOrderedDict"):
        load_model(path)
    assert isinstance(load_model(path, trusted=True), InkNet)


# ---------------------------------------------------------------------- errors
def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello world, these are my notes\n")
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        load_model(text)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_model(empty)
    with pytest.raises(CheckpointError, match="no model at"):
        load_model(tmp_path / "missing.ckpt")
    listing = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint"):
        load_model(listing)
    with pytest.raises(CheckpointError, match="holds no <name>.safetensors"):
        load_model(tmp_path)


def test_truncated_files(small_model, write_ckpt, tmp_path):
    ckpt = write_ckpt(small_model)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_model(ckpt)
    meta = save_model(small_model, tmp_path / "m")
    weights = meta.with_suffix(".safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_model(meta)


def test_missing_and_unexpected_keys_are_listed(small_model, write_ckpt):
    state = {f"model.{k}": v for k, v in small_model.state_dict().items()}
    del state["model.encoder.transformer.encoder_norm.weight"]
    del state["model.encoder_2d.decode_head.batch_norm.running_var"]
    state["model.ema.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_model(write_ckpt(small_model, state=state))
    msg = str(err.value)
    assert "2 missing keys" in msg and "encoder.transformer.encoder_norm.weight" in msg
    assert "1 unexpected keys (ema.weight)" in msg


def test_shape_mismatch_names_key_and_both_shapes(small_model, write_ckpt):
    state = {f"model.{k}": v for k, v in small_model.state_dict().items()}
    key = "encoder.decoder0_header.1.block.0.block.weight"
    state[f"model.{key}"] = torch.zeros(4, 4, 1, 1, 1)
    with pytest.raises(
        CheckpointError, match=rf"{key}: checkpoint \(4, 4, 1, 1, 1\), network \(4, 4, 3, 3, 3\)"
    ):
        load_model(write_ckpt(small_model, state=state))


def test_not_an_ink_model(write_ckpt):
    with pytest.raises(CheckpointError, match="not a UNETR \\+ SegFormer ink model"):
        load_model(write_ckpt(state={"model.fc.weight": torch.zeros(2, 2)}))


def test_own_format_damage_is_detected(small_model, tmp_path):
    meta = save_model(small_model, tmp_path / "m")
    weights = meta.with_suffix(".safetensors")
    other = InkNet(ModelConfig.small())
    save_model(other, tmp_path / "other")
    weights.write_bytes((tmp_path / "other.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_model(meta)
    meta.unlink()
    with pytest.raises(CheckpointError, match="m.json is missing"):
        load_model(weights)
    (tmp_path / "bad.safetensors").write_bytes(b"")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "bad.json")
    with pytest.raises(CheckpointError, match="several models"):
        load_model(tmp_path)
