-- Certification records where the certified data ends, so that reading the data's time
-- range costs nothing while the data is the certified data.
--
-- Training's cutoff must lie within the data's t0 range, and the labels of EVAL rows are
-- taken as of the data's end (the latest t0 or sold_at). The review app shows that range
-- on the pages that train and compare, and read it with a scan of every snapshot once per
-- data version (1.3 s at 10 million snapshots, on the Train page's first visit).
-- Certification scans every row anyway and records the oldest and newest edited_date;
-- it now records the data's end too:
--   * audit.certifiable_datasets.end_columns: the columns holding times a row records
--     besides edited_date (sold_at for the entrypoint);
--   * audit.dataset_certifications.data_end: the latest of edited_date and those columns
--     over the certified rows (finite values; the row checks refuse the others);
--   * audit.dataset_scan takes the end columns and computes it in the same scan.
-- While the guard passes, the data is exactly the certified data, so the recorded range
-- is the data's range (woe_core.train.data_window reads it then, and scans otherwise).
-- Certifications made before this migration have no data_end.

-- A migration's own DDL is recorded by the migration ledger (as in V0009).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'woe_dataset_ddl') THEN
            ALTER EVENT TRIGGER woe_dataset_ddl DISABLE;
        END IF;
        IF EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'woe_dataset_drop') THEN
            ALTER EVENT TRIGGER woe_dataset_drop DISABLE;
        END IF;
    END IF;
END $$;

ALTER TABLE audit.certifiable_datasets ADD COLUMN end_columns text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN audit.certifiable_datasets.end_columns IS
    'Columns holding times a row records besides edited_date; certification records the latest of them all '
    '(audit.dataset_certifications.data_end).';
-- Configuration changes only with a break-glass record in the same transaction (V0008).
INSERT INTO audit.break_glass_log (reason)
VALUES ('migration V0018: the certified entrypoint records sold_at as an end column');
UPDATE audit.certifiable_datasets SET end_columns = ARRAY['sold_at'] WHERE dataset = 'ml.woe_anchor_feature_store_t0_v1_v';

ALTER TABLE audit.dataset_certifications ADD COLUMN data_end timestamptz;
COMMENT ON COLUMN audit.dataset_certifications.data_end IS
    'The latest finite edited_date or end column (audit.certifiable_datasets.end_columns) of the certified rows; '
    'NULL for certifications made before V0018.';

