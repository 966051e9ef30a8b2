"""napari-phoenix: find ink in X-ray scans of the Herculaneum scrolls, inside napari.

The public API is imported lazily so that ``import napari_phoenix`` (which napari
does at start-up through the plugin manifest) stays fast and pulls in neither
dask nor torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from ._version import __version__

# PyTorch backs CPU tensors of 2 MB and more with transparent huge pages when this is 1 (read at its
# first large allocation, so it works when set before that). Fresh tensors then cost one page
# fault per 2 MB instead of per 4 kB, and big strided copies fewer TLB misses: CPU tiled inference
# took about 15 % less time (docs/inference.md). Set THP_MEM_ALLOC_ENABLE=0 to keep PyTorch's default.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# public name -> module that defines it
_API = {
    "open_stack": "napari_phoenix.core.stack",
    "LayerStack": "napari_phoenix.core.stack",
    "open_segment": "napari_phoenix.core.segment",
    "Segment": "napari_phoenix.core.segment",
    "read_mask": "napari_phoenix.core.masks",
    "write_mask": "napari_phoenix.core.masks",
    "make_phantom": "napari_phoenix.core.phantom",
    "PhantomParams": "napari_phoenix.core.phantom",
    "contrast": "napari_phoenix.core.contrast",
    "contrast_lut": "napari_phoenix.core.contrast",
    "split_segment": "napari_phoenix.core.chunks",
    "iter_split": "napari_phoenix.core.chunks",
    "SplitParams": "napari_phoenix.core.chunks",
    "download": "napari_phoenix.core.download",
    "iter_download": "napari_phoenix.core.download",
    "DownloadParams": "napari_phoenix.core.download",
    "DownloadError": "napari_phoenix.core.download",
    "PhoenixError": "napari_phoenix.core.errors",
    "LayerStackError": "napari_phoenix.core.errors",
    "MaskError": "napari_phoenix.core.errors",
    "CheckpointError": "napari_phoenix.core.errors",
    "load_model": "napari_phoenix.core.model.checkpoint",
    "save_model": "napari_phoenix.core.model.checkpoint",
    "convert_checkpoint": "napari_phoenix.core.model.checkpoint",
    "ModelConfig": "napari_phoenix.core.model.config",
    "build_network": "napari_phoenix.core.model.network",
    "predict": "napari_phoenix.core.predict",
    "predict_window": "napari_phoenix.core.predict",
    "iter_predict": "napari_phoenix.core.predict",
    "PredictParams": "napari_phoenix.core.predict",
    "train": "napari_phoenix.core.train.loop",
    "iter_train": "napari_phoenix.core.train.loop",
    "TrainConfig": "napari_phoenix.core.train.loop",
    "propose_ink": "napari_phoenix.core.refine",
    "propose_ignore": "napari_phoenix.core.refine",
    "save_round": "napari_phoenix.core.refine",
    "list_rounds": "napari_phoenix.core.refine",
    "restore_round": "napari_phoenix.core.refine",
    "compare_rounds": "napari_phoenix.core.refine",
    "compare_predictions": "napari_phoenix.core.refine",
    "evaluate": "napari_phoenix.core.refine",
    "compare_masks": "napari_phoenix.core.compare",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # pragma: no cover
    from .core.chunks import SplitParams, iter_split, split_segment
    from .core.compare import compare_masks
    from .core.contrast import contrast, contrast_lut
    from .core.download import DownloadError, DownloadParams, download, iter_download
    from .core.errors import CheckpointError, LayerStackError, MaskError, PhoenixError
    from .core.masks import read_mask, write_mask
    from .core.model.checkpoint import convert_checkpoint, load_model, save_model
    from .core.model.config import ModelConfig
    from .core.model.network import build_network
    from .core.phantom import PhantomParams, make_phantom
    from .core.predict import PredictParams, iter_predict, predict, predict_window
    from .core.refine import (
        compare_predictions,
        compare_rounds,
        evaluate,
        list_rounds,
        propose_ignore,
        propose_ink,
        restore_round,
        save_round,
    )
    from .core.segment import Segment, open_segment
    from .core.stack import LayerStack, open_stack
    from .core.train.loop import TrainConfig, iter_train, train


def __getattr__(name: str):
    try:
        module = _API[name]
    except KeyError:
        raise AttributeError(f"module 'napari_phoenix' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
