"""Masks: binarization identical to cv2.imread(..., IMREAD_GRAYSCALE) == 255, writing, history."""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from napari_phoenix.core import imaging, masks
from napari_phoenix.core.errors import MaskError
from napari_phoenix.core.masks import (
    mask_from_layer,
    mask_history,
    read_mask,
    read_mask_shape,
    write_mask,
)

# the near-white corner that decides == 255, plus pure white and black
NEAR_WHITE = [
    (255, 255, 255), (255, 255, 254), (255, 254, 255), (254, 255, 255), (254, 254, 254),
    (255, 254, 254), (254, 255, 254), (254, 254, 255), (255, 255, 250), (250, 255, 255),
    (255, 250, 255), (253, 255, 255), (255, 255, 253), (252, 254, 255), (0, 0, 0),
]  # fmt: skip
GAMMAS = {"none": [], "sRGB": [(b"sRGB", b"\x00")], "gAMA-0.45455": [(b"gAMA", 45455)],
          "gAMA-10": [(b"gAMA", 10**6)]}  # fmt: skip


def _chunk(kind: bytes, data: bytes | int) -> bytes:
    data = struct.pack(">I", data) if isinstance(data, int) else data
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _cv2_white(path):
    cv2 = pytest.importorskip("cv2")
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, f"cv2 cannot read {path}"
    return gray == 255


