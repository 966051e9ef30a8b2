"""Open layer stacks and segments at ``http://`` / ``https://`` addresses, lazily.

What opens (the same rules as on disk, see :func:`~napari_phoenix.open_stack`):
a segment folder (its Apache-style listing shows ``layers/``), a ``layers/``
folder of numbered layer files, a single or multi-page TIFF, a zarr / OME-Zarr
(v2 or v3). Masks beside ``layers/`` are fetched whole.

Uncompressed strip TIFF layers are read by byte ranges: a window needs one
contiguous piece per row, asked for many pieces per request, kept in the
on-disk range cache (:mod:`.remote_cache`) and read from there. Compressed or
tiled TIFFs go through tifffile's ``aszarr`` over a file object reading through
the same cache, so only the strips / tiles touching a window are fetched.
"""

from __future__ import annotations

import io
import struct
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import LayerStackError, MaskError
from .http_session import mask_url, public_url
from .remote_cache import fetch_file, trim_remote_cache
from .remote_file import RemoteFile
from .remote_http import RemotePath, list_folder
from .sources import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    ImageFileSource,
    LayerSource,
    ZarrTiffSource,
    _pil_header,
    _window,
    layer_source,
    tiff_pages,
)
from .stack import (
    DEFAULT_CHUNKS,
    LAYER_NAME,
    LayerStack,
    _open_zarr,
    number_layers,
    stack_from_sources,
)

#: threads opening layer files (HEAD + TIFF header) at once
OPEN_WORKERS = 16
#: bytes fetched around small reads (TIFF headers are read in many small pieces), aligned
READAHEAD = 64 << 10


class RangeFile(io.RawIOBase):
    """A read-only, seekable file object over a :class:`RemoteFile` (for tifffile, Pillow).

    Small reads fetch the aligned 64 KiB blocks around them (TIFF headers are
    read in many small pieces); large ones fetch exactly what they ask for.
    """

    def __init__(self, remote: RemoteFile, name: str):
        super().__init__()
        self.remote = remote
        self.name = name
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.remote.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.remote.size - self._pos
        data = self.remote.read(self._pos, size, READAHEAD if size < READAHEAD else 0)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


@dataclass(eq=False)
class RemoteRawTiffSource(LayerSource):
    """An uncompressed strip TIFF page at a URL: a window fetches its row pieces only."""

    path: RemotePath
    shape: tuple[int, int]
    dtype: np.dtype
    strip_offsets: np.ndarray
    rows_per_strip: int
    remote: RemoteFile
    page: int = 0
    bytes_read: int = 0

    def token(self) -> str:
        return f"{self.remote.token()}-{self.page}"

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        height, width = self.shape
        y0, y1, ystep = _window(ys, height)
        x0, x1, xstep = _window(xs, width)
        rows = np.arange(y0, y1, ystep, dtype=np.int64)
        native = self.dtype.newbyteorder("=")
        if len(rows) == 0 or x1 == x0:
            return np.empty((len(rows), len(range(x0, x1, xstep))), native)
        item = self.dtype.itemsize
        strip, within = np.divmod(rows, self.rows_per_strip)
        starts = self.strip_offsets[strip] + (within * width + x0) * item
        piece = (x1 - x0) * item
        buf = self.remote.gather(starts, piece)
        out = np.frombuffer(buf, self.dtype).reshape(len(rows), x1 - x0)
        self.bytes_read += len(buf)
        out = out[:, ::xstep] if xstep > 1 else out
        return out if out.dtype == native else out.astype(native)


@dataclass(eq=False)
class RemoteTiffPageSource(ZarrTiffSource):
    """A compressed or tiled TIFF page at a URL, read by strips / tiles through ``aszarr``."""

    remote: RemoteFile | None = None
    _tif: object = field(default=None, repr=False)

    def token(self) -> str:
        return f"{self.remote.token()}-{self.page}"

    def __getstate__(self):
        state = super().__getstate__()
        state["_tif"] = None
        return state

    def _zarr(self):
        if self._array is None:
            with self._lock:
                if self._array is None:
                    import tifffile
                    import zarr

                    self._tif = tifffile.TiffFile(RangeFile(self.remote, self.path.name))
                    self._array = zarr.open(self._tif.pages[self.page].aszarr(), mode="r")
        return self._array


@dataclass(eq=False)
class RemoteImageSource(ImageFileSource):
    """A PNG / JPEG layer at a URL: fetched whole into the cache on first read."""

    remote: RemoteFile | None = None

    def token(self) -> str:
        return self.remote.token()

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        local = fetch_file(self.remote.url, revalidate=False)
        source = ImageFileSource(local, self.shape, self.dtype)
        out = source.read(ys, xs)
        self.bytes_read += source.bytes_read
        return out


def remote_tiff_sources(url: str) -> list[LayerSource]:
    """One source per page of a remote TIFF (its header is read by a few range requests)."""
    import tifffile

    url = RemotePath(url)
    remote = RemoteFile(url)
    try:
        with tifffile.TiffFile(RangeFile(remote, url.name)) as tif:
            pages = tiff_pages(tif, remote.size, url.name)
    except LayerStackError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, struct.error) as err:
        raise LayerStackError(f"{mask_url(url)}: not a readable TIFF ({err})") from err
    shown = RemotePath(public_url(url))
    return [
        RemoteRawTiffSource(
            shown, pg.shape, pg.dtype, pg.strip_offsets, pg.rows_per_strip, remote, pg.index
        )
        if pg.raw
        else RemoteTiffPageSource(
            shown, pg.shape, pg.dtype.newbyteorder("="), pg.index, remote=remote
        )
        for pg in pages
    ]


