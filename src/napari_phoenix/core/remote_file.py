"""Random access to a remote file: byte ranges fetched once, kept in the range cache.

See :mod:`.remote_cache` for the cache layout. Threads asking for the same
bytes at once fetch them once: a range being fetched is marked pending and the
others wait for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading

import numpy as np

from .errors import LayerStackError
from .http_session import mask_url, public_url
from .remote_cache import Extents, _drop_other_versions, _entry, _key, _write_meta
from .remote_http import RangesIgnored, RemoteInfo, fetch_ranges, stat

#: files up to this size are read whole from a server without Range support
WHOLE_FILE_LIMIT = 64 << 20


class RemoteFile:
    """A remote file read by byte ranges through the on-disk cache (thread-safe).

    Parameters
    ----------
    url : str
        The file's address.
    info : RemoteInfo, optional
        Its size and validators, if already known (else a HEAD request).
    """

    def __init__(self, url: str, info: RemoteInfo | None = None):
        self.url = url
        self.info = info or stat(url)
        self.bytes_fetched = 0
        self._lock = threading.Lock()
        self._ready = False

    @property
    def size(self) -> int:
        return self.info.size

    def token(self) -> str:
        """URL (without login) + size + validators: changes when the file changes."""
        return f"{public_url(self.url)}-{self.info.token()}"

    def __getstate__(self):
        return {"url": self.url, "info": self.info, "bytes_fetched": self.bytes_fetched}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._ready = False

    def __del__(self):
        for fd in self.__dict__.get("_fds", ()):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _setup(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            folder, key = _entry(self.url), _key(self.info)
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / f"{key}.json"
            complete = False
            if meta.exists():
                with contextlib.suppress(ValueError, OSError):
                    complete = bool(json.loads(meta.read_text()).get("complete"))
                os.utime(meta)  # least-recently-used order for trimming
            else:
                _drop_other_versions(folder, key)
                _write_meta(meta, self.url, self.info, False)
            self._folder, self._name = folder, key
            self._fds: list[int] = []
            self._extents = Extents()
            self._pending: list[tuple[int, int, threading.Event]] = []
            self._pack: list[int] | None = None  # [pack fd, log fd, size] of this process's pack
            data = folder / f"{key}.data"
            if complete and data.exists() and data.stat().st_size == self.size:
                self._fds.append(os.open(data, os.O_RDONLY))
                self._extents.add(0, self.size, self._fds[-1], 0)
            for log in sorted(folder.glob(f"{key}.*.log")):
                with contextlib.suppress(OSError):
                    self._load(log)
            self._ready = True

    def _load(self, log) -> None:
        """Add the ranges another run (or process) kept in ``log`` and its pack."""
        fd = os.open(log.with_suffix(".pack"), os.O_RDONLY)
        self._fds.append(fd)
        packed = os.fstat(fd).st_size
        raw = np.fromfile(log, dtype="<i8")
        for a, b, at in raw[: len(raw) // 3 * 3].reshape(-1, 3).tolist():
            if 0 <= a < b <= self.size and 0 <= at and at + b - a <= packed:
                self._extents.add(a, b, fd, at)

    def _reserve(self, nbytes: int) -> tuple[int, int, int]:
        """Room for ``nbytes`` in this process's pack: ``(pack fd, log fd, offset)``."""
        with self._lock:
            if self._pack is None:
                name = f"{self._name}.{os.getpid()}-{secrets.token_hex(4)}"
                self._folder.mkdir(parents=True, exist_ok=True)  # the cache may have been trimmed
                flags = os.O_CREAT | os.O_EXCL
                pack = os.open(self._folder / f"{name}.pack", flags | os.O_RDWR, 0o644)
                log = os.open(
                    self._folder / f"{name}.log", flags | os.O_WRONLY | os.O_APPEND, 0o644
                )
                self._fds += [pack, log]
                self._pack = [pack, log, 0]
            pack, log, at = self._pack
            self._pack[2] += nbytes
            return pack, log, at

    def ensure(self, wanted: list[tuple[int, int]]) -> None:
        """Fetch the parts of the byte ranges ``[a, b)`` not yet in the cache."""
        self._setup()
        while True:
            with self._lock:
                missing = [
                    g for a, b in wanted for g in self._extents.missing(a, min(b, self.size))
                ]
                if not missing:
                    return
                busy = Extents()
                for a, b, _ in self._pending:
                    busy.add(a, b)
                free = [g for a, b in missing for g in busy.missing(a, b)]
                if free:
                    event = threading.Event()
                    self._pending += [(a, b, event) for a, b in free]
                else:
                    waits = {
                        ev for a, b, ev in self._pending if any(a < y and x < b for x, y in missing)
                    }
            if not free:
                for ev in waits:
                    ev.wait()
                continue
            try:
                self._fetch(free)
            finally:
                with self._lock:
                    self._pending = [p for p in self._pending if p[2] is not event]
                event.set()

    def _fetch(self, free: list[tuple[int, int]]) -> None:
        records: list[tuple[int, int, int]] = []
        pack = log = None
        try:
            for offset, data in fetch_ranges(
                self.url, free, self.info, self.size <= WHOLE_FILE_LIMIT
            ):
                pack, log, at = self._reserve(len(data))
                os.pwrite(pack, data, at)
                records.append((offset, offset + len(data), at))
                self.bytes_fetched += len(data)
        except RangesIgnored as ignored:
            pack, log, at = self._reserve(self.size)
            records = [self._store_whole(ignored.response, pack, at)]
        if records:
            os.fdatasync(pack)
            os.write(log, np.asarray(records, dtype="<i8").tobytes())
        with self._lock:
            for a, b, at in records:
                self._extents.add(a, b, pack, at)
            left = [g for a, b in free for g in self._extents.missing(a, b)]
        if left:
            raise LayerStackError(
                f"{mask_url(self.url)}: the server sent other byte ranges than asked for "
                f"(bytes {left[0][0]}-{left[0][1] - 1} are missing); try again later"
            )

    def _store_whole(self, resp, pack: int, at: int) -> tuple[int, int, int]:
        """Write the whole file from a 200 answer (a server without Range support)."""
        n = 0
        with resp:
            for piece in resp.iter_content(1 << 20):
                if n + len(piece) > self.size:
                    break
                os.pwrite(pack, piece, at + n)
                n += len(piece)
        self.bytes_fetched += n
        if n != self.size:
            raise LayerStackError(
                f"{mask_url(self.url)}: got {n:,} of {self.size:,} bytes; the connection "
                "broke off or the file changed on the server; open it again"
            )
        return 0, self.size, at

    def gather(self, starts, length: int) -> bytearray:
        """The ``length`` bytes at each offset in ``starts``, concatenated (fetched first)."""
        self._setup()
        starts = [int(s) for s in starts]
        self.ensure([(s, s + length) for s in starts])
        out = bytearray(len(starts) * length)
        view = memoryview(out)
        with self._lock:
            plan = [p for s in starts for p in self._extents.pieces(s, s + length)]
        pos = 0
        run_fd, run_at, run_n = -1, 0, 0
        for fd, at, n in [*plan, (-2, 0, 0)]:  # read pieces that follow each other in one go
            if fd == run_fd and at == run_at + run_n:
                run_n += n
                continue
            if run_n:
                data = os.pread(run_fd, run_n, run_at)
                if len(data) != run_n:
                    raise LayerStackError(
                        f"{mask_url(self.url)}: the cached copy is incomplete; open it again"
                    )
                view[pos : pos + run_n] = data
                pos += run_n
            run_fd, run_at, run_n = fd, at, n
        return out

    def read(self, offset: int, size: int, readahead: int = 0) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end of the file).

        With ``readahead``, a miss fetches the aligned blocks of that size around it.
        """
        self._setup()
        a, b = max(0, offset), min(offset + size, self.size)
        if b <= a:
            return b""
        if readahead:
            with self._lock:
                miss = bool(self._extents.missing(a, b))
            if miss:
                block = (a // readahead * readahead, min(self.size, -(-b // readahead) * readahead))
                self.ensure([block])
        return bytes(self.gather([a], b - a))
