"""Decoding untrusted bytes: limits, truncation, formats (real photos from ../shared)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.errors import ErrorCode, FaceauthError
from shared.imaging import decode_image

LIMITS = {"max_bytes": 15 * 1024 * 1024, "max_pixels": 40_000_000}


def test_decodes_real_jpeg_and_png(faces: Path) -> None:
    jpeg = decode_image((faces / "identities" / "obama" / "obama.jpg").read_bytes(), **LIMITS)
    assert jpeg.format == "jpeg" and jpeg.pixels.ndim == 3 and jpeg.pixels.shape[2] == 3
    png_bytes = (faces / "identities" / "alex_lacamoire" / "img2.png").read_bytes()
    png = decode_image(png_bytes, **LIMITS)
    assert png.format == "png" and png.pixels.shape[:2] == (png.height, png.width)


def test_32bit_png_drops_alpha(faces: Path) -> None:
    img = decode_image((faces / "edge" / "32bit.png").read_bytes(), **LIMITS)
    assert img.pixels.shape[2] == 3


def _code(data: bytes, **limits: int) -> ErrorCode:
    with pytest.raises(FaceauthError) as info:
        decode_image(data, **{**LIMITS, **limits})
    return info.value.code


def test_rejections_have_stable_codes(faces: Path) -> None:
    photo = (faces / "identities" / "biden" / "biden.jpg").read_bytes()
    assert _code(b"") is ErrorCode.IMAGE_UNDECODABLE
    assert _code(b"hello world, not an image") is ErrorCode.IMAGE_UNDECODABLE
    assert _code(photo[: len(photo) // 2]) is ErrorCode.IMAGE_TRUNCATED
    assert _code(photo, max_bytes=1000) is ErrorCode.IMAGE_TOO_LARGE
    assert _code(photo, max_pixels=1000) is ErrorCode.IMAGE_TOO_MANY_PIXELS


def test_pixel_bomb_is_refused_from_the_header() -> None:
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(chunk))
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + crc
    with pytest.raises(FaceauthError) as info:
        decode_image(data, **LIMITS)
    assert info.value.code is ErrorCode.IMAGE_TOO_MANY_PIXELS
    assert info.value.details["width"] == 50_000


def test_jpeg_header_size_matches_decoder() -> None:
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (123, 321, 3), dtype=np.uint8))
    assert ok
    data = buf.tobytes()
    assert _code(data, max_pixels=123 * 321 - 1) is ErrorCode.IMAGE_TOO_MANY_PIXELS
    assert decode_image(data, **LIMITS).width == 321