def _remote_image_source(url: RemotePath) -> RemoteImageSource:
    remote = RemoteFile(url)
    shape, dtype = _pil_header(RangeFile(remote, url.name))
    return RemoteImageSource(RemotePath(public_url(url)), shape, dtype, remote=remote)


def remote_layer_source(url: str) -> LayerSource:
    """The window reader for one remote single-image layer file."""
    return layer_source(RemotePath(url), tiff=remote_tiff_sources, image=_remote_image_source)


def _folder(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _try_zarr(folder: str) -> LayerStack | None:
    """The zarr at ``folder`` if it has zarr metadata, else None."""
    from .remote_zarr import HttpStore

    store = HttpStore(folder)
    if not any(store.has(key) for key in ("zarr.json", ".zgroup", ".zarray")):
        return None
    return _open_zarr(RemotePath(public_url(folder)), store=store)


def open_remote_stack(url: str, *, chunks: tuple[int, int] = DEFAULT_CHUNKS) -> LayerStack:
    """Open the layer stack at ``url`` lazily (see :func:`~napari_phoenix.open_stack`).

    Parameters
    ----------
    url : str
        ``http(s)://…``: a segment folder, a ``layers/`` folder, a TIFF, a zarr.
    chunks : tuple of int
        Dask chunk ``(rows, columns)`` per layer for TIFF layers.

    Returns
    -------
    LayerStack
        ``paths`` and ``source`` are URLs (without login).
    """
    trim_remote_cache()
    path = RemotePath(url)
    shown = RemotePath(public_url(url))
    name = path.name.lower()
    if not url.endswith("/") and name.endswith(TIFF_SUFFIXES):
        sources = remote_tiff_sources(url)
        pages = range(len(sources))
        names = [f"page {i}" for i in pages]
        return stack_from_sources(
            sources, names, pages, [shown] * len(pages), shown, "tiff", chunks
        )
    if not url.endswith("/") and name.endswith(IMAGE_SUFFIXES):
        source = remote_layer_source(url)
        return stack_from_sources([source], [path.name], [0], [shown], shown, "layers", chunks)
    folder = _folder(url)
    if name.endswith(".zarr"):
        stack = _try_zarr(folder)
        if stack is None:
            raise LayerStackError(
                f"{mask_url(folder)}: no zarr.json, .zgroup or .zarray there; is it a zarr?"
            )
        return stack
    try:
        base, names = list_folder(folder)
    except LayerStackError as err:
        if "HTTP 40" not in str(err):
            raise
        try:
            stack = _try_zarr(folder)  # zarr stores are often served without listings
        except LayerStackError:
            stack = None
        if stack is None:
            raise
        return stack
    if "layers/" in names:
        base, names = list_folder(base + "layers/")
    files = [n for n in names if not n.endswith("/")]
    if not any(LAYER_NAME.match(n) for n in files):
        stack = _try_zarr(folder)
        if stack is not None:
            return stack
        shown_names = ", ".join(sorted(names)[:5]) or "nothing"
        raise LayerStackError(
            f"{mask_url(base)}: no layers/ folder, no layer files named like 00.tif and no zarr "
            f"metadata (the listing shows {shown_names}); open a segment folder (holding "
            "layers/), a layers/ folder, a TIFF or a zarr"
        )
    numbered = number_layers(files, mask_url(base), names)
    urls = [base + urllib.parse.quote(n) for _, n in numbered]
    with ThreadPoolExecutor(max_workers=min(OPEN_WORKERS, len(urls))) as pool:
        sources = list(pool.map(remote_layer_source, urls))
    paths = [RemotePath(public_url(u)) for u in urls]
    names, numbers = [n for _, n in numbered], [n for n, _ in numbered]
    return stack_from_sources(sources, names, numbers, paths, shown, "layers", chunks)


def is_remote_segment(url: str) -> bool:
    """True if ``url`` is a folder whose listing shows ``layers/`` (False on any error)."""
    if RemotePath(url).suffix.lower() in (*TIFF_SUFFIXES, *IMAGE_SUFFIXES, ".zarr"):
        return False
    try:
        return "layers/" in list_folder(_folder(url))[1]
    except LayerStackError:
        return False


def open_remote_segment(url: str, **stack_options):
    """Open a segment folder at ``url``: the lazy stack, masks fetched whole into the cache.

    Parameters
    ----------
    url : str
        The segment folder (listing ``layers/``) or its ``layers/`` folder.
    **stack_options
        Passed to :func:`open_remote_stack`.

    Returns
    -------
    Segment
        ``root`` is the URL; ``files`` are the cached copies of the mask files.
    """
    from .masks import read_mask_shape
    from .segment import MASK_FILES, Segment

    folder = _folder(url)
    base, names = list_folder(folder)
    if "layers/" not in names:
        if RemotePath(base).name == "layers":
            base = RemotePath(base).parent
            base, names = list_folder(base)
        if "layers/" not in names:
            raise LayerStackError(
                f"{mask_url(folder)}: not a segment folder (no layers/ folder in its listing)"
            )
    stack = open_remote_stack(base + "layers/", **stack_options)
    files = {}
    for role, name in MASK_FILES.items():
        if name in names:
            local = fetch_file(base + name)
            got = tuple(read_mask_shape(local))
            if got != tuple(stack.shape[1:]):
                h, w = stack.shape[1:]
                raise MaskError(
                    f"{name} is {got[1]:,} x {got[0]:,} px (width x height) but the layers are "
                    f"{w:,} x {h:,}; it belongs to another segment or chunk"
                )
            files[role] = local
    return Segment(root=RemotePath(public_url(base)), stack=stack, files=files)
