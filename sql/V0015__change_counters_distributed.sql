-- The guard on Citus without new connections: the change counters become a distributed
-- table co-located with the stores.
--
-- V0011 kept each worker's counts in a table of that worker's own, and the guard asked
-- every worker for its total through run_command_on_workers, which opens new
-- connections on every call: about 25 ms per guarded query on the local cluster, so a
-- lookup cost 30-60 ms there against under 1 ms on one node.
--
-- Here the counts live in audit.dataset_shard_counts, which `woe distribute` distributes
-- first, in a co-location group the stores then join: every store shard has a counter
-- shard on the same node. A change trigger firing on a store shard adds 1 to its row in
-- that co-located counter shard, a plain local write on the node holding both (no
-- distributed query runs inside a shard's statement); a shard without one has its write
-- refused. The guard checks that every distributed table of the dataset is co-located
-- with the counters, reads the counts with one ordinary distributed query over Citus'
-- cached connections, and sums them by the node that counted them, so the marks keep
-- V0011's form ({"host:port": total}). A node that cannot answer makes the
-- query fail, and the guard refuses (WC001), as before.
--
-- What else changes:
-- * counts only go up, for every role including the owner, on the coordinator and on
--   every counter shard (lowering one after a write would make the marks match again);
-- * a counter row records the Citus group of the node that counted it (node_group, from
--   pg_dist_local_group), which the marks are summed by; its shard_key is the id of the
--   counter shard it was written to, not a value hashing into that shard: the table is
--   only ever read whole, never by key;
-- * a transaction that wrote a store now sees its own counts through the guard (the
--   same connections), where V0011 asked over separate ones;
-- * on a server without Citus the table stays empty and the guard never reads it;
-- * a database distributed before this migration has its stores distributed but not
--   the counters: the guard refuses (WC001), and writes to the stores' shards are
--   refused, until `woe distribute` has run again; certifications made before count in
--   the old form, so the dataset needs a new certification afterwards.
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
    shard_key   bigint NOT NULL,
    dataset     text NOT NULL,
    shard       text NOT NULL,
    node_group  integer NOT NULL,
    changes     bigint NOT NULL CHECK (changes > 0),
    PRIMARY KEY (shard_key, dataset, shard)
);
COMMENT ON TABLE audit.dataset_shard_counts IS
    'On Citus, distributed co-located with the stores: per store shard, how many writing statements it has seen, '
    'kept in the counter shard on the same node (shard_key = that counter shard''s id; node_group = the Citus group '
    'of the node that counted). Only ever counts up. '
    'Empty on a server without Citus.';
REVOKE ALL ON audit.dataset_shard_counts FROM PUBLIC;

-- Counts only go up, for every role including the owner, on every node: a row keeps its
-- key and never loses changes, and no row is deleted or truncated. (Lowering a count after
-- a write would make the marks match a certification again.) Distributed with
-- citus.enable_unsafe_triggers, these triggers are on every counter shard too, so a
-- statement sent to a worker directly is refused there as well.
CREATE FUNCTION audit.counts_only_up() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.shard_key IS DISTINCT FROM OLD.shard_key OR NEW.dataset IS DISTINCT FROM OLD.dataset
       OR NEW.shard IS DISTINCT FROM OLD.shard OR NEW.node_group IS DISTINCT FROM OLD.node_group
       OR NEW.changes < OLD.changes THEN
        RAISE EXCEPTION '% only counts up: a row keeps its key and its changes never decrease (% to %)',
            TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, OLD.changes, NEW.changes
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER dataset_shard_counts_only_up BEFORE UPDATE ON audit.dataset_shard_counts
    FOR EACH ROW EXECUTE FUNCTION audit.counts_only_up();
CREATE TRIGGER dataset_shard_counts_keep BEFORE DELETE OR TRUNCATE ON audit.dataset_shard_counts
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();
ALTER TABLE audit.dataset_shard_counts ENABLE ALWAYS TRIGGER dataset_shard_counts_only_up;
ALTER TABLE audit.dataset_shard_counts ENABLE ALWAYS TRIGGER dataset_shard_counts_keep;

