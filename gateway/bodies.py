"""Request bodies of the submission routes: multipart uploads or JSON object keys.

Each route accepts either

- ``multipart/form-data``: text fields plus image files (streamed, see ``uploads``), or
- ``application/json``: the same fields with object keys of images already in the bucket
  (for services that upload to S3 themselves; unknown fields refused).

Both end as a ``ParsedBody``: validated fields, the images (bytes or keys) and what the
request fingerprint needs. Anything else is 415.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from python_multipart.multipart import parse_options_header

from gateway.fingerprint import request_fingerprint
from gateway.problems import Problem, field_errors, invalid
from gateway.uploads import FormSpec, read_form
from shared.config import Settings
from shared.errors import ErrorCode
from shared.schemas import CHANNEL_PATTERN, USER_ID_PATTERN, ImageKey, JobKind

# JSON bodies carry object keys, never pixels: a few KiB is plenty.
JSON_MAX_BYTES = 64 * 1024
QUALITY_SCAN_MAX_IMAGES = 256  # QualityScanRequest's own limit


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnrollFields(_Fields):
    user_id: str = Field(pattern=USER_ID_PATTERN, description="who is enrolled")
    liveness: bool = Field(True, description="score liveness (false only for back-office photos)")
    channel: str | None = Field(
        None, pattern=CHANNEL_PATTERN, description="capture channel: its liveness threshold decides"
    )


class EnrollJson(EnrollFields):
    image_keys: list[ImageKey] = Field(
        min_length=1, max_length=32, description="object keys of 1-3 photos in the bucket"
    )


class VerifyFields(_Fields):
    user_id: str = Field(pattern=USER_ID_PATTERN, description="the claimed identity")
    liveness: bool = True
    channel: str | None = Field(
        None, pattern=CHANNEL_PATTERN, description="capture channel: its liveness threshold decides"
    )
    liveness_session_id: UUID | None = Field(
        None,
        description="a passed liveness session of this key: its frame is the probe (send no"
        " image), and the session is used up",
    )


class VerifyJson(VerifyFields):
    image_key: ImageKey | None = Field(
        None, description="object key of the probe photo in the bucket"
    )


class IdentifyFields(_Fields):
    top_k: int | None = Field(None, ge=1, le=100, description="candidates to return")
    liveness: bool = True
    channel: str | None = Field(
        None, pattern=CHANNEL_PATTERN, description="capture channel: its liveness threshold decides"
    )


class IdentifyJson(IdentifyFields):
    image_key: ImageKey


class QualityScanFields(_Fields):
    pass


class LivenessCheckFields(_Fields):
    nonce: str = Field(
        min_length=16, max_length=128, description="the nonce returned when the session was made"
    )


class LivenessCheckJson(LivenessCheckFields):
    image_keys: list[ImageKey] = Field(
        min_length=1, max_length=32, description="object keys of the frames in the bucket"
    )


class QualityScanJson(QualityScanFields):
    image_keys: list[ImageKey] = Field(min_length=1, max_length=QUALITY_SCAN_MAX_IMAGES)


@dataclass(frozen=True)
class BodySpec:
    """One route's body: its kind, form fields, JSON model and where the images go."""

    kind: JobKind
    form_fields: type[_Fields]
    json_model: type[_Fields]
    file_field: str  # multipart field of the image file(s)
    key_field: str  # JSON field of the object key(s)
    many: bool  # a list of images (enrollment, quality scan) or one
    # The image may be left out (a verification naming a liveness session instead).
    optional: bool = False

    def image_bounds(self, settings: Settings) -> tuple[int, int]:
        if self.kind is JobKind.ENROLL:
            return settings.enroll_min_images, settings.enroll_max_images
        if self.kind is JobKind.QUALITY_SCAN:
            return 1, QUALITY_SCAN_MAX_IMAGES
        if self.kind is JobKind.LIVENESS_CHECK:
            return 1, settings.liveness_session_max_frames
        return (0 if self.optional else 1), 1


