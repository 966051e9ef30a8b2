"""Label, ignore and papyrus masks: read and binarize, write with history.

:func:`read_mask` gives what the prize pipeline got from
``cv2.imread(path, cv2.IMREAD_GRAYSCALE) == 255``, bit for bit, without OpenCV.
For PNG, OpenCV has libpng 1.6 make the gray with ``png_set_rgb_to_gray(png,
1, 0.299, 0.587)``: 15-bit weights 9797, 19234 and 32768 - 9797 - 19234 = 3737,

* no gAMA / sRGB chunk: ``gray = (9797 R + 19234 G + 3737 B) >> 15``, truncated,
  so only (255, 255, 255) is white;
* with one (sRGB means gamma 0.45455), through libpng's 8-bit gamma tables:
  ``gray = from1[(9797 to1[R] + 19234 to1[G] + 3737 to1[B] + 16384) >> 15]``, or
  ``table[R]`` where R == G == B. (255, 255, 254) is then white.

Palettes go through the same formula entry by entry, alpha is dropped, 16-bit
gray keeps its high byte. JPEG gray is libjpeg's Y channel; TIFF and other
formats use OpenCV's ``cvtColor``, ``(4899 R + 9617 G + 1868 B + 8192) >> 14``
(TIFF RGBA premultiplied by alpha first, as libtiff does).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path
from .errors import MaskError
from .imaging import MAX_MASK_PIXELS, large_images_allowed

#: Folder beside a mask that keeps the versions :func:`write_mask` replaced.
HISTORY_DIR = ".history"
_STRIP_PIXELS = 1 << 22  # binarized at a time: temporaries stay ~16 MiB each
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RGB_MODES = ("RGB", "RGBA", "RGBX", "RGBa")

@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    hint = "Check the path, or export the mask again as an 8-bit PNG."
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise MaskError(f"mask file {path} does not exist. {hint}") from None
    except Image.DecompressionBombError as exc:
        raise MaskError(f"{path}: {exc} Raise masks.MAX_MASK_PIXELS if it is real.") from None
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise MaskError(f"{path} is not an image that can be read ({exc}). {hint}") from None
    with im:
        if im.width * im.height > MAX_MASK_PIXELS:
            raise MaskError(
                f"{path} is {im.height:,} x {im.width:,} pixels, more than MAX_MASK_PIXELS "
                f"({MAX_MASK_PIXELS:,}). Raise masks.MAX_MASK_PIXELS if it is real."
            )
        yield im


def _png_header(path: Path) -> tuple[int, int | None]:
    """Bit depth and the gamma (1e5 fixed point; None: none) libpng uses for a PNG.

    As libpng: chunks with a bad CRC and gAMA / sRGB after PLTE are ignored, the
    first gAMA counts, and a valid sRGB chunk means 45455 whatever gAMA says.
    """
    depth, gamma, srgb, seen_plte = 8, None, False, False
    with open(path, "rb") as fh:
        fh.seek(8)
        while len(head := fh.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT":
                break
            if kind not in (b"IHDR", b"gAMA", b"sRGB"):
                seen_plte |= kind == b"PLTE"
                fh.seek(length + 4, os.SEEK_CUR)
                continue
            data, crc = fh.read(length), fh.read(4)
            if len(crc) < 4 or zlib.crc32(kind + data) != struct.unpack(">I", crc)[0]:
                continue
            if kind == b"IHDR" and length == 13:
                depth = data[8]
            elif kind == b"gAMA" and length == 4 and gamma is None and not seen_plte:
                gamma = struct.unpack(">I", data)[0]
                gamma = gamma if 0 < gamma <= 0x7FFFFFFF else None
            elif kind == b"sRGB" and length == 1 and data[0] < 4 and not seen_plte:
                srgb = True
    return depth, 45455 if srgb else gamma


def _fixed(x: float) -> int:  # png_reciprocal(2): round to 1e5 fixed point, 0 on overflow
    r = math.floor(x + 0.5)
    return int(r) if r <= 2147483647 else 0


def _significant(gamma: int) -> bool:  # png_gamma_significant: off 1.0 by more than 0.05
    return not 95000 <= gamma <= 105000


def _table(gamma: int) -> np.ndarray:  # png_build_8bit_table with png_gamma_8bit_correct
    t = np.arange(256, dtype=np.uint32)
    if _significant(gamma):
        t[1:255] = [math.floor(255 * math.pow(v / 255.0, gamma * 0.00001) + 0.5) for v in t[1:255]]
    return t


def _white_rule(kind: str, gamma: int | None = None):
    """``(w_r, w_g, w_b, threshold, greys)``: gray == 255 exactly where
    ``w_r[R] + w_g[G] + w_b[B] >= threshold``, the other way round for R == G == B
    in ``greys``. Each gray formula is monotonic, so "== 255" is a threshold on its sum.
    """
    v = np.arange(256, dtype=np.uint32)
    if kind == "cv":
        return 4899 * v, 9617 * v, 1868 * v, (255 << 14) - 8192, v[:0]
    screen = _fixed(1e10 / gamma) if gamma else 0  # libpng: screen gamma = 1 / file gamma
    if gamma is None or not (_significant(gamma) or _significant(screen)):
        return 9797 * v, 19234 * v, 3737 * v, 255 << 15, v[:0]  # no gamma: truncating
    table = _table(_fixed(1e15 / gamma / screen)) if screen else v
    to1, from1 = _table(screen), _table(_fixed(1e10 / screen) if screen else gamma)
    first = int(np.argmax(from1 == 255))  # from1 is non-decreasing, from1[255] == 255
    greys = v[(from1[to1] == 255) != (table == 255)]  # libpng: table[R] where R == G == B
    return 9797 * to1, 19234 * to1, 3737 * to1, (first << 15) - 16384, greys


def _is_white(r: np.ndarray, g: np.ndarray, b: np.ndarray, rule) -> np.ndarray:
    w_r, w_g, w_b, threshold, greys = rule
    total = np.take(w_r, r)
    total += np.take(w_g, g)
    total += np.take(w_b, b)
    white = total >= threshold
    if greys.size:
        white ^= (r == g) & (g == b) & np.isin(r, greys)
    return white


def _binarizer(im: Image.Image, path: Path):
    """Function: strip of ``im`` (a PIL image) -> bool array, True where gray == 255."""
    mode = im.mode
    if im.format == "PNG":
        depth, gamma = _png_header(path)
        rule = _white_rule("png", gamma)
    else:
        depth, rule = max(np.atleast_1d(getattr(im, "tag_v2", {}).get(258, 8))), _white_rule("cv")
    if depth > 8 and mode in _RGB_MODES:
        raise MaskError(
            f"{path} is a {depth}-bit colour {im.format} image, which cannot be binarized as "
            "OpenCV does. Save the mask as an 8-bit gray or palette PNG."
        )
    if mode == "1":
        return lambda s: np.asarray(s, dtype=bool)
    if mode in ("L", "LA", "La"):
        return lambda s: np.asarray(s.getchannel(0)) == 255
    if mode.startswith("I;16") or mode == "I":  # libpng and libtiff keep the high byte
        return lambda s: np.asarray(s) >> 8 == 255
    if mode in ("P", "PA"):
        pal = np.zeros((256, 3), np.uint8)  # indices past the palette read black
        colours = np.asarray(im.getpalette("RGB") or [], np.uint8).reshape(-1, 3)[:256]
        pal[: len(colours)] = colours
        lut = _is_white(pal[:, 0], pal[:, 1], pal[:, 2], rule)
        return lambda s: lut[np.asarray(s.getchannel(0))]
    premultiply = im.format == "TIFF" and mode == "RGBA"  # libtiff's TIFFReadRGBA* does

    def rgb(s: Image.Image) -> np.ndarray:
        a = np.asarray(s if mode in _RGB_MODES else s.convert("RGB"))
        r, g, b = a[..., 0], a[..., 1], a[..., 2]
        if premultiply:
            alpha = a[..., 3].astype(np.uint32)
            r, g, b = ((c.astype(np.uint32) * alpha + 127) // 255 for c in (r, g, b))
        return _is_white(r, g, b, rule)

    return rgb


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a label, ignore or papyrus mask as a boolean array.

    Identical to ``cv2.imread(path, cv2.IMREAD_GRAYSCALE) == 255``: gray (ITU-R
    601-2 luma as libpng / OpenCV compute it, alpha ignored) equal to 255 is
    True; anything darker, anti-aliased edges included, is False.

    Parameters
    ----------
    path : str or path-like
        PNG (palette, gray, gray + alpha, RGB, RGBA; 1- to 8-bit, or 16-bit
        gray), JPEG or TIFF file; up to :data:`MAX_MASK_PIXELS` pixels, beyond
        Pillow's decompression-bomb limit.

    Returns
    -------
    numpy.ndarray
        ``bool`` array of shape (H, W).

    Raises
    ------
    MaskError
        If the file is missing, not an image, truncated or corrupt, too large,
        or a 16-bit colour image.
    """
    path = Path(path)
    with _decoded(path) as (im, binarize):
        return _binarize_window(im, binarize, 0, im.width)


