"""Benchmark: read a window of a full-size layer stack, napari-phoenix vs whole-layer reads.

Generates (once; complete files are reused) uncompressed TIFF layers as big as a real
segment, then measures each method in a fresh subprocess (so peak memory is per method),
with every layer evicted from the page cache ("cold") and again cached ("warm"):
napari-phoenix ``open_stack`` + ``contrast_limits()`` + a 512 x 512 x 16 window
(layers 5..20); ``tifffile.imread`` / ``cv2.imread`` of the 16 whole layers, cropped;
and a screen-sized view of the coarsest pyramid level (napari zoomed out). Results are
printed and written between the ``bench_open_stack`` markers of ``docs/benchmarks.md``.

Run (the data goes to the git-ignored ``.benchmarks-data/``, deleted unless ``--keep``)::

    .venv/bin/python benchmarks/bench_open_stack.py            # full size, ~12 GB
    .venv/bin/python benchmarks/bench_open_stack.py --height 2000 --width 3000 --keep
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
LOAD_AT_START = os.getloadavg()[0]  # other work on the machine skews timings
ROWS_PER_STRIP = 64
WIN = 512
SCREEN = (1080, 1920)


def layer_paths(args) -> list[Path]:
    return [Path(args.workdir) / "layers" / f"{i:02d}.tif" for i in range(args.layers)]


def _complete(path: Path, shape, dtype) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pg = tif.pages[0]
            end = int(pg.dataoffsets[-1]) + int(pg.databytecounts[-1])
            return pg.shape == shape and pg.dtype == dtype and end <= path.stat().st_size
    except Exception:  # missing, truncated or not a TIFF: write it again
        return False


def generate(args) -> list[Path]:
    """Write the layers strip by strip (never a whole layer in memory); keep complete ones."""
    import tifffile

    shape, dtype = (args.height, args.width), np.dtype(args.dtype)
    paths = layer_paths(args)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    xx = np.arange(args.width, dtype=np.uint32)[None, :]
    for z, path in enumerate(paths):
        if _complete(path, shape, dtype):
            continue
        t0 = time.perf_counter()

        def strips(z=z):
            for y0 in range(0, args.height, ROWS_PER_STRIP):
                yy = np.arange(y0, min(y0 + ROWS_PER_STRIP, args.height), dtype=np.uint32)[:, None]
                v = ((xx ^ (yy * 40503)) * np.uint32(2654435761) + np.uint32(z * 7919)) | 1 << 31
                yield (v >> np.uint32(32 - 8 * dtype.itemsize)).astype(dtype)

        tmp = path.with_suffix(".tif.partial")
        tifffile.imwrite(tmp, strips(), shape=shape, dtype=dtype, rowsperstrip=ROWS_PER_STRIP)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # clean pages, so that eviction really evicts
        tmp.rename(path)
        print(f"wrote {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return paths


def evict(paths) -> None:
    """Drop the files from the page cache (fsync first: dirty pages are not dropped)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def disk_bandwidth(path: Path) -> float:
    """MB/s of 16 MiB sequential reads of one evicted file."""
    evict([path])
    buf, total = bytearray(16 << 20), 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total / (time.perf_counter() - t0) / 1e6


