"""Cut a segment into full-height chunks (columns), contrasted or not, resumably.

Layout (as the prize pipeline)::

    SEGMENT/parts_contrasted/SEGMENT_01/layers/00.tif …   (parts/ without contrast)
    SEGMENT/parts_contrasted/SEGMENT_01/mask.png

Each source layer is read once for all requested chunks, strip by strip, and
every chunk's file of that layer is written from the same strips: memory stays
at a few strips per worker whatever the segment's width. Layers are shared
out to worker processes (one per core by default).

Safety: every file is written under a temporary name and renamed when
complete; a manifest (``.phoenix-split.json`` in each chunk folder) records the
settings and each finished file's size and CRC-32, so a rerun skips finished
files, redoes missing, truncated or corrupt ones, and refuses a folder that
holds different data.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path


from .._version import __version__
from .atomic import atomic_path
from .chunk_io import SplitError, file_crc32, disk_full_error, split_layer
from .contrast import SEED_POINTS, contrast_lut
from .progress import Progress
from .stack import open_stack

MANIFEST = ".phoenix-split.json"


@dataclass(frozen=True)
class SplitParams:
    """Everything that defines a chunk export (widget, API, CLI and manifest share it).

    Attributes
    ----------
    segment : str
        The segment folder (holding ``layers/`` and maybe ``mask.png``).
    chunks : tuple of int, optional
        1-based chunk ids to write; None writes all.
    chunk_width : int
        Width of a chunk in px (the prize used 10,000).
    first_chunk_offset : int
        The first chunk is ``chunk_width - first_chunk_offset`` wide.
    contrast : bool
        Apply the contrast LUT (output under ``parts_contrasted/``), or copy
        the pixels (``parts/``).
    points : tuple of (x, y)
        Contrast control points in 8-bit codes (default: the prize's).
    out : str, optional
        Folder that receives ``parts[_contrasted]/``; default the segment folder.
    mask_layer : int, optional
        Layer number to make chunk masks from when there is no ``mask.png``
        (0 -> 0, else 255); default the middle layer.
    workers : int
        Worker processes; 0 means one per core, 1 runs in this process.
    strip_bytes : int
        Bytes of source layer read at a time (bounds memory).
    verify : bool
        On a rerun, check finished files by CRC-32 (reads them), not only by size.
    overwrite : bool
        Replace chunk folders that hold different data instead of refusing.
    """

    segment: str
    chunks: tuple[int, ...] | None = None
    chunk_width: int = 10_000
    first_chunk_offset: int = 0
    contrast: bool = True
    points: tuple[tuple[float, float], ...] = SEED_POINTS
    out: str | None = None
    mask_layer: int | None = None
    workers: int = 0
    strip_bytes: int = 32 * 2**20
    verify: bool = False
    overwrite: bool = False

    def __post_init__(self):
        object.__setattr__(self, "segment", str(self.segment))
        if self.out is not None:
            object.__setattr__(self, "out", str(self.out))
        if self.chunks is not None:
            object.__setattr__(self, "chunks", tuple(int(c) for c in self.chunks))
        object.__setattr__(self, "points", tuple((float(x), float(y)) for x, y in self.points))
        if self.chunk_width < 1:
            raise SplitError(f"chunk width must be at least 1 px, got {self.chunk_width}")
        if not 0 <= self.first_chunk_offset < self.chunk_width:
            raise SplitError(
                f"first chunk offset {self.first_chunk_offset} must be >= 0 and smaller than the "
                f"chunk width {self.chunk_width} (the first chunk is width - offset px wide)"
            )


@dataclass(frozen=True)
class Chunk:
    """One column of the segment: 1-based ``id``, columns ``x0:x1``, output folder."""

    id: int
    x0: int
    x1: int
    folder: Path = field(compare=False)

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def chunk_bounds(width: int, chunk_width: int = 10_000, first_chunk_offset: int = 0) -> list[tuple[int, int, int]]:
    """``[(id, x0, x1), …]`` of the chunks of a segment ``width`` px wide."""
    bounds, x0, cid = [], 0, 1
    x1 = chunk_width - first_chunk_offset
    while x0 < width:
        bounds.append((cid, x0, min(x1, width)))
        x0, x1, cid = x1, x1 + chunk_width, cid + 1
    return bounds


def plan_chunks(params: SplitParams, width: int) -> list[Chunk]:
    """The chunks to write, with their output folders; checks the ids."""
    root = Path(params.segment)
    name = root.name
    bounds = chunk_bounds(width, params.chunk_width, params.first_chunk_offset)
    wanted = params.chunks if params.chunks is not None else tuple(b[0] for b in bounds)
    bad = [c for c in wanted if not 1 <= c <= len(bounds)]
    if bad:
        raise SplitError(
            f"chunk id {bad[0]} is out of range: {name} is {width:,} px wide, which makes "
            f"chunks 1–{len(bounds)} of {params.chunk_width:,} px (offset {params.first_chunk_offset})"
        )
    base = Path(params.out) if params.out else root
    parts = base / ("parts_contrasted" if params.contrast else "parts")
    by_id = {b[0]: b for b in bounds}
    return [
        Chunk(c, by_id[c][1], by_id[c][2], parts / f"{name}_{c:02d}")
        for c in sorted(set(wanted))
    ]


def parse_chunk_ids(text: str | None) -> tuple[int, ...] | None:
    """``"1,3-5"`` -> ``(1, 3, 4, 5)``; empty or None -> None (all chunks).

    Parameters
    ----------
    text : str or None
        Comma-separated ids and inclusive ranges.
    """
    if not text or not text.strip():
        return None
    ids: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                ids.extend(range(int(a), int(b) + 1))
            elif part:
                ids.append(int(part))
    except ValueError:
        raise SplitError(f"chunk ids must look like 1,3-5, got {text!r}") from None
    return tuple(ids)


# ---- manifest ----------------------------------------------------------------------------


def _settings(params: SplitParams, chunk: Chunk, shape, dtype) -> dict:
    return {
        "segment": str(Path(params.segment).resolve()),
        "chunk": chunk.id,
        "x0": chunk.x0,
        "x1": chunk.x1,
        "height": int(shape[1]),
        "dtype": str(dtype),
        "contrast": params.contrast,
        "points": [list(p) for p in params.points] if params.contrast else None,
    }


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"settings": None, "files": {}}


def _write_manifest(folder: Path, manifest: dict) -> None:
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _finished(folder: Path, rel: str, entry: dict | None, verify: bool) -> bool:
    if entry is None:
        return False
    path = folder / rel
    try:
        if path.stat().st_size != entry["size"]:
            return False
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    if path.suffix.lower() in (".tif", ".tiff") and head not in (b"II*\x00", b"MM\x00*"):
        return False
    return not verify or file_crc32(path) == entry["crc32"]


def _check_target(chunk: Chunk, settings: dict, overwrite: bool) -> dict:
    """The chunk's manifest files entry to resume from; refuse foreign content."""
    manifest = _read_manifest(chunk.folder)
    layers_dir = chunk.folder / "layers"
    existing = sorted(p.name for p in layers_dir.iterdir() if not p.name.startswith(".")) if layers_dir.is_dir() else []
    if manifest is None and not existing:
        return {}
    if manifest is not None and manifest.get("settings") == settings:
        return manifest.get("files", {})
    if overwrite:
        return {}
    if manifest is None:
        raise SplitError(
            f"{chunk.folder} already holds layers not written by napari-phoenix ({', '.join(existing[:3])}…); "
            "choose another output folder or pass overwrite=True (--overwrite)"
        )
    old = manifest.get("settings") or {}
    diff = [k for k in settings if old.get(k) != settings[k]]
    raise SplitError(
        f"{chunk.folder} holds a different export ({', '.join(f'{k}: {old.get(k)!r} -> {settings[k]!r}' for k in diff[:3])}); "
        "choose another output folder or pass overwrite=True (--overwrite)"
    )


# ---- the job -------------------------------------------------------------------------------


def iter_split(params: SplitParams) -> Iterator[Progress]:
    """Export the chunks, yielding a :class:`Progress` per finished layer.

    Parameters
    ----------
    params : SplitParams
        What to export and how.

    Yields
    ------
    Progress
        ``result`` is the list of files written for that layer (empty when
        they were already complete).

    Raises
    ------
    SplitError
        Chunk id out of range, bad offset, a target folder holding different
        data, not enough disk space.
    """
    stack = open_stack(params.segment)
    z, height, width = stack.shape
    chunks = plan_chunks(params, width)
    lut = contrast_lut(stack.dtype, params.points) if params.contrast else None
    names = [p.name for p in stack.paths]
    done_files: dict[int, dict] = {}
    for chunk in chunks:
        settings = _settings(params, chunk, stack.shape, stack.dtype)
        files = _check_target(chunk, settings, params.overwrite)
        (chunk.folder / "layers").mkdir(parents=True, exist_ok=True)
        for folder in (chunk.folder, chunk.folder / "layers"):  # the manifest and mask, the layers
            for stale in folder.glob(".*.partial*"):
                stale.unlink()  # a temporary file left by an interrupted run
        done_files[chunk.id] = {"settings": settings, "files": files, "version": __version__}

    # what is left to do, per layer
    todo: list[tuple[int, list[tuple[int, int, str]]]] = []
    for i, name in enumerate(names):
        targets = [
            (c.x0, c.x1, str(c.folder / "layers" / name))
            for c in chunks
            if not _finished(c.folder, f"layers/{name}", done_files[c.id]["files"].get(f"layers/{name}"), params.verify)
        ]
        if targets:
            todo.append((i, targets))
    mask_todo = [c for c in chunks if not _finished(c.folder, "mask.png", done_files[c.id]["files"].get("mask.png"), params.verify)]
    need = sum((t[1] - t[0]) * height * stack.dtype.itemsize for _, ts in todo for t in ts)
    free = shutil.disk_usage(chunks[0].folder).free
    if need > free:
        raise SplitError(
            f"the export needs {need / 1e9:.1f} GB and {chunks[0].folder.parent} has {free / 1e9:.1f} GB free; "
            "free some space or choose another output folder (out=…)"
        )
    total = len(todo) + 1
    by_id = {c.id: c for c in chunks}
    path_chunk = {str(c.folder): c.id for c in chunks}

    def record(results) -> list[Path]:
        written = []
        for path, size, crc in results:
            p = Path(path)
            folder = p.parent.parent if p.parent.name == "layers" else p.parent
            cid = path_chunk[str(folder)]
            done_files[cid]["files"][p.relative_to(folder).as_posix()] = {"size": size, "crc32": crc}
            _write_manifest(by_id[cid].folder, done_files[cid])
            written.append(p)
        return written

    count = 0
    workers = params.workers or os.cpu_count() or 1
    if workers == 1 or len(todo) <= 1:
        for i, targets in todo:
            results = split_layer(stack.sources[i], names[i], targets, lut, params.strip_bytes)
            count += 1
            yield Progress(count, total, f"layer {names[i]}", record(results))
    else:
        import multiprocessing

        workers = min(workers, len(todo))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        pending: dict[Future, str] = {}
        queue = list(todo)
        try:
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    i, targets = queue.pop(0)
                    fut = pool.submit(split_layer, stack.sources[i], names[i], targets, lut, params.strip_bytes)
                    pending[fut] = names[i]
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    name = pending.pop(fut)
                    results = fut.result()
                    count += 1
                    yield Progress(count, total, f"layer {name}", record(results))
        finally:
            # cancelled or failed: drop queued layers, let running ones finish and record them
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for fut in pending:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    record(fut.result())
    yield Progress(total, total, "masks", record(_write_masks(stack, params, mask_todo)))


def _write_masks(stack, params: SplitParams, chunks: Sequence[Chunk]) -> list[tuple[str, int, int]]:
    """Every chunk's mask.png in one pass over the source's rows (a band in memory at a time)."""
    from .masks import iter_mask_rows, mask_writer, read_mask_shape

    if not chunks:
        return []
    mask_png = Path(params.segment) / "mask.png"
    height, width = stack.shape[1:]
    band = max(1, (1 << 22) // width)
    if mask_png.is_file():
        shape = read_mask_shape(mask_png)
        if tuple(shape) != (height, width):
            raise SplitError(f"{mask_png} is {shape[1]:,} x {shape[0]:,} px, the layers {width:,} x {height:,}")
        bands = (b for _, b in iter_mask_rows(mask_png, band * width))
    else:  # made from a layer: 0 -> 0, else 255
        number = params.mask_layer if params.mask_layer is not None else stack.layer_numbers[len(stack.layer_numbers) // 2]
        src = stack.sources[stack.index_of(number)]
        bands = (src.read(slice(y0, min(height, y0 + band)), slice(None)) != 0 for y0 in range(0, height, band))
    paths = [c.folder / "mask.png" for c in chunks]
    try:
        with contextlib.ExitStack() as files:  # an earlier, different mask.png goes to .history/
            writers = [files.enter_context(mask_writer(p, (height, c.x1 - c.x0))) for p, c in zip(paths, chunks)]
            for rows in bands:
                for w, c in zip(writers, chunks):
                    w.write(rows[:, c.x0 : c.x1])
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full_error(paths[0].parent) from err
        raise
    return [(str(p), p.stat().st_size, file_crc32(p)) for p in paths]


def split_segment(params: SplitParams | str | os.PathLike, **overrides) -> list[Path]:
    """Export chunks of a segment (drains :func:`iter_split`); returns the files written.

    Parameters
    ----------
    params : SplitParams or path
        The parameters, or the segment folder.
    **overrides
        :class:`SplitParams` fields to set or change.

    Returns
    -------
    list of Path
        Files written by this run (none when everything was already done).
    """
    if not isinstance(params, SplitParams):
        params = SplitParams(segment=str(params), **overrides)
    elif overrides:
        params = SplitParams(**{**asdict(params), **overrides})
    written: list[Path] = []
    for ev in iter_split(params):
        written.extend(ev.result or [])
    return written
