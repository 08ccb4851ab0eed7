-- Liveness sessions: a server-issued token for a step-up login. A client creates a
-- session (an expiry, a cap on attempts, optionally the user and the capture channel it
-- is for), submits 1..N frames to it as `liveness_check` jobs, and a passed session can
-- back one verification, whose probe is then the session's recorded frame.
-- The nonce is 256 random bits shown once at creation and stored only as its SHA-256
-- (like an API key's secret: a slow hash would add nothing).
CREATE TABLE liveness_sessions (
    session_id       uuid PRIMARY KEY,
    nonce_sha256     bytea NOT NULL,
    user_id          text,
    channel          text CHECK (channel ~ '^[a-z][a-z0-9_-]{0,31}$'),
    -- open: takes frames; passed: proven live, may back one verification; failed: its
    -- attempts ran out; consumed: a verification used it. Expiry is a time, not a status.
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'passed', 'failed', 'consumed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL CHECK (max_attempts > 0),
    expires_at       timestamptz NOT NULL,
    -- Every frame of its decided attempts (erasure deletes them with the session) and the
    -- frame a passed session proved live: the probe of the verification it backs.
    frame_keys       jsonb NOT NULL DEFAULT '[]'::jsonb,
    probe_image_key  text,
    -- The last attempt's decision and reason codes (never raw scores: they are audited).
    last_decision    text,
    last_reasons     jsonb NOT NULL DEFAULT '[]'::jsonb,
    last_job_id      uuid,
    consumed_by_job  uuid,
    api_key_id       text REFERENCES api_keys (key_id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    consumed_at      timestamptz,
    CHECK (status NOT IN ('passed', 'consumed') OR probe_image_key IS NOT NULL)
);
CREATE INDEX liveness_sessions_user ON liveness_sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX liveness_sessions_expiry ON liveness_sessions (expires_at);

-- Consecutive failed decisions about a person (spoof, faces differ, no match) per user,
-- and the cool-down they started. A success resets the count; erasure deletes the row.
CREATE TABLE attempt_counters (
    user_id               text PRIMARY KEY,
    consecutive_failures  integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    cooldown_until        timestamptz,
    last_failure_at       timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Privileges: the migration runner (shared/db/migrations.py grant_app_role) grants the
-- configured application role (FACEAUTH_DB_APP_ROLE) DML on every table after applying
-- the files, these two included. No GRANT names a role here: the role's name is a setting.