def _timed(fn):
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def child(args) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    import psutil

    proc, out = psutil.Process(), {}
    io0 = proc.io_counters().read_bytes
    layers = layer_paths(args)[5:]
    y, x = args.y, args.x
    if args.child in ("phoenix", "dask", "coarse"):
        import dask.array  # noqa: F401  (imported by open_stack anyway; keep it out of the timing)

        import napari_phoenix

        out["rss_base"] = proc.memory_info().rss
        folder = Path(args.workdir) / "layers"
        stack, out["open"] = _timed(lambda: napari_phoenix.open_stack(folder))
        if args.child in ("phoenix", "dask"):
            _, out["contrast"] = _timed(stack.contrast_limits)
            before = stack.bytes_read
            if args.child == "phoenix":  # direct window read, 16 threads
                _, out["read"] = _timed(
                    lambda: stack.read(5, args.layers - 1, slice(y, y + WIN), slice(x, x + WIN)))
            else:  # one dask slice, fused into the reads, dask's default threads
                win = stack.data[5:, y : y + WIN, x : x + WIN]
                _, out["read"] = _timed(win.compute)
            out["bytes_app"] = stack.bytes_read - before
        else:
            coarse = stack.levels[-1]
            view = coarse[coarse.shape[0] // 2, : SCREEN[0], : SCREEN[1]]
            out["view"], out["step"] = view.shape, stack.data.shape[2] // coarse.shape[2]
            _, out["read"] = _timed(view.compute)
            out["bytes_app"] = stack.bytes_read
    else:
        import tifffile

        if args.child == "cv2":
            import cv2

            def imread(path):
                return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        else:
            imread = tifffile.imread
        out["rss_base"] = proc.memory_info().rss
        # whole layers, one at a time, keeping only the crops
        crop = (slice(y, y + WIN), slice(x, x + WIN))
        _, out["read"] = _timed(lambda: [imread(f)[crop].copy() for f in layers])
        out["bytes_app"] = sum(f.stat().st_size for f in layers)
    out["io_disk"] = proc.io_counters().read_bytes - io0
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run_child(args, mode: str, cold: bool) -> dict:
    if cold:
        evict(layer_paths(args))
    cmd = [sys.executable, __file__, "--child", mode, "--workdir", str(args.workdir),
           "--layers", str(args.layers), "--y", str(args.y), "--x", str(args.x)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine(workdir) -> str:
    import dask
    import tifffile

    cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
            f"{shutil.disk_usage(workdir).free / 1e9:.0f} GB free disk; Python "
            f"{platform.python_version()}, numpy {np.__version__}, tifffile "
            f"{tifffile.__version__}, dask {dask.__version__}; "
            f"{datetime.date.today().isoformat()}, load average {LOAD_AT_START:.2f} at start")


def update_section(name: str, body: str) -> None:
    """Replace the text between this benchmark's markers in docs/benchmarks.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOCS.read_text() if DOCS.exists() else (
        "# Benchmarks\n\nFigures written by the scripts in `benchmarks/`; rerun them to refresh.\n")
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text.split(start)[0] + block + text.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOCS.write_text(text)


MODES = {"phoenix": "napari-phoenix: open + contrast + `stack.read` window",
         "dask": "napari-phoenix: open + contrast + dask slice `.compute()`",
         "tifffile": "tifffile.imread x16 + crop", "cv2": "cv2.imread x16 + crop",
         "coarse": "napari-phoenix: coarsest level, screen view"}


def _total(r: dict) -> float:
    return r.get("open", 0) + r.get("contrast", 0) + r["read"]


def _times(a: float, b: float, more: str, less: str) -> str:
    return f"{a / b:,.1f}x {more}" if a >= b else f"{b / a:,.1f}x {less}"


def report(args, res: dict, total: float, gen_s: float, bw: float) -> str:
    mb, depth = 1e6, args.layers - 5
    rows = ["| method | cache | open (s) | contrast (s) | read (s) | total (s) | peak RSS (MB) | "
            "RSS after imports (MB) | bytes read by method (MB) | read from disk, kernel (MB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (mode, cold), r in res.items():
        opened, contrast = (f"{r[k]:.3f}" if k in r else "-" for k in ("open", "contrast"))
        rows.append(f"| {MODES[mode]} | {'cold' if cold else 'warm'} | {opened} | "
                    f"{contrast} | {r['read']:.3f} | {_total(r):.3f} | "
                    f"{r['peak_rss'] / mb:,.0f} | {r['rss_base'] / mb:,.0f} | "
                    f"{r['bytes_app'] / mb:,.1f} | {r['io_disk'] / mb:,.1f} |")
    ratios = []
    for cold in (True, False):
        ph, tf = res["phoenix", cold], res["tifffile", cold]
        ratios.append(
            f"- **{'cold' if cold else 'warm'} cache:** napari-phoenix is "
            f"**{_times(_total(tf), _total(ph), 'faster', 'slower')}** than `tifffile.imread` of "
            f"the {depth} layers ({_total(ph):.2f} s vs {_total(tf):.2f} s, open included), with "
            f"**{_times(tf['peak_rss'], ph['peak_rss'], 'less', 'more')} peak memory** "
            f"({ph['peak_rss'] / mb:,.0f} MB vs {tf['peak_rss'] / mb:,.0f} MB) and "
            f"{_times(tf['bytes_app'], ph['bytes_app'], 'fewer', 'more')} bytes read.")
    win = depth * WIN * WIN * np.dtype(args.dtype).itemsize
    co = res["coarse", True]
    return f"""## Opening a layer stack and reading a window (`bench_open_stack.py`)

Machine: {machine(args.workdir)}.
Data: {args.layers} uncompressed {args.dtype} TIFF layers of {args.width:,} x {args.height:,} px
(width x height, {ROWS_PER_STRIP}-row strips), {total / 1e9:.1f} GB in all (generated in
{gen_s:.0f} s; 0 s means reused). Raw sequential read bandwidth of one evicted layer
(16 MiB reads): **{bw:,.0f} MB/s**. Window: {WIN} x {WIN} x {depth} (layers
5..{args.layers - 1}) at y={args.y}, x={args.x}. Each row is the median of {args.repeats} runs,
each in a fresh process; *cold* = every layer evicted from the page cache
(`posix_fadvise(DONTNEED)`) first, *warm* = files already cached. Peak RSS is the process
maximum (`ru_maxrss`, all runs) and includes the interpreter and imports ("RSS after imports").
"Read from disk, kernel" is `/proc/self/io` `read_bytes` (includes readahead).

{chr(10).join(rows)}

Side by side, same run:

{chr(10).join(ratios)}
- The window itself is {win / mb:.1f} MB; napari-phoenix read
  {res['phoenix', True]['bytes_app'] / win:.2f}x that for it with `stack.read` and
  {res['dask', True]['bytes_app'] / win:.2f}x with a single dask slice.
- Zoomed-out view: a {co['view'][1]} x {co['view'][0]} px view of the coarsest level
  (1 pixel in {co['step']:.0f} per axis) reads in {co['read']:.2f} s cold (open {co['open']:.2f} s),
  {res['coarse', False]['read']:.3f} s warm.

Reproduce: `.venv/bin/python benchmarks/bench_open_stack.py` (`--keep` keeps the
{total / 1e9:.0f} GB of generated layers in `.benchmarks-data/`).
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=14000)
    p.add_argument("--width", type=int, default=20000)
    p.add_argument("--layers", type=int, default=21)
    p.add_argument("--dtype", default="uint16", choices=["uint8", "uint16"])
    p.add_argument("--workdir", type=Path, default=ROOT / ".benchmarks-data")
    p.add_argument("--repeats", type=int, default=3, help="runs per method and cache state")
    p.add_argument("--keep", action="store_true", help="keep the generated layers")
    p.add_argument("--y", type=int, help="window top (default: middle)")
    p.add_argument("--x", type=int, help="window left (default: middle)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    args.y = args.height // 2 if args.y is None else args.y
    args.x = args.width // 2 if args.x is None else args.x
    t0 = time.perf_counter()
    paths = generate(args)
    gen_s, total = time.perf_counter() - t0, sum(p.stat().st_size for p in paths)
    bw = disk_bandwidth(paths[0])
    res = {}
    for mode in MODES:
        for cold in (True, False):
            runs = [run_child(args, mode, cold) for _ in range(args.repeats)]
            res[mode, cold] = {k: statistics.median(r[k] for r in runs)
                               if isinstance(v, (int, float)) else v for k, v in runs[0].items()}
            res[mode, cold]["peak_rss"] = max(r["peak_rss"] for r in runs)
            print(mode, "cold" if cold else "warm", json.dumps(res[mode, cold]), flush=True)
    body = report(args, res, total, gen_s, bw)
    print(body)
    update_section("bench_open_stack", body)
    if not args.keep:
        shutil.rmtree(Path(args.workdir) / "layers")


if __name__ == "__main__":
    main()
