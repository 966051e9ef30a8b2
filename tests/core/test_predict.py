"""Tiled inference: bit-for-bit the prize loop (a slow, obvious oracle below), windows, zarr, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_phoenix.core.predict import (
    PredictError,
    PredictParams,
    iter_predict,
    predict,
    predict_window,
    to_uint8,
)
from napari_phoenix.core.tiling import TilingError

torch.set_num_threads(1)


# ------------------------------------------------------------------ the oracle: the prize loop, literally
def prize_loop(stack: np.ndarray, model, mask=None, stride=2, tta=3) -> np.ndarray:
    layers, h, w = stack.shape
    step = 128 // stride
    yy, xx = np.mgrid[:128, :128]
    weight = np.exp(-((xx - 64.0) ** 2 + (yy - 64.0) ** 2) / (2 * 32.0**2)).astype(np.float32)
    total = np.zeros((h, w), np.float32)
    wsum = np.zeros((h, w), np.float32)
    for y in range(0, h - 128 + 1, step):
        for x in range(0, w - 128 + 1, step):
            if mask is not None and not mask[y : y + 128, x : x + 128].any():
                continue
            patch = stack[:, y : y + 128, x : x + 128].astype(np.float32) * np.float32(1 / 255)
            if layers < 16:
                patch = np.concatenate([patch, np.zeros((16 - layers, 128, 128), np.float32)])
            t = torch.from_numpy(patch)[None, None]
            variants = [t, t.flip(-1), t.flip(-2), t.rot90(1, (-2, -1))][: tta + 1]
            probs = [torch.sigmoid(model(v))[0] for v in variants]
            undo = [lambda p: p, lambda p: p.flip(-1), lambda p: p.flip(-2), lambda p: p.rot90(3, (-2, -1))]
            avg = probs[0].clone()
            for k in range(1, tta + 1):
                avg += undo[k](probs[k])
            avg = (avg / (tta + 1)).numpy()
            up = avg.repeat(4, 0).repeat(4, 1)
            total[y : y + 128, x : x + 128] += up * weight
            wsum[y : y + 128, x : x + 128] += weight
    out = np.zeros((h, w), np.float32)
    np.divide(total, wsum, out=out, where=wsum > 0)
    return out


class PixelModel:
    """A random model whose output for a patch does not depend on the rest of the batch."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.depth = torch.randn(16, generator=g)
        self.bias = torch.randn(32, 32, generator=g)  # position-dependent: flips change the output
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        v = (x[:, 0] * self.depth[None, :, None, None]).sum(1)
        v = torch.nn.functional.avg_pool2d(v[:, None], 4)[:, 0]
        return 3 * torch.sin(5 * v) + self.bias


def _stack(layers=16, h=300, w=420, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, hi, (layers, h, w), dtype=np.int64).astype(dtype)


def _mask(h=300, w=420):
    m = np.zeros((h, w), bool)
    m[20:260, 30:400] = True
    m[100:230, 150:260] = False  # a hole bigger than a tile: some tiles unused
    return m


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
@pytest.mark.parametrize("tta", [0, 3])
def test_equals_the_prize_loop_bit_for_bit(stride, tta):
    stack, mask, model = _stack(), _mask(), PixelModel()
    expected = prize_loop(stack, model, mask, stride, tta)
    for region in (128, 256, 4096):  # the cut into regions changes nothing
        got = predict_window(stack, model, mask, stride=stride, tta=tta, batch_size=37, device="cpu", region=region)
        assert got.dtype == np.float32 and got.shape == (300, 420)
        np.testing.assert_array_equal(got, expected)
    step = 128 // stride
    end_y, end_x = (300 - 128) // step * step + 128, (420 - 128) // step * step + 128
    assert (end_y, end_x) != (300, 420)
    assert not got[end_y:].any() and not got[:, end_x:].any()  # beyond the last tile: uncovered, 0
    assert (got[~mask] >= 0).all() and got[mask].std() > 0


@pytest.mark.parametrize("tta", [1, 2])
def test_each_tta_level(tta):
    stack, model = _stack(h=200, w=260, seed=tta), PixelModel(tta)
    np.testing.assert_array_equal(
        predict_window(stack, model, None, stride=4, tta=tta, device="cpu"), prize_loop(stack, model, None, 4, tta)
    )


