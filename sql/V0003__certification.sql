-- Dataset certification (docs/certification.md): an append-only registry of certification
-- runs, a deterministic dataset hash, a change marker on the demo base tables and
-- the fail-closed guard used by the live views.

CREATE TABLE audit.dataset_certifications (
    certification_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset           text NOT NULL,
    certified_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    certified_by      text NOT NULL CHECK (certified_by <> ''),
    db_user           text NOT NULL DEFAULT session_user,
    passed            boolean NOT NULL,
    row_count         bigint CHECK (row_count >= 0),
    dataset_sha256    text CHECK (dataset_sha256 ~ '^[0-9a-f]{64}$'),
    min_edited_date   timestamptz,
    max_edited_date   timestamptz,
    checks            jsonb NOT NULL CHECK (jsonb_typeof(checks) = 'array'),
    duration_ms       double precision
);
COMMENT ON TABLE audit.dataset_certifications IS
    'One row per certification run, passed or failed: who, when, row count, sha256 and per-check outcome '
    '(checks = [{name, description, passed, violations}]). Append-only.';
CREATE INDEX dataset_certifications_latest_idx
    ON audit.dataset_certifications (dataset, certified_at DESC, certification_id DESC);

CREATE FUNCTION audit.forbid_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER dataset_certifications_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.dataset_certifications
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

-- When the data behind a certified dataset changes, its certification no longer
-- describes it. Statement-level triggers on the base tables record the time of the
-- last change (one row per dataset, so the guard stays a single index lookup).
-- Both this time and certified_at are clock times taken when the row is written:
-- a certification holds audit.lock_dataset_sources while it reads and records, so
-- every write either finished before it (earlier clock time) or is made after it
-- (later clock time), whatever the transactions' start times.
CREATE TABLE audit.dataset_changes (
    dataset     text PRIMARY KEY,
    changed_at  timestamptz NOT NULL
);
COMMENT ON TABLE audit.dataset_changes IS
    'Last time the data behind a dataset was written; a certification older than this is stale.';

CREATE FUNCTION audit.note_dataset_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO audit.dataset_changes AS c (dataset, changed_at)
    VALUES (TG_ARGV[0], clock_timestamp())
    ON CONFLICT (dataset) DO UPDATE SET changed_at = greatest(c.changed_at, excluded.changed_at);
    RETURN NULL;
END $$;

CREATE TRIGGER socio_market_snapshots_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml.socio_market_snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION audit.note_dataset_change('ml.woe_anchor_feature_store_t0_v1_v');
CREATE TRIGGER iphone_image_features_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ml.iphone_image_features
    FOR EACH STATEMENT EXECUTE FUNCTION audit.note_dataset_change('ml.woe_anchor_feature_store_t0_v1_v');

-- Waits for in-flight writers of every table a dataset reads (found through the
-- views' rewrite dependencies, so it works for the customer's own views too) and
-- keeps new writers out until the calling transaction ends. Certification calls it
-- first, so what it checks, hashes and records is exactly the committed data.
CREATE FUNCTION audit.lock_dataset_sources(p_dataset text)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel    regclass := to_regclass(p_dataset);
    tables text[];
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'dataset % does not exist', quote_literal(p_dataset) USING ERRCODE = 'undefined_table';
    END IF;
    WITH RECURSIVE deps(oid) AS (
        SELECT rel::oid
        UNION
        SELECT d.refobjid
          FROM deps
          JOIN pg_rewrite AS r ON r.ev_class = deps.oid
          JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                             AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> deps.oid
    )
    SELECT array_agg(c.oid::regclass::text ORDER BY c.oid) INTO tables
      FROM deps JOIN pg_class AS c ON c.oid = deps.oid
     WHERE c.relkind IN ('r', 'p');
    IF tables IS NOT NULL THEN
        EXECUTE 'LOCK TABLE ' || array_to_string(tables, ', ') || ' IN SHARE MODE';
    END IF;
    RETURN coalesce(tables, '{}');
END $$;
REVOKE EXECUTE ON FUNCTION audit.lock_dataset_sources(text) FROM PUBLIC;
COMMENT ON FUNCTION audit.lock_dataset_sources(text) IS
    'Locks every base table behind a dataset IN SHARE MODE (waits for writers, blocks new ones) until commit.';

