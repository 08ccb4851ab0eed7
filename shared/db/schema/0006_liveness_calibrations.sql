-- Liveness thresholds per capture channel (mobile, web, kiosk, ...) and liveness model
-- version, produced by `faceauth liveness evaluate --save/--activate`. Versioned like the
-- face calibrations (0002): every save is a new row, at most one active row per channel
-- and model version. Holds no user data (scores of an evaluation set, never images or
-- embeddings), so erasure does not touch it.
-- Privileges: the migration runner (shared/db/migrations.py grant_app_role) grants the
-- application role DML on every table after applying the files, this one included.
CREATE TABLE liveness_calibrations (
    calibration_id  uuid PRIMARY KEY,
    channel         text NOT NULL CHECK (channel ~ '^[a-z][a-z0-9_-]{0,31}$'),
    model_name      text NOT NULL,
    model_version   text NOT NULL,
    threshold       double precision NOT NULL CHECK (threshold >= 0 AND threshold <= 1),
    report          jsonb NOT NULL,
    is_active       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX liveness_calibrations_single_active
    ON liveness_calibrations (channel, model_version) WHERE is_active;
