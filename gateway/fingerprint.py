"""The request fingerprint an Idempotency-Key stands for (IETF Idempotency-Key draft).

SHA-256 over the job kind, the request's fields (validated, defaults filled in, so
``liveness`` omitted and ``liveness=true`` are the same request) and the SHA-256 of each
uploaded image in order. Fields that are unset (None) are left out, so an optional field
added in a later release does not change the fingerprint of requests that don't use it:
a client retrying across an upgrade is still recognised. The same key with another
fingerprint is refused with ``idempotency_key_reused``; images themselves never leave this
function, only their hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from shared.schemas import JobKind


def request_fingerprint(
    kind: JobKind, fields: Mapping[str, Any], image_sha256: Sequence[str]
) -> str:
    present = {name: value for name, value in fields.items() if value is not None}
    document = {"kind": str(kind), "fields": present, "images": list(image_sha256)}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scoped_idempotency_key(key_id: str, header: str) -> str:
    """What the job row stores: the header scoped by the API key, so that two tenants who
    pick the same Idempotency-Key never meet each other's job."""
    return f"{key_id}:{header}"
