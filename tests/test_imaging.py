"""Decoding untrusted bytes: limits, truncation, formats (real photos from ../shared)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import simplejpeg
from PIL import Image, ImageFile

from shared.errors import ErrorCode, FaceauthError
from shared.imaging import decode_image
from tests.bad_images import (
    bad_image_corpus,
    bmp_declaring,
    cut,
    gif_declaring,
    jpeg_cut,
    jpeg_declaring,
    png_declaring,
    tiff_declaring,
    webp_extended_declaring,
    webp_lossless_declaring,
)

LIMITS = {"max_bytes": 15 * 1024 * 1024, "max_pixels": 40_000_000}
ROOT = Path(__file__).resolve().parents[1]


def _code(data: bytes, **limits: int) -> ErrorCode:
    with pytest.raises(FaceauthError) as info:
        decode_image(data, **{**LIMITS, **limits})
    return info.value.code


def _cv2(data: bytes) -> npt.NDArray[np.uint8]:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert pixels is not None
    return np.asarray(pixels, dtype=np.uint8)


def _max_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(faces: Path) -> bytes:
    return (faces / "identities" / "obama" / "obama.jpg").read_bytes()


@pytest.fixture(scope="module")
def portrait(photo: bytes) -> Image.Image:
    """A small RGB face photo, not square, so a rotation shows in the shape."""
    return Image.open(io.BytesIO(photo)).convert("RGB").resize((120, 150))


# --- what decodes, and to which pixels ----------------------------------------------------


def test_decodes_real_jpeg_and_png(faces: Path) -> None:
    jpeg = decode_image((faces / "identities" / "obama" / "obama.jpg").read_bytes(), **LIMITS)
    assert jpeg.format == "jpeg" and jpeg.pixels.ndim == 3 and jpeg.pixels.shape[2] == 3
    png_bytes = (faces / "identities" / "alex_lacamoire" / "img2.png").read_bytes()
    png = decode_image(png_bytes, **LIMITS)
    assert png.format == "png" and png.pixels.shape[:2] == (png.height, png.width)


def test_32bit_png_drops_alpha(faces: Path) -> None:
    img = decode_image((faces / "edge" / "32bit.png").read_bytes(), **LIMITS)
    assert img.pixels.shape[2] == 3


def test_jpeg_pixels_match_opencv(faces: Path) -> None:
    """Embeddings downstream were made from cv2.imdecode's pixels: they must not move."""
    for path in sorted((faces / "identities").glob("*/*.jp*g")):
        data = path.read_bytes()
        image = decode_image(data, **LIMITS)
        assert image.pixels.dtype == np.uint8 and image.pixels.flags.c_contiguous
        assert _max_diff(image.pixels, _cv2(data)) <= 1, path.name


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("progressive", lambda im: _encode(im, "JPEG", progressive=True)),
        ("greyscale", lambda im: _encode(im.convert("L"), "JPEG")),
        ("cmyk", lambda im: _encode(im.convert("CMYK"), "JPEG")),
    ],
)
def test_jpeg_variants_decode_to_bgr_like_opencv(
    portrait: Image.Image, name: str, make: Callable[[Image.Image], bytes]
) -> None:
    data = make(portrait)
    image = decode_image(data, **LIMITS)
    assert (image.format, image.pixels.shape) == ("jpeg", (150, 120, 3))
    assert _max_diff(image.pixels, _cv2(data)) <= 1, name


def test_multi_picture_jpeg_gives_its_primary_picture() -> None:
    """Phones append more pictures after the first EOI (MPO); the first is the photo."""
    red, green = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 255, 0))
    data = _encode(red, "MPO", save_all=True, append_images=[green])
    image = decode_image(data, **LIMITS)
    assert image.format == "jpeg" and image.pixels.shape == (30, 40, 3)
    assert _max_diff(image.pixels, _cv2(data)) == 0


