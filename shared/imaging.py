"""Decode untrusted image bytes with hard limits on size and pixel count.

The pixel check reads the header before decoding, so a small file that
declares an enormous canvas (a decompression bomb) is refused without
allocating it. OpenCV's own ``OPENCV_IO_MAX_IMAGE_PIXELS`` is set too, as a
second fence for formats whose header we do not parse.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.errors import ErrorCode, FaceauthError

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class DecodedImage:
    pixels: npt.NDArray[np.uint8]  # H x W x 3, BGR
    format: str
    width: int
    height: int
    n_bytes: int


def _header_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from a PNG or JPEG header, or None when unknown."""
    if data.startswith(_PNG_SIG) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", int(width), int(height)
    if data.startswith(_JPEG_SOI):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            seg_len = struct.unpack(">H", data[i + 2 : i + 4])[0]
            # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return "jpeg", int(width), int(height)
            i += 2 + seg_len
        return "jpeg", 0, 0
    return None


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode ``data`` to a BGR array or raise a ``FaceauthError`` with a stable code."""
    import cv2  # local: keep `shared` importable without OpenCV for light clients

    n_bytes = len(data)
    if n_bytes == 0:
        raise FaceauthError(ErrorCode.IMAGE_UNDECODABLE, "image is empty (0 bytes)")
    if n_bytes > max_bytes:
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"image is {n_bytes} bytes; the limit is {max_bytes}",
            n_bytes=n_bytes,
            limit=max_bytes,
        )
    header = _header_size(data)
    if header is not None and header[1] * header[2] > max_pixels:
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            f"image declares {header[1]}x{header[2]} pixels; the limit is {max_pixels}",
            width=header[1],
            height=header[2],
            limit=max_pixels,
        )
    if header is not None and header[0] == "jpeg" and not data.rstrip(b"\x00").endswith(_JPEG_EOI):
        # libjpeg fills a truncated scan with grey and only warns; a half-grey face would
        # then be embedded as if it were real, so refuse it outright.
        raise FaceauthError(
            ErrorCode.IMAGE_TRUNCATED, "JPEG data ends before its end-of-image marker"
        )
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels))
    buf = np.frombuffer(data, dtype=np.uint8)
    pixels = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if pixels is None:
        raise FaceauthError(
            ErrorCode.IMAGE_UNDECODABLE, "bytes are not a decodable image (JPEG, PNG, WebP, BMP)"
        )
    height, width = pixels.shape[:2]
    if width * height > max_pixels:
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            f"image is {width}x{height} pixels; the limit is {max_pixels}",
            width=width,
            height=height,
            limit=max_pixels,
        )
    fmt = header[0] if header is not None else "other"
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        format=fmt,
        width=width,
        height=height,
        n_bytes=n_bytes,
    )
