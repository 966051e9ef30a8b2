"""npe2 sample data: the phantom scroll segment, opened through the reader."""

from __future__ import annotations

from ..core.sample import sample_segment
from .layer_data import path_layer_data


def phantom_segment():
    """The 8-bit phantom segment (stack, mask, ink label, ignore mask)."""
    return path_layer_data(sample_segment("uint8"))


def phantom_segment_16bit():
    """The 16-bit phantom segment (stack, mask, ink label, ignore mask)."""
    return path_layer_data(sample_segment("uint16"))