@pytest.mark.parametrize(
    ("fmt", "mode", "options"),
    [
        ("PNG", "RGBA", {}),
        ("PNG", "LA", {}),
        ("PNG", "P", {"transparency": 0}),
        ("PNG", "1", {}),
        ("WEBP", "RGB", {"quality": 80}),
        ("WEBP", "RGBA", {"lossless": True}),
        ("BMP", "RGB", {}),
        ("BMP", "P", {}),
    ],
)
def test_other_formats_decode_like_opencv(
    portrait: Image.Image, fmt: str, mode: str, options: dict[str, object]
) -> None:
    """Alpha dropped, palettes expanded, no Pillow warning on the way."""
    data = _encode(portrait.convert(mode), fmt, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = decode_image(data, **LIMITS)
    assert (image.format, image.pixels.shape) == (fmt.lower(), (150, 120, 3))
    assert image.pixels.flags.c_contiguous
    assert _max_diff(image.pixels, _cv2(data)) == 0


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 3)])
def test_16bit_png_keeps_the_high_byte_like_opencv(shape: tuple[int, ...]) -> None:
    values = np.random.default_rng(3).integers(0, 65536, shape, dtype=np.uint16)
    ok, buf = cv2.imencode(".png", values)
    assert ok
    image = decode_image(buf.tobytes(), **LIMITS)
    assert image.pixels.shape == (40, 50, 3)
    assert _max_diff(image.pixels, _cv2(buf.tobytes())) == 0


def test_animated_webp_gives_its_first_frame() -> None:
    red, green = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 255, 0))
    data = _encode(red, "WEBP", save_all=True, append_images=[green], lossless=True)
    pixels = decode_image(data, **LIMITS).pixels
    assert pixels.shape == (30, 40, 3) and pixels[0, 0].tolist() == [0, 0, 255]


def test_jpeg_header_size_matches_decoder() -> None:
    rng = np.random.default_rng(0)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (123, 321, 3), dtype=np.uint8))
    assert ok
    data = buf.tobytes()
    assert _code(data, max_pixels=123 * 321 - 1) is ErrorCode.IMAGE_TOO_MANY_PIXELS
    assert decode_image(data, **LIMITS).width == 321


