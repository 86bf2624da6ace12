-- Live scoring that PostgreSQL can run in parallel (docs/model.md, "Scoring").
--
-- The views of V0004 scored every row in one process: the final map was packed by a
-- LATERAL subquery correlated with each model row, and a correlated subquery's
-- parameters keep the planner from any parallel plan; the guard, PARALLEL
-- RESTRICTED, did the same for the guarded views. Here:
--
-- * each model's scoring inputs (thresholds, final cuts, the final map packed into
--   an array indexed by ml.woe_anchor_band_values_v1.slot) are one row of an
--   uncorrelated grouped subquery, which the rows are then banded with; a filter on
--   model_key or is_active still reaches the registry scan, and the whole plan
--   may run under Gather with a partial aggregate in every worker;
-- * the guard is PARALLEL SAFE: it reads two indexed rows and writes nothing, so
--   it stays a one-time filter, checked by every process of the query before it
--   returns a row.
--
-- Banding is unchanged (ml.woe_anchor_bands_v1 and the ml.woe_band_* functions,
-- inlined), as are the slots, the packed array and the arithmetic, so every score
-- is bit-identical to V0004's. The views keep their columns, owner and grants.
--
-- Certification (audit.certify_dataset) runs its row checks in the scan that hashes
-- the data (audit.dataset_scan) instead of a scan of their own; the hash is the same
-- as audit.dataset_sha256's for the same data.

-- A migration's own DDL is recorded by the migration ledger, not as a change (as in
-- V0008): the event triggers are off while this script runs as their owner and are
-- on again, firing always, at its end.
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

-- Scores under every model: base_logit + the final map's WOE of each band value.
-- w has one row per model with final cuts: its scoring columns and its final map
-- packed once into an array indexed by slot (NULL where the map has no row); each
-- snapshot is banded with that model's thresholds and cuts, and each band value is
-- found by ml.woe_slot_<band>. A band value the map lacks contributes 0 and is
-- listed in unmapped_bands.
CREATE OR REPLACE VIEW ml.woe_anchor_scores_by_model_v1 AS
SELECT s.*,
       s.base_logit + s.woe_sum AS woe_logit,
       ml.woe_sigmoid(s.base_logit + s.woe_sum) AS woe_anchor_p_slow21
  FROM (SELECT t.*,
               coalesce(t.woe_dsold, 0) + coalesce(t.woe_trust, 0) + coalesce(t.woe_ship, 0)
                 + coalesce(t.woe_sale, 0) + coalesce(t.woe_cond, 0) + coalesce(t.woe_dmg, 0)
                 + coalesce(t.woe_bat, 0) + coalesce(t.woe_present, 0) + coalesce(t.woe_vdmg, 0)
                 + coalesce(t.woe_acc, 0) AS woe_sum,
               array_remove(ARRAY[
                   CASE WHEN t.woe_dsold IS NULL THEN 'dsold' END, CASE WHEN t.woe_trust IS NULL THEN 'trust' END,
                   CASE WHEN t.woe_ship IS NULL THEN 'ship' END, CASE WHEN t.woe_sale IS NULL THEN 'sale' END,
                   CASE WHEN t.woe_cond IS NULL THEN 'cond' END, CASE WHEN t.woe_dmg IS NULL THEN 'dmg' END,
                   CASE WHEN t.woe_bat IS NULL THEN 'bat' END, CASE WHEN t.woe_present IS NULL THEN 'present' END,
                   CASE WHEN t.woe_vdmg IS NULL THEN 'vdmg' END, CASE WHEN t.woe_acc IS NULL THEN 'acc' END],
                   NULL) AS unmapped_bands
          FROM (SELECT w.model_key, w.is_active, w.band_schema_version, w.base_logit,
               w.dsold_t1, w.dsold_t2, w.dsold_t3, w.dsold_t4, w.present_c1, w.present_c2, b.*,
               w.woe[ml.woe_slot_dsold(b.dsold_band)] AS woe_dsold,
               w.woe[ml.woe_slot_trust(b.trust_tier)] AS woe_trust,
               w.woe[ml.woe_slot_ship(b.ship_band)] AS woe_ship,
               w.woe[ml.woe_slot_sale(b.sale_band)] AS woe_sale,
               w.woe[ml.woe_slot_cond(b.cond_band)] AS woe_cond,
               w.woe[ml.woe_slot_dmg(b.dmg_ai_band)] AS woe_dmg,
               w.woe[ml.woe_slot_bat(b.bat_band)] AS woe_bat,
               w.woe[ml.woe_slot_present(b.presentation_band)] AS woe_present,
               w.woe[ml.woe_slot_vdmg(b.vdmg_band)] AS woe_vdmg,
               w.woe[ml.woe_slot_acc(b.accessories_band)] AS woe_acc
                  FROM (SELECT m.model_key, m.is_active, m.band_schema_version, m.base_logit,
                               m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4,
                               c.c1 AS present_c1, c.c2 AS present_c2,
                               array_agg(mp.woe ORDER BY v.slot) AS woe
                          FROM ml.woe_anchor_model_registry_v1 AS m
                          JOIN ml.woe_anchor_cuts_v1 AS c ON c.model_key = m.model_key AND c.fold_id IS NULL
                          LEFT JOIN ml.woe_anchor_band_values_v1 AS v ON v.band_schema_version = m.band_schema_version
                          LEFT JOIN ml.woe_anchor_map_v1 AS mp
                                 ON mp.model_key = m.model_key AND mp.fold_id IS NULL
                                AND mp.band_name = v.band_name AND mp.band_value = v.band_value
                         GROUP BY m.model_key, c.c1, c.c2) AS w
                 CROSS JOIN LATERAL ml.woe_anchor_bands_v1(w.dsold_t1, w.dsold_t2, w.dsold_t3, w.dsold_t4,
                                                           w.present_c1, w.present_c2) AS b
               ) AS t
       ) AS s;

