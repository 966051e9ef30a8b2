"""On-disk cache of remote files: exactly the byte ranges fetched, nothing around them.

Layout, under ``cache_dir()/remote/``: one folder per URL (a hash of the URL
without login), holding one version of the file (``KEY`` = hash of size + ETag
+ Last-Modified, so a changed file gets a new key and the old one is dropped)::

    KEY.json           url, size, etag, last_modified, complete
    KEY.data           the whole file (small files fetched whole: masks, zarr chunks)
    KEY.PID-RAND.pack  fetched byte ranges, appended one after the other
    KEY.PID-RAND.log   append-only records (remote start, remote stop, pack offset), int64

Each process appends to its own pack, so processes sharing the cache never
write into one file; every process reads all packs. Bytes are written (and
synced) to the pack before their record is appended to the log, so a record
always points at bytes on disk; a torn last record is ignored. Whole files are
written to a temporary name and renamed.

Granularity is the byte range asked for (a window's row pieces), not a fixed
block: an aligned 1 MiB block of a 14,000 px wide 16-bit layer holds 37 rows,
so a 512 x 512 window would fetch 28 times its own bytes. Packs hold exactly
the fetched bytes, contiguously (a sparse copy of the file would spend a 4 KiB
disk block per row piece, and freeing thousands of scattered blocks is slow).
The cache is bounded by :func:`trim_remote_cache` (least recently used folders
go first) and emptied by :func:`clear_remote_cache`.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .cache import cache_dir
from .errors import LayerStackError
from .http_session import mask_url, public_url
from .remote_http import RemoteInfo, raise_for_status, request, stat

#: default bound of the remote cache (``$NAPARI_PHOENIX_REMOTE_CACHE_GB`` overrides)
DEFAULT_CACHE_GB = 20.0


def remote_cache_dir() -> Path:
    """Where fetched remote bytes are kept: ``cache_dir() / "remote"``."""
    return cache_dir() / "remote"


def _entry(url: str) -> Path:
    return remote_cache_dir() / hashlib.sha256(public_url(url).encode()).hexdigest()[:32]


def _key(info: RemoteInfo) -> str:
    return hashlib.sha256(info.token().encode()).hexdigest()[:16]


def _disk_bytes(path: Path) -> int:
    st = path.stat()
    return min(st.st_size, st.st_blocks * 512) if hasattr(st, "st_blocks") else st.st_size


def _entries() -> list[tuple[float, int, Path]]:
    root = remote_cache_dir()
    out = []
    for folder in root.iterdir() if root.is_dir() else ():
        with contextlib.suppress(OSError):
            files = list(folder.iterdir())
            used = max((f.stat().st_mtime for f in files), default=0.0)
            out.append((used, sum(_disk_bytes(f) for f in files), folder))
    return out


def remote_cache_size() -> int:
    """Bytes the remote cache takes on disk."""
    return sum(size for _, size, _ in _entries())


def clear_remote_cache(max_bytes: int | None = None) -> int:
    """Empty the remote cache, or trim it to ``max_bytes`` (least recently used first).

    Parameters
    ----------
    max_bytes : int, optional
        Keep at most this many bytes; None removes everything.

    Returns
    -------
    int
        Bytes freed. Stacks open in other programs keep working (their open
        files stay readable) but fetch again what they need.
    """
    entries = sorted(_entries())
    total, freed = sum(size for _, size, _ in entries), 0
    for _, size, folder in entries:
        if max_bytes is not None and total - freed <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        freed += size
    return freed


def trim_remote_cache() -> int:
    """Trim the cache to ``$NAPARI_PHOENIX_REMOTE_CACHE_GB`` (default 20) GB; bytes freed."""
    try:
        limit = float(os.environ.get("NAPARI_PHOENIX_REMOTE_CACHE_GB", DEFAULT_CACHE_GB))
    except ValueError:
        limit = DEFAULT_CACHE_GB
    return clear_remote_cache(int(limit * 1e9))


class Extents:
    """Disjoint byte ranges ``[start, stop)`` of a remote file, each stored at ``(fd, offset)``."""

    def __init__(self):
        self.starts: list[int] = []
        self.stops: list[int] = []
        self.fds: list[int] = []
        self.offsets: list[int] = []

    def add(self, a: int, b: int, fd: int = -1, offset: int = 0) -> None:
        """Add the parts of ``[a, b)`` not yet present; byte ``a`` is at ``offset`` in ``fd``."""
        for s, e in self.missing(a, b):
            where = offset + s - a
            i = bisect.bisect_left(self.starts, s)
            if (
                i
                and self.stops[i - 1] == s
                and self.fds[i - 1] == fd
                and self.offsets[i - 1] + s - self.starts[i - 1] == where
            ):
                self.stops[i - 1] = e  # continues the previous extent in the same file
            else:
                self.starts.insert(i, s)
                self.stops.insert(i, e)
                self.fds.insert(i, fd)
                self.offsets.insert(i, where)

    def missing(self, a: int, b: int) -> list[tuple[int, int]]:
        """The parts of ``[a, b)`` not in the set."""
        out, pos = [], a
        i = bisect.bisect_right(self.stops, a)
        while pos < b and i < len(self.starts) and self.starts[i] < b:
            if self.starts[i] > pos:
                out.append((pos, self.starts[i]))
            pos = max(pos, self.stops[i])
            i += 1
        if pos < b:
            out.append((pos, b))
        return out

    def pieces(self, a: int, b: int) -> list[tuple[int, int, int]]:
        """``(fd, offset, length)`` covering ``[a, b)``, which must be present."""
        out, pos = [], a
        i = bisect.bisect_right(self.stops, a)
        while pos < b:
            if i >= len(self.starts) or self.starts[i] > pos:
                raise KeyError(f"bytes {pos}-{b} are not in the cache")
            n = min(self.stops[i], b) - pos
            out.append((self.fds[i], self.offsets[i] + pos - self.starts[i], n))
            pos += n
            i += 1
        return out


def _write_file(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: readers see the old file or the whole new one.

    No fsync (a cache can be fetched again; sizes are checked when read back).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_meta(path: Path, url: str, info: RemoteInfo, complete: bool) -> None:
    meta = {
        "url": mask_url(public_url(url)),
        "size": info.size,
        "etag": info.etag,
        "last_modified": info.last_modified,
        "complete": complete,
    }
    _write_file(path, json.dumps(meta).encode())


def _drop_other_versions(folder: Path, key: str) -> None:
    for f in folder.iterdir():
        if not f.name.startswith((key + ".", ".")):
            with contextlib.suppress(OSError):
                f.unlink()


def fetch_file(url: str, revalidate: bool = True, missing_ok: bool = False) -> Path | None:
    """A small remote file, fetched whole into the cache; the cached copy's path.

    Parameters
    ----------
    url : str
        The file's address.
    revalidate : bool
        Ask the server whether a cached copy is still current (a conditional
        request: no body bytes if it is; a HEAD comparing sizes if the server
        sends no ETag / Last-Modified).
    missing_ok : bool
        Return None on HTTP 404 instead of raising.
    """
    folder = _entry(url)
    cached = _cached_whole(folder)
    if cached and not revalidate:
        return cached[0]
    headers = {"Accept-Encoding": "identity"}
    if cached:
        path, meta = cached
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        elif meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        else:
            try:
                same = stat(url).size == meta.get("size")
            except LayerStackError:
                same = False
            if same:
                os.utime(path)
                return path
    resp = request("GET", url, headers=headers)
    if resp.status_code == 304 and cached:
        os.utime(cached[0])
        return cached[0]
    if resp.status_code == 404 and missing_ok:
        return None
    raise_for_status(resp, url)
    body = resp.content
    info = RemoteInfo.from_headers(resp.headers, len(body))
    key = _key(info)
    folder.mkdir(parents=True, exist_ok=True)
    _drop_other_versions(folder, key)
    _write_file(folder / f"{key}.data", body)
    _write_meta(folder / f"{key}.json", url, info, True)
    return folder / f"{key}.data"


def _cached_whole(folder: Path) -> tuple[Path, dict] | None:
    best = None
    for meta_path in folder.glob("*.json") if folder.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(meta_path.read_text())
            data = meta_path.with_suffix(".data")
            if meta.get("complete") and data.exists() and data.stat().st_size == meta.get("size"):
                mtime = meta_path.stat().st_mtime
                if best is None or mtime > best[0]:
                    best = (mtime, data, meta)
    return best[1:] if best else None