def test_a_real_network_matches_the_loop():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d((1, 32, 32)),
        torch.nn.Flatten(1, 2), torch.nn.Conv2d(2, 1, 3, padding=1), torch.nn.Flatten(1, 2),
    ).eval()  # fmt: skip

    def model(x):
        with torch.no_grad():
            return net(x)

    stack, mask = _stack(h=260, w=300, seed=3), _mask(260, 300)
    got = predict_window(stack, model, mask, stride=2, tta=3, batch_size=8, device="cpu")
    np.testing.assert_allclose(got, prize_loop(stack, model, mask, 2, 3), rtol=1e-5, atol=1e-6)


def test_the_ink_network_runs_through_the_engine():
    from napari_phoenix.core.model.config import ModelConfig
    from napari_phoenix.core.model.network import build_network

    torch.manual_seed(0)
    net = build_network(ModelConfig.demo())
    stack = _stack(h=160, w=200, seed=4)
    got = predict_window(stack, net, None, stride=1, tta=1, device="cpu", precision="fp32")

    def model(x):
        with torch.no_grad():
            return net(x)

    np.testing.assert_allclose(got, prize_loop(stack, model, None, 1, 1), rtol=1e-4, atol=1e-5)


def test_uint16_is_scaled_per_layer_and_short_stacks_are_padded():
    stack16 = _stack(layers=12, h=200, w=200, dtype=np.uint16)
    stack16[3] //= 7  # a layer with another range
    model = PixelModel()
    scaled = np.stack([to_uint8(layer, int(layer.min()), int(layer.max())) for layer in stack16])
    assert scaled[3].max() == 255 and scaled[3].min() == 0
    got = predict_window(stack16, model, None, stride=2, tta=1, device="cpu")
    np.testing.assert_array_equal(got, prize_loop(scaled, model, None, 2, 1))


def test_windows_by_layer_number_and_the_composite():
    from napari_phoenix.core.predict import _Numbered

    stack = _Numbered(_stack(layers=19, h=200, w=230, seed=5), list(range(2, 21)))  # layers 2..20
    model = PixelModel()
    pred = predict(stack, model, windows=[3, 4, 5], stride=2, tta=0, device="cpu")
    maps = [prize_loop(stack.data[w - 2 : w - 2 + 16], model, None, 2, 0) for w in (3, 4, 5)]
    for w, m in zip((3, 4, 5), maps, strict=True):
        np.testing.assert_array_equal(pred.windows[w], m)
    np.testing.assert_allclose(pred.composite, np.mean(maps, axis=0), rtol=1e-6)
    assert pred.provenance["settings"]["windows"] == (3, 4, 5)
    high = predict(stack, model, windows=[3, 5], stride=2, tta=0, device="cpu", composite="max")
    np.testing.assert_array_equal(high.composite, np.maximum(maps[0], maps[2]))
    with pytest.raises(PredictError, match="window 1 starts at layer 1"):
        predict(stack, model, windows=[1], device="cpu")
    # layers 6..20 are only 15: the window is padded at the deep end (also right after a full window)
    both = predict(stack, model, windows=[5, 6], stride=2, tta=1, device="cpu")
    np.testing.assert_array_equal(both.windows[6], prize_loop(stack.data[4:], model, None, 2, 1))
    np.testing.assert_array_equal(both.windows[5], prize_loop(stack.data[3:19], model, None, 2, 1))


