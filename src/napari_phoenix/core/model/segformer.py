"""SegFormer (Mix Transformer encoder + all-MLP head) with the prize checkpoint's names.

The prize model used ``transformers.SegformerForSemanticSegmentation`` of the
4.x series. ``transformers`` 5 renamed and regrouped its modules
(``segformer.encoder.block.0.0.attention.self.query`` became
``segformer.stages.0.blocks.0.attention.q_proj``) and computes attention
through a pluggable kernel, so its ``state_dict`` no longer matches the
checkpoint and its numbers may differ in the last bits. This module is a
self-contained copy of the 4.x computation with the 4.x parameter names, so the
prize weights load strictly and give the original numbers whatever
``transformers`` is installed. ``tests/core/model`` checks it against the
installed ``transformers`` implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


@dataclass(frozen=True)
class SegformerSettings:
    """The SegFormer settings the network uses (``transformers`` 4.x defaults elsewhere)."""

    num_channels: int
    depths: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    num_attention_heads: tuple[int, ...]
    sr_ratios: tuple[int, ...]
    decoder_hidden_size: int
    num_labels: int
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratio: int = 4
    drop_path_rate: float = 0.1
    classifier_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    @classmethod
    def from_config(cls, config: ModelConfig) -> SegformerSettings:
        """Settings of the 2-D half of ``config``'s network.

        Parameters
        ----------
        config : ModelConfig
            Network sizes.

        Returns
        -------
        SegformerSettings
        """
        return cls(
            num_channels=config.unetr_channels,
            depths=tuple(config.mit_depths),
            hidden_sizes=tuple(config.mit_hidden_sizes),
            num_attention_heads=tuple(config.mit_heads),
            sr_ratios=tuple(config.mit_sr_ratios),
            decoder_hidden_size=config.mit_decoder_hidden,
            num_labels=config.num_labels,
        )


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = keep + torch.rand(
            (x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device
        )
        return x.div(keep) * mask.floor_()


class OverlapPatchEmbeddings(nn.Module):
    """Strided convolution + LayerNorm; returns tokens and the grid size."""

    def __init__(self, patch_size: int, stride: int, num_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            num_channels, hidden_size, patch_size, stride=stride, padding=patch_size // 2
        )
        self.layer_norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.layer_norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Attention whose keys/values are spatially reduced by a strided convolution."""

    def __init__(self, hidden_size: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(0.0)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(hidden_size, hidden_size, kernel_size=sr_ratio, stride=sr_ratio)
            self.layer_norm = nn.LayerNorm(hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        q = self._heads(self.query(x))
        if self.sr_ratio > 1:
            b, _, c = x.shape
            x = self.sr(x.permute(0, 2, 1).reshape(b, c, h, w))
            x = self.layer_norm(x.reshape(b, c, -1).permute(0, 2, 1))
        k, v = self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = self.dropout(F.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.shape[0], context.shape[1], -1)


class SelfOutput(nn.Module):
    """Output projection of the attention."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class Attention(nn.Module):
    """``self`` (efficient attention) + ``output`` (projection)."""

    def __init__(self, hidden_size: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.self = EfficientSelfAttention(hidden_size, num_heads, sr_ratio)
        self.output = SelfOutput(hidden_size)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.output(self.self(x, h, w))


class DWConv(nn.Module):
    """Depth-wise 3x3 convolution over the token grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = self.dwconv(x.transpose(1, 2).view(b, c, h, w))
        return x.flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """``dense1`` -> depth-wise conv -> GELU -> ``dense2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.dense2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.dropout(F.gelu(self.dwconv(self.dense1(x), h, w)))
        return self.dropout(self.dense2(x))


class Layer(nn.Module):
    """Pre-norm Mix Transformer block."""

    def __init__(
        self, hidden_size: int, num_heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float
    ) -> None:
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(hidden_size)
        self.attention = Attention(hidden_size, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.layer_norm_2 = nn.LayerNorm(hidden_size)
        self.mlp = MixFFN(hidden_size, hidden_size * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.drop_path(self.attention(self.layer_norm_1(x), h, w)) + x
        return self.drop_path(self.mlp(self.layer_norm_2(x), h, w)) + x


class Encoder(nn.Module):
    """Four stages; returns the ``(B, C_i, H_i, W_i)`` map of each."""

    def __init__(self, s: SegformerSettings) -> None:
        super().__init__()
        rates = [x.item() for x in torch.linspace(0, s.drop_path_rate, sum(s.depths), device="cpu")]
        ins = (s.num_channels, *s.hidden_sizes[:-1])
        self.patch_embeddings = nn.ModuleList(
            OverlapPatchEmbeddings(p, st, i, o)
            for p, st, i, o in zip(s.patch_sizes, s.strides, ins, s.hidden_sizes)
        )
        blocks, start = [], 0
        for i, depth in enumerate(s.depths):
            blocks.append(
                nn.ModuleList(
                    Layer(
                        s.hidden_sizes[i],
                        s.num_attention_heads[i],
                        s.sr_ratios[i],
                        s.mlp_ratio,
                        rates[start + j],
                    )
                    for j in range(depth)
                )
            )
            start += depth
        self.block = nn.ModuleList(blocks)
        self.layer_norm = nn.ModuleList(nn.LayerNorm(c) for c in s.hidden_sizes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for embed, blocks, norm in zip(self.patch_embeddings, self.block, self.layer_norm):
            x, h, w = embed(x)
            for blk in blocks:
                x = blk(x, h, w)
            x = norm(x).reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            maps.append(x)
        return maps


class SegformerModel(nn.Module):
    """Holds the encoder (the ``segformer.encoder`` level of the names)."""

    def __init__(self, s: SegformerSettings) -> None:
        super().__init__()
        self.encoder = Encoder(s)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)


class MLP(nn.Module):
    """Linear projection of a feature map's channels."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


class DecodeHead(nn.Module):
    """All-MLP head: project, upsample to stage 1, fuse, classify."""

    def __init__(self, s: SegformerSettings) -> None:
        super().__init__()
        d = s.decoder_hidden_size
        self.linear_c = nn.ModuleList(MLP(c, d) for c in s.hidden_sizes)
        self.linear_fuse = nn.Conv2d(d * len(s.hidden_sizes), d, kernel_size=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(d)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(s.classifier_dropout_prob)
        self.classifier = nn.Conv2d(d, s.num_labels, kernel_size=1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        b = maps[-1].shape[0]
        size = maps[0].shape[2:]
        parts = []
        for fmap, mlp in zip(maps, self.linear_c):
            h, w = fmap.shape[2], fmap.shape[3]
            x = mlp(fmap).permute(0, 2, 1).reshape(b, -1, h, w)
            parts.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        x = self.linear_fuse(torch.cat(parts[::-1], dim=1))
        x = self.dropout(self.activation(self.batch_norm(x)))
        return self.classifier(x)


class SegformerForSemanticSegmentation(nn.Module):
    """``(B, C, H, W)`` -> logits ``(B, num_labels, H / 4, W / 4)``.

    Parameters
    ----------
    settings : SegformerSettings
        Sizes of the encoder and head.
    """

    def __init__(self, settings: SegformerSettings) -> None:
        super().__init__()
        self.settings = settings
        self.segformer = SegformerModel(settings)
        self.decode_head = DecodeHead(settings)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.settings.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits at 1/4 resolution.

        Parameters
        ----------
        pixel_values : torch.Tensor
            ``(B, num_channels, H, W)``, ``H`` and ``W`` multiples of 32.

        Returns
        -------
        torch.Tensor
            ``(B, num_labels, H // 4, W // 4)``.
        """
        return self.decode_head(self.segformer(pixel_values))
