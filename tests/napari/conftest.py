"""Fixtures shared by the widget tests."""

from __future__ import annotations

import pytest
import torch

from napari_phoenix.core.model.checkpoint import save_model
from napari_phoenix.core.model.config import ModelConfig
from napari_phoenix.core.model.network import build_network


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved ``demo`` network (the prize's input / output sizes, tiny widths): its ``.json``."""
    torch.manual_seed(0)
    return save_model(build_network(ModelConfig.demo()), tmp_path_factory.mktemp("models") / "m")