-- As V0009's, with the end columns and 'data_end' in its result.
DROP FUNCTION audit.dataset_scan(text, text[], timestamptz);
CREATE FUNCTION audit.dataset_scan(p_dataset text, p_key_columns text[], p_at timestamptz, p_end_columns text[])
RETURNS SETOF jsonb ROWS 1
LANGUAGE plpgsql STABLE
SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD' SET extra_float_digits = 1 SET "IntervalStyle" = 'postgres'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel        regclass := to_regclass(p_dataset);
    key_cols   text;
    key_order  text;
    masks      text := '';
    kept       text := '';
    totals     text := '';
    ends       text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'dataset % does not exist', quote_literal(p_dataset) USING ERRCODE = 'undefined_table';
    END IF;
    IF coalesce(cardinality(p_key_columns), 0) = 0 THEN
        RAISE EXCEPTION 'dataset_scan needs at least one key column, got %', p_key_columns
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('d.%I AS k%s', k, i), ', ' ORDER BY i), string_agg(format('k%s', i), ', ' ORDER BY i)
      INTO key_cols, key_order
      FROM unnest(p_key_columns) WITH ORDINALITY AS u (k, i);
    -- The latest finite time a row records: its edited_date or any of its end columns
    -- (an infinite one is left out, not the whole row).
    SELECT format('greatest(CASE WHEN isfinite(d.edited_date) THEN d.edited_date END%s)',
                  coalesce(string_agg(format(', CASE WHEN isfinite(d.%1$I) THEN d.%1$I END', e), '' ORDER BY i), ''))
      INTO ends
      FROM unnest(p_end_columns) WITH ORDINALITY AS u (e, i);
    -- Check n (from 0, by position) is bit n % 62 of mask n / 62.
    SELECT coalesce(string_agg(format(', %s AS m%s', m.expr, m.word), '' ORDER BY m.word), ''),
           coalesce(string_agg(format(', array_agg(m%1$s) FILTER (WHERE m%1$s <> 0) AS k%1$s', m.word), ''
                               ORDER BY m.word), ''),
           coalesce(string_agg(m.total, '' ORDER BY m.word), '')
      INTO masks, kept, totals
      FROM (SELECT c.n / 62 AS word,
                   string_agg(format('CASE WHEN (%s) THEN %s::bigint ELSE 0 END', c.violation,
                                     (1::bigint << (c.n % 62)::integer)), ' | ' ORDER BY c.n) AS expr,
                   string_agg(format(', %L, (SELECT count(*) FROM days, unnest(days.k%s) AS x WHERE x & %s <> 0)',
                                     c.check_name, c.n / 62, (1::bigint << (c.n % 62)::integer)), '' ORDER BY c.n) AS total
              FROM (SELECT r.check_name, r.violation, (row_number() OVER (ORDER BY r.position, r.check_name) - 1)::integer AS n
                      FROM audit.dataset_row_checks AS r WHERE r.dataset = p_dataset) AS c
             GROUP BY c.n / 62) AS m;
    -- The hash part is audit.dataset_sha256's: the ORDER BY in the inner query
    -- keeps the row digests and masks below the sort, in the workers.
    RETURN QUERY EXECUTE format(
        $q$
        WITH days AS (
            SELECT day,
                   encode(sha256(string_agg(row_digest, ''::bytea ORDER BY edited_date, %6$s, row_digest)), 'hex') AS day_hash,
                   count(*) AS n_rows,
                   min(edited_date) FILTER (WHERE isfinite(edited_date)) AS lo,
                   max(edited_date) FILTER (WHERE isfinite(edited_date)) AS hi,
                   max(row_end) AS row_end%3$s
              FROM (SELECT (d.edited_date AT TIME ZONE 'UTC')::date AS day,
                           d.edited_date AS edited_date,
                           %7$s AS row_end,
                           sha256(convert_to(d::text, 'UTF8')) AS row_digest,
                           %1$s%2$s
                      FROM %5$s AS d
                     ORDER BY day, edited_date, %6$s, row_digest) AS rows_in_order
             GROUP BY day)
        SELECT jsonb_build_object(
                   'sha256', encode(sha256(convert_to(coalesce(string_agg(coalesce(day::text, 'null') || ':' || day_hash, E'\n' ORDER BY day), ''), 'UTF8')), 'hex'),
                   'row_count', coalesce(sum(n_rows), 0)::bigint,
                   'min_edited_date', min(lo), 'max_edited_date', max(hi), 'data_end', max(row_end)%4$s)
          FROM days
        $q$, key_cols, masks, kept, totals, rel, key_order, ends)
    USING p_at;
END $$;
REVOKE EXECUTE ON FUNCTION audit.dataset_scan(text, text[], timestamptz, text[]) FROM PUBLIC;
COMMENT ON FUNCTION audit.dataset_scan(text, text[], timestamptz, text[]) IS
    'Row count, edited_date range, the data''s end, every row check''s count and the dataset_sha256 hash, from one scan.';

