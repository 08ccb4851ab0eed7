"""One settings object for every process, read from ``FACEAUTH_*`` environment variables.

Every field is documented in README.md ("Configuration"); keep the two in step
(tests/test_config.py checks that each field is mentioned there).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_FACE_PACK_DIR = Path.home() / ".insightface" / "models" / "buffalo_l"


class Settings(BaseSettings):
    """Runtime configuration. Credentials have no usable defaults: they come from the env."""

    model_config = SettingsConfigDict(
        env_prefix="FACEAUTH_", env_file=None, extra="ignore", frozen=True
    )

    # --- queues -------------------------------------------------------------------------------
    broker_url: str = Field("redis://localhost:6379/0", description="Celery broker (Redis)")
    result_backend_url: str = Field(
        "redis://localhost:6379/1", description="Celery result backend (Redis)"
    )
    queue_inference: str = Field("faceauth.inference", description="queue for GPU inference tasks")
    queue_io: str = Field("faceauth.io", description="queue for CPU / IO tasks")
    dead_letter_key: str = Field(
        "faceauth.dead_letter",
        description="Redis list where a worker puts messages that are not valid task envelopes",
    )
    dead_letter_max: int = Field(10_000, ge=0, description="most messages kept in dead_letter_key")
    # 8 full-jitter retries (1 s floor, cap 60 s) span ~100 s on average and at least 8 s,
    # so a short S3 or Postgres restart does not exhaust them.
    task_max_retries: int = Field(8, description="retries for transient faults (S3/DB down)")
    task_retry_backoff_max_s: int = Field(60, description="cap on exponential retry backoff")
    task_time_limit_s: int = Field(300, description="hard time limit per task")
    broker_visibility_timeout_s: int = Field(
        3600, description="seconds before an unacknowledged message is redelivered"
    )

    # --- delivery: Postgres is the source of truth, the broker only a transport -------------
    job_lease_s: int = Field(
        60,
        ge=2,
        description="a running job's lease; renewed every third of it while the job works, and"
        " a job whose lease ran out (its worker died) is re-published",
    )
    job_queued_timeout_s: int = Field(
        120,
        ge=1,
        description="a queued job not started within this is re-published (its message is"
        " presumed lost); the wait doubles after each re-publication",
    )
    job_max_publishes: int = Field(
        6,
        ge=1,
        description="a job published this many times without an outcome ends failed with"
        " delivery_attempts_exhausted",
    )
    reconcile_interval_s: float = Field(
        5.0, gt=0, description="how often a worker's reconciler looks for stranded jobs"
    )
    reconciler_enabled: bool = Field(
        True, description="run the reconciler in this worker's main process"
    )

    # --- database -----------------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql://faceauth_app@localhost:5432/faceauth"),
        description="PostgreSQL DSN of the application role (libpq URI or key=value)",
    )
    migration_database_url: SecretStr | None = Field(
        None,
        description="DSN of the owner role that runs `faceauth db migrate` (unset ="
        " FACEAUTH_DATABASE_URL)",
    )
    db_app_role: str = Field(
        "faceauth_app",
        description="role that migrations grant the application's privileges to (no ownership)",
    )
    db_pool_min_size: int = Field(1, description="connections kept open per process")
    db_pool_max_size: int = Field(4, description="connection ceiling per process")

    # --- object storage -----------------------------------------------------------------------
    s3_endpoint: str = Field("localhost:9000", description="host:port of MinIO / S3")
    s3_access_key: SecretStr = Field(SecretStr(""), description="S3 access key")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key")
    s3_bucket: str = Field("faceauth-images", description="bucket holding source images")
    s3_secure: bool = Field(False, description="use TLS to reach S3")
    s3_region: str = Field("us-east-1", description="S3 region name")
    presigned_url_ttl_s: int = Field(900, description="lifetime of presigned image URLs")

    # --- image limits (decompression-bomb guards) ---------------------------------------------
    max_image_bytes: int = Field(15 * 1024 * 1024, description="largest accepted encoded image")
    max_image_pixels: int = Field(40_000_000, description="largest accepted width x height")

    # --- models -------------------------------------------------------------------------------
    face_pack_dir: Path = Field(
        DEFAULT_FACE_PACK_DIR, description="InsightFace model pack (detector + recognizer)"
    )
    face_pack_version: str | None = Field(
        None, description="label stored as model_version instead of the file-hash version"
    )
    face_det_size: int = Field(640, description="detector input side (SCRFD letterbox)")
    probe_det_size: int | None = Field(
        None,
        description="detector input side for verification and identification probes (close-up"
        " selfies: 320 detects them ~4x faster); unset = FACEAUTH_FACE_DET_SIZE",
    )
    previous_face_pack_dir: Path | None = Field(
        None, description="during a model migration: the old pack, to verify not-yet-migrated users"
    )
    previous_face_pack_version: str | None = Field(
        None, description="label of the old pack's model_version (if it was relabelled)"
    )
    liveness_model_dir: Path | None = Field(
        None, description="folder with the deployed liveness ONNX file(s) and liveness.json"
    )
    ort_providers: list[str] | None = Field(
        None, description="ONNX Runtime providers; default: CUDA when available, else CPU"
    )
    worker_load_models_at_start: bool = Field(
        True,
        description="an inference worker loads and checks its face pack and liveness model"
        " when it starts and stops on a model error (turn off for IO-only workers)",
    )
    worker_ready_file: Path | None = Field(
        None,
        description="file a worker writes once its start checks (schema, models) passed and"
        " removes when it stops; container healthchecks test for it",
    )
    batch_max_size: int = Field(
        1,
        ge=1,
        description="largest detector, recognizer or liveness run across the jobs in flight in"
        " one worker process (>1 with `--pool threads --concurrency N`; 1 = one job per run)",
    )
    worker_jobs_in_flight: int | None = Field(
        None,
        ge=1,
        description="jobs one worker process keeps in flight; above 1 the worker runs Celery's"
        " threads pool so their model calls can be batched (unset: --pool/--concurrency decide)",
    )
    batch_max_wait_ms: float = Field(
        5.0, ge=0, description="longest a model call waits for other jobs' faces to fill a batch"
    )
    ort_intra_op_threads: int = Field(
        default=0, ge=0, description="ONNX Runtime threads per session; 0 = ORT default (all cores)"
    )

    # --- quality gate (enrollment notebook defaults) -----------------------------------------
    min_det_score: float = Field(0.5, description="lowest detector confidence")
    min_face_width_px: int = Field(90, description="narrowest accepted face box")
    min_blur_variance: float = Field(8.0, description="lowest Laplacian variance on the face")
    min_brightness: float = Field(25.0, description="darkest accepted mean face brightness")
    max_brightness: float = Field(235.0, description="brightest accepted mean face brightness")
    min_face_area_ratio: float = Field(0.02, description="face box area / image area")
    min_aligned_crop_coverage: float = Field(
        0.9, description="share of the aligned face that must lie inside the photo"
    )
    pose_gate_enabled: bool = Field(True, description="reject on head pose")
    max_abs_yaw_deg: float = Field(30.0, description="largest accepted |yaw|")
    max_abs_pitch_deg: float = Field(20.0, description="largest accepted |pitch|")
    pose_source: Literal["auto", "landmark_3d", "face_mesh", "five_point"] = Field(
        "auto",
        description="head pose from: auto = the pack's 3D landmarks (1k3d68) when present, else"
        " MediaPipe's face mesh when installed, else the 5 detector keypoints; or force one"
        " (an unavailable source falls back to five_point)",
    )
    eyes_closed_gate_enabled: bool = Field(
        True, description="reject closed eyes (needs 3D landmarks or the face mesh)"
    )
    # Open eyes on the shared photos read >= 0.188, eyes painted shut <= 0.15 (tests).
    min_eye_aspect_ratio: float = Field(
        0.16, description="lowest mean eye aspect ratio (lid gap / eye width, yaw-corrected)"
    )
    mask_gate_enabled: bool = Field(True, description="reject a covered mouth (face mask)")
    # Skin shares on the shared photos: bare mouths >= 0.76, masks worn (synthetic) <= 0.22.
    min_mouth_skin_fraction: float = Field(
        0.4, description="lowest skin-coloured share of the mouth and chin region"
    )
    sunglasses_gate_enabled: bool = Field(True, description="reject both eyes covered (sunglasses)")
    # Better-visible eye on the shared photos >= 0.53, synthetic dark lenses <= 0.27.
    min_eye_skin_fraction: float = Field(
        0.4, description="lowest skin-coloured share around the better-visible eye"
    )
    occlusion_gate_enabled: bool = Field(
        True, description="reject one eye, the nose or the mouth covered by something"
    )
    # Lowest region on the shared photos 0.27 (an over-exposed tablet replay), covered <= 0.02.
    min_region_skin_fraction: float = Field(
        0.2, description="lowest skin-coloured share of any one eye, nose or mouth region"
    )

    # --- enrollment ---------------------------------------------------------------------------
    enroll_min_images: int = Field(1, description="fewest images in one enrollment")
    enroll_max_images: int = Field(3, description="most images in one enrollment")
    enroll_same_person_min_similarity: float = Field(
        0.3, description="every pair of enrollment images must be at least this similar"
    )

    # --- retention ----------------------------------------------------------------------------
    source_image_retention_days: int = Field(
        0,
        ge=0,
        description="delete source images of users who opted out of re-embedding after this"
        " many days (0 = keep forever)",
    )

    # --- liveness -----------------------------------------------------------------------------
    liveness_enabled: bool = Field(True, description="score liveness when a model is deployed")
    # 0.6 sits between the highest live web photo (0.50) and the printed poster (0.71) of
    # the MiniFASNet pair on the sample set; recalibrate on your own capture channel.
    liveness_threshold: float = Field(0.6, description="spoof score above which a face is refused")

    # --- liveness sessions and attempt limits -------------------------------------------------
    # 5 minutes: room to capture a few frames and verify, short enough that a passed session
    # is still a fresh presence proof (AWS Face Liveness sessions last 3 minutes).
    liveness_session_ttl_s: float = Field(
        300.0,
        gt=0,
        description="a liveness session's lifetime; a client may ask for a shorter one",
    )
    liveness_session_max_attempts: int = Field(
        3,
        ge=1,
        description="decided frame submissions one liveness session takes before it fails;"
        " a client may ask for fewer",
    )
    liveness_session_max_frames: int = Field(
        8, ge=1, le=32, description="most frames in one submission to a liveness session"
    )
    # NIST SP 800-63B (5.2.3) caps consecutive failed biometric attempts at 5 (10 with PAD);
    # 15 minutes matches FACEAUTH_GATEWAY_VERIFY_FAILURES_LIMIT.
    attempt_max_failures: int = Field(
        5,
        ge=1,
        description="consecutive failed liveness or verification decisions of a user that"
        " start a cool-down",
    )
    attempt_cooldown_s: float = Field(
        900.0,
        gt=0,
        description="how long a user's verifications and liveness checks are refused"
        " (too_many_attempts) after FACEAUTH_ATTEMPT_MAX_FAILURES failures",
    )

    # --- decisions (defaults until a calibration is activated) -------------------------------
    verify_t_low: float = Field(0.28, description="reject below this cosine similarity")
    verify_t_high: float = Field(0.40, description="accept above this cosine similarity")
    duplicate_threshold: float = Field(
        0.45, description="mean-template similarity that flags a duplicate identity"
    )
    duplicate_max_matches: int = Field(
        20, ge=1, le=100, description="most other accounts listed in duplicate_of"
    )
    duplicate_action: Literal["flag", "reject"] = Field(
        "flag", description="what a duplicate identity does to an enrollment"
    )
    # 128: recall@1 0.97 at 1M vectors (0.87 at 64) for ~28 ms p50; see README benchmarks.
    hnsw_ef_search: int = Field(128, description="pgvector hnsw.ef_search for 1:N search")
    # A new model version's index kind; an existing version keeps its own until
    # `faceauth model search-index KIND` rebuilds it (see README "1:N at a million users").
    search_index: Literal["vector", "halfvec", "bit"] = Field(
        "vector",
        description="1:N index of a new model version: vector (full precision), halfvec "
        "(half the index memory) or bit (binary quantization, exact re-rank)",
    )
    search_rerank_candidates: int = Field(
        100,
        ge=1,
        le=1000,
        description="rows a quantized (halfvec/bit) index walk yields for exact re-ranking",
    )
    identify_top_k: int = Field(
        5,
        ge=1,
        le=100,
        description="candidates a 1:N search returns when the request names no top_k (1-100)",
    )

    # --- HTTP gateway -------------------------------------------------------------------------
    gateway_host: str = Field("127.0.0.1", description="address the HTTP gateway listens on")
    gateway_port: int = Field(8080, ge=1, le=65535, description="port of the HTTP gateway")
    gateway_workers: int = Field(1, ge=1, description="uvicorn worker processes of the gateway")
    gateway_max_request_bytes: int = Field(
        50 * 1024 * 1024,
        description="largest request body; a larger upload is refused with 413 while streaming",
    )
    gateway_wait_max_s: float = Field(
        30.0, gt=0, description="longest `wait` a request may ask for before the answer is 202"
    )
    gateway_rate_limit: str = Field(
        "50/second", description="requests per API key (limits notation, e.g. 50/second)"
    )
    gateway_verify_failures_limit: str = Field(
        "5/15 minutes",
        description="failed verifications per user_id before 429 (nobody grinds a threshold)",
    )
    # --- webhooks -----------------------------------------------------------------------------
    webhook_timeout_s: float = Field(10.0, gt=0, description="timeout of one webhook POST")
    webhook_max_attempts: int = Field(
        15, ge=1, description="delivery attempts of one webhook event before it is failed"
    )
    webhook_backoff_max_s: float = Field(
        3600.0, gt=0, description="longest wait between two attempts (exponential, full jitter)"
    )
    webhook_allow_private_networks: bool = Field(
        False,
        description="allow callback URLs that resolve to private, loopback, link-local or"
        " metadata addresses (dev and tests only: SSRF)",
    )

    # --- monitoring ---------------------------------------------------------------------------
    flower_user: str = Field("admin", description="Flower basic-auth user")
    flower_password: SecretStr = Field(SecretStr(""), description="Flower basic-auth password")
    metrics_port: int = Field(0, description="Prometheus port per worker (0 = off)")
    log_level: str = Field("INFO", description="log level of workers and CLI")

    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()

    def migration_dsn(self) -> str:
        """The owner role's DSN for migrations (the application DSN when unset)."""
        url = self.migration_database_url or self.database_url
        return url.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings()
