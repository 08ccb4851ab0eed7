"""Decode untrusted image bytes with hard limits on size and pixel count.

Every check runs before a single pixel is decoded: the byte size, then the
pixel count the header declares (Pillow's lazy open parses headers only; for
JPEG, libjpeg's own header reader too, since libjpeg does the decoding), then
the format allowlist. Only then is the image decoded: JPEG by libjpeg-turbo
(``simplejpeg``) with libjpeg's warnings raised as errors, so a scan that ends
early is refused instead of being grey-filled; PNG, WebP and BMP by Pillow,
whose loader raises when the data runs out. Whatever goes wrong surfaces as a
``FaceauthError`` with a stable code.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from shared.errors import ErrorCode, FaceauthError

Pixels = npt.NDArray[np.uint8]

# Pillow's format name -> ours. MPO is a JPEG with extra pictures after its EOI
# (phones write them); only the first, primary picture is decoded.
_ACCEPTED_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
_ACCEPTED_NAMES = "JPEG, PNG, WebP or BMP"

# What Pillow's plugins raise on malformed input: Image.open itself swallows the
# first four while probing formats, the rest come out of headers and loaders.
_PILLOW_ERRORS = (
    SyntaxError,
    IndexError,
    TypeError,
    struct.error,
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zlib.error,
)

# libjpeg's warnings for entropy-coded data that stops short: JWRN_JPEG_EOF
# ("Premature end of JPEG file"), JWRN_HIT_MARKER ("Corrupt JPEG data: premature
# end of data segment", e.g. a cut file with an EOI marker appended) and
# JERR_INPUT_EOF ("Premature end of input file").
_JPEG_TRUNCATION = "premature end"
# JWRN_EXTRANEOUS_DATA before the EOI marker: bytes left over after the last
# scan. A few are padding that some encoders write, with every pixel decoded;
# damaged scan data that libjpeg decoded out of step leaves hundreds or more.
_JPEG_JUNK_BEFORE_EOI = re.compile(r"(\d+) extraneous bytes before marker 0xd9")
_MAX_JUNK_BEFORE_EOI = 16

_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> how to turn the stored pixels upright (the transforms of
# Pillow's ImageOps.exif_transpose). OpenCV's, not numpy's: a transposed copy of
# an H x W x 3 array is ~10x slower in numpy, as slow as decoding the JPEG.
_ORIENT: dict[int, Callable[[Pixels], cv2.typing.MatLike]] = {
    2: lambda a: cv2.flip(a, 1),  # mirrored
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),  # upside down
    4: lambda a: cv2.flip(a, 0),  # mirrored, upside down
    5: cv2.transpose,  # transpose
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),  # transverse
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


@dataclass(frozen=True)
class DecodedImage:
    pixels: Pixels  # H x W x 3, BGR, upright (EXIF orientation applied)
    format: str  # "jpeg", "png", "webp" or "bmp"
    width: int
    height: int
    n_bytes: int


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode ``data`` to a BGR array or raise a ``FaceauthError`` with a stable code."""
    _check_byte_size(data, max_bytes)
    image = _open_header(data, max_pixels)
    _check_pixels(*image.size, max_pixels)
    fmt = _accepted_format(image)
    with _decoder_errors(data, max_pixels):
        pixels = _decode_jpeg(data, image, max_pixels) if fmt == "jpeg" else _pillow_to_bgr(image)
    pixels = np.ascontiguousarray(_upright(pixels, _exif_orientation(image)))
    height, width = pixels.shape[:2]
    return DecodedImage(pixels=pixels, format=fmt, width=width, height=height, n_bytes=len(data))


def _check_byte_size(data: bytes, max_bytes: int) -> None:
    if not data:
        raise FaceauthError(ErrorCode.IMAGE_UNDECODABLE, "image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_LARGE,
            f"image is {len(data)} bytes; the limit is {max_bytes}",
            n_bytes=len(data),
            limit=max_bytes,
        )


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            f"image declares {width}x{height} pixels; the limit is {max_pixels}",
            width=width,
            height=height,
            limit=max_pixels,
        )


