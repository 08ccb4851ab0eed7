-- Quantized 1:N search indexes for large galleries. A model version records which kind
-- of partial HNSW index its mean templates are searched through:
--   vector   full-precision cosine (the index 0003 builds; the default);
--   halfvec  the same graph over half-precision copies: half the index memory;
--   bit      binary quantization (one sign bit per dimension, Hamming distance): a 32x
--            smaller index whose candidates are re-ranked by exact cosine on the stored
--            full-precision vectors.
-- Templates are always stored at full precision, so scores, calibration and re-embedding
-- never see quantization; only the candidate walk does (shared/db/templates.py).
-- A 512-d vector is 2,056 bytes, just over the 2 kB TOAST threshold, and pgvector's types
-- default to out-of-line storage: every template read (a re-ranked candidate, a score in
-- the SELECT list) was a second lookup in the TOAST table. MAIN keeps vectors in the row
-- unless the row cannot fit a page (up to ~1,900 dimensions); rows written before this
-- stay where they are until rewritten (VACUUM FULL templates, off-peak).
ALTER TABLE templates ALTER COLUMN embedding SET STORAGE MAIN;

ALTER TABLE model_versions
    ADD COLUMN search_index text NOT NULL DEFAULT 'vector'
        CHECK (search_index IN ('vector', 'halfvec', 'bit'));

-- As faceauth_ensure_hnsw_index (0003): SECURITY DEFINER, a fixed definition per kind and
-- a derived name, so the application role chooses neither names nor definitions. It also
-- records the kind on the version, in the same transaction as the index it describes.
CREATE FUNCTION faceauth_ensure_search_index(p_model_version text, p_dim integer, p_kind text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    v_hash text;
    v_name text;
BEGIN
    IF p_dim IS NULL OR p_dim < 1 OR p_dim > 4000 THEN
        -- 4000: the largest halfvec an HNSW index takes (vector: 2000); all kinds share it.
        RAISE EXCEPTION 'embedding dimension % is outside 1..4000', p_dim
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
    v_hash := left(encode(sha256(convert_to(p_model_version, 'UTF8')), 'hex'), 16);
    IF p_kind = 'vector' THEN
        v_name := 'templates_hnsw_' || v_hash;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON templates USING hnsw'
            ' ((embedding::vector(%s)) vector_cosine_ops)'
            ' WHERE model_version = %L AND is_active AND is_mean_template',
            v_name, p_dim, p_model_version
        );
    ELSIF p_kind = 'halfvec' THEN
        v_name := 'templates_hnswh_' || v_hash;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON templates USING hnsw'
            ' ((embedding::halfvec(%s)) halfvec_cosine_ops)'
            ' WHERE model_version = %L AND is_active AND is_mean_template',
            v_name, p_dim, p_model_version
        );
    ELSIF p_kind = 'bit' THEN
        v_name := 'templates_hnswb_' || v_hash;
        EXECUTE format(
            'CREATE INDEX IF NOT EXISTS %I ON templates USING hnsw'
            ' ((binary_quantize(embedding)::bit(%s)) bit_hamming_ops)'
            ' WITH (m = 32, ef_construction = 128)'
            ' WHERE model_version = %L AND is_active AND is_mean_template',
            v_name, p_dim, p_model_version
        );
    ELSE
        RAISE EXCEPTION 'unknown search index kind %', p_kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE model_versions SET search_index = p_kind WHERE model_version = p_model_version;
    RETURN v_name;
END
$$;

REVOKE ALL ON FUNCTION faceauth_ensure_search_index(text, integer, text) FROM PUBLIC;
