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


@pytest.fixture(scope="module")
def refine_phantom(tmp_path_factory):
    """A small phantom segment (256 x 384 px, seed 1), written once per test module."""
    from napari_phoenix.core.phantom import make_phantom

    return make_phantom(tmp_path_factory.mktemp("phantom") / "seg", height=256, width=384, seed=1)


@pytest.fixture
def seg(tmp_path, refine_phantom):
    """A fresh copy of :func:`refine_phantom` for each test (rounds are written into it)."""
    import shutil

    return shutil.copytree(refine_phantom, tmp_path / "seg")
