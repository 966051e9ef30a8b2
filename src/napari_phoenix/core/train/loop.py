"""The training loop: prize recipe, checkpoints every epoch, exact resume, metrics, DDP.

:func:`iter_train` is the one job (a generator of :class:`~..progress.Progress`
events) behind :func:`train`, ``phoenix train CONFIG`` and the napari widget.
A run folder holds ``config.json`` (the settings and where the data came
from), ``log.csv`` / ``log.jsonl`` (one row per epoch), ``epoch-NNN`` and
``best`` models in the project's format (safetensors + JSON), and
``state.pt`` (optimizer, scheduler, random generators, epoch and step) from
which an interrupted or stopped run continues exactly.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._version import __version__
from ..atomic import atomic_path
from ..errors import PhoenixError
from ..model.inference import synchronize, to_channels_last
from ..progress import Progress
from .dataset import (DatasetError, PatchReader, Source, build_patches, candidate_patches, check_stride,
                      source_from_folder, split_validation)
from .metrics import Counts, prize_loss

STATE = "state.pt"

#: What differs from the prize to train the ``demo`` network on one phantom in CPU minutes
#: (``phoenix demo`` and ``benchmarks/bench_train.py``): a 16 px patch grid, batch 4, a learning
#: rate of 3e-3 (1e-2 held the loss at the ink prior for hundreds of steps), 80-step epochs,
#: fp32, no augmentations.
CPU_DEMO = {"model": "demo", "stride": 16, "batch_size": 4, "lr": 3e-3, "steps_per_epoch": 80, "precision": "fp32",
            "augment": False}  # fmt: skip


class TrainError(PhoenixError, ValueError):
    """Training settings that cannot work."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (API, CLI TOML file, widget, provenance).

    Parameters
    ----------
    chunks : tuple of str
        Chunk / segment folders (``layers/`` + ``label.png`` [+ ``ignore.png``, ``mask.png``]).
    out : str
        Run folder (created; an existing run there is resumed).
    val_chunks : tuple of str
        Chunk names held out for validation (all their patches); empty: a
        random ``val_fraction`` of the patches.
    val_fraction : float
    first_layer : int
        First of the 16 input layers (the prize: 5, i.e. layers 5..20).
    model : str
        ``"b0"`` ... ``"b5"`` (the prize architecture with that MiT; the prize: b3) or ``"demo"``.
    init : str or None
        A checkpoint to fine-tune (prize ``.ckpt`` or the project's format).
    pretrained_mit : str or None
        ImageNet MiT weights (a local file) for a fresh network.
    epochs, steps_per_epoch : int
        ``steps_per_epoch`` 0: every training patch once per epoch.
    stride : int
        Grid step of the training patches in px (the prize: 64; a multiple of 4).
        A smaller step gives more, overlapping patches from few labels; the
        patches of held-out validation chunks stay on the prize's 64 px grid.
    batch_size, lr, weight_decay, t_max, eta_min, grad_clip : numbers
        The prize: 32, 2e-4, 1e-3, 50, 1e-6, 1.0 (cosine annealing per epoch).
    precision : str
        ``"auto"`` (bf16 autocast on a GPU that has it, else fp16 with loss
        scaling; fp32 on the CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
    augment : bool
        The prize's augmentations on the training batches.
    depth_shift : int
        A depth augmentation (not in the prize): each training patch's 16-layer
        window moves by a random whole number of layers, up to this many either
        way, where the stack has the layers (0: off, as in the prize). Ink lies
        deeper or shallower in other chunks as the surface drifts; this shows the
        network ink at other depths. Validation always uses ``first_layer``.
    ema : float
        Decay per step of an exponential moving average of the weights, e.g.
        0.99 (0: off, as in the prize). When on, validation and the saved
        models use the averaged weights, with BatchNorm statistics measured
        afresh for them on ``bn_batches`` training batches before each
        validation (statistics averaged along with the weights do not belong
        to the averaged weights).
    bn_batches : int
        Training batches (un-augmented) that measure those statistics.
    seed : int
    device : str
    cache : str
        ``"none"`` (read patches from the stacks), ``"memory"``, ``"zarr"``.
    trusted : bool
        Allow full unpickling of ``init``.
    """

    chunks: tuple[str, ...] = ()
    out: str = "runs/run"
    val_chunks: tuple[str, ...] = ()
    val_fraction: float = 0.05
    first_layer: int = 5
    model: str = "b3"
    init: str | None = None
    pretrained_mit: str | None = None
    epochs: int = 14
    steps_per_epoch: int = 0
    stride: int = 64
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 1e-3
    t_max: int = 50
    eta_min: float = 1e-6
    grad_clip: float = 1.0
    precision: str = "auto"
    augment: bool = True
    depth_shift: int = 0
    ema: float = 0.0
    bn_batches: int = 16
    seed: int = 7340043
    device: str = "auto"
    cache: str = "none"
    trusted: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", tuple(str(c) for c in self.chunks))
        object.__setattr__(self, "val_chunks", tuple(self.val_chunks))
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainError("epochs and batch_size must be at least 1")
        if not 0 < self.val_fraction < 1 and not self.val_chunks:
            raise TrainError(f"val_fraction must be between 0 and 1; got {self.val_fraction}")
        try:
            check_stride(self.stride)
        except DatasetError as err:
            raise TrainError(str(err)) from None
        if not isinstance(self.depth_shift, int) or isinstance(self.depth_shift, bool) or self.depth_shift < 0:
            raise TrainError(f"depth_shift must be a whole number of layers, 0 or more; got {self.depth_shift!r}")
        if not 0.0 <= self.ema < 1.0:
            raise TrainError(f"ema must be in [0, 1) (0: off); got {self.ema}")
        if self.bn_batches < 1:
            raise TrainError(f"bn_batches must be at least 1; got {self.bn_batches}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise TrainError(f"precision must be auto, fp32, bf16 or fp16; got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a TOML file whose keys are the fields (relative paths: from the file's folder)."""
        import tomllib

        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TrainError(f"cannot read the training config {path}: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
        base = path.parent
        for key in ("out", "init", "pretrained_mit"):
            if isinstance(data.get(key), str):
                data[key] = str((base / data[key]).resolve()) if not Path(data[key]).is_absolute() else data[key]
        if "chunks" in data:
            data["chunks"] = [str((base / c).resolve()) if not Path(c).is_absolute() else c for c in data["chunks"]]
        return cls(**data)


def _model(config: TrainConfig, device: torch.device) -> torch.nn.Module:
    from ..model.checkpoint import load_model
    from ..model.config import ModelConfig
    from ..model.network import InkNet

    if config.init:  # channels-last 3-D convolutions: about 2x faster training on a CPU
        return to_channels_last(load_model(config.init, device="cpu", trusted=config.trusted).to(device))
    if config.model == "demo":
        cfg = ModelConfig.demo()
    elif config.model in {f"b{i}" for i in range(6)}:
        cfg = ModelConfig.prize(config.model)
    else:
        raise TrainError(f"model must be 'b0' ... 'b5' or 'demo'; got {config.model!r}")
    torch.manual_seed(config.seed)
    model = InkNet(cfg)
    if config.pretrained_mit:
        from ..model.pretrained import load_pretrained_mit

        load_pretrained_mit(model, config.pretrained_mit)
    return to_channels_last(model.to(device))


def _autocast(device: torch.device, precision: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _precision(config: TrainConfig, device: torch.device) -> str:
    if config.precision != "auto":
        return config.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _init_dist(device: torch.device) -> None:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1): gloo on CPUs, NCCL on GPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _batches(order: np.ndarray, batch: int, steps: int) -> list[np.ndarray]:
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    return chunks[:steps] if steps else chunks


def iter_train(
    config: TrainConfig, sources: Sequence[Source] | None = None, stop: Any = None
) -> Iterator[Progress]:
    """Train (or fine-tune, or resume) as ``config`` says; yield progress events.

    Parameters
    ----------
    config : TrainConfig
    sources : sequence of Source, optional
        In-memory chunks (e.g. napari layers, a snapshot); default: ``config.chunks``.
    stop : threading.Event, optional
        Set it to stop after the current step: a checkpoint and the state are
        saved, and the same config resumes from there.

    Yields
    ------
    Progress
        ``result`` is ``{"kind": "step", ...}`` after each step (epoch, step,
        loss, lr), ``{"kind": "epoch", ...}`` after each epoch (losses and
        metrics, checkpoint paths) and finally ``{"kind": "done", ...}``.
    """
    from ..model.checkpoint import save_model
    from ..model.inference import resolve_device

    device = resolve_device(config.device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    _init_dist(device)
    rank, world = _dist()
    precision = _precision(config, device)
    out = Path(config.out)
    sources = list(sources) if sources is not None else [source_from_folder(c) for c in config.chunks]
    if not sources:
        raise TrainError("nothing to train on: give chunk folders (chunks=...) or sources")
    patches = build_patches(sources, config.seed, config.stride)
    train_p, val_p, val_how = split_validation(patches, sources, list(config.val_chunks), config.val_fraction,
                                               config.seed)  # fmt: skip
    if config.val_chunks:  # every usable patch of a held-out chunk, not the ink-balanced sample
        from .dataset import Patches

        names = [s.name for s in sources]
        val_p = Patches.concat([candidate_patches(sources[names.index(c)], names.index(c)) for c in config.val_chunks])
    if not len(train_p):
        raise TrainError("no training patches left after holding out the validation set")
    reader = PatchReader(sources, config.first_layer, cache=config.cache, cache_dir=str(out / "cache"),
                         depth_shift=config.depth_shift)
    model = _model(config, device)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(  # unused: e.g. the ViT's final norm, kept for the keys
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.t_max, eta_min=config.eta_min)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = None
    if config.ema:  # torch's weight averaging: a copy of the model whose parameters follow it step by step
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=False)
    kept = ema.module if ema is not None else model  # validated and saved
    aug_gen = torch.Generator().manual_seed(config.seed + rank)
    state = {"epoch": 0, "step_in_epoch": 0, "best_iou": -1.0, "history": []}
    if (out / STATE).exists():
        saved = torch.load(out / STATE, map_location="cpu", weights_only=True)
        before = {"stride": 64, "depth_shift": 0, "ema": 0.0, "bn_batches": 16,  # runs from before these settings
                  **saved.get("config", {})}  # fmt: skip
        if before != json.loads(json.dumps(_resume_key(config))):
            raise TrainError(f"{out} holds a run with other settings; choose another out folder")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        aug_gen.set_state(saved["aug_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = {k: saved[k] for k in ("epoch", "step_in_epoch", "best_iou", "history")}
    steps = len(_batches(np.arange(math.ceil(len(train_p) / world)), config.batch_size, config.steps_per_epoch))
    total = config.epochs * steps
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", {
            "config": config.to_dict(), "code_version": __version__, "device": str(device), "precision": precision,
            "world_size": world, "sources": [s.name for s in sources], "train_patches": len(train_p),
            "val_patches": len(val_p), "validation": val_how, "model": model.config.to_dict(),
        })  # fmt: skip
    if config.augment:
        from .augment import PRIZE, augment_batch
    scale = torch.tensor(1 / 255, dtype=torch.float32)
    pool = cf.ThreadPoolExecutor(1)

    def load(idx, epoch, k):  # targets at 128 px when augmenting (geometry first, then the prize's 4 i + 2 shrink)
        ink, keep = reader.targets128(train_p, idx) if config.augment else train_p.targets(idx)
        shifts = reader.draw_offsets(train_p, idx, np.random.default_rng([config.seed, rank, epoch, k]))
        return torch.from_numpy(reader.read(train_p, idx, shifts)), torch.from_numpy(ink), torch.from_numpy(keep)

    yield Progress(state["epoch"] * steps + state["step_in_epoch"], total, f"{len(train_p):,} training patches, "
                   f"{len(val_p):,} validation ({val_how})", {"kind": "start", "train": len(train_p),
                   "val": len(val_p), "validation": val_how})  # fmt: skip
    started = time.perf_counter()
    try:
        for epoch in range(state["epoch"], config.epochs):
            order = np.random.default_rng([config.seed, epoch]).permutation(len(train_p))[rank::world]
            batches = _batches(order, config.batch_size, config.steps_per_epoch)
            ddp_model.train()
            losses, t0, waited, samples = [], time.perf_counter(), 0.0, 0
            first = state["step_in_epoch"]
            pending = pool.submit(load, batches[first], epoch, first) if first < len(batches) else None
            for k in range(first, len(batches)):
                t_wait = time.perf_counter()
                x8, ink, keep = pending.result()  # the time spent here is the time the device waits for data
                waited += time.perf_counter() - t_wait
                pending = pool.submit(load, batches[k + 1], epoch, k + 1) if k + 1 < len(batches) else None
                # to the device as uint8, then scaled and augmented there (on the GPU with the batch)
                x = x8.to(device, non_blocking=True).float() * scale
                ink, keep = ink.to(device, non_blocking=True), keep.to(device, non_blocking=True)
                if config.augment:
                    x, ink, keep = augment_batch(x, ink, keep, aug_gen, PRIZE)
                ink32, keep32 = ink, keep
                if ink.shape[-1] != 32:
                    ink32, keep32 = ink[:, 2::4, 2::4], keep[:, 2::4, 2::4]  # augmented at 128: shrink as the prize
                x = x[:, None].contiguous(memory_format=torch.channels_last_3d)
                samples += len(x)
                with _autocast(device, precision):
                    logits = ddp_model(x)
                loss = prize_loss(logits, ink32, keep32)
                if not torch.isfinite(loss):
                    raise TrainError(
                        f"the loss became {float(loss.detach())} at epoch {epoch + 1}, step {k + 1}: the training diverged. "
                        "Lower the learning rate (or use precision 'fp32'); the last epoch's checkpoint and "
                        "state are kept, so the run resumes from there"
                    )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(float(loss.detach()))
                state["step_in_epoch"] = k + 1
                done = epoch * steps + k + 1
                rate = (done - (state["epoch"] * steps + first)) / max(1e-9, time.perf_counter() - started)
                yield Progress(done, total, f"epoch {epoch + 1}/{config.epochs}, step {k + 1}/{len(batches)}: loss "
                               f"{losses[-1]:.4f}", {"kind": "step", "epoch": epoch, "step": k, "loss": losses[-1],
                               "lr": opt.param_groups[0]["lr"], "steps_per_s": rate})  # fmt: skip
                if stop is not None and stop.is_set() and k + 1 < len(batches):
                    if rank == 0:
                        if ema is not None:
                            _recalibrate_bn(kept, reader, train_p, config, device, epoch, scale)
                        _save_state(out, model, opt, sched, scaler, aug_gen, state, config, ema)
                        save_model(kept, out / "last", provenance=_prov(config, sources, val_how, state, None))
                    yield Progress(done, total, "stopped; the run resumes from here", {"kind": "stopped"})
                    return
            synchronize(device)
            train_s = time.perf_counter() - t0
            if ema is not None:
                _recalibrate_bn(kept, reader, train_p, config, device, epoch, scale)
            val = _validate(kept if ema is not None else ddp_model, kept, reader, val_p, config, device, precision, scale)
            sched.step()
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   **val, "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                   "samples_per_s": samples / max(train_s, 1e-9), "data_wait_share": waited / max(train_s, 1e-9)}  # fmt: skip
            state.update(epoch=epoch + 1, step_in_epoch=0)
            state["history"].append(row)
            best = val["iou"] > state["best_iou"]
            paths = {}
            if rank == 0:
                prov = _prov(config, sources, val_how, state, row)
                paths["epoch"] = str(save_model(kept, out / f"epoch-{epoch + 1:03d}", provenance=prov))
                if best:
                    paths["best"] = str(save_model(kept, out / "best", provenance=prov))
                _log(out, row)
            if best:
                state["best_iou"] = val["iou"]
            if rank == 0:
                _save_state(out, model, opt, sched, scaler, aug_gen, state, config, ema)
            yield Progress((epoch + 1) * steps, total, f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, val IoU "
                           f"{val['iou']:.3f} (prize-style {val['iou_prize']:.3f})",
                           {"kind": "epoch", **row, "best": best, "checkpoints": paths})  # fmt: skip
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    yield Progress(total, total, f"done: best val IoU {state['best_iou']:.3f}",
                   {"kind": "done", "out": str(out), "best_iou": state["best_iou"], "history": state["history"]})


def _validate(ddp_model, model, reader, val_p, config, device, precision, scale) -> dict[str, float]:
    rank, world = _dist()
    counts, loss_sum, n = Counts(), 0.0, 0
    ddp_model.eval()
    idx_all = np.arange(len(val_p))[rank::world]
    with torch.no_grad():
        for i in range(0, len(idx_all), config.batch_size):
            idx = idx_all[i : i + config.batch_size]
            x = _model_input(reader, val_p, idx, device, scale)
            ink, keep = (torch.from_numpy(a).to(device) for a in val_p.targets(idx))
            with _autocast(device, precision):
                logits = model(x)
            loss_sum += float(prize_loss(logits, ink, keep)) * len(idx)
            n += len(idx)
            counts.add(logits, ink, keep)
    totals = torch.cat([counts.as_tensor(), torch.tensor([loss_sum, n], dtype=torch.float64)])
    if world > 1:
        torch.distributed.all_reduce(totals)
    counts.load_tensor(totals[: len(Counts.FIELDS)])
    return {"val_loss": float(totals[-2] / max(1, totals[-1])), **counts.metrics()}


def _resume_key(config: TrainConfig) -> dict:
    """Settings that must match to continue a run (epochs may grow; device and cache may change)."""
    return {k: v for k, v in config.to_dict().items() if k not in ("epochs", "device", "cache", "trusted")}


def _model_input(reader, patches, idx, device, scale) -> torch.Tensor:
    """The un-augmented float input ``(B, 1, 16, 128, 128)`` of patches ``idx`` on ``device``, at ``first_layer``."""
    return torch.from_numpy(reader.read(patches, idx)).to(device).float().mul_(scale)[:, None]


def _recalibrate_bn(net, reader, train_p, config, device, epoch, scale) -> None:
    """Measure the BatchNorm statistics of ``net`` (the averaged weights) afresh: a cumulative
    average over ``bn_batches`` un-augmented training batches, the same on every process, with
    everything but the BatchNorm layers in eval mode (no dropout)."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    net.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
        m.train()
    order = np.random.default_rng([config.seed, epoch, 2]).permutation(len(train_p))
    with torch.no_grad():
        for idx in _batches(order, config.batch_size, config.bn_batches):
            net(_model_input(reader, train_p, idx, device, scale).contiguous(memory_format=torch.channels_last_3d))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()


def _save_state(out, model, opt, sched, scaler, aug_gen, state, config, ema=None) -> None:
    blob = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(), "aug_rng": aug_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "config": json.loads(json.dumps(_resume_key(config))), **state}  # fmt: skip
    if ema is not None:
        blob["ema"] = ema.state_dict()
    with atomic_path(out / STATE) as tmp:
        torch.save(blob, tmp)


def _prov(config, sources, val_how, state, row) -> dict:
    from ..model.checkpoint import file_sha256

    parent = None
    if config.init and Path(config.init).exists():
        parent = {"parent_name": Path(config.init).name, "parent_sha256": file_sha256(config.init)}
    return {"training_data": [s.name for s in sources], "epochs": state["epoch"], "validation": val_how,
            "metrics": row, "train_config": config.to_dict(), **(parent or {}),
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}  # fmt: skip


def _write_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def _log(out: Path, row: dict) -> None:
    with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    path = out / "log.csv"
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(config: TrainConfig | str | os.PathLike, sources: Sequence[Source] | None = None, **overrides) -> dict:
    """Run :func:`iter_train` to the end; return the final result (run folder, best IoU, history).

    Parameters
    ----------
    config : TrainConfig or path to a TOML file
    sources : sequence of Source, optional
    **overrides
        :class:`TrainConfig` fields to change.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.from_toml(config)
    if overrides:
        config = TrainConfig(**{**config.to_dict(), **overrides})
    last = None
    for ev in iter_train(config, sources):
        last = ev
    return last.result
