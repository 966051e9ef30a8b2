"""The training loop: a real run on a tiny chunk, checkpoints, logs, exact resume, stop, fine-tune, TOML."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from napari_phoenix.core.model.checkpoint import load_model, read_model_info
from napari_phoenix.core.train.dataset import Source
from napari_phoenix.core.train.loop import TrainConfig, TrainError, iter_train, train


def _source(name="c1", seed=0, h=320, w=448):
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 200, (21, h, w), dtype=np.uint8)
    label = np.zeros((h, w), bool)
    label[40:160, 60:200] = True
    stack[8:13][:, label] += 50  # ink: brighter on the middle layers
    ignore = np.zeros((h, w), bool)
    ignore[250:, 300:] = True
    return Source(name, stack, label, ignore, None)


def _config(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), model="demo", epochs=2, steps_per_epoch=2, batch_size=2, augment=False,
                device="cpu", val_fraction=0.2, seed=3)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _weights(path):
    return load_model(path).state_dict()


def test_a_run_writes_checkpoints_logs_and_provenance(tmp_path):
    events = list(iter_train(_config(tmp_path), [_source()]))
    kinds = [ev.result["kind"] for ev in events]
    assert kinds == ["start", "step", "step", "epoch", "step", "step", "epoch", "done"]
    run = tmp_path / "run"
    for name in ("epoch-001.json", "epoch-002.json", "best.json", "state.pt", "config.json", "log.csv", "log.jsonl"):
        assert (run / name).exists(), name
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and {"iou", "iou_prize", "f1", "val_loss", "lr"} <= set(rows[0])
    assert rows[1]["lr"] < rows[0]["lr"]  # cosine schedule, stepped per epoch
    for r in rows:  # throughput and the share of the training time spent waiting for the next batch
        assert r["samples_per_s"] > 0 and 0 <= r["data_wait_share"] < 1
    info = read_model_info(run / "epoch-002.json")
    assert info["provenance"]["training_data"] == ["c1"] and info["provenance"]["epochs"] == 2
    assert "random 20 %" in info["provenance"]["validation"]
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"] == "demo" and config["train_patches"] > 0
    assert events[-1].done == events[-1].total == 4


_plain_config = _config


@pytest.mark.parametrize("extra", [{}, {"ema": 0.5, "bn_batches": 2, "depth_shift": 2}])
def test_resume_after_interruption_is_exact(tmp_path, extra):
    _config = lambda path, **kw: _plain_config(path, **extra, **kw)  # noqa: E731
    straight = train(_config(tmp_path / "a"), [_source()])
    assert straight["kind"] == "done"
    # the same run killed after epoch 1 (its generator abandoned), then started again
    events = iter_train(_config(tmp_path / "b"), [_source()])
    for ev in events:
        if ev.result["kind"] == "epoch":
            break
    events.close()
    train(_config(tmp_path / "b"), [_source()])
    a, b = _weights(tmp_path / "a" / "run" / "epoch-002.json"), _weights(tmp_path / "b" / "run" / "epoch-002.json")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # stopped mid-epoch with the stop event, then resumed
    stop = threading.Event()
    events = iter_train(_config(tmp_path / "c"), [_source()], stop=stop)
    for ev in events:
        if ev.result["kind"] == "step" and ev.result["epoch"] == 1:
            stop.set()
    assert ev.result["kind"] == "stopped" and (tmp_path / "c" / "run" / "last.json").exists()
    train(_config(tmp_path / "c"), [_source()])
    c = _weights(tmp_path / "c" / "run" / "epoch-002.json")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_a_moving_average_of_the_weights_validates_and_is_saved_with_its_own_batchnorm_statistics(tmp_path):
    train(_config(tmp_path, ema=0.5, bn_batches=2), [_source()])
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    saved, raw = _weights(tmp_path / "run" / "epoch-002.json"), state["model"]
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    params = {name for name, _ in load_model(tmp_path / "run" / "epoch-002.json").named_parameters()}
    assert all(torch.equal(saved[k], averaged[k]) for k in params)  # the averaged weights are what is saved
    assert not all(torch.equal(saved[k], raw[k]) for k in params)  # and they differ from the last step's
    assert int(state["ema"]["n_averaged"]) == 4  # updated after every step
    # BatchNorm statistics measured for the averaged weights, not carried over from the raw model
    stats = [k for k in saved if k.endswith("running_var")]
    assert stats and not all(torch.equal(saved[k], raw[k]) for k in stats)
    assert all(int(saved[k.replace("running_var", "num_batches_tracked")]) == 2 for k in stats)  # bn_batches
    # the measurement itself: a cumulative average over bn_batches batches, then the momentum and eval mode back
    from napari_phoenix.core.model.config import ModelConfig
    from napari_phoenix.core.model.network import InkNet
    from napari_phoenix.core.train.dataset import PatchReader, build_patches
    from napari_phoenix.core.train.loop import _recalibrate_bn

    src = _source()
    net, patches = InkNet(ModelConfig.demo()), build_patches([src], 3)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    _recalibrate_bn(net, PatchReader([src], 5), patches, _config(tmp_path / "x", bn_batches=3), torch.device("cpu"),
                    0, torch.tensor(1 / 255))  # fmt: skip
    assert not net.training and all(m.momentum == 0.1 and int(m.num_batches_tracked) == 3 for m in norms)
    assert not all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["ema"] == 0.5
    for bad in ({"ema": 1.0}, {"bn_batches": 0}, {"depth_shift": -1}):
        with pytest.raises(TrainError):
            TrainConfig(**bad)


def test_fine_tune_from_a_checkpoint_and_held_out_chunks(tmp_path):
    first = train(_config(tmp_path / "a", epochs=1), [_source()])
    init = tmp_path / "a" / "run" / "best.json"
    result = train(_config(tmp_path / "b", epochs=1, init=str(init), val_chunks=("c2",)),
                   [_source(), _source("c2", seed=5)])  # fmt: skip
    info = read_model_info(tmp_path / "b" / "run" / "best.json")
    assert info["provenance"]["parent_name"] == "best.json" and "held-out chunks: c2" in info["provenance"]["validation"]
    assert result["history"][0]["epoch"] == 1 and first["history"]
    with pytest.raises(TrainError, match="other settings"):
        train(_config(tmp_path / "b", epochs=1, lr=1.0, init=str(init), val_chunks=("c2",)),
              [_source(), _source("c2", seed=5)])  # fmt: skip


def test_a_denser_patch_grid_trains_on_more_patches_and_validates_on_the_prize_grid(tmp_path):
    sources = [_source(), _source("c2", seed=5)]
    starts = {}
    for stride in (64, 16):
        events = iter_train(_config(tmp_path / str(stride), epochs=1, steps_per_epoch=1, stride=stride,
                                    val_chunks=("c2",)), sources)  # fmt: skip
        starts[stride] = next(events).result
        events.close()
    assert starts[16]["train"] > 4 * starts[64]["train"] and starts[16]["val"] == starts[64]["val"]
    config = json.loads((tmp_path / "16" / "run" / "config.json").read_text())
    assert config["config"]["stride"] == 16  # in the run's provenance
    with pytest.raises(TrainError, match="multiple of 4"):
        TrainConfig(stride=10)


def test_toml_config_and_cli(tmp_path, capsys):
    from napari_phoenix.cli import main
    from napari_phoenix.core.phantom import make_phantom

    seg = make_phantom(tmp_path / "seg", height=320, width=448, seed=2)
    cfg = tmp_path / "train.toml"
    cfg.write_text('chunks = ["seg"]\nout = "run"\nmodel = "demo"\nepochs = 1\nsteps_per_epoch = 1\n'
                   'batch_size = 2\naugment = false\ndevice = "cpu"\nval_fraction = 0.2\n')  # fmt: skip
    config = TrainConfig.from_toml(cfg)
    assert config.chunks == (str(seg),) and config.out == str(tmp_path / "run")
    assert main(["train", str(cfg)]) == 0
    assert "best val IoU" in capsys.readouterr().out and (tmp_path / "run" / "best.json").exists()
    (tmp_path / "bad.toml").write_text("epochz = 3\n")
    assert main(["train", str(tmp_path / "bad.toml")]) == 2
    assert "unknown settings ['epochz']" in capsys.readouterr().err


def test_ddp_with_two_cpu_processes_on_gloo(tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from napari_phoenix.core.phantom import make_phantom

    make_phantom(tmp_path / "seg", height=320, width=448, seed=2)
    cfg = tmp_path / "train.toml"
    cfg.write_text('chunks = ["seg"]\nout = "run"\nmodel = "demo"\nepochs = 1\nsteps_per_epoch = 2\n'
                   'batch_size = 2\naugment = false\ndevice = "cpu"\nval_fraction = 0.2\n')  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}",
         "-m", "napari_phoenix.cli", "train", str(cfg)],
        capture_output=True, text=True, timeout=300, check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2
    assert (tmp_path / "run" / "epoch-001.json").exists() and (tmp_path / "run" / "best.json").exists()
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # written once, by rank 0


def test_a_diverging_run_stops_with_a_clear_error(tmp_path, monkeypatch):
    import napari_phoenix.core.train.loop as loop

    real = loop.prize_loss
    calls = {"n": 0}

    def loss(*a):
        value = real(*a)
        if torch.is_grad_enabled():  # training steps only
            calls["n"] += 1
            if calls["n"] == 3:  # the 3rd step (epoch 2) blows up
                return value * float("nan")
        return value

    monkeypatch.setattr(loop, "prize_loss", loss)
    with pytest.raises(TrainError, match="diverged.*Lower the learning rate"):
        train(_config(tmp_path), [_source()])
    assert (tmp_path / "run" / "epoch-001.json").exists()  # epoch 1 finished and was kept
