"""Benchmark: training throughput, the share of time the device waits for data, and the
augmentations' cost (torch on the batch's device, as used, vs albumentations per sample).

Three measurements, side by side in one run:

1. **Pipeline**: ``iter_train`` on a phantom (cache ``memory``, prize augmentations) for
   ``--steps`` steps (its second epoch; the first warms up): samples per second and the share of the training
   time the loop waited for the next batch (the loader thread reads and cuts patches while the
   device computes; with the batch moved to the device as uint8, then scaled and augmented there).
2. **Model only**: the same network, optimizer and loss on one batch already on the device, no
   data, no augmentation: the throughput ceiling. The pipeline's share of it is what data loading
   and augmentation cost.
3. **Augmentations**: one batch of ``(B, 16, 128, 128)`` through ``augment_batch`` on the device
   vs albumentations (the prize's list, one sample at a time on the CPU, as the prize's
   ``Dataset`` did) when it is installed (``pip install albumentations``; not a dependency).

The prize configuration (``b3``, batch 32) on a GPU; the ``demo`` configuration (batch 8) on a
CPU, where ``b3`` would take minutes per step. Results go between the ``bench_train_speed``
markers of ``docs/benchmarks.md``.

Run::

    .venv/bin/python benchmarks/bench_train_speed.py            # CPU: demo configuration
    .venv/bin/python benchmarks/bench_train_speed.py --model b3   # on a GPU machine
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open_stack import update_section
from bench_train import sources

from napari_phoenix.core.model.inference import synchronize

LOAD_AT_START = os.getloadavg()[0]


def pipeline(args, srcs, device: str) -> dict:
    """Samples/s and data-wait share of ``iter_train`` over the measured steps (after warm-up)."""
    from napari_phoenix.core.train.loop import TrainConfig, iter_train

    work = Path(tempfile.mkdtemp(prefix="bench-train-speed-"))
    config = TrainConfig(out=str(work / "run"), model=args.model, epochs=2, steps_per_epoch=args.steps,
                         batch_size=args.batch, val_chunks=("phantom_02",), device=device, cache="memory",
                         precision=args.precision, lr=1e-4)  # fmt: skip
    rows = [r.result for r in iter_train(config, srcs) if (r.result or {}).get("kind") == "epoch"]
    return rows[-1]  # the second epoch: the first one warms up (allocations, kernel choice)


def model_only(args, device: torch.device) -> dict:
    """Forward + backward + AdamW step on one batch resident on the device."""
    from napari_phoenix.core.train.loop import TrainConfig, _autocast, _model, _precision
    from napari_phoenix.core.train.metrics import prize_loss

    config = TrainConfig(model=args.model, device=str(device), precision=args.precision)
    model = _model(config, device).train()
    precision = _precision(config, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, 1, 16, 128, 128), generator=gen).to(device)
    ink = (torch.rand((args.batch, 32, 32), generator=gen) < 0.1).float().to(device)
    keep = torch.ones_like(ink)

    def step():
        with _autocast(device, precision):
            loss = prize_loss(model(x), ink, keep)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return {"samples_per_s": args.steps * args.batch / (time.perf_counter() - t0), "precision": precision}


def augment_costs(args, device: torch.device, repeats: int = 5) -> dict:
    """Milliseconds per batch: torch ``augment_batch`` on the device, albumentations per sample on the CPU."""
    from napari_phoenix.core.train.augment import PRIZE, augment_batch

    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (args.batch, 16, 128, 128), dtype=np.uint8)
    ink = rng.random((args.batch, 128, 128)) < 0.1
    keep = np.ones_like(ink)
    gen = torch.Generator().manual_seed(0)
    xt = torch.from_numpy(x8).to(device).float().mul_(1 / 255)
    it, kt = torch.from_numpy(ink).to(device), torch.from_numpy(keep).to(device)
    augment_batch(xt, it, kt, gen, PRIZE)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        augment_batch(xt, it, kt, gen, PRIZE)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    out = {"torch_ms": 1000 * float(np.median(times))}
    try:
        import albumentations as A
    except ImportError:
        return out
    out["albumentations_version"] = A.__version__
    pipe = A.Compose([  # the prize's list (seed conventions, "Dataset")
        A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Rotate(limit=180, p=0.5),
        A.Perspective(scale=(0.03, 0.03), p=0.1), A.GridDistortion(p=0.1), A.Blur(blur_limit=3, p=0.1),
        A.GaussNoise(p=0.1), A.RandomResizedCrop(size=(128, 128), scale=(0.5, 1.0), p=0.15),
        A.ShiftScaleRotate(p=0.1), A.RandomGamma(gamma_limit=(30, 80), p=0.15),
        A.RandomBrightnessContrast(brightness_limit=(-0.2, 0.4), contrast_limit=0.2, p=0.15),
    ], seed=0)  # fmt: skip
    images = [np.ascontiguousarray(x8[i].transpose(1, 2, 0)).astype(np.float32) / 255 for i in range(args.batch)]
    masks = [np.stack([ink[i], keep[i]], -1).astype(np.uint8) for i in range(args.batch)]

    def albu():
        done = [pipe(image=img, mask=m) for img, m in zip(images, masks)]
        return torch.from_numpy(np.stack([d["image"] for d in done])).to(device)

    albu()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        albu()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    out["albumentations_ms"] = 1000 * float(np.median(times))
    return out


def report(args, device: torch.device, pipe: dict, ceiling: dict, aug: dict) -> str:
    cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
               if ln.startswith("model name"))  # fmt: skip
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    share = pipe["samples_per_s"] / ceiling["samples_per_s"]
    albu = (f"| albumentations {aug['albumentations_version']} (the prize's list, per sample on the CPU, then to "
            f"the device) | {aug['albumentations_ms']:.1f} | {aug['albumentations_ms'] / aug['torch_ms']:.1f}x |"
            if "albumentations_ms" in aug else "| albumentations | not installed | |")  # fmt: skip
    step_ms = 1000 * args.batch / pipe["samples_per_s"]
    return f"""## Training throughput (`bench_train_speed.py`)

Machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, device {where}; Python
{platform.python_version()}, torch {torch.__version__}; {datetime.date.today().isoformat()}, load average
{LOAD_AT_START:.2f} at start. Network: `{args.model}`, batch {args.batch}, {ceiling['precision']};
{args.steps} measured steps (the loop's second epoch; the network alone: after {args.warmup} warm-up steps). Data: a {args.height:,} x {args.width:,}
phantom (`cache = "memory"`), prize augmentations.

| what | samples/s |
|---|---:|
| whole training loop (`iter_train`: loader thread, augmentations on the device, loss, step) | {pipe['samples_per_s']:.2f} |
| network only (one batch resident on the device, no data, no augmentation) | {ceiling['samples_per_s']:.2f} |

The loop reaches **{100 * share:.0f} %** of the network-only throughput; it waited for data
**{100 * pipe['data_wait_share']:.1f} %** of its training time.

Augmenting one batch of {args.batch} x 16 x 128 x 128 (median of 5; a training step takes about
{step_ms:.0f} ms here):

| implementation | ms per batch | time vs torch |
|---|---:|---:|
| `augment_batch` (torch, on the {where}, the whole batch at once) | {aug['torch_ms']:.1f} | 1.0x |
{albu}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: b3 on a GPU, demo on a CPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 32 for b3, 8 for demo")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default 40 on a GPU, 10 on a CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    from napari_phoenix.core.model.inference import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.model = args.model or ("b3" if gpu else "demo")
    args.batch = args.batch or (32 if args.model != "demo" else 8)
    args.steps = args.steps or (40 if gpu else 10)
    srcs = sources(Path(tempfile.mkdtemp(prefix="bench-train-speed-data-")), args.height, args.width)
    pipe = pipeline(args, srcs, str(device))
    print("pipeline", pipe, flush=True)
    ceiling = model_only(args, device)
    print("model only", ceiling, flush=True)
    aug = augment_costs(args, device)
    print("augment", aug, flush=True)
    text = report(args, device, pipe, ceiling, aug)
    print(text)
    if not args.no_docs:
        update_section("bench_train_speed", text)


if __name__ == "__main__":
    main()