def _stroke(shape=(64, 96), seed=0) -> np.ndarray:
    """A painted white stroke on black with an anti-aliased (gray ramp) edge, 0..255 float."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dist = np.hypot(yy - shape[0] / 2, (xx - shape[1] / 2) * 0.6)
    edge = np.clip((shape[0] / 3 - dist) * 40, 0, 255)
    noise = np.random.default_rng(seed).integers(-3, 1, shape)
    return np.clip(edge + noise * (edge > 200), 0, 255)


def _rgb_stroke(shape=(64, 96), seed=0) -> np.ndarray:
    """Coloured anti-aliased stroke; the near-white colours tiled over its core."""
    v = _stroke(shape, seed)
    rgb = np.stack([v, np.clip(v * 1.01, 0, 255), np.clip(v * 0.99, 0, 255)], -1).astype(np.uint8)
    core = v >= 250
    tiles = np.resize(np.array(NEAR_WHITE, np.uint8), (int(core.sum()), 3))
    rgb[core] = tiles
    return rgb


@pytest.fixture
def write_png(tmp_path):
    """Save a PIL image as PNG, inserting extra chunks after IHDR (or after PLTE)."""

    def make(im: Image.Image, name="m.png", chunks=(), after_plte=(), **save):
        buf = io.BytesIO()
        im.save(buf, "PNG", **save)
        data = buf.getvalue()
        head = 8 + 25  # signature + IHDR
        data = data[:head] + b"".join(_chunk(k, d) for k, d in chunks) + data[head:]
        if after_plte:
            at = data.index(b"IDAT") - 4
            data = data[:at] + b"".join(_chunk(k, d) for k, d in after_plte) + data[at:]
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


def _palette_image(seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pal = np.array(NEAR_WHITE + [(v, v, v) for v in range(240, 256)] + [(250, 251, 252)], np.uint8)
    pal = np.concatenate([pal, rng.integers(0, 256, (200, 3), dtype=np.uint8)])
    idx = (_stroke() / 255 * (len(pal) - 1)).astype(np.uint8)
    idx[::7, ::5] = rng.integers(0, len(pal), idx[::7, ::5].shape)
    im = Image.fromarray(idx, "P")
    im.putpalette(pal.tobytes())
    return im


def _mode_image(mode: str) -> tuple[Image.Image, dict]:
    v = _stroke().astype(np.uint8)
    alpha = np.random.default_rng(1).integers(0, 256, v.shape, dtype=np.uint8)
    if mode == "P":
        return _palette_image(), {}
    if mode == "P+tRNS":
        return _palette_image(), {"transparency": bytes(range(0, 256, 8))}
    if mode == "L":
        return Image.fromarray(v), {}
    if mode == "L+tRNS":
        return Image.fromarray(v), {"transparency": 255}
    if mode == "LA":
        return Image.fromarray(np.dstack([v, alpha]), "LA"), {}
    if mode == "RGB":
        return Image.fromarray(_rgb_stroke()), {}
    if mode == "RGB+tRNS":
        return Image.fromarray(_rgb_stroke()), {"transparency": (255, 255, 254)}
    if mode == "RGBA":
        return Image.fromarray(np.dstack([_rgb_stroke(), alpha]), "RGBA"), {}
    if mode == "1":
        return Image.fromarray(v >= 128).convert("1"), {}
    if mode == "I;16":
        v16 = (_stroke() * 257).astype(np.uint16)
        v16[0] = np.arange(0xFF00 - 48, 0xFF00 + 48)  # both sides of the high byte 255
        return Image.fromarray(v16), {}
    raise AssertionError(mode)


MODES = ["P", "P+tRNS", "L", "L+tRNS", "LA", "RGB", "RGB+tRNS", "RGBA", "1", "I;16"]


@pytest.mark.parametrize("gamma", list(GAMMAS))
@pytest.mark.parametrize("mode", MODES)
def test_every_png_mode_binarizes_like_opencv(write_png, mode, gamma):
    im, save = _mode_image(mode)
    path = write_png(im, chunks=GAMMAS[gamma], **save)
    got = read_mask(path)
    assert got.dtype == bool and got.shape == (im.height, im.width)
    expected = _cv2_white(path)
    assert expected.any() and not expected.all()  # edges and background really are there
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("gamma", list(GAMMAS))
def test_rgb_near_white_against_opencv(write_png, gamma):
    # every colour with all channels in 232..255, plus random colours
    lo = np.arange(232, 256, dtype=np.uint8)
    cube = np.stack(np.meshgrid(lo, lo, lo, indexing="ij"), -1).reshape(-1, 3)
    rnd = np.random.default_rng(3).integers(0, 256, (96 * 144 - len(cube), 3), dtype=np.uint8)
    rgb = np.concatenate([cube, rnd]).reshape(96, 144, 3)
    path = write_png(Image.fromarray(rgb), chunks=GAMMAS[gamma])
    np.testing.assert_array_equal(read_mask(path), _cv2_white(path))
    if gamma != "none":  # grays with gamma and without; the greys for a gamma of 10
        grays = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)
        path = write_png(Image.fromarray(grays), "g.png", chunks=GAMMAS[gamma])
        np.testing.assert_array_equal(read_mask(path), _cv2_white(path))


@pytest.mark.parametrize(
    ("colour", "chunks", "white"),
    [
        ((255, 255, 255), [], True),
        ((255, 255, 254), [], False),  # truncating formula: only pure white reaches 255
        ((254, 255, 255), [], False),
        ((255, 255, 254), [(b"sRGB", b"\x00")], True),  # libpng's gamma tables round it up
        ((255, 255, 254), [(b"gAMA", 45455)], True),
        ((255, 255, 254), [(b"gAMA", 100000)], False),  # gamma 1.0 is not "significant"
        ((254, 254, 254), [(b"sRGB", b"\x00")], False),
    ],
)
def test_near_white_decisions(write_png, colour, chunks, white):
    # fixed facts (checked against OpenCV 5.0 / libpng 1.6); run without cv2 too
    path = write_png(Image.new("RGB", (3, 2), colour), chunks=chunks)
    assert read_mask(path).tolist() == [[white] * 3] * 2


def test_gamma_chunks_after_the_palette_are_ignored_like_libpng(write_png):
    im = Image.new("P", (4, 1))
    im.putpalette([255, 255, 254] * 256)
    before = write_png(im, "before.png", chunks=[(b"sRGB", b"\x00")])
    after = write_png(im, "after.png", after_plte=[(b"sRGB", b"\x00")])
    assert read_mask(before).all() and not read_mask(after).any()
    for path in (before, after):
        np.testing.assert_array_equal(read_mask(path), _cv2_white(path))


def test_srgb_wins_over_gama_and_first_gama_counts(write_png):
    rgb = Image.fromarray(_rgb_stroke())
    srgb = read_mask(write_png(rgb, "s.png", chunks=GAMMAS["sRGB"]))
    assert not np.array_equal(srgb, read_mask(write_png(rgb, "n.png")))
    for chunks in ([(b"gAMA", 100000), (b"sRGB", b"\x00")], [(b"gAMA", 45455), (b"gAMA", 100000)]):
        path = write_png(rgb, chunks=chunks)
        np.testing.assert_array_equal(read_mask(path), srgb)
        np.testing.assert_array_equal(read_mask(path), _cv2_white(path))


@pytest.mark.parametrize("kind", ["jpg-rgb", "jpg-gray", "tif-rgb", "tif-rgba", "tif-p", "tif-16"])
def test_jpeg_and_tiff_binarize_like_opencv(tmp_path, kind):
    ext, what = kind.split("-")
    im = {
        "rgb": lambda: Image.fromarray(_rgb_stroke()),
        "gray": lambda: Image.fromarray(_stroke().astype(np.uint8)),
        "rgba": lambda: _mode_image("RGBA")[0],
        "p": _palette_image,
        "16": lambda: _mode_image("I;16")[0],
    }[what]()
    path = tmp_path / f"m.{ext}"
    im.save(path, **({"quality": 97} if ext == "jpg" else {}))
    np.testing.assert_array_equal(read_mask(path), _cv2_white(path))


def test_many_strips_give_the_same_mask(write_png, monkeypatch):
    path = write_png(_mode_image("RGBA")[0], chunks=GAMMAS["sRGB"])
    whole = read_mask(path)
    monkeypatch.setattr(masks, "_STRIP_PIXELS", 96 * 5)  # 5 rows per strip, last one partial
    np.testing.assert_array_equal(read_mask(path), whole)
    np.testing.assert_array_equal(whole, _cv2_white(path))


def test_write_then_read_round_trip(tmp_path):
    labels = np.zeros((40, 70), np.int32)
    labels[5:20, 10:30] = 1
    labels[25:35, 40:60] = 7
    path = write_mask(tmp_path / "label.png", labels)
    assert path == tmp_path / "label.png"
    with Image.open(path) as im:
        assert im.mode == "L" and set(np.unique(np.asarray(im))) == {0, 255}
    np.testing.assert_array_equal(read_mask(path), labels != 0)
    assert read_mask_shape(path) == (40, 70)
    assert not list(tmp_path.glob(".*partial*"))  # no temporary file left behind


def test_mask_writer_streams_bands_and_writes_only_whole_masks(tmp_path):
    from napari_phoenix.core.masks import mask_writer

    ink = _stroke((50, 70)) > 100
    path = tmp_path / "label.png"
    with mask_writer(path, ink.shape) as out:
        for y0 in range(0, 50, 7):
            out.write(ink[y0 : y0 + 7])
    np.testing.assert_array_equal(read_mask(path), ink)
    np.testing.assert_array_equal(_cv2_white(path), ink)
    with pytest.raises(MaskError, match="49 of its 50 rows"), mask_writer(path, ink.shape) as out:
        out.write(~ink[:49])  # one row short: nothing replaces the good file
    with pytest.raises(MaskError, match=r"\(rows, 70\)"), mask_writer(path, ink.shape) as out:
        out.write(ink[:, :69])
    np.testing.assert_array_equal(read_mask(path), ink)
    assert mask_history(path) == [] and not list(tmp_path.glob(".*partial*"))
    with mask_writer(path, ink.shape) as out:
        out.write(~ink)
    assert len(mask_history(path)) == 1 and read_mask(path).tolist() == (~ink).tolist()


def test_ink_under_ignore_survives(tmp_path):
    ink = np.zeros((30, 30), bool)
    ink[5:25, 5:25] = True
    ignore = np.zeros((30, 30), bool)
    ignore[10:20, 10:20] = True
    write_mask(tmp_path / "label.png", ink)
    write_mask(tmp_path / "ignore.png", ignore)
    np.testing.assert_array_equal(read_mask(tmp_path / "label.png"), ink)
    np.testing.assert_array_equal(read_mask(tmp_path / "ignore.png"), ignore)
    assert (read_mask(tmp_path / "label.png") & read_mask(tmp_path / "ignore.png")).sum() == 100


@pytest.mark.parametrize("link_works", [True, False])
def test_second_write_keeps_the_first_in_history(tmp_path, monkeypatch, link_works):
    if not link_works:

        def no_link(src, dst):
            raise PermissionError("no hard links here")

        monkeypatch.setattr(masks.os, "link", no_link)
    path = tmp_path / "label.png"
    first = np.eye(20, 30, dtype=bool)
    second = ~first
    write_mask(path, first)
    assert mask_history(path) == []
    write_mask(path, second)
    (kept,) = mask_history(path)
    assert kept.parent == tmp_path / ".history" and kept.name.startswith("label-")
    datetime.strptime(kept.stem[len("label-") :], "%Y%m%d-%H%M%S-%f")
    np.testing.assert_array_equal(read_mask(kept), first)
    np.testing.assert_array_equal(read_mask(path), second)
    write_mask(path, first)
    older, newer = mask_history(path)
    assert older == kept
    np.testing.assert_array_equal(read_mask(older), first)
    np.testing.assert_array_equal(read_mask(newer), second)


def test_history_never_overwrites_a_kept_version(tmp_path, monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2025, 3, 19, 12, 0, 0, 123456)

    monkeypatch.setattr(masks, "datetime", Frozen)
    path = tmp_path / "ignore.png"
    versions = [np.full((4, 5), i % 2, bool) for i in range(4)]
    versions[2][0, 0] = True
    for v in versions:
        write_mask(path, v)
    kept = mask_history(path)
    assert [p.name for p in kept] == [
        "ignore-20250319-120000-123456.png",
        "ignore-20250319-120000-123456-1.png",
        "ignore-20250319-120000-123456-2.png",
    ]
    for p, v in zip(kept, versions[:3], strict=True):
        np.testing.assert_array_equal(read_mask(p), v)
    np.testing.assert_array_equal(read_mask(path), versions[3])


def test_keep_history_false_replaces(tmp_path):
    path = tmp_path / "mask.png"
    write_mask(path, np.ones((3, 3), bool))
    write_mask(path, np.zeros((3, 3), bool), keep_history=False)
    assert mask_history(path) == [] and not read_mask(path).any()


def test_missing_file(tmp_path):
    with pytest.raises(MaskError, match="nope.png.*does not exist"):
        read_mask(tmp_path / "nope.png")
    with pytest.raises(MaskError, match="does not exist"):
        read_mask_shape(tmp_path / "nope.png")


def test_random_bytes_named_png(tmp_path):
    path = tmp_path / "label.png"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(MaskError, match="label.png is not an image"):
        read_mask(path)


def test_truncated_png(write_png):
    rgb = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    path = write_png(Image.fromarray(rgb), "label.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert read_mask_shape(path) == (200, 300)  # the header is intact
    with pytest.raises(MaskError, match="label.png is truncated or corrupt"):
        read_mask(path)


def test_sixteen_bit_colour_png_is_refused(tmp_path):
    path = tmp_path / "label.png"
    rows = b"".join(b"\x00" + b"\xff\xff" * 3 * 4 for _ in range(2))  # 2 x 4 px, 16-bit RGB
    ihdr = struct.pack(">IIBBBBB", 4, 2, 16, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows))
    path.write_bytes(png + _chunk(b"IEND", b""))
    with pytest.raises(MaskError, match="16-bit colour.*8-bit"):
        read_mask(path)


@pytest.mark.parametrize(
    ("mask", "name", "match"),
    [
        (np.zeros((2, 3, 4), bool), "m.png", r"2-D .* \(2, 3, 4\)"),
        (np.zeros((0, 3), bool), "m.png", "non-empty"),
        (np.zeros((3, 3), np.float32), "m.png", "threshold"),
        (np.zeros((3, 3), bool), "m.tif", "PNG"),
    ],
)
def test_write_mask_rejects_bad_input(tmp_path, mask, name, match):
    with pytest.raises(MaskError, match=match):
        write_mask(tmp_path / name, mask)
    assert not any(tmp_path.iterdir())


def test_images_beyond_pillows_limit_read_and_the_limit_is_restored(write_png, monkeypatch):
    im, _ = _mode_image("L")  # 64 x 96 = 6144 pixels
    path = write_png(im)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # the limit is in force outside read_mask ...
    np.testing.assert_array_equal(read_mask(path), np.asarray(im) == 255)  # ... not inside
    assert read_mask_shape(path) == (64, 96)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(MaskError):
        read_mask(path.with_name("missing.png"))
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored after errors too


def test_concurrent_reads_restore_the_limit(write_png, monkeypatch):
    path = write_png(_mode_image("RGBA")[0])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    results, expected = [], read_mask(path)
    threads = [threading.Thread(target=lambda: results.append(read_mask(path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(np.array_equal(r, expected) for r in results)
    assert Image.MAX_IMAGE_PIXELS == 1000


@pytest.mark.parametrize("limit", [5000, 2000])  # 2000: Pillow's own check (2 x limit) fires
def test_masks_beyond_max_mask_pixels_are_refused(write_png, monkeypatch, limit):
    path = write_png(_mode_image("L")[0])  # 6144 pixels
    monkeypatch.setattr(masks, "MAX_MASK_PIXELS", limit)
    monkeypatch.setattr(imaging, "MAX_MASK_PIXELS", limit)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(MaskError, match="m.png.*MAX_MASK_PIXELS"):
            read_mask(path)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_read_mask_shape_is_height_width(write_png):
    path = write_png(Image.new("P", (123, 45)))
    assert read_mask_shape(path) == (45, 123)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_mask_from_layer(dtype):
    layer = np.array([[0, 1, 2], [0, 0, 255]], dtype=dtype)
    np.testing.assert_array_equal(
        mask_from_layer(layer), [[False, True, True], [False, False, True]]
    )


def test_mask_from_layer_rejects_stacks():
    with pytest.raises(MaskError, match="2-D"):
        mask_from_layer(np.zeros((2, 3, 4), np.uint8))


def _split_idat(path, size=37):
    """Rewrite a PNG with its image data cut into many small IDAT chunks."""
    data = path.read_bytes()
    chunks, pos, idat = [], 8, b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            if kind == b"IEND":
                chunks += [_chunk(b"IDAT", idat[i : i + size]) for i in range(0, len(idat), size)]
            chunks.append(_chunk(kind, body))
        pos += 12 + length
    path.write_bytes(data[:8] + b"".join(chunks))
    return path


def _bands(path, band_pixels):
    from napari_phoenix.core.masks import iter_mask_rows

    got = list(iter_mask_rows(path, band_pixels))
    assert [y0 for y0, _ in got] == list(np.cumsum([0] + [len(b) for _, b in got[:-1]]))
    return np.concatenate([b for _, b in got])


@pytest.mark.parametrize("gamma", ["none", "sRGB"])
@pytest.mark.parametrize("mode", MODES)
def test_streamed_bands_equal_read_mask(write_png, mode, gamma):
    im, save = _mode_image(mode)
    path = _split_idat(write_png(im, chunks=GAMMAS[gamma], **save))
    whole = read_mask(path)
    for band_pixels in (1, 96 * 5, 1 << 22):  # a row per band, 5 rows, all at once
        np.testing.assert_array_equal(_bands(path, band_pixels), whole)


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("kind", ["gray", "palette"])
def test_streamed_bands_of_packed_pngs(write_png, kind, bits):
    rng = np.random.default_rng(bits)
    if kind == "gray":
        top = (1 << bits) - 1
        v = rng.integers(0, top + 1, (29, 53), dtype=np.uint8) * (255 // top)
        path = write_png(Image.fromarray(v), bits=bits)  # Pillow writes L with bits < 8 packed
    else:
        path = write_png(_palette_image().quantize(1 << bits), bits=bits)
    whole = read_mask(path)
    assert whole.any() and not whole.all()
    np.testing.assert_array_equal(_bands(path, 7), whole)
    if kind == "gray":
        np.testing.assert_array_equal(whole, _cv2_white(path))


def test_streamed_bands_of_an_interlaced_png_fall_back(tmp_path):
    # Adam7 by hand (Pillow and OpenCV write no interlaced PNG): 8-bit gray, filter None
    v = _stroke().astype(np.uint8)
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    raw = b"".join(
        b"\x00" + row.tobytes() for y0, x0, dy, dx in passes for row in v[y0::dy, x0::dx] if row.size
    )
    ihdr = struct.pack(">IIBBBBB", v.shape[1], v.shape[0], 8, 0, 0, 0, 1)
    path = tmp_path / "adam7.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
                     + _chunk(b"IEND", b""))  # fmt: skip
    np.testing.assert_array_equal(read_mask(path), v == 255)
    np.testing.assert_array_equal(_bands(path, 96 * 3), v == 255)


@pytest.mark.parametrize("cut", ["half-idat", "no-iend", "bad-crc"])
def test_streamed_bands_refuse_damaged_pngs(write_png, cut):
    from napari_phoenix.core.masks import iter_mask_rows

    path = write_png(_mode_image("L")[0])
    data = path.read_bytes()
    at = data.index(b"IDAT")
    if cut == "half-idat":
        data = data[: at + 40]
    elif cut == "no-iend":
        data = data[: data.index(b"IEND") - 4]
    else:
        data = data[: at + 10] + bytes([data[at + 10] ^ 1]) + data[at + 11 :]
    path.write_bytes(data)
    with pytest.raises(MaskError, match="truncated or corrupt"):
        list(iter_mask_rows(path))