def test_zarr_output_provenance_and_resume(tmp_path):
    stack, mask, model = _stack(h=300, w=420), _mask(), PixelModel()
    params = PredictParams(windows=(0,), stride=2, tta=1, device="cpu", region=128, out=str(tmp_path / "pred.zarr"))
    from napari_phoenix.core.predict import ZARR_CHUNK, _Numbered

    assert ZARR_CHUNK >= 128
    import napari_phoenix.core.predict as pr

    pr_chunk = pr.ZARR_CHUNK
    pr.ZARR_CHUNK = 128  # small regions: several of them
    try:
        data = _Numbered(stack, list(range(16)))
        events = iter_predict(data, model, params, mask, provenance={"contrast": "prize LUT"})
        for ev in events:
            if ev.done == 3:
                break  # interrupted after 3 of 12 regions
        events.close()
        group = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
        assert group.attrs["phoenix"]["complete"] is False
        calls = model.calls
        final = [ev for ev in iter_predict(data, model, params, mask, provenance={"contrast": "prize LUT"})]
        assert "3 already done" in final[0].message
        assert sum(1 for ev in final if isinstance(ev.result, dict)) == 12 - 3
        pred = final[-1].result
        assert model.calls > calls
        np.testing.assert_array_equal(np.asarray(pred.windows[0]), prize_loop(stack, model, mask, 2, 1))
        group = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
        attrs = group.attrs["phoenix"]
        assert attrs["complete"] is True and attrs["contrast"] == "prize LUT"
        assert attrs["settings"]["stride"] == 2 and attrs["settings"]["tta"] == 1 and attrs["code_version"]
        assert attrs["resumed_regions"] == 3 and attrs["device"] == "cpu" and attrs["seconds"] > 0
        assert group["composite"].chunks == (128, 128)
        # a finished store: nothing left to do
        again = list(iter_predict(data, model, params, mask, provenance={"contrast": "prize LUT"}))
        assert len(again) == 2 and "12 already done" in again[0].message
        # other settings into the same store: refused, then replaced on request
        other = PredictParams(**{**params.to_dict(), "tta": 0})
        with pytest.raises(PredictError, match="other settings"):
            list(iter_predict(data, model, other, mask))
        other = PredictParams(**{**params.to_dict(), "tta": 0, "overwrite": True})
        pred0 = list(iter_predict(data, model, other, mask))[-1].result
        np.testing.assert_array_equal(np.asarray(pred0.windows[0]), prize_loop(stack, model, mask, 2, 0))
    finally:
        pr.ZARR_CHUNK = pr_chunk


def test_visible_region_only():
    stack, model = _stack(h=300, w=420), PixelModel()
    full = predict_window(stack, model, None, stride=2, tta=0, device="cpu")
    pred = predict(stack, model, windows=[0], stride=2, tta=0, device="cpu", bounds=(64, 200, 100, 300))
    part = pred.windows[0]
    np.testing.assert_array_equal(part[64:200, 64:300], full[64:200, 64:300])  # x0 snapped to the step
    assert not part[:64].any() and not part[200:].any() and not part[:, 300:].any()


def test_clear_errors():
    stack, model = _stack(h=200, w=200), PixelModel()
    with pytest.raises(TilingError, match="stride must be"):
        predict_window(stack, model, stride=3)
    with pytest.raises(TilingError, match="tta must be"):
        predict_window(stack, model, tta=4)
    with pytest.raises(PredictError, match="mask is 100 x 200 px"):
        predict_window(stack, model, np.ones((200, 100), bool), device="cpu")
    with pytest.raises(PredictError, match="uint8"):
        predict_window(stack.astype(np.float32), model)
    with pytest.raises(PredictError, match="at most 16 layers"):
        predict_window(_stack(layers=17, h=130, w=130), model)
    # smaller than a tile: nothing is covered, nothing fails
    assert not predict_window(_stack(h=100, w=300), model, device="cpu").any()


def test_cancel_within_a_batch_keeps_finished_regions(tmp_path):
    import threading

    from napari_phoenix.core.predict import _Numbered

    stack, model = _Numbered(_stack(h=300, w=420), list(range(16))), PixelModel()
    cancel = threading.Event()
    params = PredictParams(windows=(0,), stride=2, tta=0, batch_size=2, device="cpu", region=1024,
                           out=str(tmp_path / "p.zarr"))  # fmt: skip

    class Stopper(PixelModel):
        armed = True

        def __call__(self, x):
            if self.armed and self.calls == 3:
                cancel.set()  # the user presses Cancel during the 4th batch
            return super().__call__(x)

    stopper = Stopper()
    events = list(iter_predict(stack, stopper, params, cancel=cancel))
    assert stopper.calls == 4 and not any(ev.done == ev.total and ev.result for ev in events[1:])
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert group.attrs["phoenix"]["complete"] is False and not group["regions_done"][:].any()
    stopper.armed = False
    pred = list(iter_predict(stack, stopper, params))[-1].result  # the same model again: resumes, finishes
    model = stopper
    np.testing.assert_array_equal(np.asarray(pred.windows[0]), prize_loop(stack.data, model, None, 2, 0))


