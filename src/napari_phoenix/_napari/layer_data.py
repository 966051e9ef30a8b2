"""Core objects -> napari layer data tuples ``(data, kwargs, layer_type)``.

Used by the reader, the sample data and the CLI demo, so that a segment looks
the same however it was opened. No napari import is needed to build them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.segment import Segment, is_segment, open_segment
from ..core.stack import LayerStack, open_stack

#: label value 1 colour and default opacity for each mask role
MASK_STYLE = {
    "mask": {"color": "#3f7fbf", "opacity": 0.25, "visible": False},
    "label": {"color": "#ff3030", "opacity": 0.6, "visible": True},
    "ignore": {"color": "#ffd000", "opacity": 0.5, "visible": True},
}
AXIS_LABELS = ("layer", "y", "x")


def stack_layer_data(stack: LayerStack, name: str | None = None) -> tuple:
    """The Image layer of a stack: multiscale where large, layer numbers on the slider."""
    multiscale = len(stack.levels) > 1
    meta = {"phoenix": {"role": "stack", **stack.metadata()}}
    kwargs = {
        "name": name or stack.source.name,
        "multiscale": multiscale,
        "contrast_limits": list(stack.contrast_limits()),
        "metadata": meta,
        "axis_labels": AXIS_LABELS,
        # world z == layer number, so "layer 12" on the slider is file 12
        "translate": (stack.layer_numbers[0], 0, 0),
        "colormap": "gray",
    }
    data = list(stack.levels) if multiscale else stack.data
    return (data, kwargs, "image")


def mask_layer_data(mask: np.ndarray, role: str, path: Path | None, segment_name: str) -> tuple:
    """A Labels layer (values 0/1) for a papyrus mask, ink label or ignore mask."""
    style = MASK_STYLE[role]
    kwargs = {
        "name": f"{segment_name} {role}",
        "opacity": style["opacity"],
        "visible": style["visible"],
        "colormap": {None: "transparent", 0: "transparent", 1: style["color"]},
        "axis_labels": AXIS_LABELS[1:],
        "metadata": {"phoenix": {"role": role, "path": str(path) if path else None}},
    }
    return (mask.astype(np.uint8), kwargs, "labels")


def segment_layer_data(segment: Segment) -> list[tuple]:
    """Stack + mask + label + ignore layers of a segment (absent masks are skipped)."""
    layers = [stack_layer_data(segment.stack, name=segment.name)]
    layers[0][1]["metadata"]["phoenix"]["segment"] = str(segment.root)
    for role in ("mask", "label", "ignore"):
        mask = segment.read(role)
        if mask is not None:
            layers.append(mask_layer_data(mask, role, segment.files[role], segment.name))
    return layers


def path_layer_data(path: str | Path) -> list[tuple]:
    """Layer data for anything :func:`open_stack` opens; segment folders get their masks."""
    path = Path(path)
    if is_segment(path):
        return segment_layer_data(open_segment(path))
    return [stack_layer_data(open_stack(path))]
