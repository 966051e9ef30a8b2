"""Load and save ink-model weights without running code from the file.

Two formats are read by :func:`load_model`:

* a prize / PyTorch Lightning ``.ckpt`` (a pickle in a zip archive; weights
  under ``state_dict`` with keys ``model.*``, ``hyper_parameters`` beside
  them). It is read with ``torch.load(weights_only=True)``, which refuses any
  Python object other than tensors and plain containers; a file that needs
  more is refused unless the caller says it trusts the file.
* this project's own format: ``<name>.safetensors`` (weights; safetensors
  cannot hold code) + ``<name>.json`` (architecture and provenance), written
  by :func:`save_model` and :func:`convert_checkpoint`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from .config import ModelConfig
from .state import CheckpointError, check_state, infer_config

__all__ = [
    "CheckpointError",
    "convert_checkpoint",
    "file_sha256",
    "load_model",
    "read_model_info",
    "save_model",
]

FORMAT = "napari-phoenix-model"
FORMAT_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    str
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if depth < 6 and isinstance(obj, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in obj.items()}
    if depth < 6 and isinstance(obj, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in obj]
    return repr(obj)[:200]


# ----------------------------------------------------------------- own format
def _pair(path: str | os.PathLike, for_writing: bool = False) -> tuple[Path, Path]:
    """``(<name>.safetensors, <name>.json)`` for a folder, either file or the bare name."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        stem = p.with_suffix("")
    elif p.is_dir():
        found = sorted(w for w in p.glob("*.safetensors") if w.with_suffix(".json").exists())
        if for_writing or not found:
            if not for_writing:
                raise CheckpointError(f"folder {p} holds no <name>.safetensors + <name>.json model")
            stem = p / "model"
        elif len(found) > 1:
            names = ", ".join(w.name for w in found)
            raise CheckpointError(
                f"folder {p} holds several models ({names}); name one of the files"
            )
        else:
            stem = found[0].with_suffix("")
    else:
        stem = p
    return stem.parent / (stem.name + ".safetensors"), stem.parent / (stem.name + ".json")


