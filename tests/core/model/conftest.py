"""Fixtures for the model tests: a tiny network and a writer of prize-style checkpoints."""

from __future__ import annotations

import pytest
import torch

from napari_phoenix.core.model.config import ModelConfig
from napari_phoenix.core.model.network import InkNet

torch.set_num_threads(1)


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(1234)


@pytest.fixture
def small_model() -> InkNet:
    """A tiny InkNet in eval mode with fixed random weights."""
    torch.manual_seed(1)
    model = InkNet(ModelConfig.small())
    randomise_batchnorm(model)
    return model.eval()


@pytest.fixture
def small_input() -> torch.Tensor:
    """Two random input patches for the small configuration."""
    g = torch.Generator().manual_seed(2)
    return torch.rand((2, *ModelConfig.small().input_shape), generator=g)


@pytest.fixture
def write_ckpt(tmp_path):
    """Write a Lightning-style ``.ckpt`` of a model; returns its path.

    Keyword arguments: ``state`` (replaces the prefixed state dict),
    ``hparams`` (``hyper_parameters``), ``extra`` (more top-level entries),
    ``name``.
    """

    def make(model=None, state=None, hparams=None, extra=None, name="best.ckpt"):
        if state is None:
            state = {f"model.{k}": v for k, v in model.state_dict().items()}
        cfg = model.config if model is not None else ModelConfig.small()
        weight = next(iter(state.values()))
        obj = {
            "epoch": 13,
            "global_step": 4242,
            "pytorch-lightning_version": "2.2.1",
            "state_dict": state,
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 14}}}},
            "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.71)}},
            "optimizer_states": [
                {
                    "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(weight)}},
                    "param_groups": [{"lr": 2e-4, "weight_decay": 1e-3, "params": [0]}],
                }
            ],
            "lr_schedulers": [{"T_max": 50, "eta_min": 1e-6, "last_epoch": 13, "base_lrs": [2e-4]}],
            "hyper_parameters": hparams
            if hparams is not None
            else {"model_name": cfg.name, "size": cfg.tile_size, "num_heads": cfg.num_heads},
        }
        obj.update(extra or {})
        path = tmp_path / name
        torch.save(obj, path)
        return path

    return make
