"""Image storage over the ``minio`` SDK (MinIO in production, any S3 server in dev).

Object keys are the "image references" producers put in jobs. Connection
faults become ``TransientError`` (retried); a missing key is a permanent
``image_not_found``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import urllib3
from minio import Minio
from minio.error import S3Error

from shared.config import Settings
from shared.errors import ErrorCode, FaceauthError, TransientError

log = logging.getLogger(__name__)

_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NotFound"}


def user_image_prefix(user_id: str) -> str:
    """Where a user's enrollment images are stored (``enroll/<user_id>/``).

    Producers (``FaceauthClient.submit_enrollment``, the backfill) upload under it and
    the erasure job deletes everything under it: one definition, so no upload path can
    escape a deletion.
    """
    return f"enroll/{user_id}/"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    content_type: str | None
    last_modified: datetime | None


class ImageStore:
    """put / get / stat / delete / presign for one bucket."""

    def __init__(self, client: Minio, bucket: str, *, presign_ttl_s: int = 900) -> None:
        self._client = client
        self.bucket = bucket
        self._presign_ttl = timedelta(seconds=presign_ttl_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageStore:
        # Short timeouts and few urllib3 retries: Celery owns the retry policy.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=30),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(502, 503, 504)),
            maxsize=8,
        )
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )
        return cls(client, settings.s3_bucket, presign_ttl_s=settings.presigned_url_ttl_s)

    # --- bucket -------------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._translate(exc, self.bucket) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    # --- objects ------------------------------------------------------------------------------
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        try:
            self._client.put_object(
                self.bucket, key, io.BytesIO(data), length=len(data), content_type=content_type
            )
        except S3Error as exc:
            raise self._translate(exc, key) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return key

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Read an object; refuse (without downloading) one larger than ``max_bytes``."""
        if max_bytes is not None:
            info = self.stat(key)
            if info.size > max_bytes:
                raise FaceauthError(
                    ErrorCode.IMAGE_TOO_LARGE,
                    f"object {key!r} is {info.size} bytes; the limit is {max_bytes}",
                    key=key,
                    n_bytes=info.size,
                    limit=max_bytes,
                )
        try:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except S3Error as exc:
            raise self._translate(exc, key) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            raise self._translate(exc, key) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return ObjectInfo(
            key=key,
            size=int(st.size or 0),
            etag=str(st.etag or ""),
            content_type=st.content_type,
            last_modified=st.last_modified,
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except FaceauthError as exc:
            if exc.code is ErrorCode.IMAGE_NOT_FOUND:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, key)
        except S3Error as exc:
            if exc.code not in _MISSING_CODES:
                raise self._translate(exc, key) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def list_keys(self, prefix: str) -> list[str]:
        try:
            return [
                str(obj.object_name)
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name is not None
            ]
        except S3Error as exc:
            raise self._translate(exc, prefix) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def presigned_get_url(self, key: str) -> str:
        return str(self._client.presigned_get_object(self.bucket, key, expires=self._presign_ttl))

    # --- error mapping ------------------------------------------------------------------------
    @staticmethod
    def _translate(exc: S3Error, key: str) -> FaceauthError:
        if exc.code in _MISSING_CODES:
            return FaceauthError(
                ErrorCode.IMAGE_NOT_FOUND, f"no object {key!r} in image storage", key=key
            )
        if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            # A credentials problem is a deployment fault; retrying cannot fix it, but the
            # job did nothing wrong either, so it is surfaced as storage_unavailable.
            return FaceauthError(
                ErrorCode.STORAGE_UNAVAILABLE, f"image storage refused access ({exc.code})"
            )
        return TransientError(ErrorCode.STORAGE_UNAVAILABLE, f"image storage error ({exc.code})")

    @staticmethod
    def _unavailable(exc: BaseException) -> TransientError:
        log.warning("image storage unreachable: %s", type(exc).__name__)
        return TransientError(
            ErrorCode.STORAGE_UNAVAILABLE, f"image storage unreachable ({type(exc).__name__})"
        )