-- Deterministic SHA-256 of a dataset's rows.
--
-- Canonical text: each row's PostgreSQL record text, rendered with TimeZone UTC,
-- DateStyle ISO and extra_float_digits 1 (shortest exact float text), so the hash
-- does not depend on the session's settings. Each row is hashed (row digest =
-- sha256 of its UTF-8 text); rows are grouped by the UTC day of edited_date and
-- ordered by edited_date, then the key columns, then the row digest (so even
-- duplicate keys hash deterministically); a day's hash is the sha256 of its row
-- digests concatenated in that order; the dataset's hash is the sha256 of the
-- lines "YYYY-MM-DD:<day hash hex>" joined by newlines in day order (a NULL
-- edited_date counts as the day "null", last). Every
-- intermediate value stays small at any dataset size, and the per-row work runs
-- in parallel workers. An empty dataset hashes to sha256('').
CREATE FUNCTION audit.dataset_sha256(p_dataset text, p_key_columns text[] DEFAULT ARRAY['listing_id'])
RETURNS SETOF text ROWS 1
LANGUAGE plpgsql STABLE
SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD' SET extra_float_digits = 1 SET "IntervalStyle" = 'postgres'
AS $$
DECLARE
    rel      regclass := to_regclass(p_dataset);
    key_sel  text;
    key_ord  text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'dataset % does not exist', quote_literal(p_dataset) USING ERRCODE = 'undefined_table';
    END IF;
    IF coalesce(cardinality(p_key_columns), 0) = 0 THEN
        RAISE EXCEPTION 'dataset_sha256 needs at least one key column, got %', p_key_columns
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('d.%I', k), ', '), string_agg(format('%I', k), ', ')
      INTO key_sel, key_ord
      FROM unnest(p_key_columns) AS k;
    -- The ORDER BY in the inner query keeps it from being flattened, so the row
    -- digests are computed below the sort (in parallel workers) and the
    -- aggregate receives rows already in order. RETURN QUERY (unlike EXECUTE ...
    -- INTO) lets PostgreSQL use a parallel plan, hence the one-row SETOF result.
    RETURN QUERY EXECUTE format(
        $q$
        SELECT encode(sha256(convert_to(coalesce(string_agg(coalesce(day::text, 'null') || ':' || day_hash, E'\n' ORDER BY day), ''), 'UTF8')), 'hex')
          FROM (SELECT day,
                       encode(sha256(string_agg(row_digest, ''::bytea ORDER BY edited_date, %3$s, row_digest)), 'hex') AS day_hash
                  FROM (SELECT (d.edited_date AT TIME ZONE 'UTC')::date AS day,
                               d.edited_date AS edited_date,
                               sha256(convert_to(d::text, 'UTF8')) AS row_digest,
                               %1$s
                          FROM %2$s AS d
                         ORDER BY day, edited_date, %1$s, row_digest) AS rows_in_order
                 GROUP BY day) AS days
        $q$, key_sel, rel, key_ord);
END $$;
COMMENT ON FUNCTION audit.dataset_sha256(text, text[]) IS
    'Deterministic SHA-256 (hex) of a dataset''s rows, ordered by edited_date then key; independent of session settings.';

-- Fail-closed guard: returns true, or raises (SQLSTATE WC001) unless the latest
-- certification of p_dataset passed, is younger than p_max_age and the data has not
-- changed since. It reads two small indexed rows and never rescans the data. It is
-- STABLE and takes no row values, so a view's WHERE clause evaluates it once per
-- query (a one-time filter), before any row is returned. PARALLEL RESTRICTED: it
-- runs in the leader only, while the rows below it may still be scanned in parallel.
CREATE FUNCTION audit.require_certified_strict(p_dataset text, p_max_age interval)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    latest     record;
    changed    timestamptz;
BEGIN
    IF p_dataset IS NULL OR p_max_age IS NULL OR p_max_age <= interval '0' THEN
        RAISE EXCEPTION 'require_certified_strict(%, %): dataset must be named and max_age must be a positive interval',
            quote_nullable(p_dataset), quote_nullable(p_max_age) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT c.certification_id, c.certified_at, c.passed, c.checks
      INTO latest
      FROM audit.dataset_certifications AS c
     WHERE c.dataset = p_dataset
     ORDER BY c.certified_at DESC, c.certification_id DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'dataset % is not certified: no certification has been recorded', p_dataset
            USING ERRCODE = 'WC001', HINT = 'Certify it first: python -m woe_core certify';
    END IF;
    IF NOT latest.passed THEN
        RAISE EXCEPTION 'dataset % is not certified: its latest certification (#% at %) failed checks: %',
            p_dataset, latest.certification_id, latest.certified_at,
            (SELECT string_agg(e ->> 'name', ', ') FROM jsonb_array_elements(latest.checks) AS e
              WHERE NOT (e ->> 'passed')::boolean)
            USING ERRCODE = 'WC001', HINT = 'Fix the data, then certify again: python -m woe_core certify';
    END IF;
    IF latest.certified_at <= now() - p_max_age THEN
        RAISE EXCEPTION 'dataset % is not certified: its latest certification (#% at %) is older than %',
            p_dataset, latest.certification_id, latest.certified_at, p_max_age
            USING ERRCODE = 'WC001', HINT = 'Certify it again: python -m woe_core certify';
    END IF;
    SELECT d.changed_at INTO changed FROM audit.dataset_changes AS d WHERE d.dataset = p_dataset;
    IF changed > latest.certified_at THEN
        RAISE EXCEPTION 'dataset % is not certified: its data changed at %, after its latest certification (#% at %)',
            p_dataset, changed, latest.certification_id, latest.certified_at
            USING ERRCODE = 'WC001', HINT = 'Certify it again: python -m woe_core certify';
    END IF;
    RETURN true;
END $$;
-- Certification metadata is not for everyone: the roles that read guarded views
-- get EXECUTE explicitly (V0006), since a view's function calls are checked
-- against the querying user.
REVOKE EXECUTE ON FUNCTION audit.require_certified_strict(text, interval) FROM PUBLIC;
COMMENT ON FUNCTION audit.require_certified_strict(text, interval) IS
    'Raises (SQLSTATE WC001) unless the latest certification of the dataset passed, is younger than max_age '
    'and the data has not changed since; returns true otherwise.';
