"""The ink network: 3-D UNETR, max over depth, SegFormer -> 1/4-resolution logits.

``InkNet().state_dict()`` with ``model.`` in front of every key is, key for key
and shape for shape, the ``state_dict`` of the prize Lightning checkpoint.
The SegFormer is ``transformers.SegformerForSemanticSegmentation`` built from a
local ``SegformerConfig`` (never a hub download). ``transformers`` is pinned
below 5: version 5 renamed SegFormer's modules (``segformer.stages.N.blocks``
for ``segformer.encoder.block.N``), which would break the checkpoint's keys.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .unetr import UNETR


def segformer_config(config: ModelConfig) -> Any:
    """The ``transformers.SegformerConfig`` of the 2-D half of the network.

    Parameters
    ----------
    config : ModelConfig
        Network sizes.

    Returns
    -------
    transformers.SegformerConfig
        Built locally (no hub download): the MiT stages of ``config``,
        ``num_channels = unetr_channels`` and ``num_labels``; every other
        setting is the library default, as in ``nvidia/mit-b*``.
    """
    from transformers import SegformerConfig

    return SegformerConfig(
        num_channels=config.unetr_channels,
        num_encoder_blocks=4,
        depths=list(config.mit_depths),
        hidden_sizes=list(config.mit_hidden_sizes),
        num_attention_heads=list(config.mit_heads),
        sr_ratios=list(config.mit_sr_ratios),
        decoder_hidden_size=config.mit_decoder_hidden,
        num_labels=config.num_labels,
    )


class InkNet(nn.Module):
    """UNETR + SegFormer ink detector (``unetr-sf-b3`` by default).

    Parameters
    ----------
    config : ModelConfig, optional
        Sizes; the default is the prize configuration.

    Attributes
    ----------
    encoder : UNETR
        ``(B, 1, D, H, W)`` -> ``(B, C, D, H, W)``.
    encoder_2d : SegformerForSemanticSegmentation
        ``transformers.SegformerForSemanticSegmentation``:
        ``(B, C, H, W)`` -> ``(B, num_labels, H/4, W/4)``.
    config : ModelConfig
        The sizes it was built with.
    provenance : dict
        Where the weights came from (filled in by the checkpoint loader).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.provenance: dict[str, Any] = {}
        self.encoder = UNETR(self.config)
        self.dropout = nn.Dropout2d(self.config.dropout_2d)
        from transformers import SegformerForSemanticSegmentation

        self.encoder_2d = SegformerForSemanticSegmentation(segformer_config(self.config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ink logits; apply ``torch.sigmoid`` for probabilities.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, 1, input_layers, tile_size, tile_size)`` float32, values in 0..1.

        Returns
        -------
        torch.Tensor
            ``(B, tile_size // 4, tile_size // 4)`` logits when ``num_labels``
            is 1, else ``(B, num_labels, tile_size // 4, tile_size // 4)``.
        """
        expected = self.config.input_shape
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"InkNet expects input of shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
            )
        volume = self.encoder(x)
        image = self.dropout(volume.max(dim=2).values)
        logits = self.encoder_2d(pixel_values=image).logits
        return logits[:, 0] if self.config.num_labels == 1 else logits

    def prize_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict with the prize checkpoint's ``model.`` prefix.

        Returns
        -------
        dict
            ``{"model." + key: tensor}`` in module order.
        """
        return {f"model.{k}": v for k, v in self.state_dict().items()}


def build_network(config: ModelConfig | None = None, device: str | torch.device = "cpu") -> InkNet:
    """Build a freshly initialised network in eval mode.

    Parameters
    ----------
    config : ModelConfig, optional
        Sizes; the default is the prize configuration ``unetr-sf-b3``.
    device : str or torch.device
        Where to put it.

    Returns
    -------
    InkNet
    """
    return InkNet(config).to(device).eval()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable-parameter elements (buffers excluded).

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters())
