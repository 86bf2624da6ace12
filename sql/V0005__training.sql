-- Training support: loading a model's row-level scores as one partition of
-- ml.woe_anchor_scores_v1.
--
-- A trainer calls ml.woe_anchor_scores_stage_v1(key) to get an empty, detached
-- table shaped like the scores table (it may INSERT into it), fills it, registers
-- the model, then calls ml.woe_anchor_scores_attach_v1(key), which builds its
-- primary key in one sorted pass and attaches it (the foreign key to the
-- registry is validated by one anti-join, so the model must be registered by then). Both run as the schema owner, so a trainer needs no ownership of the
-- partitioned table; both belong in the training transaction, so a failed training
-- leaves no table behind.

CREATE FUNCTION ml.woe_anchor_scores_partition_name(p_model_key text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'woe_anchor_scores_v1__' || p_model_key
$$;

CREATE FUNCTION ml.woe_anchor_scores_stage_v1(p_model_key text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part text := ml.woe_anchor_scores_partition_name(p_model_key);
BEGIN
    IF p_model_key IS NULL OR p_model_key !~ '^tom_aft_v1_[0-9]{8}_[0-9]{6}(_[0-9]{1,3})?$' THEN
        RAISE EXCEPTION 'model key % is not of the form tom_aft_v1_YYYYMMDD_HHMMSS[_N]', quote_nullable(p_model_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('CREATE TABLE ml.%I (LIKE ml.woe_anchor_scores_v1 INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('ALTER TABLE ml.%I ADD CONSTRAINT %I CHECK (model_key = %L)', part, part || '_key', p_model_key);
    EXECUTE format('GRANT INSERT, SELECT ON ml.%I TO %I', part, session_user);
    RETURN 'ml.' || quote_ident(part);
END $$;
COMMENT ON FUNCTION ml.woe_anchor_scores_stage_v1(text) IS
    'Creates the detached score table of a model being trained for its trainer to fill; attach it with ml.woe_anchor_scores_attach_v1.';

CREATE FUNCTION ml.woe_anchor_scores_attach_v1(p_model_key text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part text := ml.woe_anchor_scores_partition_name(p_model_key);
    n    bigint;
BEGIN
    IF to_regclass('ml.' || quote_ident(part)) IS NULL THEN
        RAISE EXCEPTION 'no staged score table for model %: call ml.woe_anchor_scores_stage_v1 first', p_model_key
            USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('REVOKE ALL ON ml.%I FROM %I', part, session_user);
    EXECUTE format('ALTER TABLE ml.%I ADD PRIMARY KEY (model_key, generation, listing_id, t0)', part);
    EXECUTE format('ALTER TABLE ml.woe_anchor_scores_v1 ATTACH PARTITION ml.%I FOR VALUES IN (%L)', part, p_model_key);
    EXECUTE format('SELECT count(*) FROM ml.%I', part) INTO n;
    RETURN n;
END $$;
COMMENT ON FUNCTION ml.woe_anchor_scores_attach_v1(text) IS
    'Indexes and attaches a staged score table as the model''s partition of ml.woe_anchor_scores_v1; returns its row count.';

-- Only trainers stage and attach score tables (granted to woe_trainer in V0006).
REVOKE EXECUTE ON FUNCTION ml.woe_anchor_scores_stage_v1(text), ml.woe_anchor_scores_attach_v1(text) FROM PUBLIC;
