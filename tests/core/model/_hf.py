"""Map this package's SegFormer names onto the installed ``transformers`` layout."""

from __future__ import annotations

import re

# transformers 5 names (left) of the 4.x names this package keeps (right)
_V5_RULES = [
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.", r"segformer.stages.\1.patch_embeddings."),
    (r"^segformer\.encoder\.layer_norm\.(\d+)\.", r"segformer.stages.\1.layer_norm."),
    (r"^segformer\.encoder\.block\.(\d+)\.(\d+)\.", r"segformer.stages.\1.blocks.\2."),
    (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.attention\.self\.sr\.", ".attention.sequence_reduction.sequence_reduction."),
    (r"\.attention\.self\.layer_norm\.", ".attention.sequence_reduction.layer_norm."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"^decode_head\.linear_c\.", "decode_head.linear_projections."),
]


def to_transformers_keys(state: dict, target_keys: set[str]) -> dict:
    """Rename a 4.x-style SegFormer state dict to whatever layout ``target_keys`` uses."""
    if set(state) == target_keys:
        return dict(state)
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _V5_RULES:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out