# --- EXIF orientation -----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_opencv(portrait: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(portrait, "JPEG", exif=exif)
    image = decode_image(data, **LIMITS)
    turned = orientation >= 5  # 5-8 swap width and height
    assert (image.width, image.height) == ((150, 120) if turned else (120, 150))
    assert image.pixels.shape == (image.height, image.width, 3)
    assert _max_diff(image.pixels, _cv2(data)) == 0  # cv2.imdecode applies EXIF orientation


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_of_a_png(portrait: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = decode_image(_encode(portrait, "PNG", exif=exif), **LIMITS)
    upright = np.asarray(portrait.rotate(-90 if orientation == 6 else 90, expand=True))
    assert image.pixels.shape == (120, 150, 3)
    assert _max_diff(image.pixels, upright[:, :, ::-1].copy()) == 0


def test_pixel_limit_counts_the_stored_size_of_a_rotated_jpeg(portrait: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(portrait, "JPEG", exif=exif)
    assert _code(data, max_pixels=120 * 150 - 1) is ErrorCode.IMAGE_TOO_MANY_PIXELS
    assert decode_image(data, max_bytes=LIMITS["max_bytes"], max_pixels=120 * 150).width == 150


# --- truncated and trailing data ------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.44, 0.75, 0.9, 0.99])
@pytest.mark.parametrize("eoi", [False, True], ids=["cut", "cut+FFD9"])
def test_cut_jpeg_is_truncated_even_with_an_eoi_marker(
    photo: bytes, fraction: float, eoi: bool
) -> None:
    assert _code(jpeg_cut(photo, fraction, eoi=eoi)) is ErrorCode.IMAGE_TRUNCATED


@pytest.mark.parametrize("trailer", [b"\x00" * 65536, b"\xff\xd9" * 32768, os.urandom(65536)])
def test_bytes_after_the_end_of_a_jpeg_are_ignored(photo: bytes, trailer: bytes) -> None:
    expected = decode_image(photo, **LIMITS).pixels
    assert np.array_equal(decode_image(photo + trailer, **LIMITS).pixels, expected)


def test_a_few_padding_bytes_before_eoi_are_tolerated(photo: bytes) -> None:
    """Some encoders pad the end of the scan; libjpeg warns, every pixel is still there."""
    assert photo.endswith(b"\xff\xd9")
    padded = photo[:-2] + b"\x00\x00\xff\xd9"
    assert np.array_equal(decode_image(padded, **LIMITS).pixels, _cv2(photo))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_cut_png_webp_bmp_are_truncated(portrait: Image.Image, fmt: str, fraction: float) -> None:
    assert _code(cut(_encode(portrait, fmt), fraction)) is ErrorCode.IMAGE_TRUNCATED


# --- limits, checked before decoding -------------------------------------------------------

BOMBS = {
    "jpeg_fill_byte_20000": lambda jpeg: jpeg_declaring(jpeg, 20_000, 20_000, fill_byte=True),
    "jpeg_fill_byte_65500": lambda jpeg: jpeg_declaring(jpeg, 65_500, 65_500, fill_byte=True),
    "jpeg_7000": lambda jpeg: jpeg_declaring(jpeg, 7_000, 7_000),
    "png_50000": lambda _: png_declaring(50_000, 50_000),
    "png_8000": lambda _: png_declaring(8_000, 8_000),
    "webp_lossless_16383": lambda _: webp_lossless_declaring(16_383, 16_383),
    "webp_lossless_12000": lambda _: webp_lossless_declaring(12_000, 12_000),
    "webp_extended_16384": lambda _: webp_extended_declaring(16_384, 16_384),
    "bmp_30000": lambda _: bmp_declaring(30_000, 30_000),
    "bmp_8000": lambda _: bmp_declaring(8_000, 8_000),
    "tiff_20000": lambda _: tiff_declaring(20_000, 20_000),
    "gif_20000": lambda _: gif_declaring(20_000, 20_000),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_bombs_are_refused_without_decoding(
    photo: bytes, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder ran on a bomb")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", must_not_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    monkeypatch.setattr(cv2, "imdecode", must_not_decode)
    assert _code(BOMBS[kind](photo)) is ErrorCode.IMAGE_TOO_MANY_PIXELS


def test_bombs_are_refused_without_allocating(photo: bytes, tmp_path: Path) -> None:
    """Peak memory (ru_maxrss, which sees C allocations) barely moves over every bomb."""
    for kind, make in BOMBS.items():
        (tmp_path / kind).write_bytes(make(photo))
    script = textwrap.dedent(
        """
        import json, resource, sys
        from pathlib import Path
        from shared.errors import FaceauthError
        from shared.imaging import decode_image

        paths = sorted(Path(sys.argv[1]).iterdir())
        blobs = [p.read_bytes() for p in paths]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        codes = {}
        for path, data in zip(paths, blobs):
            try:
                decode_image(data, max_bytes=15 << 20, max_pixels=40_000_000)
            except FaceauthError as exc:
                codes[path.name] = str(exc.code)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"grew_kib": after - before, "codes": codes}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["codes"] == dict.fromkeys(BOMBS, "image_too_many_pixels")
    assert report["grew_kib"] < 64 * 1024  # the smallest bomb would need over 100 MiB


def test_pixel_bomb_reports_its_declared_size() -> None:
    with pytest.raises(FaceauthError) as info:
        decode_image(png_declaring(8_000, 8_000), **LIMITS)
    assert info.value.code is ErrorCode.IMAGE_TOO_MANY_PIXELS
    assert info.value.details == {"width": 8_000, "height": 8_000, "limit": 40_000_000}


def test_fill_byte_before_the_frame_header_is_read_correctly(photo: bytes) -> None:
    """0xFF fill bytes before a marker are legal: the image decodes, its size is checked."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(photo)
    filled = jpeg_declaring(photo, width, height, fill_byte=True)
    assert np.array_equal(decode_image(filled, **LIMITS).pixels, _cv2(photo))
    assert _code(filled, max_pixels=width * height - 1) is ErrorCode.IMAGE_TOO_MANY_PIXELS


def test_rejections_have_stable_codes(faces: Path) -> None:
    photo = (faces / "identities" / "biden" / "biden.jpg").read_bytes()
    assert _code(b"") is ErrorCode.IMAGE_UNDECODABLE
    assert _code(b"hello world, not an image") is ErrorCode.IMAGE_UNDECODABLE
    assert _code(photo[: len(photo) // 2]) is ErrorCode.IMAGE_TRUNCATED
    assert _code(photo, max_bytes=1000) is ErrorCode.IMAGE_TOO_LARGE
    assert _code(photo, max_pixels=1000) is ErrorCode.IMAGE_TOO_MANY_PIXELS


@pytest.mark.parametrize("fmt", ["TIFF", "GIF", "ICO", "PPM"])
def test_formats_outside_the_allowlist_are_named(portrait: Image.Image, fmt: str) -> None:
    with pytest.raises(FaceauthError) as info:
        decode_image(_encode(portrait, fmt), **LIMITS)
    assert info.value.code is ErrorCode.IMAGE_UNDECODABLE
    assert fmt in info.value.message and "JPEG, PNG, WebP or BMP" in info.value.message


def test_a_decoder_out_of_memory_is_a_coded_error(
    photo: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(simplejpeg, "decode_jpeg", out_of_memory)
    assert _code(photo) is ErrorCode.IMAGE_TOO_MANY_PIXELS


# --- every bad image, and damaged good ones ------------------------------------------------


def test_bad_image_corpus_gets_the_expected_codes(photo: bytes) -> None:
    corpus = bad_image_corpus(photo)
    kinds = [kind for kind, _, _ in corpus]
    assert len(corpus) >= 35 and len(set(kinds)) == len(kinds)
    assert all(len(data) < 2 * 1024 * 1024 for _, data, _ in corpus)
    got = {kind: str(_code(data)) for kind, data, _ in corpus}
    assert got == {kind: str(code) for kind, _, code in corpus}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_damaged_images_only_ever_raise_coded_errors(portrait: Image.Image, fmt: str) -> None:
    """Random byte damage: decoded or refused with a FaceauthError, never anything else."""
    data = _encode(portrait.resize((48, 60)), fmt)
    rng = np.random.default_rng(len(fmt))
    for _ in range(150):
        damaged = bytearray(data)
        for offset in rng.integers(0, len(data), rng.integers(1, 8)):
            damaged[offset] = rng.integers(0, 256)
        with contextlib.suppress(FaceauthError):
            decode_image(bytes(damaged[: rng.integers(1, len(data) + 1)]), **LIMITS)


# --- OpenCV's own limit ---------------------------------------------------------------------


def test_opencv_pixel_limit_is_set_before_cv2_is_imported() -> None:
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, at import: importing shared sets it."""
    ok, png = cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))  # 1600 pixels
    assert ok
    script = textwrap.dedent(
        """
        import sys
        import shared.imaging
        import cv2
        import numpy as np

        data = np.frombuffer(sys.stdin.buffer.read(), np.uint8)
        try:
            print("decoded" if cv2.imdecode(data, cv2.IMREAD_COLOR) is not None else "refused")
        except cv2.error:
            print("refused")
        """
    )

    def run(**env: str) -> str:
        base = {k: v for k, v in os.environ.items() if not k.endswith("MAX_IMAGE_PIXELS")}
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=png.tobytes(),
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            timeout=120,
            check=True,
        )
        return done.stdout.decode().strip().splitlines()[-1]

    assert run(FACEAUTH_MAX_IMAGE_PIXELS="1000") == "refused"
    assert run() == "decoded"
