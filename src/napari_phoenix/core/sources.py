"""Window readers for single 2-D layer images.

Each source reads a rectangular, optionally strided, window of one layer
without reading the whole layer where the file format allows it:

* :class:`RawTiffSource` — uncompressed strip TIFF pages (what the Vesuvius
  segments ship): rows are addressed by their file offset and read with
  ``os.pread``, so a 512 x 512 window reads 512 row pieces of 512 pixels.
  ``bytes_read`` counts what was read.
* :class:`ZarrTiffSource` — compressed or tiled TIFF pages, through tifffile's
  ``aszarr`` store: only the strips / tiles touching the window are decoded.
* :class:`ImageFileSource` — PNG / JPEG layers: these formats cannot be read
  by window, so the whole image is decoded (one dask chunk per layer).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LayerStackError
from .imaging import large_images_allowed

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _window(sl: slice, size: int) -> tuple[int, int, int]:
    start, stop, step = sl.indices(size)
    if step < 1:
        raise ValueError("negative steps are not supported")
    return start, max(start, stop), step


class LayerSource:
    """Common interface: ``shape``, ``dtype``, ``path`` and ``read(ys, xs)``."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    bytes_read: int = 0

    def read(self, ys: slice, xs: slice) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def token(self) -> str:
        """A string that changes when the file changes (for dask task names)."""
        st = self.path.stat()
        return f"{self.path}-{st.st_size}-{st.st_mtime_ns}-{getattr(self, 'page', 0)}"


@dataclass(eq=False)
class RawTiffSource(LayerSource):
    """An uncompressed, single-sample, strip-organised TIFF page read row by row."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    strip_offsets: np.ndarray
    rows_per_strip: int
    page: int = 0
    bytes_read: int = 0
    _fd: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = None
        state.pop("_lock")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def _file(self) -> int:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _row_offset(self, row: int) -> int:
        strip, within = divmod(row, self.rows_per_strip)
        return int(self.strip_offsets[strip]) + within * self.shape[1] * self.dtype.itemsize

    #: read whole row spans (gaps included) when the window covers at least
    #: this fraction of a row: fewer system calls beat fewer bytes
    SPAN_FRACTION = 0.25

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        height, width = self.shape
        y0, y1, ystep = _window(ys, height)
        x0, x1, xstep = _window(xs, width)
        rows = range(y0, y1, ystep)
        out = np.empty((len(rows), x1 - x0), dtype=self.dtype.newbyteorder("="))
        if len(rows) == 0 or x1 == x0:
            return out[:, ::xstep]
        item = self.dtype.itemsize
        fd = self._file()
        if ystep == 1 and (x1 - x0) >= self.SPAN_FRACTION * width:
            # one read per strip piece: rows y0..stop-1 from column x0 of the
            # first row to column x1 of the last, then drop the gaps
            row = y0
            while row < y1:
                stop = min(y1, (row // self.rows_per_strip + 1) * self.rows_per_strip)
                n = stop - row
                nbytes = ((n - 1) * width + (x1 - x0)) * item
                buf = os.pread(fd, nbytes, self._row_offset(row) + x0 * item)
                self._check(len(buf), nbytes, row)
                flat = np.frombuffer(buf, self.dtype)
                padded = np.lib.stride_tricks.as_strided(
                    flat, shape=(n, x1 - x0), strides=(width * item, item)
                )
                out[row - y0 : stop - y0] = padded
                self.bytes_read += nbytes
                row = stop
        else:
            nbytes = (x1 - x0) * item
            for i, row in enumerate(rows):
                buf = os.pread(fd, nbytes, self._row_offset(row) + x0 * item)
                self._check(len(buf), nbytes, row)
                out[i] = np.frombuffer(buf, self.dtype)
            self.bytes_read += nbytes * len(rows)
        return out[:, ::xstep] if xstep > 1 else out

    def _check(self, got: int, wanted: int, row: int) -> None:
        if got != wanted:
            raise LayerStackError(
                f"{self.path.name}: the file ends early (row {row} of {self.shape[0]} is missing); "
                "it is truncated — download or copy it again"
            )


@dataclass(eq=False)
class ZarrTiffSource(LayerSource):
    """A compressed or tiled TIFF page, read by strips / tiles through ``aszarr``."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    page: int = 0
    bytes_read: int = 0
    _array: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        state.pop("_lock")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _zarr(self):
        if self._array is None:
            with self._lock:
                if self._array is None:
                    import tifffile
                    import zarr

                    tif = tifffile.TiffFile(self.path)
                    store = tif.pages[self.page].aszarr()
                    self._array = zarr.open(store, mode="r")
        return self._array

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        try:
            out = np.asarray(self._zarr()[ys, xs])
        except LayerStackError:
            raise
        except Exception as err:  # tifffile/imagecodecs errors on corrupt strips
            raise LayerStackError(
                f"{self.path.name}: cannot decode the image data ({err}); the file may be "
                "truncated or corrupt — download or copy it again"
            ) from err
        self.bytes_read += out.nbytes
        return out


