"""The ink model: prize-compatible UNETR + SegFormer and safe checkpoint loading.

Public API (imported lazily, so that ``import napari_phoenix.core.model`` does
not load torch):

- :class:`ModelConfig`, :data:`MIT_PRESETS` - architecture description.
- :class:`InkNet`, :func:`build_network`, :func:`count_parameters` - the network.
- :func:`load_model`, :func:`save_model`, :func:`convert_checkpoint`,
  :func:`read_model_info`, :func:`file_sha256`, :class:`CheckpointError`,
  :func:`infer_config` - checkpoints.
- :func:`load_pretrained_mit` - ImageNet MiT weights from a local file.
- :func:`inference_model`, :class:`InferenceOptions` - the fast inference path.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ModelConfig": "config",
    "MIT_PRESETS": "config",
    "InkNet": "network",
    "build_network": "network",
    "count_parameters": "network",
    "UNETR": "unetr",
    "CheckpointError": "state",  # defined in napari_phoenix.core.errors
    "infer_config": "state",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "convert_checkpoint": "checkpoint",
    "read_model_info": "checkpoint",
    "file_sha256": "checkpoint",
    "load_pretrained_mit": "pretrained",
    "inference_model": "inference",
    "InferenceOptions": "inference",
}

__all__ = [
    "MIT_PRESETS",
    "UNETR",
    "CheckpointError",
    "InkNet",
    "ModelConfig",
    "build_network",
    "convert_checkpoint",
    "count_parameters",
    "file_sha256",
    "infer_config",
    "inference_model",
    "InferenceOptions",
    "load_model",
    "load_pretrained_mit",
    "read_model_info",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
