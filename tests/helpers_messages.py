"""Raw Celery protocol-2 task messages as kombu's Redis transport stores them in a list.

Tests push these (and broken variants) straight onto a queue with LPUSH, the way a
buggy or hostile producer could, bypassing every client-side check.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from uuid import uuid4


def task_envelope(
    task: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    task_id: str | None = None,
    queue: str = "faceauth.inference",
    content_type: str = "application/json",
) -> dict[str, Any]:
    task_id = task_id or str(uuid4())
    body = json.dumps([args or [], kwargs or {}, {"callbacks": None, "errbacks": None}])
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timelimit": [None, None],
            "argsrepr": "()",
            "kwargsrepr": "{}",
            "origin": "test",
            "ignore_result": False,
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "faceauth", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid4()),
        },
    }


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()