def _open_header(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Pillow's lazy open: the format's plugin parses the header, no pixel is decoded.

    Any format Pillow knows is opened, so that a bomb in a format we refuse is
    still reported by its size. (Pillow's WebP opener already builds libwebp's
    demuxer, whose canvas buffers are calloc'ed but never touched until decoding.)
    """
    try:
        # (catch_warnings swaps the process-wide filters: fine for workers, which
        # decode on one thread per process.)
        with warnings.catch_warnings():
            # Pillow warns about images above its own bomb limit (~89 Mpx), ours
            # being checked right after, and about corrupt EXIF, which is ignored.
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        # Pillow refuses headers declaring over twice its limit before their size
        # can be read back; such an image is over ours too.
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            f"image declares too many pixels; the limit is {max_pixels} ({exc})",
            limit=max_pixels,
        ) from exc
    except UnidentifiedImageError as exc:
        raise FaceauthError(
            ErrorCode.IMAGE_UNDECODABLE, f"bytes are not an image; send {_ACCEPTED_NAMES}"
        ) from exc
    except _PILLOW_ERRORS as exc:
        raise _unreadable(data, exc, "image header is unreadable") from exc


def _accepted_format(image: ImageFile.ImageFile) -> str:
    fmt = _ACCEPTED_FORMATS.get(image.format or "")
    if fmt is None:
        raise FaceauthError(
            ErrorCode.IMAGE_UNDECODABLE,
            f"{image.format} images are not accepted; send {_ACCEPTED_NAMES}",
            format=image.format,
        )
    return fmt


@contextmanager
def _decoder_errors(data: bytes, max_pixels: int) -> Iterator[None]:
    """Turn whatever a decoder raises into a stable code."""
    try:
        yield
    except (MemoryError, Image.DecompressionBombError) as exc:
        # Only an image within our pixel limit gets here: the worker lacks memory
        # (or a frame is over Pillow's own limit); a smaller image is the way out.
        raise FaceauthError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS,
            f"not enough memory to decode this image; the pixel limit is {max_pixels}",
            limit=max_pixels,
        ) from exc
    except _PILLOW_ERRORS as exc:
        raise _unreadable(data, exc, "image data is unreadable") from exc


def _unreadable(data: bytes, exc: Exception, what: str) -> FaceauthError:
    """A Pillow failure as a code: truncated when the data ran out, else undecodable.

    Pillow says "truncated" when a read comes up short ("Truncated File Read",
    "image file is truncated"). libwebp only says it cannot parse the file, so a
    WebP is also truncated when it is shorter than its RIFF header declares.
    """
    truncated = "truncated" in str(exc).lower() or _riff_cut_short(data)
    code = ErrorCode.IMAGE_TRUNCATED if truncated else ErrorCode.IMAGE_UNDECODABLE
    return FaceauthError(code, f"{what}: {exc}")


def _riff_cut_short(data: bytes) -> bool:
    """A RIFF file (WebP) whose declared size runs past the end of ``data``."""
    if not data.startswith(b"RIFF") or len(data) < 8:
        return False
    (riff_size,) = struct.unpack("<I", data[4:8])
    return 8 + riff_size > len(data)


def _decode_jpeg(data: bytes, image: ImageFile.ImageFile, max_pixels: int) -> Pixels:
    """libjpeg-turbo, every libjpeg warning an error: a cut-off scan is not grey-filled.

    Default DCT and upsampling, the same settings as cv2.imdecode, so the pixels
    (and the embeddings made from them) do not change. CMYK, YCCK and greyscale
    JPEGs come out as 3-channel BGR too.
    """
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        # TurboJPEG refuses chroma layouts outside its list and headers cut short;
        # Pillow's libjpeg takes both (and raises on the cut ones). What it cannot
        # see is a cut scan with an EOI marker appended.
        return _pillow_to_bgr(image)
    # libjpeg parses the header again to decode; hold its reading to the limit too.
    _check_pixels(width, height, max_pixels)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
    except ValueError as exc:
        message = str(exc)
        if _is_padding_before_eoi(message):
            return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False)
        if _JPEG_TRUNCATION in message.lower():
            raise FaceauthError(
                ErrorCode.IMAGE_TRUNCATED, f"JPEG data ends early: {message}"
            ) from exc
        # Corrupt entropy-coded data (bad Huffman code, lost restart markers) or a
        # broken header: libjpeg would patch over it, we refuse it.
        raise FaceauthError(
            ErrorCode.IMAGE_UNDECODABLE, f"JPEG data is corrupt: {message}"
        ) from exc


def _is_padding_before_eoi(message: str) -> bool:
    junk = _JPEG_JUNK_BEFORE_EOI.search(message)
    return junk is not None and int(junk[1]) <= _MAX_JUNK_BEFORE_EOI


def _pillow_to_bgr(image: ImageFile.ImageFile) -> Pixels:
    """Decode the first frame; drop alpha and scale 16-bit to 8, as cv2.IMREAD_COLOR did.

    The channel swap is OpenCV's: numpy's reversed-view copy is ~50x slower.
    """
    image.load()
    if image.mode.startswith("I"):  # 16-bit greyscale PNG: keep the high byte
        grey = (np.asarray(image) >> 8).clip(0, 255).astype(np.uint8)
        return _bgr(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    # Through RGBA when there is transparency: Pillow's direct route to RGB warns
    # about palette transparency. The alpha channel is then simply dropped.
    mode, to_bgr = (
        ("RGBA", cv2.COLOR_RGBA2BGR) if image.has_transparency_data else ("RGB", cv2.COLOR_RGB2BGR)
    )
    rgb = image if image.mode == mode else image.convert(mode)
    return _bgr(cv2.cvtColor(np.asarray(rgb), to_bgr))


def _bgr(pixels: cv2.typing.MatLike) -> Pixels:
    """OpenCV's result typed as what it is: H x W x 3 uint8."""
    return np.asarray(pixels, dtype=np.uint8)


def _exif_orientation(image: ImageFile.ImageFile) -> int:
    """The EXIF orientation tag, 1 (as stored) when absent or unreadable."""
    # Broken EXIF is metadata gone bad, not pixels: ignored, as cv2 did, and so
    # are Pillow's warnings about it ("Corrupt EXIF data", ...).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except _PILLOW_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


def _upright(pixels: Pixels, orientation: int) -> Pixels:
    turn = _ORIENT.get(orientation)
    return pixels if turn is None else _bgr(turn(pixels))
