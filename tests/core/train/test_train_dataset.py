"""Training data by the prize's rules: candidates, sampling, targets, reading, validation split; loss, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_phoenix.core.train.dataset import (
    DatasetError,
    PatchReader,
    Source,
    build_patches,
    candidate_patches,
    sample_patches,
    split_validation,
)
from napari_phoenix.core.train.metrics import Counts, prize_loss


def _chunk(name="c1", h=400, w=530, seed=0):
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 256, (21, h, w), dtype=np.uint8)
    mask = np.ones((h, w), bool)
    mask[:, :40] = False
    mask[150:230, 200:330] = False  # a hole
    label = np.zeros((h, w), bool)
    label[60:200, 100:140] = True
    label[260:330, 300:480] = True
    label[10:14, 450:455] = True  # a speck: patches with 0 < ink% < 5
    ignore = np.zeros((h, w), bool)
    ignore[280:400, 400:530] = True
    return Source(name, stack, label, ignore, mask)


def _oracle(src: Source, stride: int = 64):
    """The prize's candidate rules, as a loop."""
    h, w = src.data.shape[1:]
    hp, wp = -(-h // 128) * 128, -(-w // 128) * 128
    pad = lambda a: np.pad(a, ((0, hp - h), (0, wp - w)))  # noqa: E731
    mask, ignore, label = pad(src.mask), pad(src.ignore), pad(src.label)
    out = {}
    for y in range(0, hp - 127, stride):
        for x in range(0, wp - 127, stride):
            if not mask[y : y + 128, x : x + 128].all():
                continue
            keep = ~ignore[y : y + 128, x : x + 128][2::4, 2::4]
            ink = (label & ~ignore)[y : y + 128, x : x + 128][2::4, 2::4]
            if keep.sum() / 1024 < 0.05:
                continue
            out[(y, x)] = (ink, keep, int(np.floor(100 * ink.sum() / 1024)))
    return out


@pytest.mark.parametrize("stride", [64, 16])
def test_candidates_follow_the_prize_rules(stride):
    src = _chunk()
    c = candidate_patches(src, stride=stride)
    expected = _oracle(src, stride)
    assert sorted(map(tuple, c.yx)) == sorted(expected)
    ink, keep = c.targets(np.arange(len(c)))
    for k, (y, x) in enumerate(map(tuple, c.yx)):
        e_ink, e_keep, pct = expected[(y, x)]
        np.testing.assert_array_equal(ink[k], e_ink)
        np.testing.assert_array_equal(keep[k], e_keep)
        assert c.ink_percent[k] == pct
    assert (c.ink_percent > 0).any() and (c.ink_percent == 0).any() and ((c.ink_percent > 0) & (c.ink_percent < 5)).any()


def test_a_denser_grid_gives_more_patches_and_bad_strides_are_refused():
    src = _chunk()
    assert len(candidate_patches(src, stride=32)) > 2 * len(candidate_patches(src))
    assert len(build_patches([src], seed=0, stride=32)) > len(build_patches([src], seed=0))
    for bad in (0, 6, -4):
        with pytest.raises(DatasetError, match="multiple of 4"):
            candidate_patches(src, stride=bad)


def test_ink_sampling():
    c = candidate_patches(_chunk())
    s = sample_patches(c, np.random.default_rng(0))
    n_ink = int((c.ink_percent >= 5).sum())
    assert int((s.ink_percent >= 5).sum()) == n_ink
    assert int((s.ink_percent == 0).sum()) == min(int(0.75 * n_ink), int((c.ink_percent == 0).sum()))
    assert not ((s.ink_percent > 0) & (s.ink_percent < 5)).any()


def test_reader_reads_layers_5_to_20_and_caches_agree(tmp_path):
    src = _chunk()
    p = build_patches([src], seed=1)
    idx = np.arange(min(5, len(p)))
    plain = PatchReader([src], first_layer=5).read(p, idx)
    assert plain.shape == (len(idx), 16, 128, 128) and plain.dtype == np.uint8
    for k in idx:
        y, x = p.yx[k]
        np.testing.assert_array_equal(plain[k], src.data[5:21, y : y + 128, x : x + 128])
    for cache in ("memory", "zarr"):
        np.testing.assert_array_equal(PatchReader([src], 5, cache=cache, cache_dir=str(tmp_path)).read(p, idx), plain)
    ink128, keep128 = PatchReader([src], 5).targets128(p, idx)
    ink32, keep32 = p.targets(idx)
    np.testing.assert_array_equal(ink128[:, 2::4, 2::4], ink32)
    np.testing.assert_array_equal(keep128[:, 2::4, 2::4], keep32)
    short = Source("s", src.data[:12], src.label, src.ignore, src.mask)  # layers 0..11 only
    got = PatchReader([short], 5).read(p, idx)
    assert (got[:, 7:] == 0).all() and (got[:, :7] == plain[:, :7]).all()


def test_validation_split():
    a, b = _chunk("a", seed=1), _chunk("b", seed=2)
    p = build_patches([a, b], seed=3)
    train, val, how = split_validation(p, [a, b], ["b"], 0.05, 3)
    assert set(val.source) == {1} and set(train.source) == {0} and "held-out chunks: b" in how
    train, val, how = split_validation(p, [a, b], [], 0.2, 3)
    assert len(val) == round(0.2 * len(p)) and len(train) + len(val) == len(p) and "leak" in how
    with pytest.raises(DatasetError, match="not among"):
        split_validation(p, [a, b], ["zz"], 0.05, 3)
    with pytest.raises(DatasetError, match="label"):
        Source("x", a.data, a.label[:10], None, None)


def test_prize_loss_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 32, 32, generator=g, requires_grad=True)
    t = (torch.rand(3, 32, 32, generator=g) > 0.7).float()
    k = (torch.rand(3, 32, 32, generator=g) > 0.2).float()
    got = prize_loss(logits, t, k)
    L, T, K = (a.detach().double().numpy() for a in (logits, t, k))
    ts = 0.9 * T + 0.1 * (1 - T)
    p = 1 / (1 + np.exp(-L))
    dice = 1 - (2 * (p * ts * K).sum() + 1e-8) / ((p * K).sum() + (ts * K).sum() + 1e-8)
    bce = -((ts * np.log(p) + (1 - ts) * np.log(1 - p)) * K).sum() / K.sum()
    assert float(got.detach()) == pytest.approx(0.5 * dice + 0.5 * bce, rel=1e-5)
    got.backward()
    assert logits.grad[k == 0].abs().sum() == 0 and logits.grad.abs().sum() > 0  # ignored pixels: no gradient
    assert float(prize_loss(logits, t, torch.zeros_like(k)).detach()) == 0