@dataclass(eq=False)
class ImageFileSource(LayerSource):
    """A PNG or JPEG layer: decoded whole on every read (the formats have no windows)."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    bytes_read: int = 0

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        from PIL import Image

        try:
            with large_images_allowed():
                im = Image.open(self.path)
            with im:
                full = _pil_gray(im, self.path)
        except LayerStackError:
            raise
        except Exception as err:
            raise LayerStackError(
                f"{self.path.name}: cannot decode the image ({err}); the file may be truncated"
            ) from err
        self.bytes_read += full.nbytes
        return full[ys, xs]


def _pil_gray(im, path: Path) -> np.ndarray:
    """Decode a grayscale Pillow image into uint8 or uint16."""
    if im.mode in ("L", "P", "1"):
        return np.asarray(im.convert("L") if im.mode != "L" else im)
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if im.mode == "I":
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise LayerStackError(f"{path.name}: 32-bit values outside 0..65535; layers are 8 or 16 bit")
        return arr.astype(np.uint16)
    raise LayerStackError(
        f"{path.name}: is a {im.mode} image; layers must be 8- or 16-bit grayscale"
    )


def _pil_header(path: Path) -> tuple[tuple[int, int], np.dtype]:
    from PIL import Image

    with large_images_allowed():
        try:
            with Image.open(path) as im:
                mode, (w, h) = im.mode, im.size
        except Exception as err:
            raise LayerStackError(f"{path.name}: not a readable image ({err})") from err
    if mode in ("L", "P", "1"):
        dtype = np.dtype(np.uint8)
    elif mode.startswith("I;16") or mode == "I":
        dtype = np.dtype(np.uint16)
    else:
        raise LayerStackError(f"{path.name}: is a {mode} image; layers must be 8- or 16-bit grayscale")
    return (h, w), dtype


@dataclass(frozen=True)
class TiffPage:
    """Layout of one checked TIFF page: raw pages carry their strip offsets."""

    index: int
    shape: tuple[int, int]
    dtype: np.dtype  # with the file's byte order
    raw: bool
    strip_offsets: np.ndarray | None = None
    rows_per_strip: int = 0


def tiff_pages(tif, size: int, name: str) -> list[TiffPage]:
    """Check the pages of an open ``tifffile.TiffFile`` of ``size`` bytes named ``name``."""
    pages: list[TiffPage] = []
    for index, page in enumerate(tif.pages):
        shape = tuple(page.shape)
        if len(shape) != 2:
            raise LayerStackError(
                f"{name}: page {index} has shape {shape}; layers must be 2-D grayscale"
            )
        dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
        if dtype.kind != "u" or dtype.itemsize not in (1, 2):
            raise LayerStackError(
                f"{name}: pixels are {np.dtype(page.dtype).name}; layers must be uint8 or uint16"
            )
        ends = np.asarray(page.dataoffsets, dtype=np.int64) + np.asarray(
            page.databytecounts, dtype=np.int64
        )
        if len(ends) == 0 or ends.max() > size:
            raise LayerStackError(
                f"{name}: the file is truncated ({size:,} bytes, the image data "
                f"needs {int(ends.max()) if len(ends) else 0:,}); download or copy it again"
            )
        raw = (
            page.compression == 1
            and not page.is_tiled
            and page.samplesperpixel == 1
            and page.bitspersample == dtype.itemsize * 8
        )
        if not raw:
            pages.append(TiffPage(index, shape, dtype, False))
            continue
        rps = int(page.rowsperstrip or shape[0])
        if page.is_contiguous:
            rps = shape[0]
            offsets = np.asarray(page.dataoffsets[:1], dtype=np.int64)
        else:
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        pages.append(TiffPage(index, shape, dtype, True, offsets, min(rps, shape[0])))
    if not pages:
        raise LayerStackError(f"{name}: the TIFF holds no image")
    return pages


def tiff_sources(path: Path) -> list[LayerSource]:
    """One source per page of a TIFF file, checking that the file is complete."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = tiff_pages(tif, path.stat().st_size, path.name)
    except LayerStackError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise LayerStackError(f"{path.name}: not a readable TIFF ({err})") from err
    return [
        RawTiffSource(path, pg.shape, pg.dtype, pg.strip_offsets, pg.rows_per_strip, pg.index)
        if pg.raw
        else ZarrTiffSource(path, pg.shape, np.dtype(pg.dtype.newbyteorder("=")), pg.index)
        for pg in pages
    ]


def _image_source(path: Path) -> ImageFileSource:
    shape, dtype = _pil_header(path)
    return ImageFileSource(path, shape, dtype)


def layer_source(path: Path, tiff=tiff_sources, image=_image_source) -> LayerSource:
    """The window reader for one single-image layer file.

    ``tiff`` and ``image`` make the sources of a TIFF / PNG / JPEG file (the
    remote reader passes its own; ``path`` needs only ``.name`` and ``.suffix``).
    """
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        sources = tiff(path)
        if len(sources) > 1:
            raise LayerStackError(
                f"{path.name}: holds {len(sources)} pages; a layer file must hold one image"
            )
        return sources[0]
    if suffix in IMAGE_SUFFIXES:
        return image(path)
    raise LayerStackError(f"{path.name}: unsupported layer format {suffix!r}")
