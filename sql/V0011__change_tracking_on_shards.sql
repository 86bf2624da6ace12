-- Change tracking that holds on one node and on Citus alike.
--
-- On one node nothing changes: a write to a source table fires its statement trigger,
-- which stamps the dataset's row of audit.dataset_changes, and the guard compares that
-- stamp with the latest certification.
--
-- On Citus (woe distribute), the change triggers live on every shard and fire on the
-- node holding it: a write through the coordinator runs on the workers, several
-- connections per worker in parallel, one per shard. There a single marker row per
-- dataset would be one row lock shared by those connections of one distributed
-- transaction (Citus reports that as a distributed deadlock), and a timestamp from a
-- worker's clock cannot be compared with a certification stamped by the coordinator's.
-- So a trigger firing on a shard counts instead: audit.dataset_shard_changes holds
-- one counter per (dataset, shard) on the node holding the shard, bumped by every
-- statement (and every row applied by replication) that writes it. No two connections
-- share a counter, and counters are compared for equality, never with a clock.
--
-- Certification records every node's total (audit.certification_node_marks, written by
-- a trigger inside audit.certify_dataset while the sources are locked), and the guard
-- asks every node for its total again: any difference, or a node that does not answer,
-- refuses with WC001. The guard stays a constant-time check: one indexed row per node,
-- whatever the size of the data; on a server without Citus it asks nobody.

CREATE TABLE audit.dataset_shard_changes (
    dataset  text NOT NULL,
    shard    text NOT NULL,
    changes  bigint NOT NULL,
    PRIMARY KEY (dataset, shard)
);
COMMENT ON TABLE audit.dataset_shard_changes IS
    'On a node holding Citus shards of a dataset''s tables: how many writing statements each shard has seen. '
    'Only ever counts up. Empty on a server without Citus.';

-- True when p_rel is a shard of a Citus distributed table (read from Citus' own metadata
-- tables pg_dist_shard and pg_dist_partition, present on every node with metadata).
CREATE FUNCTION audit.is_citus_shard(p_rel oid) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_shard') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_dist_shard AS s
                              ON s.shardid::text = substring(c.relname from ''_([0-9]+)$'')
                            JOIN pg_catalog.pg_class AS l ON l.oid = s.logicalrelid
                           WHERE c.oid = $1 AND c.relname = l.relname || ''_'' || s.shardid
                             AND c.relnamespace = l.relnamespace)'
        INTO found USING p_rel;
    RETURN found;
END $$;

CREATE OR REPLACE FUNCTION audit.note_dataset_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A worker has no audit.dataset_changes (only the coordinator certifies); it may not
    -- know a shard yet while create_distributed_table copies rows into it.
    IF to_regclass('audit.dataset_changes') IS NULL OR audit.is_citus_shard(TG_RELID) THEN
        INSERT INTO audit.dataset_shard_changes AS c (dataset, shard, changes)
        VALUES (TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1)
        ON CONFLICT (dataset, shard) DO UPDATE SET changes = c.changes + 1;
    ELSE
        INSERT INTO audit.dataset_changes AS c (dataset, changed_at)
        VALUES (TG_ARGV[0], clock_timestamp())
        ON CONFLICT (dataset) DO UPDATE SET changed_at = greatest(c.changed_at, excluded.changed_at);
    END IF;
    RETURN NULL;
END $$;

-- Every node's total of shard changes for p_dataset, as {"host:port": total}; {} on a
-- server without Citus or without distributed tables. A worker that cannot report (stopped, or
-- without the counters) raises WC001: data it holds cannot be shown to be unchanged.
CREATE FUNCTION audit.node_change_marks(p_dataset text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    marks  jsonb := '{}';
    r      record;
    query  text := format('SELECT coalesce(sum(changes), 0) FROM audit.dataset_shard_changes WHERE dataset = %L',
                          p_dataset);
BEGIN
    -- Shards on this node (a coordinator may hold some too).
    IF EXISTS (SELECT FROM audit.dataset_shard_changes WHERE dataset = p_dataset) THEN
        marks := jsonb_build_object('local', (SELECT sum(changes) FROM audit.dataset_shard_changes
                                               WHERE dataset = p_dataset)::text);
    END IF;
    -- Workers hold data only once a table is distributed (woe distribute creates their counters).
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN marks;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition)' INTO r;
    IF NOT r.exists THEN
        RETURN marks;
    END IF;
    FOR r IN EXECUTE 'SELECT nodename || '':'' || nodeport AS node, success, result
                        FROM run_command_on_workers($1) ORDER BY 1' USING query LOOP
        IF NOT r.success THEN
            RAISE EXCEPTION 'dataset % is not certified: worker % cannot report its changes (%), so its data cannot '
                            'be shown to be unchanged', p_dataset, r.node, r.result
                USING ERRCODE = 'WC001',
                      HINT = 'Bring the worker back; a worker added since the layout was made needs: '
                             'python -m woe_core distribute';
        END IF;
        marks := marks || jsonb_build_object(r.node, r.result);
    END LOOP;
    RETURN marks;
END $$;
REVOKE EXECUTE ON FUNCTION audit.node_change_marks(text) FROM PUBLIC;

-- The node marks each certification saw, taken inside audit.certify_dataset while the
-- dataset's sources are locked against writers.
CREATE TABLE audit.certification_node_marks (
    certification_id  bigint PRIMARY KEY,
    marks             jsonb NOT NULL
);
COMMENT ON TABLE audit.certification_node_marks IS
    'Per certification: every Citus node''s count of writes to the dataset''s shards when it was certified '
    '({} without Citus). Written only by audit.certify_dataset; append-only.';

CREATE FUNCTION audit.record_node_marks() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO audit.certification_node_marks (certification_id, marks)
    VALUES (NEW.certification_id, audit.node_change_marks(NEW.dataset));
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION audit.record_node_marks() FROM PUBLIC;
CREATE TRIGGER dataset_certifications_node_marks AFTER INSERT ON audit.dataset_certifications
    FOR EACH ROW EXECUTE FUNCTION audit.record_node_marks();
ALTER TABLE audit.dataset_certifications ENABLE ALWAYS TRIGGER dataset_certifications_node_marks;

CREATE TRIGGER certification_node_marks_written_by BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON audit.certification_node_marks
    FOR EACH STATEMENT EXECUTE FUNCTION audit.written_by_guard('audit.certify_dataset(text,text)');
CREATE TRIGGER certification_node_marks_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON audit.certification_node_marks
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();
ALTER TABLE audit.certification_node_marks ENABLE ALWAYS TRIGGER certification_node_marks_written_by;
ALTER TABLE audit.certification_node_marks ENABLE ALWAYS TRIGGER certification_node_marks_append_only;

-- The guard of V0008, plus: every node's shard-change total equals what the latest
-- certification recorded.
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
