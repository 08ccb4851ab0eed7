-- Core schema: users, model versions, templates (pgvector), enrollments, jobs, audit log.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE users (
    user_id          text PRIMARY KEY,
    reembed_opt_out  boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per embedding model version; its dimension comes from the model itself.
CREATE TABLE model_versions (
    model_version  text PRIMARY KEY,
    model_name     text NOT NULL,
    embedding_dim  integer NOT NULL CHECK (embedding_dim > 0),
    is_active      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX model_versions_single_active ON model_versions (is_active) WHERE is_active;

CREATE TABLE jobs (
    job_id           uuid PRIMARY KEY,
    kind             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    idempotency_key  text UNIQUE,
    user_id          text,
    image_refs       jsonb NOT NULL DEFAULT '[]'::jsonb,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    result           jsonb,
    error_code       text,
    error_message    text,
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_status_created ON jobs (status, created_at);
CREATE INDEX jobs_user ON jobs (user_id);

-- One row per successful enrollment (the job that wrote the templates).
CREATE TABLE enrollments (
    enrollment_id     uuid PRIMARY KEY,
    user_id           text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    model_version     text NOT NULL REFERENCES model_versions (model_version),
    n_images          integer NOT NULL,
    liveness_checked  boolean NOT NULL,
    duplicate_of      jsonb NOT NULL DEFAULT '[]'::jsonb,
    is_active         boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX enrollments_user ON enrollments (user_id, model_version) WHERE is_active;

-- The vector column has no fixed dimension so several model versions can live side by
-- side during a migration; each version gets its own HNSW index over
-- (embedding::vector(dim)) restricted to its rows (created by the application when the
-- version is registered, see shared/db/templates.py).
CREATE TABLE templates (
    template_id        uuid PRIMARY KEY,
    user_id            text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    enrollment_id      uuid NOT NULL REFERENCES enrollments (enrollment_id) ON DELETE CASCADE,
    embedding          vector NOT NULL,
    is_mean_template   boolean NOT NULL,
    model_name         text NOT NULL,
    model_version      text NOT NULL REFERENCES model_versions (model_version),
    quality            jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_image_key   text,
    is_active          boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    deactivated_at     timestamptz
);
CREATE INDEX templates_user_version_active ON templates (user_id, model_version) WHERE is_active;

-- Append-only record of decisions and administrative actions. Never holds embeddings
-- or images.
CREATE TABLE audit_log (
    audit_id  bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    event     text NOT NULL,
    user_id   text,
    job_id    uuid,
    details   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_user ON audit_log (user_id, at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
