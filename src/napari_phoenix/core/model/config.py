"""Architecture description of the ink network (UNETR + SegFormer), free of torch.

One :class:`ModelConfig` describes every size of the network; it is what the
project's own checkpoint format stores beside the weights, and what the
checkpoint loader infers from a prize ``.ckpt``. Its defaults are the prize
configuration ``unetr-sf-b3`` (see ``docs`` / seed conventions, section "Model").
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace, dataclass, field
from typing import Any

#: Mix Transformer (SegFormer encoder) presets of the ``transformers`` library:
#: depths, hidden sizes, attention heads, spatial-reduction ratios and the
#: width of the all-MLP decode head. ``tiny`` is this project's test size.
MIT_PRESETS: dict[str, dict[str, tuple[int, ...] | int]] = {
    "b0": {
        "depths": (2, 2, 2, 2),
        "hidden": (32, 64, 160, 256),
        "heads": (1, 2, 5, 8),
        "sr": (8, 4, 2, 1),
        "decoder": 256,
    },
    "b1": {
        "depths": (2, 2, 2, 2),
        "hidden": (64, 128, 320, 512),
        "heads": (1, 2, 5, 8),
        "sr": (8, 4, 2, 1),
        "decoder": 256,
    },
    "b2": {
        "depths": (3, 4, 6, 3),
        "hidden": (64, 128, 320, 512),
        "heads": (1, 2, 5, 8),
        "sr": (8, 4, 2, 1),
        "decoder": 768,
    },
    "b3": {
        "depths": (3, 4, 18, 3),
        "hidden": (64, 128, 320, 512),
        "heads": (1, 2, 5, 8),
        "sr": (8, 4, 2, 1),
        "decoder": 768,
    },
    "b4": {
        "depths": (3, 8, 27, 3),
        "hidden": (64, 128, 320, 512),
        "heads": (1, 2, 5, 8),
        "sr": (8, 4, 2, 1),
        "decoder": 768,
    },
    "b5": {
        "depths": (3, 6, 40, 3),
        "hidden": (64, 128, 320, 512),
        "heads": (1, 2, 5, 8),
        "sr": (8, 4, 2, 1),
        "decoder": 768,
    },
    "tiny": {
        "depths": (1, 1, 1, 1),
        "hidden": (8, 16, 16, 32),
        "heads": (1, 1, 2, 2),
        "sr": (8, 4, 2, 1),
        "decoder": 16,
    },
}

#: The UNETR decoder doubles the token grid four times, so a token covers 16
#: voxels per axis and input sizes must be multiples of it.
UNETR_UPSAMPLING = 16


def _mit_fields(variant: str) -> dict[str, Any]:
    try:
        p = MIT_PRESETS[variant]
    except KeyError:
        raise ValueError(
            f"unknown MiT variant {variant!r}; choose one of {', '.join(MIT_PRESETS)}"
        ) from None
    return {
        "mit_depths": tuple(p["depths"]),
        "mit_hidden_sizes": tuple(p["hidden"]),
        "mit_heads": tuple(p["heads"]),
        "mit_sr_ratios": tuple(p["sr"]),
        "mit_decoder_hidden": int(p["decoder"]),
    }


_B3 = _mit_fields("b3")


@dataclass(frozen=True)
class ModelConfig:
    """Every size of the ink network; defaults are the prize model ``unetr-sf-b3``.

    Parameters
    ----------
    input_layers : int
        Depth layers per input patch (16 in the prize pipeline).
    tile_size : int
        Height and width of an input patch in pixels (128). The network
        predicts a ``tile_size // 4`` square map.
    token_size : int
        Edge of the cubic UNETR patch embedding (16; must be 16, the decoder's
        total upsampling).
    in_channels : int
        Input channels of the volume (1).
    embed_dim : int
        Transformer width (384).
    num_layers : int
        Transformer blocks (8).
    num_heads : int
        Attention heads (6).
    mlp_dim : int
        Hidden width of the ReLU feed-forward layer (1024).
    extract_layers : tuple of int
        1-based transformer blocks whose tokens feed the decoder (2, 4, 6, 8).
    decoder_filters : tuple of int
        Widths of the three 3-D decoder levels, coarse to fine (256, 128, 64).
    unetr_channels : int
        Channels of the UNETR output, which are the SegFormer input channels (32).
    layer_norm_eps : float
        Epsilon of the transformer LayerNorms (1e-3).
    dropout : float
        Dropout inside the transformer (0.1).
    dropout_2d : float
        ``Dropout2d`` between the depth max-projection and the SegFormer (0.2).
    num_labels : int
        SegFormer output labels (1: ink).
    mit_depths, mit_hidden_sizes, mit_heads, mit_sr_ratios : tuple of int
        Mix Transformer stages (defaults: MiT-b3). Use :meth:`with_mit`.
    mit_decoder_hidden : int
        Width of the SegFormer decode head (768 for b2..b5, 256 for b0/b1).
    """

    input_layers: int = 16
    tile_size: int = 128
    token_size: int = 16
    in_channels: int = 1
    embed_dim: int = 384
    num_layers: int = 8
    num_heads: int = 6
    mlp_dim: int = 1024
    extract_layers: tuple[int, ...] = (2, 4, 6, 8)
    decoder_filters: tuple[int, int, int] = (256, 128, 64)
    unetr_channels: int = 32
    layer_norm_eps: float = 1e-3
    dropout: float = 0.1
    dropout_2d: float = 0.2
    num_labels: int = 1
    mit_depths: tuple[int, ...] = field(default=_B3["mit_depths"])
    mit_hidden_sizes: tuple[int, ...] = field(default=_B3["mit_hidden_sizes"])
    mit_heads: tuple[int, ...] = field(default=_B3["mit_heads"])
    mit_sr_ratios: tuple[int, ...] = field(default=_B3["mit_sr_ratios"])
    mit_decoder_hidden: int = _B3["mit_decoder_hidden"]

    def __post_init__(self) -> None:
        problems = []
        if self.token_size != UNETR_UPSAMPLING:
            problems.append(
                f"token_size is {self.token_size}, the UNETR decoder needs {UNETR_UPSAMPLING}"
            )
        for name in ("input_layers", "tile_size"):
            value = getattr(self, name)
            if value <= 0 or value % UNETR_UPSAMPLING:
                problems.append(
                    f"{name} is {value}, it must be a positive multiple of {UNETR_UPSAMPLING}"
                )
        if self.tile_size % 32:
            problems.append(f"tile_size is {self.tile_size}, the SegFormer needs a multiple of 32")
        if self.num_heads <= 0 or self.embed_dim % self.num_heads:
            problems.append(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if len(self.extract_layers) != 4 or not all(
            1 <= i <= self.num_layers for i in self.extract_layers
        ):
            problems.append(
                f"extract_layers {self.extract_layers} must be 4 blocks in 1..{self.num_layers}"
            )
        if len(self.decoder_filters) != 3 or self.decoder_filters[2] % 4:
            problems.append(
                f"decoder_filters {self.decoder_filters} must be 3 widths, the last a multiple of 4"
            )
        lengths = {
            len(self.mit_depths),
            len(self.mit_hidden_sizes),
            len(self.mit_heads),
            len(self.mit_sr_ratios),
        }
        if lengths != {4}:
            problems.append("the MiT settings need 4 stages each")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    # ------------------------------------------------------------------ presets
    @classmethod
    def prize(cls, variant: str = "b3") -> ModelConfig:
        """The prize architecture ``unetr-sf-<variant>`` (``b3`` is the winning model).

        Parameters
        ----------
        variant : str
            MiT variant ``b0`` .. ``b5``.

        Returns
        -------
        ModelConfig
        """
        return cls().with_mit(variant)

    @classmethod
    def small(cls) -> ModelConfig:
        """A tiny network for tests: same code path, a few thousand parameters.

        Returns
        -------
        ModelConfig
            Input ``(B, 1, 16, 32, 32)``, output ``(B, 8, 8)``.
        """
        return cls(
            tile_size=32,
            embed_dim=32,
            num_layers=4,
            num_heads=2,
            mlp_dim=48,
            extract_layers=(1, 2, 3, 4),
            decoder_filters=(16, 8, 8),
            unetr_channels=8,
        ).with_mit("tiny")

    @classmethod
    def demo(cls) -> ModelConfig:
        """The prize's input and output sizes with tiny widths: for CPU demos and tests of the
        tiled inference and training (same code path, ~300k parameters).

        Returns
        -------
        ModelConfig
            Input ``(B, 1, 16, 128, 128)``, output ``(B, 32, 32)``.
        """
        return replace(cls.small(), tile_size=128)

    def with_mit(self, variant: str) -> ModelConfig:
        """Return a copy with the SegFormer encoder of a named MiT preset.

        Parameters
        ----------
        variant : str
            A key of :data:`MIT_PRESETS`.

        Returns
        -------
        ModelConfig
        """
        return dataclasses.replace(self, **_mit_fields(variant))

    # --------------------------------------------------------------- properties
    @property
    def mit_variant(self) -> str:
        """Name of the MiT preset these settings match, or ``"custom"``."""
        mine = {k: getattr(self, k) for k in _B3}
        for name in MIT_PRESETS:
            if _mit_fields(name) == mine:
                return name
        return "custom"

    @property
    def name(self) -> str:
        """Short architecture name in the prize style, e.g. ``unetr-sf-b3``."""
        return f"unetr-sf-{self.mit_variant}"

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """Tokens per axis ``(depth, rows, cols)`` of the UNETR (1, 8, 8)."""
        t = self.token_size
        return (self.input_layers // t, self.tile_size // t, self.tile_size // t)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one input sample ``(C, D, H, W)``."""
        return (self.in_channels, self.input_layers, self.tile_size, self.tile_size)

    @property
    def output_size(self) -> int:
        """Edge of the square logit map (``tile_size // 4``)."""
        return self.tile_size // 4

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (tuples become lists).

        Returns
        -------
        dict
        """
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``.

        Parameters
        ----------
        data : dict
            Field values; missing ones take the defaults.

        Returns
        -------
        ModelConfig
        """
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