def iter_mask_rows(path: str | os.PathLike, band_pixels: int = 1 << 22) -> Iterator[tuple[int, np.ndarray]]:
    """Binarize a mask band of rows by band, never holding the whole image.

    Non-interlaced PNG (every mask the prize pipeline wrote) is inflated as a
    stream and unfiltered band by band, so memory stays near ``band_pixels``
    bytes whatever the mask's size. Interlaced PNG and other formats are
    decoded whole first (Pillow cannot stream them), then cut.

    Parameters
    ----------
    path : str or path-like
        The mask file (as :func:`read_mask`).
    band_pixels : int, optional
        About how many pixels a band holds.

    Yields
    ------
    tuple
        ``(y0, band)`` with ``band`` the bool array ``(rows, W)``: the bands
        concatenated are exactly ``read_mask(path)``.
    """
    path = Path(path)
    png = _png_stream_info(path)
    if png is None:
        with _decoded(path) as (im, binarize):
            step = max(1, band_pixels // max(1, im.width))
            for y0 in range(0, im.height, step):
                y1 = min(im.height, y0 + step)
                yield y0, binarize(im.crop((0, y0, im.width, y1)))
        return
    yield from _png_bands(path, png, band_pixels)


def _png_stream_info(path: Path) -> dict | None:
    """IHDR, palette and white rule of a non-interlaced PNG we can stream; else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(33)
    except FileNotFoundError:
        raise MaskError(f"mask file {path} does not exist. Check the path.") from None
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if interlace or ctype not in _PNG_CHANNELS or w == 0 or h == 0:
        return None
    if w * h > MAX_MASK_PIXELS:
        raise MaskError(
            f"{path} is {h:,} x {w:,} pixels, more than MAX_MASK_PIXELS "
            f"({MAX_MASK_PIXELS:,}). Raise masks.MAX_MASK_PIXELS if it is real."
        )
    if depth > 8 and ctype in (2, 6):
        raise MaskError(
            f"{path} is a {depth}-bit colour PNG image, which cannot be binarized as "
            "OpenCV does. Save the mask as an 8-bit gray or palette PNG."
        )
    channels = _PNG_CHANNELS[ctype]
    info = {"width": w, "height": h, "depth": depth, "ctype": ctype,
            "bpp": max(1, channels * depth // 8), "row_bytes": (w * channels * depth + 7) // 8}  # fmt: skip
    if ctype in (2, 3, 6):
        info["rule"] = _white_rule("png", _png_header(path)[1])
    return info


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
#: Byte-exact 8-bit PNG colour type per filter stride (bytes per pixel) for the unfilter trick.
_CARRIER = {1: 0, 2: 4, 3: 2, 4: 6}


def _png_chunks(fh, path: Path) -> Iterator[tuple[bytes, bytes]]:
    fh.seek(8)
    while True:
        head = fh.read(8)
        if len(head) < 8:
            raise MaskError(f"{path} is truncated or corrupt (no IEND); copy or export the mask again")
        length, kind = struct.unpack(">I4s", head)
        data, crc = fh.read(length), fh.read(4)
        if len(data) < length or len(crc) < 4:
            raise MaskError(f"{path} is truncated or corrupt ({kind!r} cut short); copy or export the mask again")
        if zlib.crc32(kind + data) != struct.unpack(">I", crc)[0] and kind in (b"IHDR", b"PLTE", b"IDAT"):
            raise MaskError(f"{path} is truncated or corrupt (bad {kind.decode('latin-1')} CRC); copy or export the mask again")
        yield kind, data
        if kind == b"IEND":
            return


def _png_bands(path: Path, png: dict, band_pixels: int) -> Iterator[tuple[int, np.ndarray]]:
    """Inflate IDAT as a stream; Pillow unfilters each band, seeded with the row above.

    A band's filtered rows are re-wrapped, verbatim, in a small PNG whose first
    row is the previous band's last raw row (filter None): PNG filters only look
    one row up, so Pillow's C unfilter gives the band's exact raw bytes.
    """
    w, h, rb, bpp = png["width"], png["height"], png["row_bytes"], png["bpp"]
    carrier_w = rb // bpp
    step = max(1, band_pixels // max(1, w))
    prev = bytes(1 + rb)  # filter None + zeros: PNG's "row above the first"
    inflate, pending, y0, palette = zlib.decompressobj(), bytearray(), 0, None
    binarize = None
    with open(path, "rb") as fh:
        for kind, data in _png_chunks(fh, path):
            if kind == b"PLTE":
                palette = data
            if kind != b"IDAT":
                if kind == b"IEND":
                    break
                continue
            if binarize is None:
                binarize = _raw_binarizer(png, palette, path)
            while data and y0 < h:  # inflate at most a band at a time: masks compress 1000:1
                try:
                    pending += inflate.decompress(data, step * (1 + rb))
                except zlib.error as exc:
                    raise MaskError(f"{path} is truncated or corrupt ({exc}); copy or export the mask again") from None
                data = inflate.unconsumed_tail
                while y0 < h and len(pending) >= min(step, h - y0) * (1 + rb):
                    n = min(step, h - y0)
                    raw = _unfilter(prev + bytes(pending[: n * (1 + rb)]), rb, carrier_w, bpp, n + 1)
                    del pending[: n * (1 + rb)]
                    prev = b"\x00" + raw[-1].tobytes()
                    yield y0, binarize(raw[1:])
                    y0 += n
    if y0 < h:
        raise MaskError(f"{path} is truncated or corrupt ({h - y0:,} rows missing); copy or export the mask again")


def _unfilter(filtered: bytes, rb: int, carrier_w: int, bpp: int, rows: int) -> np.ndarray:
    ihdr = struct.pack(">IIBBBBB", carrier_w, rows, 8, _CARRIER[bpp], 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(filtered, 0)) + _png_chunk(b"IEND", b"")
    with Image.open(io.BytesIO(_PNG_SIGNATURE + body)) as im:
        return np.asarray(im).reshape(rows, rb)


def _raw_binarizer(png: dict, palette: bytes | None, path: Path):
    """Function: raw PNG rows (uint8, (n, row_bytes)) -> bool, as :func:`read_mask`."""
    w, depth, ctype = png["width"], png["depth"], png["ctype"]

    def samples(raw):  # one sample per pixel (gray or index), depth <= 8
        if depth == 8:
            return raw[:, :w]
        shifts = np.arange(8 - depth, -1, -depth, dtype=np.uint8)
        return ((raw[:, :, None] >> shifts) & ((1 << depth) - 1)).reshape(len(raw), -1)[:, :w]

    if ctype == 0 and depth == 16:
        return lambda raw: raw[:, 0::2] == 255  # libpng keeps the high byte
    if ctype == 0:
        top = (1 << depth) - 1
        return lambda raw: samples(raw) == top
    if ctype == 4:
        return lambda raw: raw[:, 0 :: (2 if depth == 8 else 4)] == 255
    if ctype == 3:
        if palette is None:
            raise MaskError(f"{path} is a palette PNG without a palette; export the mask again")
        pal = np.zeros((256, 3), np.uint8)  # indices past the palette read black
        colours = np.frombuffer(palette, np.uint8)[: len(palette) // 3 * 3].reshape(-1, 3)[:256]
        pal[: len(colours)] = colours
        lut = _is_white(pal[:, 0], pal[:, 1], pal[:, 2], png["rule"])
        return lambda raw: lut[samples(raw)]
    n = 3 if ctype == 2 else 4
    return lambda raw: _is_white(raw[:, 0::n], raw[:, 1::n], raw[:, 2::n], png["rule"])


@contextlib.contextmanager
def _decoded(path: Path):
    """The decoded Pillow image and its binarizer (bomb limit lifted, errors as MaskError)."""
    with large_images_allowed(), _open_image(path) as im:
        try:
            if im.format == "JPEG" and im.mode in ("RGB", "YCbCr"):
                im.draft("L", im.size)  # libjpeg's gray output (Y), as OpenCV asks for
            binarize = _binarizer(im, path)
            im.load()
        except MaskError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise MaskError(
                f"{path} is truncated or corrupt ({exc}); copy or export the mask again"
            ) from None
        yield im, binarize


def _binarize_window(im, binarize, x0: int, x1: int) -> np.ndarray:
    """Columns ``x0:x1`` binarized in row strips (bounded temporaries)."""
    h = im.height
    out = np.empty((h, x1 - x0), dtype=bool)
    step = max(1, _STRIP_PIXELS // max(1, x1 - x0))
    for y0 in range(0, h, step):
        out[y0 : y0 + step] = binarize(im.crop((x0, y0, x1, min(h, y0 + step))))
    return out


def read_mask_shape(path: str | os.PathLike) -> tuple[int, int]:
    """Shape (H, W) of a mask file, from its header: nothing is decoded.

    Parameters
    ----------
    path : str or path-like
        The mask image file.

    Returns
    -------
    tuple of int
        (height, width) in pixels.
    """
    with large_images_allowed(), _open_image(Path(path)) as im:
        return im.height, im.width


def _keep_history(path: Path) -> Path:
    """Hard-link (or copy) ``path`` into the history folder under a name not yet taken."""
    folder = path.parent / HISTORY_DIR
    folder.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    for n in range(1_000_000):
        kept = folder / f"{path.stem}-{stamp}{f'-{n}' if n else ''}.png"
        try:
            os.link(path, kept)  # the rename in write_mask then detaches the old version
            return kept
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system: copy
            try:
                with open(path, "rb") as src, open(kept, "xb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 24)
                return kept
            except FileExistsError:
                continue
            except BaseException:
                kept.unlink(missing_ok=True)
                raise
    raise MaskError(f"no free name for the previous version of {path} in {folder}")


class GrayPngWriter:
    """Write an 8-bit gray PNG band of rows by band (see :func:`mask_writer`, :func:`gray_png_writer`)."""

    def __init__(self, fh, shape: tuple[int, int], level: int = 6):
        self.height, self.width = shape
        self.rows = 0
        self._above = np.zeros(self.width, np.uint8)  # PNG's row above the first
        self._fh, self._zip, self._out = fh, zlib.compressobj(level), bytearray()
        ihdr = struct.pack(">IIBBBBB", self.width, self.height, 8, 0, 0, 0, 0)
        fh.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr))

    def _check(self, band: np.ndarray) -> np.ndarray:
        band = np.asarray(band)
        if band.ndim != 2 or band.shape[1] != self.width:
            raise MaskError(f"image rows must be (rows, {self.width}); got {band.shape}")
        if self.rows + len(band) > self.height:
            raise MaskError(f"more than the {self.height:,} rows announced for this image")
        return band

    def write(self, band: np.ndarray) -> None:
        """Append rows: uint8 ``(rows, W)``."""
        band = self._check(band)
        pixels = np.empty((1 + len(band), self.width), np.uint8)
        pixels[0] = self._above
        pixels[1:] = band
        self._put(pixels)

    def _put(self, pixels: np.ndarray) -> None:  # pixels[0] is the row above
        rows = np.full((len(pixels) - 1, 1 + self.width), 2, np.uint8)  # filter Up: masks compress 2x better
        np.subtract(pixels[1:], pixels[:-1], out=rows[:, 1:])
        self._above = pixels[-1].copy()
        self._out += self._zip.compress(rows)
        self.rows += len(pixels) - 1
        if len(self._out) >= 1 << 20:
            self._fh.write(_png_chunk(b"IDAT", bytes(self._out)))
            self._out.clear()

    def _finish(self) -> None:
        if self.rows != self.height:
            raise MaskError(f"image has {self.rows:,} of its {self.height:,} rows; not written")
        self._out += self._zip.flush()
        self._fh.write(_png_chunk(b"IDAT", bytes(self._out)) + _png_chunk(b"IEND", b""))


class MaskWriter(GrayPngWriter):
    """Write a 0/255 mask PNG band of rows by band (see :func:`mask_writer`)."""

    def write(self, band: np.ndarray) -> None:
        """Append rows: a 2-D bool / integer array ``(rows, W)``, nonzero written as 255."""
        band = self._check(band)
        pixels = np.empty((1 + len(band), self.width), np.uint8)
        pixels[0] = self._above
        np.not_equal(band, 0, out=pixels[1:].view(bool))
        pixels[1:] *= 255
        self._put(pixels)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@contextlib.contextmanager
def mask_writer(path: str | os.PathLike, shape: tuple[int, int], *, keep_history: bool = True) -> Iterator[MaskWriter]:
    """Stream a mask to ``path`` as an 8-bit gray 0/255 PNG, atomically.

    Rows go in with :meth:`MaskWriter.write` (a band at a time: memory stays at
    one band whatever the mask's size). The file appears only when all
    ``shape[0]`` rows were written and the block exits without an error; a file
    already there is kept in ``.history/`` first, as :func:`write_mask` does.

    Parameters
    ----------
    path : str or path-like
        Target ``.png`` file.
    shape : tuple of int
        ``(height, width)`` of the mask.
    keep_history : bool, optional
        Keep the replaced version (the default).

    Yields
    ------
    MaskWriter
        Call ``write(rows)`` until every row is written.
    """
    with _png_file(path, shape, MaskWriter, keep_history) as writer:
        yield writer


@contextlib.contextmanager
def gray_png_writer(path: str | os.PathLike, shape: tuple[int, int]) -> Iterator[GrayPngWriter]:
    """Stream an 8-bit gray PNG (uint8 rows) to ``path`` atomically, a band at a time.

    Parameters
    ----------
    path : str or path-like
        Target ``.png`` file (replaced when complete).
    shape : tuple of int
        ``(height, width)``.

    Yields
    ------
    GrayPngWriter
    """
    with _png_file(path, shape, GrayPngWriter, False) as writer:
        yield writer


@contextlib.contextmanager
def _png_file(path, shape, cls, keep_history: bool) -> Iterator[GrayPngWriter]:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise MaskError(f"masks are written as PNG; name the file *.png, not {path.name}")
    if len(shape) != 2 or min(shape) < 1:
        raise MaskError(f"a mask must be a non-empty 2-D array (H, W); got shape {tuple(shape)}")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer = cls(fh, (int(shape[0]), int(shape[1])))
        yield writer
        writer._finish()
        fh.flush()
        if keep_history and path.exists():
            _keep_history(path)


def write_mask(path: str | os.PathLike, mask: np.ndarray, *, keep_history: bool = True) -> Path:
    """Write a mask as an 8-bit gray PNG with values 0 and 255, atomically.

    Parameters
    ----------
    path : str or path-like
        Target ``.png`` file. A file already there is first kept as
        ``.history/<stem>-<YYYYmmdd-HHMMSS-ffffff>.png`` beside it (``-<n>``
        appended if that name is taken), unless ``keep_history`` is False.
    mask : numpy.ndarray
        2-D bool or integer array (H, W); nonzero is written as 255.
    keep_history : bool, optional
        Keep the replaced version (the default); False replaces it outright.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    MaskError
        If ``mask`` is not a non-empty 2-D bool / integer array or ``path``
        does not end in ``.png``.
    """
    path, mask = Path(path), np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise MaskError(f"a mask must be a non-empty 2-D array (H, W); got shape {mask.shape}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise MaskError(f"a mask must be bool or integer labels, not {mask.dtype}; threshold it")
    if path.suffix.lower() != ".png":
        raise MaskError(f"masks are written as PNG; name the file *.png, not {path.name}")
    step = max(1, _STRIP_PIXELS // mask.shape[1])
    with mask_writer(path, mask.shape, keep_history=keep_history) as out:
        for y0 in range(0, mask.shape[0], step):
            out.write(mask[y0 : y0 + step])
    return path


def mask_history(path: str | os.PathLike) -> list[Path]:
    """Versions of a mask that :func:`write_mask` replaced, oldest first.

    Parameters
    ----------
    path : str or path-like
        The mask file (it need not exist any more).

    Returns
    -------
    list of Path
        The kept files in ``.history`` beside ``path``; empty if there are none.
    """
    path = Path(path)
    folder = path.parent / HISTORY_DIR
    name = re.compile(rf"{re.escape(path.stem)}-(\d{{8}}-\d{{6}}-\d{{6}})(?:-(\d+))?\.png")
    found = [(m[1], int(m[2] or 0), p) for p in (folder.iterdir() if folder.is_dir() else ())
             if (m := name.fullmatch(p.name))]  # fmt: skip
    return [p for *_, p in sorted(found)]


def mask_from_layer(layer: np.ndarray) -> np.ndarray:
    """Papyrus mask from a layer image: 0 is background, anything else papyrus.

    Parameters
    ----------
    layer : numpy.ndarray
        2-D layer image (H, W) of any numeric dtype.

    Returns
    -------
    numpy.ndarray
        ``bool`` array (H, W), True where the layer is nonzero.
    """
    layer = np.asarray(layer)
    if layer.ndim != 2:
        raise MaskError(f"a mask is made from one 2-D layer (H, W); got shape {layer.shape}")
    return layer != 0