-- ---------------------------------------------------------------------------
-- Certification: the row checks and the hash in one scan.
-- ---------------------------------------------------------------------------

-- The row count, the edited_date range, the count of every row check
-- (audit.dataset_row_checks, $1 = p_at) and 'sha256', the hash of
-- audit.dataset_sha256 computed exactly as there (same canonical text, same
-- order, same per-day hashes), all from one scan of the dataset.
--
-- The parallel workers compute each row's digest and a bitmask of the checks it
-- violates (62 checks per bigint) and sort; the leader merges the sorted rows,
-- hashes each day and keeps only the masks that are not zero, whose bits are
-- counted at the end. The key columns travel as columns of their own (k1, k2, ...;
-- not as one row value, which a distributed planner cannot ship between nodes), in
-- the order the workers delivered, so the leader merges without sorting again.
CREATE FUNCTION audit.dataset_scan(p_dataset text, p_key_columns text[], p_at timestamptz)
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
                   max(edited_date) FILTER (WHERE isfinite(edited_date)) AS hi%3$s
              FROM (SELECT (d.edited_date AT TIME ZONE 'UTC')::date AS day,
                           d.edited_date AS edited_date,
                           sha256(convert_to(d::text, 'UTF8')) AS row_digest,
                           %1$s%2$s
                      FROM %5$s AS d
                     ORDER BY day, edited_date, %6$s, row_digest) AS rows_in_order
             GROUP BY day)
        SELECT jsonb_build_object(
                   'sha256', encode(sha256(convert_to(coalesce(string_agg(coalesce(day::text, 'null') || ':' || day_hash, E'\n' ORDER BY day), ''), 'UTF8')), 'hex'),
                   'row_count', coalesce(sum(n_rows), 0)::bigint,
                   'min_edited_date', min(lo), 'max_edited_date', max(hi)%4$s)
          FROM days
        $q$, key_cols, masks, kept, totals, rel, key_order)
    USING p_at;
END $$;
REVOKE EXECUTE ON FUNCTION audit.dataset_scan(text, text[], timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION audit.dataset_scan(text, text[], timestamptz) IS
    'Row count, edited_date range, every row check''s count and the dataset_sha256 hash, from one scan.';

-- Certifies a dataset as in V0008, with the row checks and the hash from one scan
-- (audit.dataset_scan) instead of two.
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
        SELECT * INTO counts FROM audit.dataset_scan(p_dataset, spec.key_columns, started);
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
        (dataset, certified_by, passed, row_count, dataset_sha256, min_edited_date, max_edited_date, checks,
         duration_ms)
    VALUES (p_dataset, btrim(p_actor),
            NOT EXISTS (SELECT FROM jsonb_array_elements(results) AS e WHERE NOT (e ->> 'passed')::boolean),
            n_rows, sha, (counts ->> 'min_edited_date')::timestamptz, (counts ->> 'max_edited_date')::timestamptz,
            results, extract(epoch FROM clock_timestamp() - started) * 1000)
    RETURNING certification_id INTO new_id;

    DELETE FROM audit.dataset_sources WHERE dataset = p_dataset;
    INSERT INTO audit.dataset_sources (dataset, classid, objid, identity)
    SELECT p_dataset, s.classid, s.objid, s.identity FROM audit.dataset_source_objects(p_dataset) AS s;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION audit.certify_dataset(text, text) IS
    'Runs every check and the hash of a certifiable dataset on locked data and records the outcome (passed or '
    'failed) with the database''s time and session_user; returns the certification_id.';

-- The guard only reads two indexed rows (and raises); PARALLEL SAFE lets the
-- guarded views' plans run in parallel workers, each process checking it once.
ALTER FUNCTION audit.require_certified_strict(text, interval) PARALLEL SAFE;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
