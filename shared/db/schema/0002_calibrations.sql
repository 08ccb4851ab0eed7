-- Decision thresholds per model version, produced by `faceauth calibrate`.
CREATE TABLE calibrations (
    calibration_id  uuid PRIMARY KEY,
    model_version   text NOT NULL,
    t_low           double precision NOT NULL,
    t_high          double precision NOT NULL CHECK (t_high >= t_low),
    report          jsonb NOT NULL,
    is_active       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX calibrations_single_active ON calibrations (model_version) WHERE is_active;
