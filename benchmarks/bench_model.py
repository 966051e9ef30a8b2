"""Benchmark: the prize network's throughput (patches per second) on the CPU or a GPU.

The prize configuration (``unetr-sf-b3``, 79,185,665 parameters; random weights, which cost the
same as trained ones) on random input patches ``(B, 1, 16, 128, 128)``, through
``napari_phoenix.core.model.inference.inference_model`` with each set of options, at each batch
size: one warm-up forward (for ``compile``: the compilation, reported), then forwards until at
least ``--min-time`` seconds have passed. Also: FLOPs per patch (``torch.utils.flop_counter``)
and the fraction of the device's nominal peak reached, and where the time goes
(``profile_split``: forward hooks around the parts of the network, device synchronised).

Run::

    .venv/bin/python benchmarks/bench_model.py                      # CPU, batch 1, 2, 4
    .venv/bin/python benchmarks/bench_model.py --device cuda        # GPU, batch 1 ... 128

The CPU results go between the ``bench_model_cpu`` markers of ``docs/benchmarks.md``, the GPU
results between ``bench_model_gpu``; ``--json FILE`` also writes the raw figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open_stack import update_section

from napari_phoenix.core.model.inference import synchronize

LOAD_AT_START = os.getloadavg()[0]
#: Options measured: name -> InferenceOptions fields.
VARIANTS = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "fp32+cl": {"precision": "fp32", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
    "fp16": {"precision": "fp16", "channels_last": False},
    "fp16+cl": {"precision": "fp16", "channels_last": True},
    "fp32+compile": {"precision": "fp32", "channels_last": False, "compile": True},
    "bf16+compile": {"precision": "bf16", "channels_last": False, "compile": True},
    "fp16+cl+compile": {"precision": "fp16", "channels_last": True, "compile": True},
}
CPU_VARIANTS = ["fp32", "fp32+cl", "bf16", "bf16+cl", "fp32+compile", "bf16+compile"]
GPU_VARIANTS = ["fp32", "fp32+cl", "bf16", "bf16+cl", "fp16", "fp16+cl", "fp16+cl+compile", "bf16+compile"]
#: Dense peaks in TFLOPS (NVIDIA data sheets, SXM parts). "fp32" is the TF32 tensor-core peak:
#: PyTorch lets cuDNN run float32 convolutions, which are nearly all of this network, in TF32.
GPU_PEAKS = {"H100": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
             "H200": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
             "A100": {"fp32": 156.0, "fp16": 312.0, "bf16": 312.0}}


def cpu_peak_tflops() -> tuple[float, str]:
    """Nominal fp32 peak of this CPU: cores x clock x FLOPs per cycle (an estimate, said so)."""
    info = Path("/proc/cpuinfo").read_text()
    mhz = max(float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz"))
    flags = next(ln for ln in info.splitlines() if ln.startswith("flags")).split()
    amd = "AuthenticAMD" in info
    per_cycle = 64 if ("avx512f" in flags and not amd) else 32 if "fma" in flags else 16
    cores = os.cpu_count() or 1
    return cores * mhz * 1e6 * per_cycle / 1e12, (
        f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} fp32 FLOPs/cycle "
        f"({'two 256-bit FMA pipes' if per_cycle == 32 else 'two 512-bit FMA pipes' if per_cycle == 64 else 'SSE'})")


def cpu_peak_for(precision: str) -> float:
    """Nominal CPU peak for a precision: bf16 dot products (AVX512-BF16 / AMX) do twice the fp32 rate."""
    from napari_phoenix.core.model.inference import cpu_has_bf16

    fp32, _ = cpu_peak_tflops()
    return 2 * fp32 if precision == "bf16" and cpu_has_bf16() else fp32


def gpu_peak_tflops(name: str, precision: str) -> float | None:
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            return peaks["fp32" if precision == "fp32" else precision]
    return None


def measure(fast, batch: int, device: torch.device, min_time: float, max_reps: int) -> dict:
    x = torch.rand((batch, 1, 16, 128, 128), generator=torch.Generator().manual_seed(batch)).to(device)
    synchronize(device)
    t0 = time.perf_counter()
    fast(x)
    synchronize(device)
    warm = time.perf_counter() - t0
    reps, t0 = 0, time.perf_counter()
    while reps < max_reps and (reps < 2 or time.perf_counter() - t0 < min_time):
        fast(x)
        reps += 1
    synchronize(device)
    elapsed = time.perf_counter() - t0
    out = {"batch": batch, "reps": reps, "seconds": elapsed, "patches_per_s": batch * reps / elapsed,
           "first_forward_s": warm}
    if device.type == "cuda":
        out["max_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        torch.cuda.reset_peak_memory_stats(device)
    return out


def run(args) -> dict:
    from napari_phoenix.core.model.config import ModelConfig
    from napari_phoenix.core.model.inference import InferenceError, count_flops, inference_model, profile_split
    from napari_phoenix.core.model.network import InkNet, count_parameters

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = InkNet(ModelConfig()).eval()
    flops = count_flops(model, (1, 1, 16, 128, 128))
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "parameters": count_parameters(model), "flops_per_patch": flops, "variants": {}, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load_at_start": LOAD_AT_START,
           "date": datetime.date.today().isoformat()}
    for name in args.variants:
        fields = VARIANTS[name]
        try:
            fast = inference_model(model, device, **fields)
        except InferenceError as err:
            res["variants"][name] = {"error": str(err)}
            continue
        rows = []
        for b in args.batches:
            try:
                rows.append(measure(fast, b, device, args.min_time, args.max_reps))
            except torch.cuda.OutOfMemoryError:
                rows.append({"batch": b, "error": "out of memory"})
                torch.cuda.empty_cache()
            print(name, rows[-1], flush=True)
        res["variants"][name] = {"options": fast.options.to_dict(), "rows": rows}
        _reset_layout(model)
    best = max(((n, r) for n, v in res["variants"].items() for r in v.get("rows", []) if "patches_per_s" in r),
               key=lambda nr: nr[1]["patches_per_s"])
    res["best"] = {"variant": best[0], **best[1]}
    # where the time goes: the best uncompiled options, at the best batch size (CPU: batch 1)
    opts = dict(VARIANTS[best[0].replace("+compile", "")])
    fast = inference_model(model, device, **opts)
    b = best[1]["batch"] if device.type == "cuda" else 1
    x = torch.rand((b, 1, 16, 128, 128)).to(device)
    res["split"] = {"variant": best[0].replace("+compile", ""), "batch": b,
                    "seconds": profile_split(fast, x, repeats=args.split_reps)}
    return res


def _reset_layout(model) -> None:
    """Undo channels-last between variants (every variant starts from the same plain model)."""
    for p in model.parameters():
        p.data = p.data.contiguous()


def report(args, res: dict) -> str:
    device = torch.device(args.device)
    gflop = res["flops_per_patch"] / 1e9
    if device.type == "cpu":
        peak, how = cpu_peak_tflops()
        peak_note = (f"nominal fp32 peak {peak * 1000:,.0f} GFLOPS ({how}; an estimate from the base clock: turbo "
                     f"runs higher), bf16 twice that")
    else:
        peak_note = "peak: NVIDIA's dense figures (TF32 for fp32, fp16 / bf16 tensor cores)"
    lines = []
    for name, v in res["variants"].items():
        if "error" in v:
            lines.append(f"| {name} | - | - | - | - | {v['error']} |")
            continue
        for r in v["rows"]:
            if "error" in r:
                lines.append(f"| {name} | {r['batch']} | - | - | - | {r['error']} |")
                continue
            prec = v["options"]["precision"]
            p = cpu_peak_for(prec) if device.type == "cpu" else gpu_peak_tflops(res["device"], prec)
            frac = f"{100 * r['patches_per_s'] * res['flops_per_patch'] / (p * 1e12):.1f} %" if p else "-"
            extra = f"{r['first_forward_s']:.1f} s first forward" + (
                f", {r['max_memory_gb']:.1f} GB" if "max_memory_gb" in r else "")
            lines.append(f"| {name} | {r['batch']} | {r['patches_per_s']:,.2f} | {1000 / r['patches_per_s']:,.0f} | "
                         f"{frac} | {extra} |")
    s = res["split"]["seconds"]
    split = "\n".join(f"| {k} | {1000 * t:,.0f} | {100 * t / s['total']:.0f} % |"
                      for k, t in s.items() if k != "total")
    best = res["best"]
    cpu = device.type == "cpu"
    mach = (next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")) + f", {os.cpu_count()} cores, {res['threads']} torch threads"
            if cpu else res["device"])
    return f"""## Model throughput, {'CPU' if cpu else 'GPU'} (`bench_model.py{'' if cpu else ' --device cuda'}`)

