"""Benchmark / acceptance: train the demo network on the phantom on the CPU for at most 10 minutes.

A phantom segment (``make_phantom``, 8-bit, ``--height`` x ``--width``; by default the bundled
sample segment) is cut into two full-height chunks: the left one trains, the right one is held out whole
for validation (every usable patch on the prize's 64 px grid, kept pixels). The ``demo``
configuration of the prize architecture trains with the prize's loss, AdamW, clipping and cosine
schedule; what differs from the prize is chosen for ten CPU minutes: the training patches come
from a 16 px grid (``--stride``; the prize: 64), the cosine runs over ``--epochs`` epochs of
``--steps-per-epoch`` steps, batch 4, learning rate 3e-3, fp32, no augmentations
(``--augment`` turns the prize's on): ``CPU_DEMO`` of the training loop, which ``phoenix demo``
uses too. The run stops cleanly after ``--minutes`` (after the
current step, then validates) or when the epochs are done. The goal (issue 6): IoU >= 0.6 on the
held-out chunk. The learning curve (per-epoch training loss and validation IoU) goes between the
``bench_train`` markers of ``docs/benchmarks.md``.

Run::

    .venv/bin/python benchmarks/bench_train.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open_stack import update_section

LOAD_AT_START = os.getloadavg()[0]


def sources(folder: Path, height: int, width: int, phantom: dict | None = None, seed: int = 0):
    from napari_phoenix.core.phantom import make_phantom
    from napari_phoenix.core.segment import open_segment
    from napari_phoenix.core.train.dataset import Source

    seg = open_segment(make_phantom(folder / "phantom", height=height, width=width, seed=seed,
                                    **(phantom or {})))
    data = np.asarray(seg.stack.data)
    label, ignore, mask = (seg.read(r) for r in ("label", "ignore", "mask"))
    half = width // 2
    cut = lambda a, sl: None if a is None else a[:, sl]  # noqa: E731
    left, right = slice(0, half), slice(half, width)
    return [Source("phantom_01", data[:, :, left], cut(label, left), cut(ignore, left), cut(mask, left),
                   list(seg.stack.layer_numbers)),
            Source("phantom_02", data[:, :, right], cut(label, right), cut(ignore, right), cut(mask, right),
                   list(seg.stack.layer_numbers))]  # fmt: skip


def run(args) -> dict:
    from napari_phoenix.core.train.loop import CPU_DEMO, TrainConfig, iter_train

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    srcs = sources(work, args.height, args.width, json.loads(args.phantom), args.phantom_seed)
    config = TrainConfig(out=str(work / "run"), model=CPU_DEMO["model"], epochs=args.epochs, batch_size=args.batch,
                         lr=args.lr, stride=args.stride, steps_per_epoch=args.steps_per_epoch,
                         t_max=args.t_max or args.epochs, val_chunks=("phantom_02",), device="cpu", augment=args.augment,
                         depth_shift=args.depth_shift, ema=args.ema, cache="memory", seed=args.seed, precision=args.precision)  # fmt: skip
    stop, t0, curve, steps, info = threading.Event(), time.perf_counter(), [], 0, {}
    for ev in iter_train(config, srcs, stop=stop):
        r = ev.result or {}
        if r.get("kind") == "start":
            info = r
        if r.get("kind") == "step":
            steps += 1
        if r.get("kind") == "epoch":
            curve.append({"epoch": r["epoch"], "minutes": (time.perf_counter() - t0) / 60, "loss": r["train_loss"],
                          "val_loss": r["val_loss"], "iou": r["iou"], "f1": r["f1"], "iou_prize": r["iou_prize"]})
            print(curve[-1], flush=True)
        if time.perf_counter() - t0 > args.minutes * 60:
            stop.set()
    made = json.loads((work / "phantom" / "phantom.json").read_text())
    return {"curve": curve, "steps": steps, "minutes": (time.perf_counter() - t0) / 60, "info": info, "config": config,
            "phantom": {**made["resolved"], "version": made["phantom_version"]}}  # fmt: skip


def report(args, res: dict) -> str:
    cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
               if ln.startswith("model name"))  # fmt: skip
    best = max((c["iou"] for c in res["curve"]), default=0.0)
    rows = "\n".join(f"| {c['epoch']} | {c['minutes']:.1f} | {c['loss']:.4f} | {c['val_loss']:.4f} | {c['iou']:.3f} | "
                     f"{c['f1']:.3f} | {c['iou_prize']:.3f} |" for c in res["curve"])  # fmt: skip
    bar = "\n".join(f"    epoch {c['epoch']:>2} {'#' * round(40 * c['iou'])} {c['iou']:.2f}" for c in res["curve"])
    return f"""## Training on the phantom, CPU (`bench_train.py`)

Machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; Python {platform.python_version()},
torch {torch.__version__}; {datetime.date.today().isoformat()}, load average {LOAD_AT_START:.2f} at start.
Data: a phantom segment of {args.height:,} x {args.width:,} px (21 layers, seed {args.phantom_seed}{': the bundled sample segment'
if (args.height, args.width, args.phantom_seed, args.phantom) == (1024, 1536, 0, '{}') else ''}) cut into two chunks;
`phantom_01` trains ({res['info'].get('train', 0):,} patches by the prize's sampling rules on a {args.stride} px grid;
the prize: 64), `phantom_02` is held out whole ({res['info'].get('val', 0):,} patches on the prize's 64 px grid,
every usable one). Network: the `demo` configuration of the prize architecture; prize recipe (loss, AdamW,
clipping; cosine schedule over {args.t_max or args.epochs} epochs of {args.steps_per_epoch} steps), {'prize augmentations'
if args.augment else 'no augmentations'}, batch {args.batch}, learning rate {args.lr:g}, {args.precision};
phantom version {res['phantom']['version']}
(letters {res['phantom']['glyph_height']} px tall, pens {res['phantom']['stroke_width'][0]}-{res['phantom']['stroke_width'][1]} px wide);
stopped after {args.minutes:g} minutes at the latest.
{res['steps']:,} steps in {res['minutes']:.1f} minutes.

| epoch | minutes | train loss | val loss | val IoU (kept) | val F1 | val IoU (prize-style) |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

{bar}

Best held-out IoU over kept pixels: **{best:.3f}** (goal >= 0.6 within 10 minutes: **{'met' if best >= 0.6 else 'missed'}**).
"""


def main() -> None:
    from napari_phoenix.core.train.loop import CPU_DEMO

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--steps-per-epoch", type=int, default=CPU_DEMO["steps_per_epoch"], help="0: every training patch once an epoch")
    ap.add_argument("--stride", type=int, default=CPU_DEMO["stride"], help="grid step of the training patches (the prize: 64)")
    ap.add_argument("--t-max", type=int, default=0, help="cosine schedule length in epochs (default: --epochs)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=CPU_DEMO["batch_size"])
    ap.add_argument("--lr", type=float, default=CPU_DEMO["lr"])
    ap.add_argument("--seed", type=int, default=7340043)
    ap.add_argument("--augment", action="store_true",
                    help="the prize's augmentations (off by default: with them the demo network stays at the ink "
                         "prior for the whole 10 minutes)")
    ap.add_argument("--depth-shift", type=int, default=CPU_DEMO.get("depth_shift", 0),
                    help="move each training window by up to this many layers (0: off, the prize)")
    ap.add_argument("--ema", type=float, default=CPU_DEMO.get("ema", 0.0),
                    help="decay of a moving average of the weights (0: off, the prize)")
    ap.add_argument("--phantom-seed", type=int, default=0, help="0: the bundled sample segment's")
    ap.add_argument("--phantom", default="{}", help="phantom parameters to change, as JSON")
    ap.add_argument("--precision", default=CPU_DEMO["precision"],
                    help="fp32 (default): bf16 autocast training on the CPU gave NaN weight gradients now and then "
                         "(not reproducibly) in the 3-D convolutions")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    res = run(args)
    text = report(args, res)
    print(text)
    if not args.no_docs:
        update_section("bench_train", text)


if __name__ == "__main__":
    main()
