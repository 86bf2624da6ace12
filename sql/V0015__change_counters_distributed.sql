-- The guard on Citus without new connections: the change counters become a distributed
-- table co-located with the stores.
--
-- V0011 kept each worker's counts in a table of that worker's own, and the guard asked
-- every worker for its total through run_command_on_workers, which opens new
-- connections on every call: about 25 ms per guarded query on the local cluster, so a
-- lookup cost 30-60 ms there against under 1 ms on one node.
--
-- Here the counts live in audit.dataset_shard_counts, which `woe distribute` distributes
-- co-located with the stores: every store shard has a counter shard on the same node.
-- A change trigger firing on a store shard adds 1 to its row in that co-located counter
-- shard, a plain local write on the node holding both (no distributed query runs inside
-- a shard's statement). The guard reads the counts with one ordinary distributed query,
-- over Citus' cached connections, and groups them by the node holding each counter
-- shard, so the marks keep V0011's form ({"host:port": total}). A node that cannot
-- answer makes the query fail, and the guard refuses (WC001), as before.
--
-- What else changes:
-- * a counter row's shard_key is the id of the counter shard that holds it (what the
--   marks are grouped by), not a value hashing into that shard: the table is only ever
--   read whole, never by key;
-- * a transaction that wrote a store now sees its own counts through the guard (the
--   same connections), where V0011 asked over separate ones;
-- * counter shards move and split with the stores' shards (one co-location group);
-- * on a server without Citus the table stays empty and the guard never reads it;
-- * a database distributed before this migration has its stores distributed but not
--   the counters: the guard refuses (WC001) until `woe distribute` has run again, and
--   certifications made before count in the old form, so the dataset needs a new
--   certification afterwards. Nothing is served unchecked in between.
-- V0011's node-local table stays, for the one moment a shard is not yet in Citus'
-- metadata on its node (while create_distributed_table copies existing rows into it);
-- the guard no longer reads it.

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

CREATE TABLE audit.dataset_shard_counts (
    shard_key  bigint NOT NULL,
    dataset    text NOT NULL,
    shard      text NOT NULL,
    changes    bigint NOT NULL,
    PRIMARY KEY (shard_key, dataset, shard)
);
COMMENT ON TABLE audit.dataset_shard_counts IS
    'On Citus, distributed co-located with the stores: per store shard, how many writing statements it has seen, '
    'kept in the counter shard on the same node (shard_key = that counter shard''s id). Only ever counts up. '
    'Empty on a server without Citus.';
REVOKE ALL ON audit.dataset_shard_counts FROM PUBLIC;