-- The Citus shard id of p_rel when this node's metadata (pg_dist_shard) lists p_rel as a
-- shard, else NULL (no Citus, not a shard, or a shard not yet in this node's metadata).
-- Found by name (the shard id ends a shard's name, also when Citus shortens a long one)
-- and checked against Citus' shard_name(): Citus hides shards from queries on pg_class in
-- sessions that are not its own (a login writing on a worker directly), so pg_class is
-- never queried for them; regclass and to_regclass use the catalogue caches, which are
-- not filtered.
CREATE FUNCTION audit.citus_shard_id(p_rel oid) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_shard') IS NULL THEN
        RETURN NULL;
    END IF;
    id := substring(p_rel::regclass::text from '_([0-9]+)"?$')::bigint;
    IF id IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT s.shardid FROM pg_catalog.pg_dist_shard AS s
              WHERE s.shardid = $1 AND to_regclass(shard_name(s.logicalrelid, s.shardid)) = $2'
        INTO id USING id, p_rel;
    RETURN id;
END $$;
REVOKE EXECUTE ON FUNCTION audit.citus_shard_id(oid) FROM PUBLIC;

-- V0011's test for a shard, which queried pg_class; its one caller is replaced below.
DROP FUNCTION audit.is_citus_shard(oid);

-- The co-located counter shard of store shard p_shard on this node, as a name to_regclass
-- resolves (NULL when the counters are not distributed co-located with its table, or when
-- this node does not hold that counter shard).
CREATE FUNCTION audit.shard_counter_of(p_shard bigint) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    counter text;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_shard') IS NULL OR to_regclass('audit.dataset_shard_counts') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT shard_name(cs.logicalrelid, cs.shardid)
               FROM pg_catalog.pg_dist_shard AS s
               JOIN pg_catalog.pg_dist_partition AS lp ON lp.logicalrelid = s.logicalrelid
               JOIN pg_catalog.pg_dist_partition AS kp ON kp.logicalrelid = ''audit.dataset_shard_counts''::regclass
                                                      AND kp.colocationid = lp.colocationid
               JOIN pg_catalog.pg_dist_shard AS cs ON cs.logicalrelid = kp.logicalrelid
                                                  AND cs.shardminvalue = s.shardminvalue
              WHERE s.shardid = $1'
        INTO counter USING p_shard;
    IF counter IS NULL OR to_regclass(counter) IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN counter;
END $$;
REVOKE EXECUTE ON FUNCTION audit.shard_counter_of(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION audit.note_dataset_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shard_id   bigint;
    counter    text;
    node_group integer;
BEGIN
    shard_id := audit.citus_shard_id(TG_RELID);
    -- The coordinator, or one node: a statement on the table itself stamps the dataset.
    IF to_regclass('audit.dataset_changes') IS NOT NULL AND shard_id IS NULL THEN
        INSERT INTO audit.dataset_changes AS c (dataset, changed_at)
        VALUES (TG_ARGV[0], clock_timestamp())
        ON CONFLICT (dataset) DO UPDATE SET changed_at = greatest(c.changed_at, excluded.changed_at);
        RETURN NULL;
    END IF;
    IF shard_id IS NOT NULL THEN
        -- A shard: count in its co-located counter shard, on this node, or refuse the write.
        counter := audit.shard_counter_of(shard_id);
        IF counter IS NULL THEN
            RAISE EXCEPTION 'a write to % cannot be counted: this node has no change counter shard co-located with it',
                TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'The dataset''s tables must be co-located with audit.dataset_shard_counts: '
                             'python -m woe_core distribute on the coordinator.';
        END IF;
        EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO node_group;
        EXECUTE format('INSERT INTO %s AS c (shard_key, dataset, shard, node_group, changes) VALUES ($1, $2, $3, $4, 1) '
                       'ON CONFLICT (shard_key, dataset, shard) DO UPDATE SET changes = c.changes + 1', counter)
            USING substring(counter from '_([0-9]+)"?$')::bigint, TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
                  node_group;
    ELSE
        -- Not yet in this node's metadata (create_distributed_table copying rows into it).
        INSERT INTO audit.dataset_shard_changes AS c (dataset, shard, changes)
        VALUES (TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1)
        ON CONFLICT (dataset, shard) DO UPDATE SET changes = c.changes + 1;
    END IF;
    RETURN NULL;
END $$;

-- Every node's total of shard changes for p_dataset, as {"host:port": total}; {} on a
-- server without Citus or when none of the dataset's tables is distributed. Raises WC001
-- when one of them is not co-located with the counters (run woe distribute), or when a
-- node cannot answer.
CREATE OR REPLACE FUNCTION audit.node_change_marks(p_dataset text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    marks       jsonb;
    distributed bigint;
    apart       bigint;
    r           record;
    groups      integer[] := '{}';
    counts      bigint[] := '{}';
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN '{}';
    END IF;
    -- The dataset's distributed tables (those its change triggers are on), and how many of
    -- them are not co-located with the counters (all, when the counters are not distributed).
    EXECUTE 'SELECT count(*), count(*) FILTER (WHERE k.colocationid IS DISTINCT FROM p.colocationid)
               FROM (SELECT DISTINCT t.tgrelid FROM pg_catalog.pg_trigger AS t
                      WHERE t.tgfoid = ''audit.note_dataset_change()''::regprocedure
                        AND t.tgargs = convert_to($1, ''UTF8'') || ''\x00''::bytea) AS s
               JOIN pg_catalog.pg_dist_partition AS p ON p.logicalrelid = s.tgrelid
               LEFT JOIN pg_catalog.pg_dist_partition AS k
                      ON k.logicalrelid = ''audit.dataset_shard_counts''::regclass'
        INTO distributed, apart USING p_dataset;
    IF distributed = 0 THEN
        RETURN '{}';
    END IF;
    IF apart > 0 THEN
        RAISE EXCEPTION 'dataset % is not certified: % of its distributed tables are not co-located with its change '
                        'counters (audit.dataset_shard_counts), so writes on the nodes holding their shards '
                        'cannot be seen', p_dataset, apart
            USING ERRCODE = 'WC001',
                  HINT = 'Run python -m woe_core distribute, then certify again: python -m woe_core certify';
    END IF;
    -- The counter rows (one distributed query; a row per store shard), then their sums by
    -- the node that counted them, named from Citus' local metadata.
    BEGIN
        FOR r IN EXECUTE 'SELECT node_group, changes FROM audit.dataset_shard_counts WHERE dataset = $1'
            USING p_dataset LOOP
            groups := groups || r.node_group;
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
               FROM (SELECT coalesce(min(nd.nodename || '':'' || nd.nodeport), ''group '' || u.node_group) AS node,
                            sum(u.changes) AS total
                       FROM unnest($1, $2) AS u (node_group, changes)
                       LEFT JOIN pg_catalog.pg_dist_node AS nd ON nd.groupid = u.node_group AND nd.noderole = ''primary''
                      GROUP BY u.node_group) AS t'
        INTO marks USING groups, counts;
    RETURN marks;
END $$;
REVOKE EXECUTE ON FUNCTION audit.node_change_marks(text) FROM PUBLIC;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