Machine: {mach}; Python {platform.python_version()}, torch {res['torch']};
{res.get('date', datetime.date.today().isoformat())}, load average {res.get('load_at_start', LOAD_AT_START):.2f} at start.
Network: the prize configuration `unetr-sf-b3` ({res['parameters']:,} parameters), eval mode, random
input `(B, 1, 16, 128, 128)`. **{gflop:,.1f} GFLOPs per patch** (multiply-add = 2, counted by
`torch.utils.flop_counter`). Options: `fp32` plain; `bf16` / `fp16` autocast (logits returned in
float32); `+cl` channels-last memory (NDHWC 3-D / NHWC 2-D); `+compile` `torch.compile` (inductor).
Throughput after one warm-up forward, at least {args.min_time:g} s of forwards per row; {peak_note}.

| options | batch | patches/s | ms/patch | of peak | notes |
|---|---:|---:|---:|---:|---|
{chr(10).join(lines)}

Best: **{best['patches_per_s']:,.2f} patches/s** with `{best['variant']}` at batch {best['batch']}.

Where the time goes (`{res['split']['variant']}`, batch {res['split']['batch']}, forward hooks with the
device synchronised around each part, so the sum is a little above a plain forward):

| part | ms per forward | share |
|---|---:|---:|
{split}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default=None, help="comma-separated (CPU: 1,2,4; GPU: 1,2,...,128)")
    ap.add_argument("--variants", default=None, help=f"comma-separated of {', '.join(VARIANTS)}")
    ap.add_argument("--min-time", type=float, default=None)
    ap.add_argument("--max-reps", type=int, default=1000)
    ap.add_argument("--split-reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--from-json", type=Path, help="re-render the report of a saved --json run")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    args.batches = [int(b) for b in (args.batches or ("1,2,4,8,16,32,64,128" if cuda else "1,2,4")).split(",")]
    args.variants = (args.variants or ",".join(GPU_VARIANTS if cuda else CPU_VARIANTS)).split(",")
    args.min_time = args.min_time if args.min_time is not None else (3.0 if cuda else 6.0)
    res = json.loads(args.from_json.read_text()) if args.from_json else run(args)
    text = report(args, res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    if not args.no_docs:
        update_section("bench_model_gpu" if cuda else "bench_model_cpu", text)


if __name__ == "__main__":
    main()
