"""The 3-D "mini UNETR" of the prize model (``model.encoder`` in its checkpoint).

A ViT over 16-voxel cubes of the input volume, whose tokens after four of its
blocks feed a 3-D deconvolution decoder with skip connections (Hatamizadeh et
al., "UNETR: Transformers for 3D Medical Image Segmentation", in the layout of
the widely copied plain-PyTorch UNETR used for Vesuvius Challenge ink
detection). Module names and nesting reproduce the checkpoint's parameter
names exactly, so a prize ``state_dict`` loads strictly.

Decoder (filters ``f1, f2, f3`` = 256, 128, 64; token grid ``g`` = 1 x 8 x 8)::

    z12 (g) --deconv--------------------------------> f1 @ 2g ┐
    z9  (g) --deconv+conv--> f1 @ 2g ---------------------cat-> 3 conv, deconv -> f2 @ 4g ┐
    z6  (g) --2 x (deconv+conv)--> f2 @ 4g ----------------------------------------cat-> 2 conv, deconv -> f3 @ 8g ┐
    z3  (g) --3 x (deconv+conv)--> f3 @ 8g --------------------------------------------------cat-> 2 conv, deconv -> f3/2 @ 16g ┐
    x (16g) --2 conv--> f3/2 @ 16g --------------------------------------------------------------------------------cat-> 2 conv, 1x1x1 conv -> out

where every "conv" is Conv3d 3x3x3 + BatchNorm3d + ReLU, every "deconv" a
ConvTranspose3d 2x2x2 stride 2, and "deconv+conv" is deconv, Conv3d 3x3x3,
BatchNorm3d, ReLU.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig


class SingleDeconv3DBlock(nn.Module):
    """``ConvTranspose3d`` with kernel 2 and stride 2: doubles every axis.

    Parameters
    ----------
    in_planes, out_planes : int
        Channels in and out.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.block = nn.ConvTranspose3d(in_planes, out_planes, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SingleConv3DBlock(nn.Module):
    """``Conv3d`` with stride 1 and "same" padding.

    Parameters
    ----------
    in_planes, out_planes : int
        Channels in and out.
    kernel_size : int
        Odd kernel edge.
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int) -> None:
        super().__init__()
        self.block = nn.Conv3d(
            in_planes, out_planes, kernel_size, stride=1, padding=(kernel_size - 1) // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Conv3DBlock(nn.Module):
    """3x3x3 convolution, ``BatchNorm3d``, ReLU (names ``block.0.block``, ``block.1``).

    Parameters
    ----------
    in_planes, out_planes : int
        Channels in and out.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            SingleConv3DBlock(in_planes, out_planes, 3), nn.BatchNorm3d(out_planes), nn.ReLU(True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Deconv3DBlock(nn.Module):
    """2x transposed convolution, 3x3x3 convolution, ``BatchNorm3d``, ReLU.

    Parameters
    ----------
    in_planes, out_planes : int
        Channels in and out.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            SingleDeconv3DBlock(in_planes, out_planes),
            SingleConv3DBlock(out_planes, out_planes, 3),
            nn.BatchNorm3d(out_planes),
            nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections."""

    def __init__(self, num_heads: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.attn_dropout = nn.Dropout(dropout)
        self.proj_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = self.attn_dropout(scores.softmax(dim=-1))
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).flatten(2)
        return self.proj_dropout(self.out(context))


class PositionwiseFeedForward(nn.Module):
    """``w_2(dropout(relu(w_1(x))))``."""

    def __init__(self, embed_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(embed_dim, mlp_dim)
        self.w_2 = nn.Linear(mlp_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(torch.relu(self.w_1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = PositionwiseFeedForward(cfg.embed_dim, cfg.mlp_dim, cfg.dropout)
        self.attn = SelfAttention(cfg.num_heads, cfg.embed_dim, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Embeddings(nn.Module):
    """Cubic patch embedding (``Conv3d`` stride = kernel) plus learned positions."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n_tokens = math.prod(cfg.token_grid)
        self.position_embeddings = nn.Parameter(torch.zeros(1, n_tokens, cfg.embed_dim))
        self.patch_embeddings = nn.Conv3d(
            cfg.in_channels, cfg.embed_dim, kernel_size=cfg.token_size, stride=cfg.token_size
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embeddings(x).flatten(2).transpose(-1, -2)
        return self.dropout(x + self.position_embeddings)


class Transformer(nn.Module):
    """Embeddings and blocks; returns the tokens after the ``extract_layers`` blocks.

    ``encoder_norm`` exists only so that the prize checkpoint loads strictly:
    the original network defines it but never applies it.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.layer = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.encoder_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.extract_layers = tuple(cfg.extract_layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.embeddings(x)
        out = []
        for depth, block in enumerate(self.layer, start=1):
            hidden = block(hidden)
            if depth in self.extract_layers:
                out.append(hidden)
        return out


class UNETR(nn.Module):
    """The 3-D encoder-decoder: ``(B, 1, D, H, W)`` -> ``(B, unetr_channels, D, H, W)``.

    Parameters
    ----------
    config : ModelConfig, optional
        Sizes; the default is the prize configuration.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        e = cfg.embed_dim
        f1, f2, f3 = cfg.decoder_filters
        self.transformer = Transformer(cfg)
        self.decoder0 = nn.Sequential(
            Conv3DBlock(cfg.in_channels, f3 // 4), Conv3DBlock(f3 // 4, f3 // 2)
        )
        self.decoder3 = nn.Sequential(
            Deconv3DBlock(e, f1), Deconv3DBlock(f1, f2), Deconv3DBlock(f2, f3)
        )
        self.decoder6 = nn.Sequential(Deconv3DBlock(e, f1), Deconv3DBlock(f1, f2))
        self.decoder9 = Deconv3DBlock(e, f1)
        self.decoder12_upsampler = SingleDeconv3DBlock(e, f1)
        self.decoder9_upsampler = nn.Sequential(
            Conv3DBlock(2 * f1, f1),
            Conv3DBlock(f1, f1),
            Conv3DBlock(f1, f1),
            SingleDeconv3DBlock(f1, f2),
        )
        self.decoder6_upsampler = nn.Sequential(
            Conv3DBlock(2 * f2, f2), Conv3DBlock(f2, f2), SingleDeconv3DBlock(f2, f3)
        )
        self.decoder3_upsampler = nn.Sequential(
            Conv3DBlock(2 * f3, f3), Conv3DBlock(f3, f3), SingleDeconv3DBlock(f3, f3 // 2)
        )
        self.decoder0_header = nn.Sequential(
            Conv3DBlock(f3, f3 // 2),
            Conv3DBlock(f3 // 2, f3 // 2),
            SingleConv3DBlock(f3 // 2, cfg.unetr_channels, 1),
        )

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        b, _, e = tokens.shape
        return tokens.transpose(-1, -2).reshape(b, e, *self.config.token_grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the UNETR.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, in_channels, input_layers, tile_size, tile_size)`` float.

        Returns
        -------
        torch.Tensor
            ``(B, unetr_channels, input_layers, tile_size, tile_size)``.
        """
        z3, z6, z9, z12 = (self._grid(z) for z in self.transformer(x))
        z12 = self.decoder12_upsampler(z12)
        z9 = self.decoder9_upsampler(torch.cat([self.decoder9(z9), z12], dim=1))
        z6 = self.decoder6_upsampler(torch.cat([self.decoder6(z6), z9], dim=1))
        z3 = self.decoder3_upsampler(torch.cat([self.decoder3(z3), z6], dim=1))
        return self.decoder0_header(torch.cat([self.decoder0(x), z3], dim=1))