ENROLL = BodySpec(JobKind.ENROLL, EnrollFields, EnrollJson, "images", "image_keys", True)
VERIFY = BodySpec(
    JobKind.VERIFY, VerifyFields, VerifyJson, "image", "image_key", False, optional=True
)
IDENTIFY = BodySpec(JobKind.IDENTIFY, IdentifyFields, IdentifyJson, "image", "image_key", False)
QUALITY_SCAN = BodySpec(
    JobKind.QUALITY_SCAN, QualityScanFields, QualityScanJson, "images", "image_keys", True
)
LIVENESS_CHECK = BodySpec(
    JobKind.LIVENESS_CHECK, LivenessCheckFields, LivenessCheckJson, "frames", "image_keys", True
)


@dataclass(frozen=True)
class ParsedBody:
    fields: dict[str, Any]  # validated text fields, defaults filled in (no image keys)
    images: list[bytes | str]  # uploaded bytes, or object keys from a JSON body
    fingerprint: str


async def read_body(request: Request, spec: BodySpec, settings: Settings) -> ParsedBody:
    """The route's body from either content type; Problem for anything wrong with it."""
    media_type, _ = parse_options_header(request.headers.get("content-type", ""))
    if media_type == b"multipart/form-data":
        return await _from_form(request, spec, settings)
    if media_type == b"application/json" or media_type.endswith(b"+json"):
        return await _from_json(request, spec, settings)
    shown = media_type.decode("latin-1") or "none"
    raise Problem(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        f"send multipart/form-data (uploads) or application/json (object keys), not {shown}",
    )


async def _from_form(request: Request, spec: BodySpec, settings: Settings) -> ParsedBody:
    low, high = spec.image_bounds(settings)
    form_spec = FormSpec(
        text_fields=frozenset(spec.form_fields.model_fields),
        file_field=spec.file_field,
        max_files=high,
        max_image_bytes=settings.max_image_bytes,
    )
    form = await read_form(request.stream(), request.headers["content-type"], form_spec)
    fields = _validate(spec.form_fields, form.fields).model_dump(mode="json")
    _check_count(spec, len(form.images), low, high)
    hashes = [image.sha256 for image in form.images]
    return ParsedBody(
        fields=fields,
        images=[image.data for image in form.images],
        fingerprint=request_fingerprint(spec.kind, fields, hashes),
    )


async def _from_json(request: Request, spec: BodySpec, settings: Settings) -> ParsedBody:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > JSON_MAX_BYTES:
            raise Problem(
                ErrorCode.REQUEST_TOO_LARGE,
                f"a JSON body may have at most {JSON_MAX_BYTES} bytes (it carries object keys;"
                " upload images as multipart/form-data)",
            )
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(ErrorCode.MALFORMED_REQUEST, f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Problem(ErrorCode.MALFORMED_REQUEST, "the JSON body must be an object")
    model = _validate(spec.json_model, document)
    everything = model.model_dump(mode="json")
    keys = everything.pop(spec.key_field)
    images: list[bytes | str] = list(keys) if spec.many else ([] if keys is None else [keys])
    low, high = spec.image_bounds(settings)
    _check_count(spec, len(images), low, high, field=spec.key_field)
    # The keys are part of what the request is: same fields, other keys = another request.
    fingerprint = request_fingerprint(spec.kind, {**everything, spec.key_field: keys}, [])
    return ParsedBody(fields=everything, images=images, fingerprint=fingerprint)


def _validate(model: type[_Fields], data: dict[str, Any]) -> _Fields:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(field_errors(exc.errors())) from None


def _check_count(spec: BodySpec, n: int, low: int, high: int, *, field: str | None = None) -> None:
    name = field or spec.file_field
    if n < low:
        code = ErrorCode.TOO_FEW_IMAGES if spec.many else ErrorCode.INVALID_PAYLOAD
        noun = "image" if low == 1 else "images"
        errors = [{"field": name, "message": f"at least {low} {noun} needed", "type": "missing"}]
        raise Problem(code, f"{name}: at least {low} {noun} needed, got {n}", errors=errors)
    if n > high:
        errors = [{"field": name, "message": f"at most {high} image(s)", "type": "too_long"}]
        raise Problem(
            ErrorCode.TOO_MANY_IMAGES, f"{name}: at most {high} image(s), got {n}", errors=errors
        )