def save_model(
    model: Any, path: str | os.PathLike, provenance: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` as ``<name>.safetensors`` + ``<name>.json``, each atomically.

    Parameters
    ----------
    model : InkNet
        The network (its ``config`` is stored).
    path : path-like
        ``out/name``, ``out/name.safetensors``, ``out/name.json`` or an
        existing folder (then ``model.safetensors`` + ``model.json`` in it).
    provenance : mapping, optional
        Where the weights come from: e.g. ``training_data`` (list of segment
        or chunk names), ``epochs``, ``metrics`` (dict), ``parent_sha256``,
        ``parent_name``, ``notes``. Kept as given (made JSON-safe); the code
        version and the creation time are added.

    Returns
    -------
    Path
        The ``.json`` file, which names and checksums the weights.
    """
    from safetensors.torch import save_file

    from ... import __version__

    weights, meta = _pair(path, for_writing=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(
            state, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        )
    config: ModelConfig = model.config
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": config.name,
        "config": config.to_dict(),
        "weights": {
            "file": weights.name,
            "sha256": file_sha256(weights),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "provenance": {
            "code_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **_jsonable(dict(provenance or {})),
        },
    }
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return meta


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description (architecture, weights checksum, provenance) of a saved model.

    Parameters
    ----------
    path : path-like
        As for :func:`load_model` (own format only).

    Returns
    -------
    dict
    """
    _, meta = _pair(path)
    if not meta.exists():
        raise CheckpointError(
            f"{meta.name} is missing: the weights need their .json description beside them"
        )
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta} is not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(
            f"{meta} is not a napari-phoenix model description (no format {FORMAT!r})"
        )
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{meta} has format version {info['format_version']}; this napari-phoenix reads up to "
            f"{FORMAT_VERSION}: update napari-phoenix"
        )
    return info


def _load_own(path: str | os.PathLike, device: Any) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta = _pair(path)
    info = read_model_info(path)
    if not weights.exists():
        raise CheckpointError(f"{weights.name} is missing beside {meta.name}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights} cannot be read, it is truncated or damaged ({exc})"
        ) from None
    expected = info.get("weights", {}).get("sha256")
    if expected and file_sha256(weights) != expected:
        raise CheckpointError(
            f"{weights.name} does not match the checksum in {meta.name}: the weights were changed "
            "or the two files do not belong together"
        )
    try:
        config = ModelConfig.from_dict(info["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta} has no usable architecture config ({exc})") from None
    provenance = dict(info.get("provenance", {}))
    provenance.update(source=str(weights), sha256=expected, format=FORMAT)
    return _build(config, state, weights.name, device, provenance)


# ------------------------------------------------------------ Lightning .ckpt
def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        raise CheckpointError(f"{path} is empty")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) == 8 and 0 < int.from_bytes(head, "little") < 100_000_000:
        return "safetensors"
    raise CheckpointError(
        f"{path} is not a model checkpoint: expected a PyTorch/Lightning .ckpt or a "
        "napari-phoenix .safetensors + .json pair"
    )


def _torch_load(path: Path, trusted: bool) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint or is damaged ({text[:120]})"
            ) from None
        if not trusted:
            what = re.search(r"GLOBAL ([\w.]+)", text)
            obj = f" (it contains {what.group(1)})" if what else ""
            raise CheckpointError(
                f"{path.name} holds Python objects beyond tensors and plain values{obj}. Loading it "
                "would run code stored in the file, which can do anything your account can. It was "
                "not loaded. Only if you trust where the file comes from, load it with trusted=True "
                "(and convert it with convert_checkpoint to the safe .safetensors format)."
            ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"{path} cannot be read, it is truncated or damaged ({str(exc).splitlines()[0][:120]})"
        ) from None
    try:  # trusted: full unpickling, as the caller asked
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - anything the pickle raises
        raise CheckpointError(f"{path} could not be unpickled even as trusted: {exc!r}") from None


def _model_state(obj: Any, path: Path) -> tuple[dict[str, Any], Any]:
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dictionary")
    hparams = obj.get("hyper_parameters") or {}
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} has no weights (no 'state_dict' with tensors)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        raise CheckpointError(f"{path}: 'state_dict' holds values that are not tensors")
    if all(k.startswith("model.") for k in tensors):
        tensors = {k[len("model.") :]: v for k, v in tensors.items()}
    return tensors, hparams


def _load_ckpt(path: Path, device: Any, trusted: bool) -> Any:
    obj = _torch_load(path, trusted)
    state, hparams = _model_state(obj, path)
    config = infer_config(state, hparams)
    provenance = {
        "source": str(path),
        "sha256": file_sha256(path),
        "format": "lightning-ckpt",
        "epoch": obj.get("epoch"),
        "global_step": obj.get("global_step"),
        "hyper_parameters": _jsonable(hparams),
    }
    return _build(config, state, path.name, device, provenance)


# -------------------------------------------------------------------- shared
def _build(
    config: ModelConfig, state: Mapping[str, Any], source: str, device: Any, provenance: dict
) -> Any:
    from .network import InkNet

    model = InkNet(config)
    check_state(model.state_dict(), state, source)
    model.load_state_dict(state, strict=True)
    model.provenance = provenance
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: Any = "cpu", trusted: bool = False) -> Any:
    """Load an ink model in eval mode from a prize ``.ckpt`` or the own format.

    Parameters
    ----------
    path : path-like
        A Lightning ``.ckpt`` / ``.pt`` file, a ``<name>.safetensors`` or
        ``<name>.json`` of a saved pair, the bare ``<name>``, or a folder
        holding one pair.
    device : str or torch.device
        Where to put the network.
    trusted : bool
        Allow full unpickling of a ``.ckpt`` that holds Python objects other
        than tensors and plain containers. Unpickling runs code from the file:
        only for files from a source you trust.

    Returns
    -------
    InkNet
        With ``config`` (the architecture) and ``provenance`` (source file,
        its SHA-256, epoch, hyper-parameters or the saved provenance).

    Raises
    ------
    CheckpointError
        If the file is missing, not a checkpoint, truncated, unsafe (and not
        trusted), or its weights do not fit the architecture (missing or
        unexpected keys, shape mismatches are named).
    """
    p = Path(path)
    if p.is_dir() or p.suffix in (".safetensors", ".json"):
        return _load_own(p, device)
    if not p.exists():
        if _pair(p)[1].exists():
            return _load_own(p, device)
        raise CheckpointError(f"no model at {p}")
    if _sniff(p) == "safetensors":
        raise CheckpointError(
            f"{p} looks like a safetensors file: name it <name>.safetensors and keep its "
            "<name>.json beside it"
        )
    return _load_ckpt(p, device, trusted)


def convert_checkpoint(
    ckpt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    trusted: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Convert a prize / Lightning ``.ckpt`` into the safe own format.

    Parameters
    ----------
    ckpt_path : path-like
        The ``.ckpt`` file.
    out_path : path-like
        Destination as for :func:`save_model`.
    trusted : bool
        As for :func:`load_model`.
    provenance : mapping, optional
        Extra provenance (e.g. ``training_data``, ``metrics``); the source's
        name, SHA-256 (``parent_sha256``), epoch and hyper-parameters are
        recorded automatically.

    Returns
    -------
    Path
        The written ``.json``.
    """
    model = load_model(ckpt_path, trusted=trusted)
    src = model.provenance
    epoch = src.get("epoch")
    record = {
        "parent_name": Path(ckpt_path).name,
        "parent_sha256": src["sha256"],
        "parent_format": "lightning-ckpt",
        "epochs": epoch + 1 if isinstance(epoch, int) else None,
        "parent_global_step": src.get("global_step"),
        "parent_hyper_parameters": src.get("hyper_parameters"),
        **dict(provenance or {}),
    }
    return save_model(model, out_path, provenance=record)
