"""Benchmark: export contrasted chunks of a full-size segment, napari-phoenix vs the prize method.

Generates (once; complete files are reused) a segment of 21 uncompressed uint16 TIFF layers of
40,000 x 14,000 px (width x height, ~23.5 GB) plus a 0/255 ``mask.png``, then exports chunks 1-4
(columns of width / 4 = 10,000 px, contrast LUT applied) with each method in a fresh subprocess,
every input file evicted from the page cache first (cold), every output fsync'ed inside the timing:

* ``prize-cv2``: for each chunk, for each layer: ``cv2.imread`` of the whole layer, ``lut[layer]``,
  crop, ``cv2.imwrite`` (uncompressed TIFF); then the chunk's mask likewise. One process, as the
  original splitter. ``prize-tifffile``: the same with ``tifffile.imread`` / ``imwrite``.
* ``phoenix``: ``napari_phoenix`` ``iter_split`` (what ``split_segment`` drains) with its
  defaults (one worker process per core), to a separate output folder.

Sampled output files of every method are compared (CRC-32 of the pixels); each output is deleted
before the next method runs. Disk read and write bandwidth are measured, and a cProfile of
napari-phoenix with ``workers=1`` on 3 full-width layers shows where its time goes. Each timed
run first waits for the 1-minute load average to fall below 0.6 (at most ``--max-wait`` s).
Results are printed and written between the ``bench_split`` markers of ``docs/benchmarks.md``.

Run (needs input + one output + 5 GB of disk, ~52 GB at full size; the data goes to the
git-ignored ``.benchmarks-data/split`` and is deleted unless ``--keep``)::

    .venv/bin/python benchmarks/bench_split.py
    .venv/bin/python benchmarks/bench_split.py --width 4000 --height 1500 --max-wait 0 --keep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_open_stack import _complete, _times, evict, machine, update_section

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_STRIP, CHUNKS, MB, GB = 64, (1, 2, 3, 4), 1e6, 1e9
MODES = {"prize-cv2": "prize: cv2.imread whole layer, LUT, crop, cv2.imwrite (1 process)",
         "prize-tifffile": "prize with tifffile.imread / imwrite (1 process)",
         "phoenix": "napari-phoenix `split_segment` ({w} worker processes)"}
PEAK = [0]  # sampled peak RSS of the child and its workers


def layer_paths(args, n=None) -> list[Path]:
    return [args.workdir / "SEG" / "layers" / f"{i:02d}.tif" for i in range(n or args.layers)]


def generate(args) -> None:
    """Write the layers strip by strip (gradients xor a hash: every code, some structure), mask.png."""
    import cv2
    import tifffile

    shape, dt, mask = (args.height, args.width), np.dtype("uint16"), args.workdir / "SEG" / "mask.png"
    mask.parent.joinpath("layers").mkdir(parents=True, exist_ok=True)
    xx = np.arange(args.width, dtype=np.uint32)[None, :]
    for z, path in enumerate(layer_paths(args)):
        if _complete(path, shape, dt):
            continue

        def strips(z=z):
            for y0 in range(0, args.height, ROWS_PER_STRIP):
                yy = np.arange(y0, min(y0 + ROWS_PER_STRIP, args.height), dtype=np.uint32)[:, None]
                smooth = ((xx >> 5) * 37 + (yy >> 5) * 11 + z * 997) & 0xFFFF
                yield (smooth ^ (((xx ^ (yy * 40503)) * np.uint32(2654435761)) >> 20)).astype(dt)

        tmp = path.with_suffix(".tif.partial")
        tifffile.imwrite(tmp, strips(), shape=shape, dtype=dt, rowsperstrip=ROWS_PER_STRIP)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # clean pages, so that eviction really evicts
        tmp.rename(path)
        print(f"wrote {path.name}", flush=True)
    if not mask.exists():  # an ellipse of papyrus, built row by row (no full-size floats)
        img, dx = np.empty(shape, np.uint8), ((np.arange(args.width) / args.width - 0.5) / 0.48) ** 2
        for y in range(args.height):
            img[y] = (dx + ((y / args.height - 0.5) / 0.45) ** 2 < 1) * 255
        cv2.imwrite(str(mask.with_suffix(".partial.png")), img)
        mask.with_suffix(".partial.png").rename(mask)


def wait_quiet(max_wait: float, limit=0.6) -> float:
    """Poll every 15 s until the 1-minute load average is below ``limit`` or ``max_wait`` s passed."""
    t0 = time.time()
    while os.getloadavg()[0] >= limit and time.time() - t0 < max_wait:
        time.sleep(15)
    return os.getloadavg()[0]


def disk_bandwidth(args) -> tuple[list[float], list[float]]:
    """MB/s: 3 evicted layers read in 16 MiB reads; 2 GiB written + fsync, twice."""
    reads, writes, buf = [], [], bytearray(16 << 20)
    for path in layer_paths(args)[-3:]:
        evict([path])
        t0, total = time.perf_counter(), 0
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
        reads.append(total / (time.perf_counter() - t0) / MB)
    block, tmp = np.random.default_rng(0).bytes(16 << 20), args.workdir / "bw.partial"
    for _ in range(2):
        t0 = time.perf_counter()
        with open(tmp, "wb", buffering=0) as f:
            f.writelines(block for _ in range(128))
            os.fsync(f.fileno())
        writes.append(128 * len(block) / (time.perf_counter() - t0) / MB)
        tmp.unlink()
    return reads, writes


def run_prize(args, use_cv2: bool) -> dict:
    import cv2
    import tifffile
    from scipy.interpolate import CubicSpline

    # the prize table, built as the original did: not-a-knot spline, x257, clip, truncate
    spline = CubicSpline(np.array([0, 128, 255]) * 257.0, np.array([0, 64, 255]) * 257.0)
    lut = np.clip(spline(np.arange(65536.0)), 0, 65535).astype(np.uint16)
    steps = dict.fromkeys(("read", "LUT", "write+fsync", "masks"), 0.0)
    for cid in CHUNKS:
        x0, x1 = (cid - 1) * args.chunk_width, min(cid * args.chunk_width, args.width)
        dest = args.workdir / "SEG" / "parts_contrasted" / f"SEG_{cid:02d}"
        (dest / "layers").mkdir(parents=True, exist_ok=True)
        for path in layer_paths(args):
            t = [time.perf_counter()]
            layer = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if use_cv2 else tifffile.imread(path)
            t.append(time.perf_counter())
            layer = lut[layer]
            t.append(time.perf_counter())
            target = dest / "layers" / path.name
            if use_cv2:
                cv2.imwrite(str(target), layer[:, x0:x1], [cv2.IMWRITE_TIFF_COMPRESSION, 1])
            else:
                tifffile.imwrite(target, layer[:, x0:x1])
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            del layer
            t.append(time.perf_counter())
            for key, a, b in zip(("read", "LUT", "write+fsync"), t, t[1:]):
                steps[key] += b - a
        t0 = time.perf_counter()
        mask = cv2.imread(str(args.workdir / "SEG" / "mask.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(dest / "mask.png"), ((mask[:, x0:x1] == 255) * 255).astype(np.uint8))
        del mask
        steps["masks"] += time.perf_counter() - t0
    return steps


def run_phoenix(args) -> dict:
    from napari_phoenix.core.chunks import SplitParams, iter_split

    params = SplitParams(segment=str(args.workdir / "SEG"), chunks=CHUNKS, chunk_width=args.chunk_width,
                         out=str(args.workdir / "out_phoenix"))
    t0, steps = time.perf_counter(), {}
    for ev in iter_split(params):
        if ev.message.startswith("layer"):
            steps["layers"], steps["rss_layers"] = time.perf_counter() - t0, PEAK[0]
    steps["masks"] = time.perf_counter() - t0 - steps["layers"]
    return steps


def child(args) -> dict:
    """One method in this fresh process: wall time, CPU, peak RSS (self, workers, sampled sum)."""
    import cv2  # noqa: F401  (imports stay out of the timing)
    import psutil
    import tifffile  # noqa: F401

    import napari_phoenix.core.chunks  # noqa: F401

    proc, done = psutil.Process(), threading.Event()

    def sample():  # concurrent RSS of this process and its workers, every 0.1 s
        while not done.wait(0.1):
            try:
                PEAK[0] = max(PEAK[0], sum(p.memory_info().rss for p in [proc, *proc.children(True)]))
            except psutil.Error:
                pass

    threading.Thread(target=sample, daemon=True).start()
    t0 = time.perf_counter()
    prize = args.child.startswith("prize")
    steps = run_prize(args, args.child == "prize-cv2") if prize else run_phoenix(args)
    os.sync()
    wall = time.perf_counter() - t0
    done.set()
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    # this process's own peak: VmHWM counts only since exec; ru_maxrss would also carry the peak
    # RSS of the harness that forked it (Linux keeps it across execve)
    hwm = next(int(ln.split()[1]) for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
    return {"steps": steps, "wall": wall, "rss_self": hwm * 1024, "rss_sampled": PEAK[0],
            "rss_child": kids.ru_maxrss * 1024, "user": me.ru_utime + kids.ru_utime,
            "sys": me.ru_stime + kids.ru_stime}


def run_child(args, mode: str) -> dict:
    """Wait for a quiet machine, evict the inputs, run ``mode``; check and delete its output."""
    import cv2
    import tifffile

    load = wait_quiet(args.max_wait)
    evict([*layer_paths(args), args.workdir / "SEG" / "mask.png"])
    cmd = [sys.executable, __file__, "--child", mode, "--workdir", str(args.workdir), "--layers",
           str(args.layers), "--width", str(args.width), "--chunk-width", str(args.chunk_width)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res, crcs = json.loads(out.strip().splitlines()[-1]), {}
    parts = args.workdir / ("out_phoenix" if mode == "phoenix" else "SEG") / "parts_contrasted"
    for cid, z in zip(CHUNKS, (0, args.layers // 3, 2 * args.layers // 3, args.layers - 1)):
        for rel in (f"layers/{z:02d}.tif", "mask.png"):
            p = parts / f"SEG_{cid:02d}" / rel
            a = tifffile.imread(p) if p.suffix == ".tif" else cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            crcs[f"{cid}/{rel}"] = [a.shape, str(a.dtype), zlib.crc32(np.ascontiguousarray(a))]
    files = [p for p in parts.rglob("*") if p.suffix in (".tif", ".png")]
    res |= {"load": load, "samples": crcs, "written": sum(p.stat().st_size for p in files)}
    shutil.rmtree(parts)
    return res


GROUPS = {"read layers (`pread`, row copies)": ("posix.pread", "sources.py"),
          "contrast (`np.take`)": ("'take'",),
          "write chunks (`pwrite`, copies, fsync)": ("posix.pwrite", "posix.fsync", "ascontiguousarray",
                                                     "tobytes"),
          "CRC-32 of written files": ("zlib.crc32", "_io.BufferedReader"),
          "masks (PNG decode / encode)": ("ImagingDecoder", "ImagingEncoder", "masks.py")}


def profile_child(args) -> dict:
    """cProfile of split_segment, workers=1 (in this process); own time grouped and top functions."""
    import cProfile
    import pstats

    import dask.array  # noqa: F401  (imports stay out of the profile)
    import PIL.PngImagePlugin  # noqa: F401

    import napari_phoenix.core.masks  # noqa: F401
    from napari_phoenix.core.chunks import split_segment

    pr = cProfile.Profile()
    pr.runcall(split_segment, args.workdir / "PROF", chunks=CHUNKS, chunk_width=args.chunk_width,
               workers=1, out=str(args.workdir / "out_prof"))
    st = pstats.Stats(pr).stats  # {(file, line, name): (cc, ncalls, own, cumulative, callers)}
    groups = dict.fromkeys(GROUPS, 0.0)
    for (file, _, name), (_, _, own, _, _) in st.items():
        g = next((g for g, keys in GROUPS.items() if any(k in f"{file}:{name}" for k in keys)), None)
        if g:
            groups[g] += own
    top = sorted(st.items(), key=lambda kv: -kv[1][2])[:8]
    return {"total": sum(v[2] for v in st.values()), "groups": groups,
            "top": [(f"{Path(k[0]).name}:{k[2]}" if k[0] != "~" else k[2], v[1], v[2]) for k, v in top]}


def profile(args) -> dict:
    """Profile napari-phoenix on a segment of the first 3 layers (links), cold, in a fresh process."""
    prof = args.workdir / "PROF"
    (prof / "layers").mkdir(parents=True, exist_ok=True)
    for p in [*layer_paths(args, 3), args.workdir / "SEG" / "mask.png"]:
        link = prof / ("layers" if p.suffix == ".tif" else "") / p.name
        link.unlink(missing_ok=True)
        link.symlink_to(p)
    wait_quiet(args.max_wait)
    evict([*layer_paths(args, 3), args.workdir / "SEG" / "mask.png"])
    cmd = [sys.executable, __file__, "--child", "profile", "--workdir", str(args.workdir),
           "--width", str(args.width), "--chunk-width", str(args.chunk_width)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(prof)
    shutil.rmtree(args.workdir / "out_prof")
    return json.loads(out.strip().splitlines()[-1])


def report(args, res, bw, prof, workers) -> str:
    import cv2
    import scipy

    layer_bytes = layer_paths(args)[0].stat().st_size
    mask_bytes = (args.workdir / "SEG" / "mask.png").stat().st_size
    rows = []
    for mode, r in res.items():
        ph = mode == "phoenix"
        r["read"] = (1 if ph else len(CHUNKS)) * (args.layers * layer_bytes + mask_bytes)
        r["bound"] = r["rss_self"] + (workers * r["rss_child"] if ph else 0)
        rows.append(f"| {MODES[mode].format(w=workers)} | {r['load']:.2f} | {r['wall']:,.1f} | "
                    f"{r['user']:,.0f} / {r['sys']:,.0f} | {r['rss_self'] / MB:,.0f} | "
                    f"{r['rss_child'] / MB if ph else 0:,.0f} | **{r['bound'] / MB:,.0f}** | "
                    f"{r['rss_sampled'] / MB:,.0f} | {r['read'] / GB:,.1f} | {r['written'] / GB:,.1f} | "
                    f"{(r['read'] + r['written']) / r['wall'] / MB:,.0f} |")
    ph, lines = res["phoenix"], []
    for mode in (m for m in res if m != "phoenix"):
        pr, st = res[mode], res[mode]["steps"]
        speed, mem = pr["wall"] / ph["wall"], pr["bound"] / ph["bound"]
        lines.append(
            f"- vs **{mode}**: napari-phoenix is **{_times(pr['wall'], ph['wall'], 'faster', 'slower')}** "
            f"({ph['wall']:.0f} s vs {pr['wall']:.0f} s) with **{_times(pr['bound'], ph['bound'], 'less', 'more')}"
            f" peak memory** ({ph['bound'] / MB:,.0f} MB, upper bound, vs {pr['bound'] / MB:,.0f} MB); "
            f"speed goal (>= 5x) **{'met' if speed >= 5 else 'missed'}**, memory goal (<= 1/5) "
            f"**{'met' if mem >= 5 else 'missed'}**; sampled outputs "
            f"{'identical' if pr['samples'] == ph['samples'] else '**DIFFERENT**'} "
            f"({len(ph['samples'])} files, CRC-32 of the pixels). The prize's time: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in st.items()) + ".")
    rd, wr = max(bw[0]), max(bw[1])
    best = ph["read"] / (rd * MB) + ph["written"] / (wr * MB)
    s = ph["steps"]
    groups = "; ".join(f"{g} {t:.1f} s ({100 * t / prof['total']:.0f} %)" for g, t in prof["groups"].items())
    top = ("| top functions by own time | calls | own time (s) | share |\n|---|---:|---:|---:|\n" + "\n".join(
        f"| `{name}` | {n:,} | {t:.2f} | {100 * t / prof['total']:.0f} % |" for name, n, t in prof["top"]))
    mask_note = (f": the parent's peak of {ph['rss_self'] / MB:,.0f} MB is reached in the masks step, which "
                 f"decodes the whole {args.width:,} x {args.height:,} `mask.png` at once"
                 if ph["rss_sampled"] > 1.2 * s["rss_layers"] else "")
    return f"""## Exporting contrasted chunks (`bench_split.py`)

