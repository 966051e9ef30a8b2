"""Writing one source layer's chunk pieces, strip by strip (runs in worker processes).

Each target file is an uncompressed TIFF laid out by tifffile at a temporary
name; strips are written into it with ``os.pwrite`` and the file is renamed
onto its final name only when complete and fsync'ed (PNG / JPEG targets are
assembled in memory and saved once).
"""

from __future__ import annotations

import contextlib
import errno
import os
import zlib
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .contrast import apply_lut
from .errors import PhoenixError
from .sources import ImageFileSource, LayerSource


class SplitError(PhoenixError, ValueError):
    """The split cannot be done as asked (bad chunk ids, offsets, target folder, disk)."""


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(8 * 2**20):
            crc = zlib.crc32(block, crc)
    return crc


def disk_full_error(path: Path) -> SplitError:
    return SplitError(
        f"the disk is full while writing {path}: free some space and run the split again; "
        "finished files are kept and only the rest is written"
    )


def split_layer(
    source: LayerSource, name: str, targets: list[tuple[int, int, str]], lut: np.ndarray | None, strip_bytes: int
) -> list[tuple[str, int, int]]:
    """Write one source layer's columns ``x0:x1`` to each target path; return (path, size, crc32).

    Parameters
    ----------
    source : LayerSource
        The layer to read.
    name : str
        Its file name (for messages).
    targets : list of (x0, x1, path)
        Where each chunk's piece goes (final names; written atomically).
    lut : numpy.ndarray or None
        Contrast table, or None to copy pixels.
    strip_bytes : int
        Bytes of source read per strip.
    """
    height, _ = source.shape
    xmin, xmax = min(t[0] for t in targets), max(t[1] for t in targets)
    item = np.dtype(source.dtype).itemsize
    if isinstance(source, ImageFileSource):  # no windows: one decode, then crops
        rows_per_strip = height
    else:
        rows_per_strip = max(1, min(height, strip_bytes // max(1, (xmax - xmin) * item)))
    results = []
    with contextlib.ExitStack() as stack:
        outs = []
        for x0, x1, path in targets:
            path = Path(path)
            tmp = stack.enter_context(atomic_path(path))
            outs.append(_Writer(tmp, path, height, x1 - x0, source.dtype.newbyteorder("=")))
            stack.callback(outs[-1].close)
        try:
            for r0 in range(0, height, rows_per_strip):
                r1 = min(height, r0 + rows_per_strip)
                strip = source.read(slice(r0, r1), slice(xmin, xmax))
                if lut is not None:
                    strip = apply_lut(strip, lut)
                for (x0, x1, _), out in zip(targets, outs, strict=True):
                    out.write_rows(r0, strip[:, x0 - xmin : x1 - xmin])
            for out in outs:
                results.append(out.finish())
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise disk_full_error(Path(targets[0][2])) from err
            raise
    return results


class _Writer:
    """An uncompressed TIFF (or PNG / JPEG) written strip by strip at a temp path."""

    def __init__(self, tmp: Path, final: Path, height: int, width: int, dtype: np.dtype):
        self.tmp, self.final, self.shape, self.dtype = tmp, final, (height, width), dtype
        self.crc, self.fd, self.buffer = 0, None, None
        if final.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, shape=self.shape, dtype=dtype, photometric="minisblack")
            with tifffile.TiffFile(tmp) as tif:
                self.offset = int(tif.pages[0].dataoffsets[0])
            self.fd = os.open(tmp, os.O_WRONLY)
        else:
            self.buffer = np.empty(self.shape, dtype)

    def write_rows(self, r0: int, rows: np.ndarray) -> None:
        if self.fd is None:
            self.buffer[r0 : r0 + len(rows)] = rows
            return
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        pos = self.offset + r0 * self.shape[1] * self.dtype.itemsize
        view = memoryview(data).cast("B")
        while view:
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n

    def finish(self) -> tuple[str, int, int]:
        if self.fd is not None:
            os.fsync(self.fd)
            self.close()
        else:
            from PIL import Image

            fmt = "PNG" if self.final.suffix.lower() == ".png" else "JPEG"
            Image.fromarray(self.buffer).save(self.tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return str(self.final), self.tmp.stat().st_size, file_crc32(self.tmp)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
