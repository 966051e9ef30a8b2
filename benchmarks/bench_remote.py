"""Benchmark: window reads of a remote segment over HTTP, napari-phoenix vs naive fetching.

Serves a segment of uncompressed strip TIFF layers (default 21 x 2,048 x 4,096 uint16,
16 MiB per layer) from the loopback test server (``tests/loopback.py``, with ETags and
multi-range answers like Apache), then reads windows of 16 layers x 512 x 512 at random
places, and the same windows again:

* ``phoenix``: ``open_stack(url).read(5, 20, rows, cols)``: row pieces by multi-range
  requests into the on-disk range cache; the second pass comes from the cache.
* ``spans``: one range request per layer for the window's rows at full width (what a
  range-reading file object with read-ahead does, e.g. fsspec's ``HTTPFile``); no cache.
* ``whole layers``: every layer file fetched whole for each window (what the prize's
  download-then-read tools do); no cache; run on 2 windows only (it is slow).

Reports body bytes transferred per window data byte, requests and seconds per window,
and writes the ``bench_remote`` section of ``docs/benchmarks.md``. Loopback has no
network latency: on a real server each request costs a round trip (~50-150 ms), so the
request counts matter as much as the bytes.

Run::

    .venv/bin/python benchmarks/bench_remote.py            # ~1 minute
    .venv/bin/python benchmarks/bench_remote.py --windows 4 --width 2048
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from bench_open_stack import machine, update_section  # noqa: E402
from loopback import start  # noqa: E402

ROWS_PER_STRIP = 64
WIN, DEPTH, FIRST = 512, 16, 5


def generate(folder: Path, layers: int, height: int, width: int) -> None:
    """Noise-like uint16 layers written strip by strip (like the segments' layers)."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    xx = np.arange(width, dtype=np.uint32)[None, :]
    for z in range(layers):

        def strips(z=z):
            for y0 in range(0, height, ROWS_PER_STRIP):
                yy = np.arange(y0, min(y0 + ROWS_PER_STRIP, height), dtype=np.uint32)[:, None]
                v = (
                    (xx ^ (yy * 40503)) * np.uint32(2654435761) + np.uint32(z * 7919)
                ) >> np.uint32(16)
                yield v.astype(np.uint16)

        tifffile.imwrite(
            folder / f"{z:02d}.tif",
            strips(),
            shape=(height, width),
            dtype=np.uint16,
            rowsperstrip=ROWS_PER_STRIP,
        )


def windows(args, n: int) -> list[tuple[slice, slice]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, args.height - WIN), rng.integers(0, args.width - WIN)
        out.append((slice(int(y), int(y) + WIN), slice(int(x), int(x) + WIN)))
    return out


def naive_read(
    url: str, layers: int, rows: slice, cols: slice, whole: bool, meta: list
) -> np.ndarray:
    """Fetch the window of each layer by one full-width range (or the whole file)."""
    from concurrent.futures import ThreadPoolExecutor

    from napari_phoenix.core.remote_http import session

    def one(z):
        offset, width = meta[z]
        if whole:
            body = session().get(f"{url}{z:02d}.tif").content
            start = offset + rows.start * width * 2
            data = body[start : start + (rows.stop - rows.start) * width * 2]
        else:
            a = offset + rows.start * width * 2
            b = offset + rows.stop * width * 2 - 1
            data = session().get(f"{url}{z:02d}.tif", headers={"Range": f"bytes={a}-{b}"}).content
        return np.frombuffer(data, np.uint16).reshape(-1, width)[:, cols]

    with ThreadPoolExecutor(max_workers=min(16, layers)) as pool:
        return np.stack(list(pool.map(one, range(FIRST, FIRST + layers))))


def run(args) -> dict:
    import napari_phoenix as nx

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    os.environ["NAPARI_PHOENIX_CACHE"] = str(work / "cache")
    try:
        t0 = time.perf_counter()
        generate(work / "site" / "seg" / "layers", args.layers, args.height, args.width)
        gen_s = time.perf_counter() - t0
        srv, server = start(work / "site", validators=True, multi_range=True)
        url = srv.url + "seg/"
        wins = windows(args, args.windows)
        win_bytes = DEPTH * WIN * WIN * 2
        res: dict = {"gen_s": gen_s}

        for label, repeat in (("open cold", 1), ("open warm", 3)):
            times = []
            for _ in range(repeat):
                srv.reset_counts()
                t0 = time.perf_counter()
                stack = nx.open_stack(url)
                times.append(time.perf_counter() - t0)
            res[label] = (min(times), sum(srv.requests.values()), srv.bytes_sent)
        local = nx.open_stack(work / "site" / "seg")
        meta = [(int(s.strip_offsets[0]), args.width) for s in local.sources]
        assert all(len(s.strip_offsets) == 1 or s.rows_per_strip for s in local.sources)

        def measure(name, read, wins):
            srv.reset_counts()
            t0 = time.perf_counter()
            got = [read(rows, cols) for rows, cols in wins]
            dt = time.perf_counter() - t0
            for (rows, cols), window in zip(wins, got, strict=True) if args.check else ():
                np.testing.assert_array_equal(
                    window, local.read(FIRST, FIRST + DEPTH - 1, rows, cols)
                )
            n = len(wins)
            res[name] = (srv.bytes_sent / (win_bytes * n), sum(srv.requests.values()) / n, dt / n)
            print(name, res[name], flush=True)

        stack = nx.open_stack(url)
        phoenix = lambda r, c: stack.read(FIRST, FIRST + DEPTH - 1, r, c)  # noqa: E731
        measure("phoenix cold", phoenix, wins)
        measure("phoenix warm", phoenix, wins)
        base = url + "layers/"
        measure("spans", lambda r, c: naive_read(base, DEPTH, r, c, False, meta), wins)
        measure("whole layers", lambda r, c: naive_read(base, DEPTH, r, c, True, meta), wins[:2])
        server.shutdown()
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: a model of a real connection, for the estimate column: bandwidth, round trip, parallel requests
BANDWIDTH, RTT, PARALLEL = 50e6, 0.1, 16


def estimate(ratio: float, requests: float) -> float:
    """Seconds per window at BANDWIDTH with RTT per round of PARALLEL requests."""
    return ratio * DEPTH * WIN * WIN * 2 / BANDWIDTH + -(-requests // PARALLEL) * RTT


def report(args, res: dict) -> str:
    mb = 1e6
    win_mb = DEPTH * WIN * WIN * 2 / mb
    rows = [
        "| method | bytes transferred / window data | requests per window "
        "| s per window, first read | s per window, same window again "
        "| estimate over the internet, first read (s) |",
        "|---|---|---|---|---|---|",
    ]
    p0, p1 = res["phoenix cold"], res["phoenix warm"]
    rows.append(
        "| napari-phoenix (multi-range row pieces, range cache) "
        f"| {p0[0]:.2f} (again: {p1[0]:.2f}) | {p0[1]:.0f} (again: {p1[1]:.0f}) "
        f"| {p0[2]:.3f} | {p1[2]:.3f} | {estimate(p0[0], p0[1]):.2f} |"
    )
    for name, what in (
        ("spans", "one full-width range per layer, no cache"),
        ("whole layers", "whole layer files per window, no cache"),
    ):
        r = res[name]
        rows.append(
            f"| {what} | {r[0]:.2f} | {r[1]:.0f} | {r[2]:.3f} | {r[2]:.3f} (no cache) "
            f"| {estimate(r[0], r[1]):.2f} |"
        )
    (oc, oreq, obytes), (ow, wreq, wbytes) = res["open cold"], res["open warm"]
    return f"""## Remote reading over HTTP (`bench_remote.py`)

Segment of {args.layers} uncompressed strip TIFF layers, {args.height:,} x {args.width:,} px uint16
({args.height * args.width * 2 / 2**20:.0f} MiB per layer), served by the loopback test server
with ETags and multi-range answers. {args.windows} windows of {DEPTH} layers x {WIN} x {WIN} px
({win_mb:.1f} MB of data each) at random places, then the same windows again.
Bytes are body bytes the server sent (multipart part headers included).

{chr(10).join(rows)}

Opening the stack (listing, a HEAD per layer, TIFF headers by 64 KiB range reads):
{oc:.2f} s, {oreq} requests, {obytes / mb:.2f} MB the first time; {ow:.2f} s, {wreq} requests,
{wbytes / mb:.3f} MB (listings only) when the headers are cached.

Loopback caveat: no network latency and no bandwidth limit. Over the internet each
request costs a round trip (50-150 ms to dl.ash2txt.org) and bytes cost time at your
bandwidth, so the ratios (bytes, requests) carry over, the seconds do not. The last
column is a model, not a measurement: {BANDWIDTH / 1e6:.0f} MB/s, {RTT * 1000:.0f} ms per round
of {PARALLEL} parallel requests. Machine:
{machine(tempfile.gettempdir())}.
Writing the test data took {res["gen_s"]:.1f} s.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=21)
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument(
        "--check", action="store_true", help="compare every window with the local read"
    )
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    res = run(args)
    body = report(args, res)
    print(body)
    if not args.no_docs:
        update_section("bench_remote", body)


if __name__ == "__main__":
    main()
