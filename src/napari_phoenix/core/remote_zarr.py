"""A read-only zarr store over HTTP(S), with the on-disk cache of :mod:`.remote_cache`.

Serves zarr v2 and v3 (and OME-Zarr, which is either) from any web server:
whole keys (metadata, chunks) are fetched once into the cache and, once per
store, revalidated with a conditional request (no body bytes when unchanged);
byte-range reads (sharded v3 arrays) go through :class:`RemoteFile`. Listings
(only needed for groups without multiscales metadata) come from the server's
directory index pages.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)

from .errors import LayerStackError
from .http_session import mask_url, public_url
from .remote_cache import fetch_file
from .remote_file import RemoteFile
from .remote_http import list_folder, request


class HttpStore(Store):
    """Read-only zarr store at ``url`` (a folder address).

    Parameters
    ----------
    url : str
        The zarr's folder, ``http(s)://…/volume.zarr/``.
    """

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, url: str):
        super().__init__(read_only=True)
        self.url = url if url.endswith("/") else url + "/"
        self._fresh: set[str] = set()
        self._files: dict[str, RemoteFile] = {}
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpStore) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __repr__(self) -> str:
        return f"HttpStore({mask_url(self.url)!r})"

    def __dask_tokenize__(self):
        return ("phoenix-http-store", public_url(self.url))

    def __getstate__(self):
        return {"url": self.url, "_read_only": True, "_is_open": False}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fresh, self._files, self._lock = set(), {}, threading.Lock()

    # -- blocking helpers (run in threads by the async methods) --------------

    def fetch(self, key: str) -> bytes | None:
        """The whole value of ``key``, or None if the server has no such file."""
        path = fetch_file(self.url + key, revalidate=key not in self._fresh, missing_ok=True)
        self._fresh.add(key)
        return None if path is None else path.read_bytes()

    def has(self, key: str) -> bool:
        """True if the server has ``key`` (the value is fetched into the cache)."""
        return self.fetch(key) is not None

    def _remote(self, key: str) -> RemoteFile | None:
        with self._lock:
            remote = self._files.get(key)
        if remote is None:
            try:
                remote = RemoteFile(self.url + key)
            except LayerStackError as err:
                if "HTTP 404" in str(err):
                    return None
                raise
            with self._lock:
                self._files[key] = remote
        return remote

    def _get(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if byte_range is None:
            return self.fetch(key)
        remote = self._remote(key)
        if remote is None:
            return None
        size = remote.size
        if isinstance(byte_range, RangeByteRequest):
            start, stop = byte_range.start, byte_range.end
        elif isinstance(byte_range, OffsetByteRequest):
            start, stop = byte_range.offset, size
        elif isinstance(byte_range, SuffixByteRequest):
            start, stop = max(0, size - byte_range.suffix), size
        else:
            raise ValueError(f"unexpected byte range {byte_range!r}")
        return remote.read(start, stop - start)

    def _names(self, prefix: str) -> list[str]:
        try:
            _, names = list_folder(self.url + prefix)
        except LayerStackError as err:
            if "HTTP 404" in str(err) or "HTTP 403" in str(err):
                return []
            raise
        return names

    # -- the zarr Store interface ---------------------------------------------

    async def get(self, key: str, prototype, byte_range: ByteRequest | None = None):
        data = await asyncio.to_thread(self._get, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ):
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        def head() -> bool:
            return request("HEAD", self.url + key, allow_redirects=True).status_code < 400

        return await asyncio.to_thread(head)

    async def set(self, key: str, value) -> None:
        raise LayerStackError(f"{mask_url(self.url)}: remote zarr stores are read-only")

    async def delete(self, key: str) -> None:
        raise LayerStackError(f"{mask_url(self.url)}: remote zarr stores are read-only")

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.strip("/")
        names = await asyncio.to_thread(self._names, prefix + "/" if prefix else "")
        for name in names:
            yield name.rstrip("/")

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        todo = [""]
        while todo:
            folder = todo.pop()
            for name in await asyncio.to_thread(self._names, folder):
                if name.endswith("/"):
                    todo.append(folder + name)
                elif (folder + name).startswith(prefix):
                    yield folder + name

    async def list(self) -> AsyncIterator[str]:
        async for key in self.list_prefix(""):
            yield key
