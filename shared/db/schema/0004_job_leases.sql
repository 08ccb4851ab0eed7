-- Delivery bookkeeping: Postgres, not the broker, decides whether a job still needs a
-- message. A queued job whose message was lost, or a running job whose worker died,
-- has an expired lease; the reconciler publishes it again (counted in publish_count).
ALTER TABLE jobs
    ADD COLUMN lease_expires_at   timestamptz,
    ADD COLUMN lease_owner        uuid,
    ADD COLUMN publish_count      integer NOT NULL DEFAULT 0,
    ADD COLUMN last_published_at  timestamptz;

-- Rows from before this migration that have no outcome yet are looked at on the next sweep.
UPDATE jobs SET lease_expires_at = now(), publish_count = 1
    WHERE status IN ('queued', 'running');

CREATE INDEX jobs_unfinished_lease ON jobs (lease_expires_at)
    WHERE status IN ('queued', 'running');
