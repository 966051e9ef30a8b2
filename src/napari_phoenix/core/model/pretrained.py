"""Start the SegFormer from ImageNet-pretrained MiT weights read from a local file.

The prize trained from ``nvidia/mit-b3``'s ImageNet weights. Here they come
from a file the user downloaded once (a Hugging Face ``model.safetensors`` or
``pytorch_model.bin``, or the folder holding it); nothing is fetched at run
time. The MiT encoder's tensors are copied where names and shapes agree; the
first patch embedding sees 3 RGB channels in ImageNet and 32 UNETR channels
here, so it keeps its fresh initialisation (as ``from_pretrained(...,
ignore_mismatched_sizes=True)`` did for the prize), and the ImageNet
classifier is not used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_mit` copied and what it left alone."""

    source: str
    loaded: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        found = [path / f for f in _FILES if (path / f).is_file()]
        if not found:
            raise CheckpointError(f"{path} holds none of {', '.join(_FILES)}: point at the weights file")
        path = found[0]
    if not path.is_file():
        raise CheckpointError(f"no pretrained weights at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"{path} cannot be read as plain weights ({exc}); pretrained files are loaded safely only"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state.get("state_dict", state)


def load_pretrained_mit(model: Any, path: str | os.PathLike) -> PretrainedReport:
    """Copy ImageNet MiT weights into ``model.encoder_2d.segformer``, in place.

    Parameters
    ----------
    model : InkNet
        The network (its MiT variant should be the file's, e.g. b3 for ``mit-b3``).
    path : path-like
        ``model.safetensors`` / ``pytorch_model.bin`` of a Hugging Face MiT /
        SegFormer model, or the folder holding one.

    Returns
    -------
    PretrainedReport
        Tensors copied, those of another shape (left as initialised), those of
        the encoder the file lacks, and file entries not used.

    Raises
    ------
    CheckpointError
        If the file is missing or unreadable, or shares no tensor with the MiT
        encoder (another architecture or variant).
    """
    path = Path(path)
    state = _read(path)
    target = model.encoder_2d.segformer.state_dict()
    report = PretrainedReport(str(path))
    copy = {}
    for key, value in state.items():
        name = key.removeprefix("segformer.")
        if name not in target:
            report.ignored.append(key)
        elif tuple(value.shape) != tuple(target[name].shape):
            report.mismatched.append((name, tuple(value.shape), tuple(target[name].shape)))
        else:
            copy[name] = value
    if not copy:
        raise CheckpointError(
            f"{path} shares no tensor with the MiT encoder of {model.config.name}: is it a SegFormer / MiT "
            f"checkpoint of variant {model.config.mit_variant}?"
        )
    report.missing = sorted(set(target) - set(copy) - {m[0] for m in report.mismatched})
    with torch.no_grad():
        model.encoder_2d.segformer.load_state_dict(copy, strict=False)
    report.loaded = sorted(copy)
    model.provenance = {**getattr(model, "provenance", {}), "pretrained_mit": str(path)}
    return report