def test_regions_as_tasks_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    from napari_phoenix.core.model.config import ModelConfig
    from napari_phoenix.core.model.network import build_network
    from napari_phoenix.core.predict import _Numbered

    torch.manual_seed(0)
    net = build_network(ModelConfig.demo())
    stack, mask = _Numbered(_stack(layers=17, h=300, w=420, seed=6), list(range(17))), _mask()
    params = PredictParams(windows=(0, 1), stride=1, tta=1, device="cpu", region=128, precision="fp32")
    local = list(iter_predict(stack, net, params, mask))[-1].result
    stored = PredictParams(**{**params.to_dict(), "out": str(tmp_path / "c.zarr")})
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        events = list(iter_predict(stack, net, params, mask, client=client))
        to_store = list(iter_predict(stack, net, stored, mask, client=client))[-1].result
    assert sum(isinstance(ev.result, dict) for ev in events) == 12  # every region once, 128 px each
    for pred in (events[-1].result, to_store):
        for w in (0, 1):
            np.testing.assert_allclose(np.asarray(pred.windows[w]), local.windows[w], rtol=1e-5, atol=1e-6)
    assert zarr.open_group(str(tmp_path / "c.zarr"), mode="r").attrs["phoenix"]["complete"] is True


@pytest.mark.parametrize("tta", [0, 1, 2, 3])
def test_the_cpu_tile_views_are_the_gpu_batch(tta):
    """A CPU feeds the model overlapping views of each turned band, a GPU flips gathered tiles: same input."""
    from types import SimpleNamespace

    from napari_phoenix.core.predict import _Engine
    from napari_phoenix.core.tiling import TTA_VARIANTS

    data = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (18, 300, 420), dtype=np.uint8))
    lay, step = slice(1, 15), 32  # 14 layers: the deep padding must stay 0
    engine = _Engine.__new__(_Engine)
    engine.torch, engine.device, engine._flat = torch, torch.device("cpu"), [None] * 4
    engine.params, engine.scale = SimpleNamespace(tta=tta), torch.tensor(1 / 255, dtype=torch.float32)
    i0, i, (c0, c1) = 1, 2, (2, 7)  # a band of tile rows 1..3 (of 6); tiles 2..6 of row 2 (of 10)
    band = data[lay, i0 * step : 3 * step + 128]
    tiles = data[lay].unfold(1, 128, step).unfold(2, 128, step)
    gpu = engine._batch(tiles[:, [i] * 5, list(range(c0, c1))].transpose(0, 1), 14).clone().chunk(tta + 1)
    for k, f in engine._band_variants(band, tta + 1, 14):
        view, back = engine._tile_view(f, k, (i - i0) * step, c0, c1, step)
        assert view.shape == (5, 1, 16, 128, 128)
        assert view.data_ptr() == engine._flat[(0, 1, 0, 2)[k]].data_ptr() + 4 * view.storage_offset()  # no copy
        got = view.flip(0) if back else view
        assert torch.equal(got, gpu[k]) and not got[:, :, 14:].any()
        tile = data[lay, i * step : i * step + 128, 4 * step : 4 * step + 128].float() * np.float32(1 / 255)
        assert torch.equal(got[2, 0, :14], TTA_VARIANTS[k](tile))  # the third tile, as the prize cuts and scales it


@pytest.mark.parametrize("tta", [0, 3])
def test_the_gathered_batch_path_equals_the_prize_loop(tta, monkeypatch):
    """The GPU's path (used tiles gathered into batches, then blend) run on the CPU: the same numbers."""
    from napari_phoenix.core import predict as P

    init = P._Engine.__init__

    def gathered(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.views = False

    def no_views(*args, **kwargs):
        raise AssertionError("the CPU views path ran")

    monkeypatch.setattr(P._Engine, "__init__", gathered)
    monkeypatch.setattr(P._Engine, "_maps_cpu", no_views)
    stack, mask, model = _stack(), _mask(), PixelModel()
    for stride in (2, 8):
        expected = prize_loop(stack, model, mask, stride, tta)
        for region in (256, 4096):
            got = predict_window(stack, model, mask, stride=stride, tta=tta, batch_size=37, device="cpu", region=region)
            np.testing.assert_array_equal(got, expected)


def test_cpu_runs_of_used_tiles():
    from napari_phoenix.core.predict import _runs

    assert _runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 3), (4, 5), (7, 8)]
    assert _runs(np.ones(4, bool)) == [(0, 4)] and _runs(np.zeros(3, bool)) == []
