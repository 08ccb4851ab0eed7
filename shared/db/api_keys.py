"""The ``api_keys`` table: HTTP gateway credentials, stored as hashes, with scopes.

A key reads ``fa_<key id>_<secret>``: the id is public (it is what job rows, audit
entries and logs record), the secret is 256 random bits shown once and kept only as its
SHA-256, compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import dict_row

KEY_PREFIX = "fa"


class Scope(StrEnum):
    ENROLL = "enroll"
    VERIFY = "verify"
    IDENTIFY = "identify"
    ADMIN = "admin"  # erasure, quality scans, raw scores, every other scope


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[Scope]
    callback_url: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of ``fa_<id>_<secret>``, or None when it is not of that shape."""
    prefix, sep, rest = token.partition("_")
    if prefix != KEY_PREFIX or not sep:
        return None
    key_id, sep, secret = rest.partition("_")
    if not sep or not key_id or not secret or len(token) > 200:
        return None
    return key_id, secret


def _key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        scopes=frozenset(Scope(s) for s in row["scopes"]),
        callback_url=row["callback_url"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


_COLUMNS = "key_id, name, scopes, callback_url, created_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class NewKey:
    """A key just created: the token and the webhook secret exist in clear only here."""

    key: ApiKey
    token: str  # fa_<key id>_<secret>: what the client sends
    webhook_secret: str | None  # whsec_...: what the client's receiver verifies with


def create_key(
    conn: psycopg.Connection,
    *,
    name: str,
    scopes: set[Scope],
    callback_url: str | None = None,
) -> NewKey:
    """Store a new key; its token (and webhook secret) are returned only now."""
    if not scopes:
        raise ValueError("an API key needs at least one scope")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    webhook_secret = None
    if callback_url is not None:
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO api_keys"
            " (key_id, name, secret_sha256, scopes, callback_url, webhook_secret)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (
                key_id,
                name,
                _digest(secret),
                sorted(str(s) for s in scopes),
                callback_url,
                webhook_secret,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    return NewKey(_key(row), f"{KEY_PREFIX}_{key_id}_{secret}", webhook_secret)


def webhook_secret(conn: psycopg.Connection, key_id: str) -> str | None:
    row = conn.execute(
        "SELECT webhook_secret FROM api_keys WHERE key_id = %s", (key_id,)
    ).fetchone()
    return str(row[0]) if row and row[0] else None


def authenticate(conn: psycopg.Connection, token: str) -> ApiKey | None:
    """The live key the token belongs to, or None (unknown, wrong secret or revoked).

    ``last_used_at`` is written at most once a minute per key, so a busy key does not
    turn every request into a row update.
    """
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS}, secret_sha256 FROM api_keys WHERE key_id = %s", (key_id,))
        row = cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row["secret_sha256"]), _digest(secret)):
        return None
    if row["revoked_at"] is not None:
        return None
    conn.execute(
        "UPDATE api_keys SET last_used_at = now() WHERE key_id = %s"
        " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (key_id,),
    )
    return _key(row)


def get_key(conn: psycopg.Connection, key_id: str) -> ApiKey | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,))
        row = cur.fetchone()
    return _key(row) if row else None


def list_keys(conn: psycopg.Connection) -> list[ApiKey]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")
        return [_key(r) for r in cur.fetchall()]


def revoke_key(conn: psycopg.Connection, key_id: str) -> bool:
    """Revoke now (the next request with it is refused); False when no live key has that id."""
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    )
    return cur.rowcount == 1
