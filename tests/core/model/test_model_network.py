"""The network: prize-identical parameter layout, shapes, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_phoenix.core.model import MIT_PRESETS, InkNet, ModelConfig, count_parameters

DATA = Path(__file__).parent / "data"


def _schema(variant):
    return json.loads((DATA / f"checkpoint_schema_{variant}.json").read_text())


@pytest.mark.parametrize(
    ("variant", "n_entries", "n_params"), [("b3", 918, 79_185_665), ("b0", 482, 35_631_361)]
)
def test_state_dict_is_the_prize_checkpoint_layout(variant, n_entries, n_params):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = InkNet(ModelConfig.prize(variant))
    mine = [[f"model.{k}", list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    schema = _schema(variant)
    assert len(schema) == n_entries
    assert mine == schema  # key for key, in order, shape for shape, dtype for dtype
    assert count_parameters(model) == n_params


def test_default_config_is_the_prize_b3():
    cfg = ModelConfig()
    assert cfg == ModelConfig.prize("b3")
    assert cfg.name == "unetr-sf-b3"
    assert cfg.token_grid == (1, 8, 8)
    assert cfg.input_shape == (1, 16, 128, 128)
    assert (cfg.embed_dim, cfg.num_heads, cfg.num_layers, cfg.mlp_dim) == (384, 6, 8, 1024)
    assert ModelConfig.prize("b0").mit_decoder_hidden == 256


def test_config_round_trips_through_json():
    for cfg in (ModelConfig(), ModelConfig.small(), ModelConfig.prize("b5")):
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tile_size": 100}, "tile_size"),
        ({"num_heads": 5}, "divisible"),
        ({"token_size": 8}, "token_size"),
        ({"extract_layers": (2, 4, 6, 9)}, "extract_layers"),
    ],
)
def test_invalid_config_is_refused_with_the_reason(change, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**change)
    with pytest.raises(ValueError, match="unknown MiT variant"):
        ModelConfig().with_mit("b9")
    with pytest.raises(ValueError, match="unknown ModelConfig fields: colour"):
        ModelConfig.from_dict({"colour": 1})


def test_small_forward_shape_and_determinism(small_model, small_input):
    with torch.no_grad():
        a = small_model(small_input)
        b = small_model(small_input)
        single = small_model(small_input[1:])
    assert a.shape == (2, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    torch.testing.assert_close(single[0], a[1], rtol=1e-5, atol=1e-5)  # batch items independent
    assert a.std() > 0  # not a constant map


def test_unetr_output_and_depth_max(small_model, small_input):
    with torch.no_grad():
        volume = small_model.encoder(small_input)
    assert volume.shape == (2, 8, 16, 32, 32)


def test_wrong_input_shape_is_refused(small_model):
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 1, 16, 32, 32\)"):
        small_model(torch.zeros(1, 1, 12, 32, 32))


def test_training_mode_uses_dropout(small_model, small_input):
    small_model.train()
    torch.manual_seed(0)
    a = small_model(small_input)
    b = small_model(small_input)
    assert not torch.equal(a, b)


def test_b0_prize_size_forward_batch_1():
    torch.manual_seed(0)
    model = InkNet(ModelConfig.prize("b0")).eval()
    x = torch.rand(1, 1, 16, 128, 128)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 32, 32)
    assert torch.isfinite(y).all()


def test_the_2d_half_is_the_transformers_segformer():
    from transformers import SegformerForSemanticSegmentation

    net = InkNet(ModelConfig.small())
    assert isinstance(net.encoder_2d, SegformerForSemanticSegmentation)
    assert net.encoder_2d.config.num_channels == ModelConfig.small().unetr_channels
    assert net.encoder_2d.config.num_labels == 1


def test_presets_are_the_mit_family():
    assert MIT_PRESETS["b3"]["depths"] == (3, 4, 18, 3)
    assert all(MIT_PRESETS[v]["decoder"] == 768 for v in ("b2", "b3", "b4", "b5"))
    assert ModelConfig.prize("b1").mit_variant == "b1"


def test_pretrained_mit_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file
    from transformers import SegformerForImageClassification

    from napari_phoenix.core.errors import CheckpointError
    from napari_phoenix.core.model.network import InkNet, segformer_config
    from napari_phoenix.core.model.pretrained import load_pretrained_mit

    torch.manual_seed(0)
    model = InkNet(ModelConfig.small())
    imagenet_cfg = segformer_config(model.config)
    imagenet_cfg.num_channels, imagenet_cfg.num_labels = 3, 1000  # as nvidia/mit-*: RGB in, 1000 classes
    imagenet = SegformerForImageClassification(imagenet_cfg)
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(tmp_path / "model.safetensors"))
    first = "encoder.patch_embeddings.0.proj.weight"
    before = model.encoder_2d.segformer.state_dict()[first].clone()
    report = load_pretrained_mit(model, tmp_path)  # the folder, as downloaded
    after = model.encoder_2d.segformer.state_dict()
    src = imagenet.segformer.state_dict()
    assert report.loaded and all(torch.equal(after[k], src[k]) for k in report.loaded)
    assert [m[0] for m in report.mismatched] == [first]  # 3 RGB channels there, 32 UNETR channels here
    assert torch.equal(after[first], before) and not report.missing
    assert "classifier.weight" in report.ignored
    assert model.provenance["pretrained_mit"].endswith(str(tmp_path))
    other = InkNet(ModelConfig.small().with_mit("b0"))
    with pytest.raises(CheckpointError, match="shares no tensor"):
        load_pretrained_mit(other, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="none of"):
        load_pretrained_mit(model, tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)
