"""Bad images built in memory from one valid JPEG, each with the code ``decode_image`` gives it.

``bad_image_corpus`` feeds tests/test_imaging.py and the integration tests, which send
the same bytes through the workers. The codes hold for ``max_bytes=15 MiB`` and
``max_pixels=40_000_000`` (the defaults). The builders below are public for tests that
need one kind on its own.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

from shared.errors import ErrorCode

Case = tuple[str, bytes, str]

TOO_MANY = ErrorCode.IMAGE_TOO_MANY_PIXELS
TRUNCATED = ErrorCode.IMAGE_TRUNCATED
UNDECODABLE = ErrorCode.IMAGE_UNDECODABLE

_SOS = 0xDA
_DHT = 0xC4
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# In scan data 0xFF is followed by 00 (a stuffed byte) or D0-D7 (restart): anything else ends it.
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def bad_image_corpus(sample_jpeg: bytes) -> list[Case]:
    """(kind, bytes, expected code) for every kind of bad image.

    ``sample_jpeg`` is a baseline photo under about 1.5 MB (cases built from it stay < 2 MB).
    """
    small = Image.open(io.BytesIO(sample_jpeg)).convert("RGB").resize((64, 80))
    return [
        *_not_images(),
        *_broken_jpegs(sample_jpeg, _encode(small, "JPEG")),
        *_jpeg_bombs(sample_jpeg),
        *_broken_pngs(_encode(small, "PNG")),
        *_broken_webps(_encode(small, "WEBP", quality=90)),
        *_broken_bmps(_encode(small, "BMP")),
        *_refused_formats(small),
    ]


# --- builders ---------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> dict[int, int]:
    """Offset of the first 0xFF of each marker up to SOS (EXIF thumbnails are skipped whole)."""
    found: dict[int, int] = {}
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        found.setdefault(marker, i)
        if marker == _SOS:
            break
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return found


def jpeg_sof_offset(data: bytes) -> int:
    return min(offset for marker, offset in jpeg_segments(data).items() if marker in _SOF_MARKERS)


def jpeg_scan(data: bytes) -> tuple[int, int]:
    """Start and end of the entropy-coded data of the first scan."""
    sos = jpeg_segments(data)[_SOS]
    start = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    end = _MARKER_IN_SCAN.search(data, start)
    return start, end.start() if end else len(data)


def jpeg_declaring(data: bytes, width: int, height: int, *, fill_byte: bool = False) -> bytes:
    """``data`` with its frame header claiming ``width`` x ``height``.

    ``fill_byte`` puts a 0xFF fill byte before the SOF marker: legal JPEG, and it threw
    a hand-written marker parser off.
    """
    sof = jpeg_sof_offset(data)
    patched = data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]
    return patched[:sof] + b"\xff" * fill_byte + patched[sof:]


def jpeg_cut(data: bytes, fraction: float, *, eoi: bool = False) -> bytes:
    """``data`` cut ``fraction`` of the way through its first scan, optionally 'mended' with EOI."""
    start, end = jpeg_scan(data)
    return data[: start + int((end - start) * fraction)] + b"\xff\xd9" * eoi


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG (IHDR, one tiny IDAT, IEND) whose header claims ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def webp_lossless_declaring(width: int, height: int) -> bytes:
    """A 38-byte lossless WebP of one colour: it really decodes to ``width`` x ``height``."""
    one = _encode(Image.new("RGB", (1, 1), (90, 60, 40)), "WEBP", lossless=True)
    bits = struct.unpack("<I", one[21:25])[0] & ~((1 << 28) - 1)  # keep alpha hint, version
    return one[:21] + struct.pack("<I", bits | (width - 1) | (height - 1) << 14) + one[25:]


def webp_extended_declaring(width: int, height: int) -> bytes:
    """A VP8X (extended) WebP whose canvas claims ``width`` x ``height``."""
    vp8x = (
        struct.pack("<I", 0)
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming ``width`` x ``height``, with a few bytes of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x00" * 64
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels


def tiff_declaring(width: int, height: int) -> bytes:
    """A minimal uncompressed greyscale TIFF claiming ``width`` x ``height``."""
    tags = [  # (tag, type SHORT=3 / LONG=4, value)
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),  # bits per sample
        (259, 3, 1),  # no compression
        (262, 3, 1),  # black is zero
        (273, 4, 8 + 2 + 12 * 8 + 4),  # strip offset: right after the IFD
        (278, 4, height),  # rows per strip
        (279, 4, 64),  # strip byte count
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        field = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, 1) + field
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 64


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and single frame claim ``width`` x ``height``."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6
    pixels = b"\x02\x02\x44\x01\x00"  # LZW code size 2, one 2-byte block, terminator
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + pixels
    return screen + frame + b"\x3b"


def cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


# --- the corpus, by family ---------------------------------------------------------------


def _not_images() -> list[Case]:
    rng = np.random.default_rng(7)
    return [
        ("empty", b"", UNDECODABLE),
        ("one_byte", b"\xff", UNDECODABLE),
        ("plain_text", b"hello, this is not a photo\n" * 10, UNDECODABLE),
        ("html", b"<!DOCTYPE html><html><body><img src='face.jpg'></body></html>", UNDECODABLE),
        (
            "svg",
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" '
            b'height="80"><circle cx="32" cy="40" r="30"/></svg>',
            UNDECODABLE,
        ),
        ("pdf_header", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", UNDECODABLE),
        ("zip", _zip_of("face.jpg"), UNDECODABLE),
        ("elf_header", b"\x7fELF\x02\x01\x01" + b"\x00" * 57, UNDECODABLE),
        ("random_noise", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), UNDECODABLE),
        ("all_0xff", b"\xff" * 4096, UNDECODABLE),
        ("all_zero", b"\x00" * 4096, UNDECODABLE),
    ]


def _broken_jpegs(sample: bytes, small: bytes) -> list[Case]:
    scan, _ = jpeg_scan(sample)
    return [
        ("jpeg_soi_only", b"\xff\xd8", UNDECODABLE),
        ("jpeg_soi_eoi", b"\xff\xd8\xff\xd9", UNDECODABLE),
        ("jpeg_cut_in_frame_header", sample[: jpeg_sof_offset(sample) + 6], TRUNCATED),
        ("jpeg_headers_only", sample[:scan], TRUNCATED),
        ("jpeg_headers_then_eoi", sample[:scan] + b"\xff\xd9", TRUNCATED),
        *[
            (f"jpeg_cut_{int(f * 100)}pct{'_eoi' * eoi}", jpeg_cut(sample, f, eoi=eoi), TRUNCATED)
            for f in (0.1, 0.44, 0.9)
            for eoi in (False, True)
        ],
        ("jpeg_progressive_cut_half", jpeg_cut(_progressive(sample), 0.5), TRUNCATED),
        ("jpeg_cmyk_cut_half", jpeg_cut(_recode(sample, "CMYK"), 0.5), TRUNCATED),
        ("jpeg_cut_half_zero_padded", jpeg_cut(sample, 0.5).ljust(len(sample), b"\0"), TRUNCATED),
        ("jpeg_bad_huffman_codes", _bad_huffman_codes(sample), UNDECODABLE),
        ("jpeg_bad_huffman_table", _bad_huffman_table(sample), UNDECODABLE),
        ("jpeg_sof_0x0", jpeg_declaring(sample, 0, 0), UNDECODABLE),
        (
            "jpeg_as_base64_data_url",
            b"data:image/jpeg;base64," + base64.b64encode(small),
            UNDECODABLE,
        ),
        ("jpeg_gzipped", gzip.compress(small, mtime=0), UNDECODABLE),
    ]


def _jpeg_bombs(sample: bytes) -> list[Case]:
    return [
        (
            "jpeg_fill_byte_bomb_20000",
            jpeg_declaring(sample, 20_000, 20_000, fill_byte=True),
            TOO_MANY,
        ),
        (
            "jpeg_fill_byte_bomb_65500",
            jpeg_declaring(sample, 65_500, 65_500, fill_byte=True),
            TOO_MANY,
        ),
        ("jpeg_bomb_65500", jpeg_declaring(sample, 65_500, 65_500), TOO_MANY),
        ("jpeg_over_limit_7000", jpeg_declaring(sample, 7_000, 7_000), TOO_MANY),
    ]


def _broken_pngs(png: bytes) -> list[Case]:
    ihdr_end = 8 + 8 + 13 + 4
    idat = png.index(b"IDAT")
    return [
        ("png_bomb_50000", png_declaring(50_000, 50_000), TOO_MANY),
        ("png_over_limit_8000", png_declaring(8_000, 8_000), TOO_MANY),
        ("png_signature_only", png[:8], UNDECODABLE),
        ("png_header_only", png[:ihdr_end], UNDECODABLE),
        ("png_cut_half", cut(png, 0.5), TRUNCATED),
        ("png_cut_90pct", cut(png, 0.9), TRUNCATED),
        ("png_bad_ihdr_crc", _flip(png, ihdr_end - 1), UNDECODABLE),
        ("png_bad_idat_data", _flip(png, idat + 20), UNDECODABLE),
    ]


def _broken_webps(webp: bytes) -> list[Case]:
    return [
        ("webp_lossless_bomb_16383", webp_lossless_declaring(16_383, 16_383), TOO_MANY),
        ("webp_lossless_over_limit_7000", webp_lossless_declaring(7_000, 7_000), TOO_MANY),
        ("webp_extended_bomb_16384", webp_extended_declaring(16_384, 16_384), TOO_MANY),
        ("webp_cut_half", cut(webp, 0.5), TRUNCATED),
        ("webp_riff_header_only", webp[:12], UNDECODABLE),
    ]


def _broken_bmps(bmp: bytes) -> list[Case]:
    return [
        ("bmp_bomb_30000", bmp_declaring(30_000, 30_000), TOO_MANY),
        ("bmp_over_limit_8000", bmp_declaring(8_000, 8_000), TOO_MANY),
        ("bmp_cut_half", cut(bmp, 0.5), TRUNCATED),
    ]


def _refused_formats(small: Image.Image) -> list[Case]:
    return [
        ("tiff_bomb_20000", tiff_declaring(20_000, 20_000), TOO_MANY),
        ("tiff_small", _encode(small, "TIFF"), UNDECODABLE),
        ("gif_bomb_20000", gif_declaring(20_000, 20_000), TOO_MANY),
        ("gif_small", _encode(small, "GIF"), UNDECODABLE),
        ("ico_small", _encode(small, "ICO"), UNDECODABLE),
        ("ppm_small", _encode(small, "PPM"), UNDECODABLE),
    ]


# --- helpers ----------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _recode(jpeg: bytes, mode: str) -> bytes:
    return _encode(Image.open(io.BytesIO(jpeg)).convert(mode), "JPEG", quality=90)


def _progressive(jpeg: bytes) -> bytes:
    return _encode(Image.open(io.BytesIO(jpeg)).convert("RGB"), "JPEG", progressive=True)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zip_of(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(name, b"not really a photo")
    return buf.getvalue()


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


def _bad_huffman_codes(jpeg: bytes) -> bytes:
    """A run of 1-bits (stuffed FF 00 pairs) mid-scan: no Huffman code is all ones."""
    start, end = jpeg_scan(jpeg)
    middle = (start + end) // 2
    while jpeg[middle - 1] == 0xFF:  # not between a 0xFF and the byte it pairs with
        middle += 1
    return jpeg[:middle] + b"\xff\x00" * 64 + jpeg[middle:]


def _bad_huffman_table(jpeg: bytes) -> bytes:
    """The first Huffman table claiming 255 codes of every length: libjpeg refuses it."""
    dht = jpeg_segments(jpeg)[_DHT]
    counts = dht + 5  # FF C4, length (2), class/id (1), then 16 code counts
    return jpeg[:counts] + b"\xff" * 16 + jpeg[counts + 16 :]
