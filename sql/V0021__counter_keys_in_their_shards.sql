-- On Citus: each change-count row gets a distribution value that hashes into its own
-- counter shard, so that Citus can split the stores' shards.
--
-- Since V0015 the change trigger on a store shard counts in the co-located counter shard
-- on its node, a local write to that shard's table, and keyed the row by the counter
-- shard's id. That value need not hash into the shard's range: Citus reads the table only
-- whole, so nothing noticed until a shard split, which routes every row of the shard
-- being split to a new shard by its value, and failed ("cannot find shard interval ...
-- Hash of the partition column value does not fall into any shards"; found on the local
-- cluster). Moves were not affected: they copy a shard as it is.
--
-- audit.counter_key(shard) is the smallest positive bigint whose Citus hash (worker_hash,
-- the hash Citus routes a bigint by) falls into that shard's range, read from the node's
-- own metadata: the same value on every node. The trigger keys new rows by it from now on.
--
-- The rows counted before keep their old keys until `woe distribute` runs again: it
-- re-keys them shard by shard (woe_core/distribute.py), keeping every row's dataset, store
-- shard, node group and count, so the marks the guard compares do not change and
-- certifications made before stay valid. This migration cannot: Citus sends
-- ALTER TABLE ... DISABLE TRIGGER to the workers' copies of the table but not to its
-- shards, where the trigger refusing deletes (counts only go up, V0015) fires; the
-- re-key runs on each shard itself. Until then a split of a shard holding such a row
-- still fails as a whole, as before.
--
-- After a split, a count stays in whichever new counter shard its key hashes into (the
-- sums by node group do not change), and the next write to a new store shard starts a
-- row of its own in the counter shard co-located with it. Finding the key takes about
-- 2^32 / (the shard's hash range) tries on every writing statement: 32 for 32 shards. A
-- shard of one hash value (tenant isolation) has no key within the bound, and its writes
-- are refused, saying so: not supported.
--
-- The primary key gains node_group: a write to a shard moved to another node is counted
-- under that node (V0015 added it to the row of the node that first counted the shard,
-- which the marks then named).

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

-- On a database already distributed, the primary key below is DDL on every counter shard
-- and the functions after it are distributed objects: Citus runs function commands only
-- after the transaction's shard commands went one connection per node.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
END $$;

-- A row per store shard and node group: a write to a shard moved to another node counts
-- under the node that holds it now, in a row of its own, where the ON CONFLICT of V0015
-- added it to the row of the node that first counted the shard.
ALTER TABLE audit.dataset_shard_counts DROP CONSTRAINT dataset_shard_counts_pkey;
ALTER TABLE audit.dataset_shard_counts ADD PRIMARY KEY (shard_key, dataset, shard, node_group);

CREATE FUNCTION audit.counter_key(p_counter_shard bigint) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lo  integer;
    hi  integer;
    key bigint;
    k   integer;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_shard') IS NULL THEN
        RAISE EXCEPTION 'counter keys exist only on Citus (no pg_dist_shard here)'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE 'SELECT shardminvalue::integer, shardmaxvalue::integer FROM pg_catalog.pg_dist_shard
              WHERE shardid = $1 AND logicalrelid = ''audit.dataset_shard_counts''::regclass'
        INTO lo, hi USING p_counter_shard;
    IF lo IS NULL THEN
        RAISE EXCEPTION 'shard % is not a hash-distributed shard of audit.dataset_shard_counts in this node''s metadata',
            p_counter_shard USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- About 2^32 / (hi - lo + 1) candidates: 32 for 32 shards. Bounded, so a pathologically
    -- narrow shard fails the write with this message instead of searching for minutes.
    FOR k IN 1..5000000 LOOP
        IF worker_hash(k::bigint) BETWEEN lo AND hi THEN
            key := k;
            EXIT;
        END IF;
    END LOOP;
    IF key IS NULL THEN
        RAISE EXCEPTION 'no key up to 5,000,000 hashes into counter shard % (hash range % to %): the range is too narrow '
                        'to count its writes', p_counter_shard, lo, hi
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN key;
END $$;
REVOKE EXECUTE ON FUNCTION audit.counter_key(bigint) FROM PUBLIC;
COMMENT ON FUNCTION audit.counter_key(bigint) IS
    'The smallest positive bigint whose Citus hash falls into counter shard p_counter_shard''s range: '
    'the distribution value of the change-count rows kept in that shard.';

-- As V0015's, keying the row by audit.counter_key, one row per node group.
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
                       'ON CONFLICT (shard_key, dataset, shard, node_group) DO UPDATE SET changes = c.changes + 1', counter)
            USING audit.counter_key(substring(counter from '_([0-9]+)"?$')::bigint), TG_ARGV[0],
                  TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, node_group;
    ELSE
        -- Not yet in this node's metadata (create_distributed_table copying rows into it).
        INSERT INTO audit.dataset_shard_changes AS c (dataset, shard, changes)
        VALUES (TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 1)
        ON CONFLICT (dataset, shard) DO UPDATE SET changes = c.changes + 1;
    END IF;
    RETURN NULL;
END $$;

COMMENT ON TABLE audit.dataset_shard_counts IS
    'On Citus, distributed co-located with the stores: per store shard, how many writing statements it has seen, '
    'kept in the counter shard on the same node (shard_key = audit.counter_key(that counter shard), a value '
    'hashing into it; node_group = the Citus group of the node that counted, a row per group). Only ever counts up. '
    'Empty on a server without Citus.';

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