-- The co-located counter shard of store shard p_rel on this node, as a qualified name
-- (NULL when p_rel is not a shard Citus' metadata here knows, when the counters are not
-- distributed co-located with it, or when this node does not hold that counter shard).
CREATE FUNCTION audit.shard_counter_of(p_rel oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counter text;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_shard') IS NULL OR to_regclass('audit.dataset_shard_counts') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT format(''%I.%I'', n.nspname, k.relname || ''_'' || cs.shardid)
               FROM pg_catalog.pg_class AS c
               JOIN pg_catalog.pg_dist_shard AS s ON s.shardid::text = substring(c.relname from ''_([0-9]+)$'')
               JOIN pg_catalog.pg_class AS l ON l.oid = s.logicalrelid
                                            AND c.relname = l.relname || ''_'' || s.shardid
                                            AND c.relnamespace = l.relnamespace
               JOIN pg_catalog.pg_dist_partition AS lp ON lp.logicalrelid = s.logicalrelid
               JOIN pg_catalog.pg_dist_partition AS kp ON kp.logicalrelid = ''audit.dataset_shard_counts''::regclass
                                                      AND kp.colocationid = lp.colocationid
               JOIN pg_catalog.pg_dist_shard AS cs ON cs.logicalrelid = kp.logicalrelid
                                                  AND cs.shardminvalue = s.shardminvalue
               JOIN pg_catalog.pg_class AS k ON k.oid = kp.logicalrelid
               JOIN pg_catalog.pg_namespace AS n ON n.oid = k.relnamespace
              WHERE c.oid = $1'
        INTO counter USING p_rel;
    IF counter IS NULL OR to_regclass(counter) IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN counter;
END $$;
REVOKE EXECUTE ON FUNCTION audit.shard_counter_of(oid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION audit.note_dataset_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counter text;
BEGIN
    -- The coordinator, or one node: a statement on the table itself stamps the dataset.
    IF to_regclass('audit.dataset_changes') IS NOT NULL AND NOT audit.is_citus_shard(TG_RELID) THEN
        INSERT INTO audit.dataset_changes AS c (dataset, changed_at)
        VALUES (TG_ARGV[0], clock_timestamp())
        ON CONFLICT (dataset) DO UPDATE SET changed_at = greatest(c.changed_at, excluded.changed_at);
        RETURN NULL;
    END IF;
    -- A shard: count in its co-located counter shard, on this node.
    counter := audit.shard_counter_of(TG_RELID);
    IF counter IS NOT NULL THEN
        EXECUTE format('INSERT INTO %s AS c (shard_key, dataset, shard, changes) VALUES ($1, $2, $3, 1) '
                       'ON CONFLICT (shard_key, dataset, shard) DO UPDATE SET changes = c.changes + 1', counter)
            USING substring(counter from '_([0-9]+)$')::bigint, TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
    ELSE
        -- Not yet in this node's metadata (create_distributed_table copying rows into it).
        INSERT INTO audit.dataset_shard_changes AS c (dataset, shard, changes)
        VALUES (TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1)
        ON CONFLICT (dataset, shard) DO UPDATE SET changes = c.changes + 1;
    END IF;
    RETURN NULL;
END $$;

-- Every node's total of shard changes for p_dataset, as {"host:port": total}; {} on a
-- server without Citus or without distributed tables. Raises WC001 when the counters are
-- not distributed while tables are (run woe distribute), or when a node cannot answer.
CREATE OR REPLACE FUNCTION audit.node_change_marks(p_dataset text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    marks    jsonb;
    laid_out boolean;
    counted  boolean;
    r        record;
    shards   bigint[] := '{}';
    counts   bigint[] := '{}';
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN '{}';
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition),
                    EXISTS (SELECT FROM pg_catalog.pg_dist_partition
                             WHERE logicalrelid = ''audit.dataset_shard_counts''::regclass)'
        INTO laid_out, counted;
    IF NOT laid_out THEN
        RETURN '{}';
    END IF;
    IF NOT counted THEN
        RAISE EXCEPTION 'dataset % is not certified: its tables are distributed but its change counters '
                        '(audit.dataset_shard_counts) are not, so writes on the nodes holding its shards '
                        'cannot be seen', p_dataset
            USING ERRCODE = 'WC001',
                  HINT = 'Run python -m woe_core distribute, then certify again: python -m woe_core certify';
    END IF;
    -- The counter rows (one distributed query; a row per store shard), then their sums by
    -- the node holding each counter shard (Citus' local metadata).
    BEGIN
        FOR r IN EXECUTE 'SELECT shard_key, changes FROM audit.dataset_shard_counts WHERE dataset = $1'
            USING p_dataset LOOP
            shards := shards || r.shard_key;
            counts := counts || r.changes;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'dataset % is not certified: a node holding its shards cannot report its changes (%), '
                        'so its data cannot be shown to be unchanged', p_dataset, SQLERRM
            USING ERRCODE = 'WC001',
                  HINT = 'Bring the node back; a node added since the layout was made needs: '
                         'python -m woe_core distribute';
    END;
    EXECUTE 'SELECT coalesce(jsonb_object_agg(t.node, t.total::text), ''{}'')
               FROM (SELECT nd.nodename || '':'' || nd.nodeport AS node, sum(u.changes) AS total
                       FROM unnest($1, $2) AS u (shard_key, changes)
                       JOIN pg_catalog.pg_dist_placement AS p ON p.shardid = u.shard_key
                       JOIN pg_catalog.pg_dist_node AS nd ON nd.groupid = p.groupid
                      GROUP BY 1) AS t'
        INTO marks USING shards, counts;
    RETURN marks;
END $$;
REVOKE EXECUTE ON FUNCTION audit.node_change_marks(text) FROM PUBLIC;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
