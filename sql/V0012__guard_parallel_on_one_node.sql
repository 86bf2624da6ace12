-- The guard on one node: constant work again, and run in the live views' workers;
-- on Citus only in the leader.
--
-- V0009 made audit.require_certified_strict PARALLEL SAFE, so that the guarded views
-- run under Gather with every process checking the guard once. V0011 redefined it to
-- also ask every Citus worker for its change counts (run_command_on_workers), which
-- only the leader may do, and declared it PARALLEL RESTRICTED everywhere; on a server
-- without Citus it asks nobody and reads two indexed rows, as before. So it is
-- PARALLEL SAFE again where Citus is not installed; `woe distribute` declares it
-- PARALLEL RESTRICTED when it turns a database into the distributed layout, and on a
-- server with Citus it stays so.

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

-- The guard of V0011, which on a server without Citus asked for the node counters on
-- every call (a lookup's guard then cost about twice as much); it now returns as soon
-- as the V0008 checks pass there. With Citus, unchanged.
CREATE OR REPLACE FUNCTION audit.require_certified_strict(p_dataset text, p_max_age interval)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    latest     record;
    changed    timestamptz;
    marks_now  jsonb;
    marks_then jsonb;
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
    IF latest.certified_at <= clock_timestamp() - p_max_age THEN
        RAISE EXCEPTION 'dataset % is not certified: its latest certification (#% at %) is older than %',
            p_dataset, latest.certification_id, latest.certified_at, p_max_age
            USING ERRCODE = 'WC001', HINT = 'Certify it again: python -m woe_core certify';
    END IF;
    IF latest.certified_at > clock_timestamp() + interval '5 minutes' THEN
        RAISE EXCEPTION 'dataset % is not certified: its latest certification (#%) claims a time in the future (%)',
            p_dataset, latest.certification_id, latest.certified_at
            USING ERRCODE = 'WC001', HINT = 'Certify it again: python -m woe_core certify';
    END IF;
    SELECT d.changed_at INTO changed FROM audit.dataset_changes AS d WHERE d.dataset = p_dataset;
    IF changed > latest.certified_at THEN
        RAISE EXCEPTION 'dataset % is not certified: its data or definition changed at %, after its latest '
                        'certification (#% at %)', p_dataset, changed, latest.certification_id, latest.certified_at
            USING ERRCODE = 'WC001', HINT = 'Certify it again: python -m woe_core certify';
    END IF;
    -- Shard counters exist only where Citus does: without it (one node) the check above is
    -- the whole guard, and a lookup pays for no further query.
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN true;
    END IF;
    marks_now := audit.node_change_marks(p_dataset);
    SELECT m.marks INTO marks_then FROM audit.certification_node_marks AS m
     WHERE m.certification_id = latest.certification_id;
    IF marks_now IS DISTINCT FROM coalesce(marks_then, '{}') THEN
        RAISE EXCEPTION 'dataset % is not certified: its data changed on the nodes holding its shards after its '
                        'latest certification (#% at %): writes counted then %, now %', p_dataset,
                        latest.certification_id, latest.certified_at, coalesce(marks_then, '{}'), marks_now
            USING ERRCODE = 'WC001', HINT = 'Certify it again: python -m woe_core certify';
    END IF;
    RETURN true;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        ALTER FUNCTION audit.require_certified_strict(text, interval) PARALLEL SAFE;
    END IF;
END $$;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