def test_metrics_kept_and_prize_style():
    logits = torch.tensor([[3.0, 3.0, -3.0, 3.0, -3.0]])  # ink, ink, bg, ink, bg
    target = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0]])
    keep = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])  # the last two are ignored
    c = Counts()
    c.add(logits, target, keep)
    m = c.metrics()
    assert (m["iou"], m["precision"], m["recall"]) == (pytest.approx(1 / 3), 0.5, 0.5)
    assert m["f1"] == pytest.approx(0.5)
    # prize-style: the ignored pixel called ink is a false positive (its target is 0), the other a true negative
    assert m["iou_prize"] == pytest.approx(1 / 4) and m["precision_prize"] == pytest.approx(1 / 3)


def test_no_usable_patch_is_a_clear_error():
    src = _chunk()
    src.mask = np.zeros_like(src.mask)  # no papyrus at all
    assert len(candidate_patches(src)) == 0
    with pytest.raises(DatasetError, match="no patch passes the rules"):
        build_patches([src], seed=0)


def test_uint16_layers_are_scaled_by_the_whole_layer_with_or_without_a_cache(tmp_path):
    from napari_phoenix.core.predict import to_uint8

    src = _chunk()
    rng = np.random.default_rng(4)
    data16 = rng.integers(1000, 60000, src.data.shape, dtype=np.int64).astype(np.uint16)
    data16[7, 0, 0], data16[7, 1, 1] = 0, 65535  # the layer's range is set by two far-away pixels
    src16 = Source("u16", data16, src.label, src.ignore, src.mask)
    p = build_patches([src16], seed=1)
    idx = np.arange(min(6, len(p)))
    expected = np.stack([to_uint8(layer, int(layer.min()), int(layer.max())) for layer in data16[5:21]])
    for cache in ("none", "memory", "zarr"):
        got = PatchReader([src16], 5, cache=cache, cache_dir=str(tmp_path)).read(p, idx)
        for k in idx:
            y, x = p.yx[k]
            np.testing.assert_array_equal(got[k], expected[:, y : y + 128, x : x + 128], err_msg=cache)
    with pytest.raises(DatasetError, match="uint8 or uint16"):
        PatchReader([Source("f", data16.astype(np.float32), src.label)], 5)


def test_depth_shift_moves_each_window_within_the_stack():
    """A depth augmentation: each patch's 16 layers start up to k layers off ``first_layer``, never past the stack."""
    data = (np.arange(21, dtype=np.uint8)[:, None, None] * np.ones((21, 256, 256), np.uint8))
    label = np.zeros((256, 256), bool)
    label[:64] = True
    src = Source("a", data, label)
    p = candidate_patches(src)
    idx = np.arange(4)
    plain = PatchReader([src], 5).read(p, idx)
    reader = PatchReader([src], 5, depth_shift=3)
    assert np.array_equal(reader.read(p, idx), plain) and np.array_equal(reader.read(p, idx, np.zeros(4, int)), plain)
    assert list(reader.offsets[0]) == [-3, -2, -1, 0]  # layers 21+ do not exist: no deeper windows
    got = reader.read(p, idx, np.array([-3, -1, 0, -2]))
    assert got.shape == (4, 16, 128, 128)
    assert [int(g[0, 0, 0]) for g in got] == [2, 4, 5, 3] and [int(g[-1, 0, 0]) for g in got] == [17, 19, 20, 18]
    rng = np.random.default_rng(0)
    drawn = np.concatenate([reader.draw_offsets(p, idx, rng) for _ in range(50)])
    assert set(drawn.tolist()) == {-3, -2, -1, 0}
    assert PatchReader([src], 5).draw_offsets(p, idx, rng) is None
    middle = PatchReader([src], 3, depth_shift=2)  # room on both sides: -2..2
    assert list(middle.offsets[0]) == [-2, -1, 0, 1, 2]
    assert [int(g[0, 0, 0]) for g in middle.read(p, idx[:2], np.array([2, -2]))] == [5, 1]
    with pytest.raises(DatasetError, match="depth_shift"):
        PatchReader([src], 5, depth_shift=-1)
