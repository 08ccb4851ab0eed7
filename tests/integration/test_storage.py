"""Object storage through the minio SDK against the real S3 server."""

from __future__ import annotations

import urllib.request
from uuid import uuid4

import pytest
from pydantic import SecretStr

from shared.errors import ErrorCode, FaceauthError
from shared.storage import ImageStore

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def test_put_get_stat_presign_delete(live: LiveStack) -> None:
    store = ImageStore.from_settings(live.settings)
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    key = f"tests/{uuid4().hex}.bin"
    data = bytes(range(256)) * 100
    store.put(key, data, content_type="image/jpeg")
    assert store.get(key) == data
    info = store.stat(key)
    assert info.size == len(data) and info.content_type == "image/jpeg"
    with urllib.request.urlopen(store.presigned_get_url(key), timeout=10) as resp:
        assert resp.read() == data
    assert key in store.list_keys("tests/")
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting twice is fine


def test_missing_and_oversize(live: LiveStack) -> None:
    store = ImageStore.from_settings(live.settings)
    with pytest.raises(FaceauthError) as info:
        store.get("tests/none.jpg")
    assert info.value.code is ErrorCode.IMAGE_NOT_FOUND and not info.value.transient
    key = store.put(f"tests/{uuid4().hex}", b"x" * 2000)
    with pytest.raises(FaceauthError) as info:
        store.get(key, max_bytes=1000)
    assert info.value.code is ErrorCode.IMAGE_TOO_LARGE


def test_wrong_credentials_are_refused(live: LiveStack) -> None:
    bad = live.settings.model_copy(update={"s3_secret_key": SecretStr("wrong")})
    with pytest.raises(FaceauthError) as info:
        ImageStore.from_settings(bad).get("tests/anything.jpg")
    assert info.value.code is ErrorCode.STORAGE_UNAVAILABLE


def test_unreachable_storage_is_transient(live: LiveStack) -> None:
    down = live.settings.model_copy(update={"s3_endpoint": "127.0.0.1:9"})
    with pytest.raises(FaceauthError) as info:
        ImageStore.from_settings(down).get("tests/anything.jpg")
    assert info.value.transient
