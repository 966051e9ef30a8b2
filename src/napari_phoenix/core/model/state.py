"""Read a network's architecture off its ``state_dict``, and check a state dict fits.

A prize Lightning checkpoint stores no architecture description that this
package can rely on; the tensor shapes and block counts do tell it (the MiT
variant, the UNETR widths), and the hyper-parameters, where they name a
variant or a :class:`~.config.ModelConfig` field, fill in the rest.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import CheckpointError
from .config import MIT_PRESETS, ModelConfig

__all__ = ["CheckpointError", "check_state", "infer_config", "variant_from_hparams"]


_ENC = "encoder.transformer."
_SEG = "encoder_2d.segformer.encoder."
_VARIANT = re.compile(r"(?:mit|segformer|sf)[-_/ ]?(b[0-5])(?![0-9a-z])", re.IGNORECASE)
_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def _walk(obj: Any, depth: int = 0) -> Iterable[tuple[str, Any]]:
    """Yield ``(key, value)`` of nested mappings (and attribute bags such as Namespace)."""
    if depth > 4:
        return
    if not isinstance(obj, Mapping) and hasattr(obj, "__dict__") and not isinstance(obj, type):
        obj = vars(obj)
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield str(key), value
            yield from _walk(value, depth + 1)


def variant_from_hparams(hparams: Any) -> str | None:
    """The MiT variant a checkpoint's hyper-parameters name (``"b3"``), if exactly one.

    Parameters
    ----------
    hparams : mapping or object
        Lightning ``hyper_parameters`` (nested values are searched too).

    Returns
    -------
    str or None
        ``None`` when no string names a variant or several different ones do.
    """
    found = set()
    for key, value in _walk(hparams):
        if (
            key in ("mit_variant", "variant")
            and isinstance(value, str)
            and value.lower() in MIT_PRESETS
        ):
            found.add(value.lower())
        elif isinstance(value, str):
            found.update(m.lower() for m in _VARIANT.findall(value))
    return found.pop() if len(found) == 1 else None


def _fields_from_hparams(hparams: Any) -> dict[str, Any]:
    out = {}
    for key, value in _walk(hparams):
        if key in _FIELDS and key != "mit_variant" and isinstance(value, (int, float, list, tuple)):
            out[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def _count(state: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...]:
    try:
        return tuple(state[key].shape)
    except KeyError:
        raise CheckpointError(
            f"the weights have no {key!r}: this is not a UNETR + SegFormer ink model "
            f"(first keys: {', '.join(list(state)[:4])})"
        ) from None


def infer_config(state: Mapping[str, Any], hparams: Any = None) -> ModelConfig:
    """Architecture of a network from its ``state_dict`` (keys without ``model.``).

    Parameters
    ----------
    state : mapping of str to tensor
        The network's weights.
    hparams : mapping, optional
        Lightning ``hyper_parameters``. A string naming a MiT variant
        (``"unetr-sf-b3"``, ``"mit_b3"``) and keys named like
        :class:`ModelConfig` fields (``num_heads``, ``input_layers``, ...) are used.

    Returns
    -------
    ModelConfig

    Raises
    ------
    CheckpointError
        If a key the architecture is read from is missing, or the
        hyper-parameters name a MiT variant the weights are not.
    """
    named = variant_from_hparams(hparams)
    values = _fields_from_hparams(hparams)

    pos = _shape(state, _ENC + "embeddings.position_embeddings")
    patch = _shape(state, _ENC + "embeddings.patch_embeddings.weight")
    embed, n_tokens = pos[2], pos[1]
    derived: dict[str, Any] = {
        "embed_dim": embed,
        "in_channels": patch[1],
        "token_size": patch[2],
        "num_layers": _count(state, _ENC + "layer."),
        "mlp_dim": _shape(state, _ENC + "layer.0.mlp.w_1.weight")[0],
        "decoder_filters": (
            _shape(state, "encoder.decoder12_upsampler.block.weight")[1],
            _shape(state, "encoder.decoder9_upsampler.3.block.weight")[1],
            _shape(state, "encoder.decoder6_upsampler.2.block.weight")[1],
        ),
        "unetr_channels": _shape(state, "encoder.decoder0_header.2.block.weight")[0],
        "num_labels": _shape(state, "encoder_2d.decode_head.classifier.weight")[0],
        "mit_hidden_sizes": tuple(
            _shape(state, f"{_SEG}patch_embeddings.{i}.proj.weight")[0]
            for i in range(_count(state, _SEG + "patch_embeddings."))
        ),
        "mit_depths": tuple(
            _count(state, f"{_SEG}block.{i}.") for i in range(_count(state, _SEG + "block."))
        ),
        "mit_decoder_hidden": _shape(state, "encoder_2d.decode_head.linear_c.0.proj.weight")[0],
    }
    derived["mit_sr_ratios"] = tuple(
        _shape(state, f"{_SEG}block.{i}.0.attention.self.sr.weight")[-1]
        if f"{_SEG}block.{i}.0.attention.self.sr.weight" in state
        else 1
        for i in range(len(derived["mit_depths"]))
    )
    if named:
        preset = ModelConfig().with_mit(named)
        if (preset.mit_depths, preset.mit_hidden_sizes) != (
            derived["mit_depths"],
            derived["mit_hidden_sizes"],
        ):
            raise CheckpointError(
                f"the hyper-parameters name MiT-{named}, but the weights have stages of depth "
                f"{derived['mit_depths']} and width {derived['mit_hidden_sizes']} "
                f"(MiT-{named}: {preset.mit_depths}, {preset.mit_hidden_sizes})"
            )
    values.update(derived)
    if "mit_heads" not in values:
        match = [
            p
            for p in MIT_PRESETS.values()
            if (tuple(p["depths"]), tuple(p["hidden"]))
            == (derived["mit_depths"], derived["mit_hidden_sizes"])
        ]
        values["mit_heads"] = tuple(match[0]["heads"]) if match else (1, 2, 5, 8)
    if "num_heads" not in values:
        values["num_heads"] = max(1, embed // 64)  # the prize model: 384 / 6 = 64 per head
    if "extract_layers" not in values and values["num_layers"] % 4 == 0:
        values["extract_layers"] = tuple(values["num_layers"] * k // 4 for k in range(1, 5))
    if "input_layers" not in values and "tile_size" not in values:
        side = math.isqrt(n_tokens)
        if side * side == n_tokens:  # one token deep, as the prize model
            values["input_layers"], values["tile_size"] = patch[2], patch[2] * side
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot work out the network's architecture from the checkpoint: {exc}"
        ) from None


def check_state(expected: Mapping[str, Any], found: Mapping[str, Any], source: str) -> None:
    """Raise a clear :class:`CheckpointError` unless ``found`` fits ``expected`` exactly.

    Parameters
    ----------
    expected : mapping of str to tensor
        The network's own ``state_dict``.
    found : mapping of str to tensor
        The weights read from a file.
    source : str
        Name of the file, for the message.

    Raises
    ------
    CheckpointError
        Naming a few missing and unexpected keys, or the first mismatched
        shapes with both shapes.
    """

    def few(keys: list[str]) -> str:
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        return ", ".join(keys[:5]) + more

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
    bad = [
        f"{k}: checkpoint {tuple(found[k].shape)}, network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    if bad:
        problems.append(f"{len(bad)} shape mismatches ({'; '.join(bad[:3])})")
    if problems:
        raise CheckpointError(f"{source} does not fit the network: " + "; ".join(problems))
