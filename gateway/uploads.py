"""Streaming ``multipart/form-data`` reader with per-file limits and magic-byte sniffing.

Starlette's form parser spools every file to disk first and checks nothing; here each
part is checked as it streams in, so a bad upload is refused at the byte that makes it
bad, not after the whole body arrived:

- a field name the route does not know, a text field given twice, one file too many:
  refused at the part's headers (422);
- a file that does not start like a JPEG, PNG, WebP or BMP (or declares a non-image
  content type): refused after its first 12 bytes (415);
- a file over ``max_image_bytes``: refused at the chunk that crosses it (413), so at most
  that much plus one chunk is ever held for it;
- a text field over ``max_text_bytes`` (422), a body that is not well-formed multipart or
  ends before its closing boundary (400).

Each accepted file is kept in memory (the producer uploads bytes) with the SHA-256 of its
bytes, computed while streaming, for the request fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.problems import Problem
from shared.errors import ErrorCode

SNIFF_BYTES = 12  # enough for every signature below (WebP's sits at bytes 8-11)
ACCEPTED_FORMATS = "JPEG, PNG, WebP or BMP"


def sniff_image(head: bytes) -> str | None:
    """The image media type the first bytes announce, or None when they announce none."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM"):
        return "image/bmp"
    return None


@dataclass(frozen=True)
class UploadedImage:
    field: str
    data: bytes
    sha256: str
    media_type: str  # sniffed from the bytes, not taken from the client


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    images: list[UploadedImage] = field(default_factory=list)


@dataclass(frozen=True)
class FormSpec:
    """What one route accepts in a multipart body."""

    text_fields: frozenset[str]
    file_field: str
    max_files: int
    max_image_bytes: int
    max_text_bytes: int = 1024


def _field_problem(code: ErrorCode, name: str, message: str, kind: str) -> Problem:
    errors = [{"field": name, "message": message, "type": kind}]
    return Problem(code, f"{name}: {message}", errors=errors)


class _Collector:
    """python-multipart callbacks that build a ``Form`` and enforce ``FormSpec``."""

    def __init__(self, spec: FormSpec) -> None:
        self.spec = spec
        self.form = Form()
        self.ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._content_type = b""
        self._name = ""
        self._is_file = False
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._media_type: str | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._content_type = b""
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._media_type = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = bytes(self._header_name).lower()
        if name == b"content-disposition":
            self._disposition = bytes(self._header_value)
        elif name == b"content-type":
            self._content_type = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if disposition != b"form-data" or raw_name is None:
            raise Problem(
                ErrorCode.MALFORMED_REQUEST,
                "every part needs a Content-Disposition: form-data header with a name",
            )
        self._name = raw_name.decode("utf-8", errors="replace")
        spec = self.spec
        if self._name == spec.file_field:
            self._is_file = True
            if len(self.form.images) >= spec.max_files:
                raise _field_problem(
                    ErrorCode.TOO_MANY_IMAGES,
                    self._name,
                    f"at most {spec.max_files} file(s)",
                    "too_long",
                )
            declared, _ = parse_options_header(self._content_type)
            if declared and not (
                declared.startswith(b"image/") or declared == b"application/octet-stream"
            ):
                raise _field_problem(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    self._name,
                    f"declared as {declared.decode('latin-1')}; send a {ACCEPTED_FORMATS} image",
                    "media_type",
                )
        elif self._name in spec.text_fields:
            self._is_file = False
            if self._name in self.form.fields:
                raise _field_problem(
                    ErrorCode.INVALID_PAYLOAD, self._name, "given more than once", "duplicate"
                )
        else:
            raise _field_problem(
                ErrorCode.INVALID_PAYLOAD, self._name, "unknown field", "extra_forbidden"
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self._buffer += chunk
        if not self._is_file:
            if len(self._buffer) > self.spec.max_text_bytes:
                raise _field_problem(
                    ErrorCode.INVALID_PAYLOAD,
                    self._name,
                    f"longer than {self.spec.max_text_bytes} bytes",
                    "string_too_long",
                )
            return
        self._hash.update(chunk)
        if len(self._buffer) > self.spec.max_image_bytes:
            raise _field_problem(
                ErrorCode.IMAGE_TOO_LARGE,
                self._name,
                f"an image may have at most {self.spec.max_image_bytes} bytes",
                "too_large",
            )
        if self._media_type is None and len(self._buffer) >= SNIFF_BYTES:
            self._sniff()

    def _sniff(self) -> None:
        media_type = sniff_image(bytes(self._buffer[:SNIFF_BYTES]))
        if media_type is None:
            raise _field_problem(
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                self._name,
                f"not a {ACCEPTED_FORMATS} image",
                "media_type",
            )
        self._media_type = media_type

    def on_part_end(self) -> None:
        if not self._is_file:
            try:
                self.form.fields[self._name] = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise _field_problem(
                    ErrorCode.INVALID_PAYLOAD, self._name, "not UTF-8 text", "string_type"
                ) from None
            return
        if self._media_type is None:  # shorter than SNIFF_BYTES
            self._sniff()
        assert self._media_type is not None
        data = bytes(self._buffer)
        self._buffer = bytearray()  # drop the second copy now, not at the next part
        self.form.images.append(
            UploadedImage(self._name, data, self._hash.hexdigest(), self._media_type)
        )

    def on_end(self) -> None:
        self.ended = True


async def read_form(stream: AsyncIterator[bytes], content_type: str, spec: FormSpec) -> Form:
    """Parse a multipart body from ``stream`` under ``spec`` (Problem on any violation)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise Problem(ErrorCode.MALFORMED_REQUEST, "multipart/form-data without a boundary")
    collector = _Collector(spec)
    try:
        parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise Problem(ErrorCode.MALFORMED_REQUEST, f"malformed multipart body: {exc}") from None
    if not collector.ended:
        raise Problem(
            ErrorCode.MALFORMED_REQUEST, "the multipart body ended before its closing boundary"
        )
    return collector.form
