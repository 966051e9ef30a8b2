"""The fast inference path: precision, channels-last, compile plumbing, profiling, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_phoenix.core.model.inference import (
    SPLIT,
    InferenceError,
    InferenceOptions,
    as_callable,
    count_flops,
    inference_model,
    profile_split,
    resolve_device,
)


def test_fp32_is_the_plain_forward(small_model, small_input):
    with torch.no_grad():
        expected = small_model(small_input)
    fast = inference_model(small_model, "cpu", precision="fp32", channels_last=False)
    got = fast(small_input)
    side = small_model.config.tile_size // 4
    assert got.dtype == torch.float32 and got.shape == (2, side, side)
    assert torch.equal(got, expected)


def test_cpu_defaults_follow_the_benchmark(small_model):
    from napari_phoenix.core.model.inference import cpu_has_bf16

    fast = inference_model(small_model, "cpu")
    assert fast.options.channels_last is True
    assert fast.options.precision == ("bf16" if cpu_has_bf16() else "fp32")


def test_bf16_autocast_is_close_and_returns_float32(small_model, small_input):
    expected = inference_model(small_model, "cpu", precision="fp32", channels_last=False)(small_input)
    got = inference_model(small_model, "cpu", precision="bf16")(small_input)
    assert got.dtype == torch.float32
    assert not torch.equal(got, expected)  # it really ran in bfloat16
    err = (torch.sigmoid(got) - torch.sigmoid(expected)).abs().max().item()
    assert err < 0.05, err


def test_channels_last_gives_the_same_logits(small_model, small_input):
    expected = inference_model(small_model, "cpu", precision="fp32", channels_last=False)(small_input)
    fast = inference_model(small_model, "cpu", precision="fp32", channels_last=True)
    conv = next(m for m in small_model.modules() if isinstance(m, nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(fast(small_input), expected, rtol=1e-4, atol=1e-4)


def test_compile_path_runs(small_model, small_input):
    expected = inference_model(small_model, "cpu", precision="fp32")(small_input)
    fast = inference_model(small_model, "cpu", precision="fp32", compile=True, compile_backend="eager")
    assert fast._run is not fast.module
    torch.testing.assert_close(fast(small_input), expected)


def test_options_are_checked():
    with pytest.raises(InferenceError, match="precision must be one of"):
        InferenceOptions(precision="fp8")
    with pytest.raises(InferenceError, match="float16 autocast is for GPUs"):
        inference_model(nn.Linear(2, 2), "cpu", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(InferenceError, match="no CUDA device"):
            resolve_device("cuda:0")
        assert resolve_device("auto").type == "cpu"
    resolved = InferenceOptions().resolved(torch.device("cuda"))
    assert (resolved.precision, resolved.channels_last) == ("fp16", True)


def test_profile_split_covers_the_forward(small_model, small_input):
    fast = inference_model(small_model, "cpu", precision="fp32")
    parts = profile_split(fast, small_input, repeats=1)
    assert set(parts) == {*SPLIT, "other", "total"}
    assert all(v > 0 for k, v in parts.items() if k != "other")
    assert sum(v for k, v in parts.items() if k != "total") == pytest.approx(parts["total"], rel=1e-6)
    assert parts["other"] < 0.5 * parts["total"]
    # the hooks are gone afterwards
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in small_model.modules())


def test_count_flops():
    assert count_flops(nn.Linear(10, 20), (3, 10)) == 2 * 3 * 10 * 20
    conv = nn.Conv3d(2, 4, 3, padding=1)
    assert count_flops(conv, (1, 2, 4, 5, 6)) == 2 * (4 * 5 * 6) * 4 * 2 * 27


def test_as_callable_passes_callables_and_wraps_modules(small_model):
    fn = lambda x: x[:, 0, 0, ::4, ::4]  # noqa: E731
    assert as_callable(fn) is fn
    assert as_callable(small_model, "cpu").module is small_model
    with pytest.raises(InferenceError, match="callable"):
        as_callable(42)
