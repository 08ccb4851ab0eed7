-- Least privilege: the application role (workers, producers, CLI) owns nothing, so it
-- cannot CREATE INDEX on templates. Registering a model version builds the version's
-- partial HNSW index through this function instead; it runs with the rights of its
-- owner, the role that applies migrations and owns the tables.
--
-- The index name is derived here (same as shared/db/templates.hnsw_index_name: the first
-- 16 hex digits of sha256(model_version)), and the version must already be registered
-- with this dimension, so a caller chooses neither arbitrary names nor definitions.
-- Privileges: EXECUTE is revoked from PUBLIC; the migration runner grants it to the
-- application role (shared/db/migrations.py).
CREATE FUNCTION faceauth_ensure_hnsw_index(p_model_version text, p_dim integer)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_name text;
BEGIN
    IF p_dim IS NULL OR p_dim < 1 OR p_dim > 16000 THEN
        RAISE EXCEPTION 'embedding dimension % is outside 1..16000', p_dim
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM model_versions
        WHERE model_version = p_model_version AND embedding_dim = p_dim
    ) THEN
        RAISE EXCEPTION 'model version % with dimension % is not registered',
            p_model_version, p_dim
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_name := 'templates_hnsw_'
        || left(encode(sha256(convert_to(p_model_version, 'UTF8')), 'hex'), 16);
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON templates USING hnsw'
        ' ((embedding::vector(%s)) vector_cosine_ops)'
        ' WHERE model_version = %L AND is_active AND is_mean_template',
        v_name, p_dim, p_model_version
    );
    RETURN v_name;
END
$$;

REVOKE ALL ON FUNCTION faceauth_ensure_hnsw_index(text, integer) FROM PUBLIC;