-- Certifies a dataset as in V0009, recording the data's end too.
CREATE OR REPLACE FUNCTION audit.certify_dataset(p_dataset text, p_actor text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    spec      audit.certifiable_datasets;
    started   timestamptz := clock_timestamp();
    problems  text[];
    results   jsonb := '[]';
    counts    jsonb;
    dups      bigint;
    sha       text;
    n_rows    bigint;
    c         record;
    new_id    bigint;
BEGIN
    IF p_actor IS NULL OR p_actor !~ '[^[:space:]]' OR length(p_actor) > 200 THEN
        RAISE EXCEPTION 'actor must be a non-empty name of at most 200 characters, got %', quote_nullable(left(p_actor, 40))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM audit.require_read_committed('certification');
    SELECT * INTO spec FROM audit.certifiable_datasets AS d WHERE d.dataset = p_dataset;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown dataset %; certifiable datasets: %', quote_nullable(p_dataset),
            (SELECT string_agg(dataset, ', ') FROM audit.certifiable_datasets)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass(p_dataset) IS NOT NULL THEN
        PERFORM audit.lock_dataset_sources(p_dataset);
    END IF;
    problems := audit.contract_problems();
    IF to_regclass(p_dataset) IS NULL THEN
        problems := problems || format('%s does not exist', p_dataset);
    END IF;
    IF cardinality(problems) > 0 THEN
        results := jsonb_build_array(jsonb_build_object('name', 'contract', 'description', array_to_string(problems, '; '),
                                                        'passed', false, 'violations', cardinality(problems)));
    ELSE
        SELECT * INTO counts FROM audit.dataset_scan(p_dataset, spec.key_columns, started, spec.end_columns);
        SELECT * INTO dups FROM audit.dataset_duplicate_keys(p_dataset, spec.key_columns);
        n_rows := (counts ->> 'row_count')::bigint;
        results := jsonb_build_array(
            jsonb_build_object('name', 'contract', 'description', 'feature stores match the contract (columns and types)',
                               'passed', true, 'violations', 0),
            jsonb_build_object('name', 'non_empty', 'description', 'the dataset has at least one row',
                               'passed', n_rows > 0, 'violations', CASE WHEN n_rows > 0 THEN 0 ELSE 1 END),
            jsonb_build_object('name', 'unique_snapshot_key',
                               'description', format('(%s) identifies one row', array_to_string(spec.key_columns, ', ')),
                               'passed', dups = 0, 'violations', dups));
        FOR c IN SELECT * FROM audit.dataset_row_checks AS r WHERE r.dataset = p_dataset ORDER BY r.position LOOP
            results := results || jsonb_build_object(
                'name', c.check_name, 'description', c.description,
                'passed', (counts ->> c.check_name)::bigint = 0, 'violations', (counts ->> c.check_name)::bigint);
        END LOOP;
        sha := counts ->> 'sha256';
    END IF;
    problems := audit.dataset_tracking_problems(p_dataset);
    results := results || jsonb_build_object(
        'name', 'change_tracking',
        'description', CASE WHEN cardinality(problems) = 0
                            THEN 'every change to the dataset''s sources and definition invalidates the certification'
                            ELSE array_to_string(problems, '; ') END,
        'passed', cardinality(problems) = 0, 'violations', cardinality(problems));

    INSERT INTO audit.dataset_certifications
        (dataset, certified_by, passed, row_count, dataset_sha256, min_edited_date, max_edited_date, data_end, checks,
         duration_ms)
    VALUES (p_dataset, btrim(p_actor),
            NOT EXISTS (SELECT FROM jsonb_array_elements(results) AS e WHERE NOT (e ->> 'passed')::boolean),
            n_rows, sha, (counts ->> 'min_edited_date')::timestamptz, (counts ->> 'max_edited_date')::timestamptz,
            (counts ->> 'data_end')::timestamptz, results, extract(epoch FROM clock_timestamp() - started) * 1000)
    RETURNING certification_id INTO new_id;

    DELETE FROM audit.dataset_sources WHERE dataset = p_dataset;
    INSERT INTO audit.dataset_sources (dataset, classid, objid, identity)
    SELECT p_dataset, s.classid, s.objid, s.identity FROM audit.dataset_source_objects(p_dataset) AS s;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION audit.certify_dataset(text, text) IS
    'Runs every check and the hash of a certifiable dataset on locked data and records the outcome (passed or '
    'failed) with the database''s time and session_user; returns the certification_id.';

-- The recorded range of a certifiable dataset while the guard passes on it: no row when it
-- refuses (never certified, failed, expired, changed since) or when the certification
-- predates V0018. Granted to the roles that may read the dataset (reader, trainer,
-- certifier); it checks, for the session's login (this function runs as its owner), that
-- the login may read the dataset itself (the range is what a read of it would show).
CREATE FUNCTION audit.certified_time_range(p_dataset text)
RETURNS TABLE (min_edited_date timestamptz, max_edited_date timestamptz, data_end timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel  regclass := to_regclass(p_dataset);
    id   bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM audit.certifiable_datasets AS d WHERE d.dataset = p_dataset) THEN
        RAISE EXCEPTION 'unknown dataset %; certifiable datasets: %', quote_nullable(p_dataset),
            (SELECT string_agg(dataset, ', ') FROM audit.certifiable_datasets)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF rel IS NULL OR NOT has_table_privilege(session_user, rel, 'SELECT')
       OR NOT has_schema_privilege(session_user, (SELECT c.relnamespace FROM pg_class AS c WHERE c.oid = rel), 'USAGE') THEN
        RAISE EXCEPTION 'permission denied: % may not read dataset %', session_user, quote_nullable(p_dataset)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    BEGIN
        id := audit.fresh_certification_id(p_dataset);
    EXCEPTION WHEN SQLSTATE 'WC001' THEN
        RETURN;
    END;
    RETURN QUERY SELECT c.min_edited_date, c.max_edited_date, c.data_end FROM audit.dataset_certifications AS c
                  WHERE c.certification_id = id AND c.data_end IS NOT NULL;
END $$;
REVOKE EXECUTE ON FUNCTION audit.certified_time_range(text) FROM PUBLIC;
COMMENT ON FUNCTION audit.certified_time_range(text) IS
    'Oldest and newest edited_date and the data''s end recorded by the latest certification of a dataset, while the '
    'guard passes on it (no row otherwise); for logins that may read the dataset.';

-- As V0013's, plus audit.certified_time_range for the roles that read the entrypoint.
CREATE OR REPLACE FUNCTION ml.grant_woe_anchor_roles() RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    granted text[] := '{}';
    r       text;
BEGIN
    -- Every project login may see which migrations were applied (a client that finds
    -- none pending starts without DDL).
    FOREACH r IN ARRAY ARRAY['woe_reader', 'woe_trainer', 'woe_certifier', 'woe_promoter', 'woe_sso'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r);
        EXECUTE format('GRANT USAGE ON SCHEMA audit TO %I', r);
        EXECUTE format('GRANT SELECT ON audit.schema_migrations TO %I', r);
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_reader') THEN
        GRANT USAGE ON SCHEMA ml TO woe_reader;
        GRANT SELECT ON ml.woe_anchor_scores_live_train_v, ml.woe_anchor_feature_store_t0_v1_v TO woe_reader;
        GRANT EXECUTE ON FUNCTION audit.require_certified_strict(text, interval), audit.certified_time_range(text)
            TO woe_reader;
        granted := granted || 'woe_reader'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_trainer') THEN
        GRANT USAGE ON SCHEMA ml, audit TO woe_trainer;
        GRANT SELECT ON ml.socio_market_feature_store_train_v, ml.iphone_image_features_unified_v1_train_v,
                        ml.woe_anchor_feature_store_t0_v1_v, ml.woe_anchor_band_values_v1,
                        ml.v_woe_anchor_band_inputs_v1, ml.v_woe_anchor_bands_by_model_v1, ml.woe_anchor_scores_by_model_train_v,
                        ml.woe_anchor_scores_live_train_v, ml.woe_anchor_promotions_v1,
                        ml.woe_anchor_model_deletions_v1, ml.woe_anchor_provenance_checks_v1
                     TO woe_trainer;
        -- Models are registered (INSERT), never changed; deleted only through
        -- ml.delete_woe_anchor_model. Scores arrive as a staged partition.
        REVOKE DELETE ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_cuts_v1, ml.woe_anchor_map_v1 FROM woe_trainer;
        REVOKE INSERT ON ml.woe_anchor_scores_v1 FROM woe_trainer;
        GRANT SELECT, INSERT ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_cuts_v1, ml.woe_anchor_map_v1
            TO woe_trainer;
        GRANT SELECT ON ml.woe_anchor_scores_v1 TO woe_trainer;
        GRANT EXECUTE ON FUNCTION
            ml.woe_band_dsold(double precision, double precision, double precision, double precision, double precision),
            ml.woe_band_trust(text), ml.woe_band_ship(boolean), ml.woe_band_sale(boolean), ml.woe_band_cond(text),
            ml.woe_band_prob3(text, double precision), ml.woe_band_bat(smallint),
            ml.woe_presentation_score(smallint, double precision, double precision, double precision),
            ml.woe_band_present(double precision, double precision, double precision),
            ml.woe_band_acc(boolean, boolean, boolean), ml.woe_fold(bigint, integer), ml.woe_sigmoid(double precision),
            ml.woe_slow21(timestamptz, timestamptz, timestamptz), ml.woe_weight(timestamptz, timestamptz, double precision),
            ml.woe_anchor_bands_v1(double precision, double precision, double precision, double precision,
                                   double precision, double precision),
            audit.require_certified_strict(text, interval), audit.certified_time_range(text),
            ml.delete_woe_anchor_model(text),
            ml.woe_anchor_scores_stage_v1(text), ml.woe_anchor_scores_attach_v1(text),
            ml.woe_anchor_training_lock_v1(interval), ml.woe_anchor_artifact_digest_v1(text),
            ml.woe_identity_v1(text, text), audit.fresh_certification_id(text),
            ml.woe_anchor_derive_v1(timestamptz, double precision, double precision, double precision,
                                    double precision, double precision, double precision, integer)
            TO woe_trainer;
        granted := granted || 'woe_trainer'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_certifier') THEN
        GRANT USAGE ON SCHEMA ml, audit TO woe_certifier;
        GRANT SELECT ON ml.socio_market_feature_store_train_v, ml.iphone_image_features_unified_v1_train_v,
                        ml.woe_anchor_feature_store_t0_v1_v, audit.dataset_changes, audit.dataset_certifications,
                        audit.dataset_row_checks, audit.dataset_contract, audit.certifiable_datasets
                     TO woe_certifier;
        -- Certifications are recorded by audit.certify_dataset only.
        REVOKE INSERT ON audit.dataset_certifications FROM woe_certifier;
        REVOKE EXECUTE ON FUNCTION audit.lock_dataset_sources(text) FROM woe_certifier;
        GRANT EXECUTE ON FUNCTION audit.certify_dataset(text, text), audit.dataset_sha256(text, text[]),
                                  audit.require_certified_strict(text, interval), audit.contract_problems(),
                                  audit.fresh_certification_id(text), audit.certified_time_range(text)
            TO woe_certifier;
        granted := granted || 'woe_certifier'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_promoter') THEN
        GRANT USAGE ON SCHEMA ml TO woe_promoter;
        GRANT SELECT ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_promotions_v1,
                        ml.woe_anchor_provenance_checks_v1, ml.woe_anchor_governance_settings_v1 TO woe_promoter;
        GRANT EXECUTE ON FUNCTION ml.promote_woe_anchor_model(text, text, text, text, text[]),
                                  ml.rollback_woe_anchor_model(text, text),
                                  ml.woe_anchor_promotion_preflight_v1(text),
                                  ml.woe_anchor_verify_provenance_v1(text),
                                  ml.woe_anchor_artifact_digest_v1(text),
                                  ml.woe_identity_v1(text, text), audit.fresh_certification_id(text)
            TO woe_promoter;
        granted := granted || 'woe_promoter'::text;
    END IF;
    RETURN granted;
END $$;

SELECT ml.grant_woe_anchor_roles();

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
