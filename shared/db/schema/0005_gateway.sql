-- The HTTP gateway: API keys, who submitted each job, and a transactional outbox of
-- webhook events.

-- API keys: the secret is shown once and stored only as a SHA-256 (it is 256 random
-- bits, so a slow password hash would add nothing).
CREATE TABLE api_keys (
    key_id         text PRIMARY KEY,
    name           text NOT NULL,
    secret_sha256  bytea NOT NULL,
    scopes         text[] NOT NULL CHECK (scopes <@ ARRAY['enroll', 'verify', 'identify', 'admin']),
    callback_url   text,
    -- Standard Webhooks signing secret (whsec_...), shown once with the key; the receiver
    -- checks signatures with it, so it is kept as is, like any shared HMAC key.
    webhook_secret text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    revoked_at     timestamptz
);

-- Which key submitted a job (never the secret), and the fingerprint of the request that
-- an Idempotency-Key stands for (same key, other request: refused).
ALTER TABLE jobs
    ADD COLUMN api_key_id text REFERENCES api_keys (key_id),
    ADD COLUMN request_fingerprint text;

-- Every audit entry of a job records the key that submitted it, filled in here so that no
-- writer of the audit log can forget it.
ALTER TABLE audit_log ADD COLUMN api_key_id text;

CREATE FUNCTION audit_log_submitter() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.api_key_id IS NULL AND NEW.job_id IS NOT NULL THEN
        SELECT api_key_id INTO NEW.api_key_id FROM jobs WHERE job_id = NEW.job_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_records_submitter BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_submitter();

-- Webhook outbox. An event row is written by the trigger below in the same transaction
-- that gives the job its outcome, whichever code path does it (worker, reconciler,
-- producer), so no outcome of a key with a callback goes unannounced.
CREATE TABLE webhook_events (
    event_id         uuid PRIMARY KEY,
    job_id           uuid NOT NULL,
    api_key_id       text NOT NULL REFERENCES api_keys (key_id),
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_events_job ON webhook_events (job_id);

-- One row per delivery attempt: what the receiver answered and how long it took.
CREATE TABLE webhook_attempts (
    attempt_id   bigserial PRIMARY KEY,
    event_id     uuid NOT NULL REFERENCES webhook_events (event_id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_code  integer,
    latency_ms   double precision,
    error        text
);
CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id);

CREATE FUNCTION jobs_webhook_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.api_key_id IS NOT NULL
       AND NEW.status IN ('succeeded', 'failed')
       AND OLD.status IN ('queued', 'running') THEN
        -- Decision and error code only: never embeddings, images or raw scores.
        INSERT INTO webhook_events (event_id, job_id, api_key_id, payload)
        SELECT gen_random_uuid(), NEW.job_id, k.key_id,
               jsonb_build_object(
                   'type', 'job.' || NEW.status,
                   'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                   'data', jsonb_strip_nulls(jsonb_build_object(
                       'job_id', NEW.job_id,
                       'kind', NEW.kind,
                       'status', NEW.status,
                       'decision', NEW.result ->> 'decision',
                       'error_code', NEW.error_code)))
        FROM api_keys k
        WHERE k.key_id = NEW.api_key_id AND k.callback_url IS NOT NULL AND k.revoked_at IS NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_webhook_outbox AFTER UPDATE OF status ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_webhook_outbox();