Machine: {machine(args.workdir)}; opencv {cv2.__version__}, scipy {scipy.__version__}.
Data: a segment of {args.layers} uncompressed uint16 TIFF layers of {args.width:,} x {args.height:,} px
(width x height, {ROWS_PER_STRIP}-row strips, {layer_bytes / GB:.2f} GB each, {args.layers * layer_bytes / GB:.1f} GB
in all) and a 0/255 `mask.png`. Exported: chunks {', '.join(map(str, CHUNKS))} of {args.chunk_width:,} px, contrasted,
with their masks: {ph['written'] / GB:.1f} GB of output per method. Each method runs once in a fresh process,
after the 1-minute load average fell below 0.6 (or {args.max_wait:.0f} s passed: see "load"), with every
input evicted from the page cache (cold); every output file is fsync'ed inside the timing. CPU = user /
system time of the process and its workers. Peak RSS: *process* = the method's process (`VmHWM`, since its start);
*worker* = the largest worker process (`ru_maxrss` of `RUSAGE_CHILDREN`, which also carries the parent's RSS when it forked them: an upper bound); *bound* = process + {workers} x worker for
napari-phoenix (an upper bound: the peaks need not coincide), the process for the prize; *sampled* =
largest sum of the RSS of the process and its workers, sampled every 0.1 s. Read = bytes the method
reads from the files (the prize reads every layer once per chunk: the page cache cannot hold the
{args.layers * layer_bytes / GB:.0f} GB segment); throughput = (read + written) / wall. The prize writes
uncompressed TIFFs (`IMWRITE_TIFF_COMPRESSION` 1; OpenCV's default would be LZW) like napari-phoenix.

| method | load | wall (s) | CPU user / sys (s) | peak RSS process (MB) | worker (MB) | bound (MB) | sampled (MB) | read (GB) | written (GB) | throughput (MB/s) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Side by side, same run (goals: at least 5x faster, at most 1/5 of the peak memory):

{chr(10).join(lines)}
- napari-phoenix's time: layers {s['layers']:.0f} s, masks {s['masks']:.0f} s. Its sampled peak RSS
  (all processes) was {s['rss_layers'] / MB:,.0f} MB up to the end of the layers and
  {ph['rss_sampled'] / MB:,.0f} MB overall{mask_note}.
- Where napari-phoenix's time goes: {ph['user'] + ph['sys']:.0f} s of CPU in {ph['wall']:.0f} s on {workers} cores
  ({100 * (ph['user'] + ph['sys']) / (workers * ph['wall']):.0f} % busy), {100 * ph['sys'] / (ph['user'] + ph['sys']):.0f} % of it system time (copies between the page cache
  and the process in `pread` / `pwrite`, page faults). With `workers=1` under cProfile on the first
  3 layers at full width (cold, {prof['total']:.1f} s of own time in all): {groups}.

{top}

Disk (measured before and after the runs; this virtual disk varies a lot, and the host may cache
what the VM evicted): sequential reads of evicted layers (16 MiB reads) {', '.join(f'{v:,.0f}' for v in bw[0])} MB/s; sequential writes of 2 GiB +
fsync {', '.join(f'{v:,.0f}' for v in bw[1])} MB/s. napari-phoenix read {ph['read'] / GB:.1f} GB and wrote
{ph['written'] / GB:.1f} GB: at the fastest rates seen ({rd:,.0f} and {wr:,.0f} MB/s), one after the other, that
takes at best {best:.0f} s; it took {ph['wall']:.0f} s, i.e. **{100 * best / ph['wall']:.0f} % of the disk's read +
write bandwidth** ({(ph['read'] + ph['written']) / ph['wall'] / MB:,.0f} MB/s; more than 100 % would mean the
disk overlaps reads and writes).

Reproduce: `.venv/bin/python benchmarks/bench_split.py` (`--keep` keeps the generated segment in
`.benchmarks-data/split/`; `--modes` picks methods).
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=14000)
    p.add_argument("--width", type=int, default=40000)
    p.add_argument("--layers", type=int, default=21)
    p.add_argument("--chunk-width", type=int, help="default: width / 4")
    p.add_argument("--workdir", type=Path, default=ROOT / ".benchmarks-data" / "split")
    p.add_argument("--modes", default=",".join(MODES), help="of: " + ", ".join(MODES))
    p.add_argument("--max-wait", type=float, default=600, help="s to wait for load < 0.6")
    p.add_argument("--keep", action="store_true", help="keep the generated segment")
    p.add_argument("--generate-only", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.chunk_width = args.chunk_width or -(-args.width // len(CHUNKS))
    if args.child:
        print(json.dumps(profile_child(args) if args.child == "profile" else child(args)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    need = 2 * args.layers * args.height * args.width * 2 + 5 * GB  # input + one output + margin
    have = shutil.disk_usage(args.workdir).free + sum(
        p.stat().st_size for p in layer_paths(args) if p.exists())
    if need > have:
        sys.exit(f"needs {need / GB:.0f} GB of disk, {have / GB:.0f} GB available: pass a smaller --width")
    generate(args)
    if args.generate_only:
        return
    bw, workers = disk_bandwidth(args), os.cpu_count() or 1
    print(f"disk read / write MB/s: {bw}", flush=True)
    res = {}
    for mode in args.modes.split(","):
        res[mode] = run_child(args, mode)
        print(mode, json.dumps(res[mode]), flush=True)
    prof = profile(args)
    bw = tuple(a + b for a, b in zip(bw, disk_bandwidth(args)))
    body = report(args, res, bw, prof, workers)
    print(body)
    update_section("bench_split", body)
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
