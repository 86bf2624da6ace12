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
    -- The latest time a row records: its edited_date or any of its end columns.
    SELECT format('greatest(d.edited_date%s)', coalesce(string_agg(format(', d.%I', e), '' ORDER BY i), ''))
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
                   max(row_end) FILTER (WHERE isfinite(row_end)) AS row_end%3$s
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

-- The recorded range of a dataset while the guard passes on it: no row when it refuses
-- (never certified, failed, expired, changed since) or when the certification predates
-- V0018. For every login that may read the dataset (the range is what a read of it would
-- show), checked for the session's login since this function runs as its owner.
CREATE FUNCTION audit.certified_time_range(p_dataset text)
RETURNS TABLE (min_edited_date timestamptz, max_edited_date timestamptz, data_end timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel  regclass := to_regclass(p_dataset);
    id   bigint;
BEGIN
    IF rel IS NULL OR NOT has_table_privilege(session_user, rel, 'SELECT') THEN
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
GRANT EXECUTE ON FUNCTION audit.certified_time_range(text) TO PUBLIC;
COMMENT ON FUNCTION audit.certified_time_range(text) IS
    'Oldest and newest edited_date and the data''s end recorded by the latest certification of a dataset, while the '
    'guard passes on it (no row otherwise); for logins that may read the dataset.';

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
