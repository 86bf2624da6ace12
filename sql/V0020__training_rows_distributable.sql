-- Training's rows become a table that a distributed PostgreSQL (Citus) can shard.
--
-- Training labels, weights and bands every resolved snapshot once and then makes
-- several passes over those rows (counts, order statistics of the presentation
-- score, band sums, OOF scores, metrics). They used to go into a temporary table,
-- which exists only on the node that runs the session: on Citus every snapshot
-- travelled to the coordinator and every pass ran there. ml.woe_anchor_training_rows_v1
-- is an ordinary (unlogged) table instead: `woe distribute` shards it by listing_id
-- next to the feature stores, so the insert from the stores' join and every pass
-- run on the workers; on one node, unlike a temporary table, the planner may scan
-- it with parallel workers.
--
-- A training deletes the rows it can see first (a crash after a commit, or rows a
-- trainer inserted by hand), and empties the table after its commit (woe_core.train;
-- best effort: rows it could not remove stay until the next training deletes them). Trainings run one at a time
-- (ml.woe_anchor_training_lock_v1), and a training's rows are invisible to every
-- other transaction until it commits. Unlogged: the rows are a scratch copy of
-- certified data, rebuilt by every training, so they need no WAL and a crash may
-- empty the table.
--
-- Banding: ml.woe_pos_trust and ml.woe_pos_cond are rewritten from `CASE x WHEN 'a'`
-- to `CASE WHEN x = 'a'` (the same values). Citus evaluates on the coordinator the
-- parts of a pushed-down INSERT ... SELECT that reference no column, once the query
-- holds a parameter or a stable function; the comparison inside a simple CASE
-- references only the CASE's own operand placeholder, and came out as NULL::boolean:
-- the workers got `CASE f.seller_trust_tier WHEN NULL::boolean` and failed with
-- "operator does not exist: text = boolean" (Citus 14.0.1, found on the local
-- cluster).

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

CREATE OR REPLACE FUNCTION ml.woe_pos_trust(tier text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN tier = 'HIGH' THEN 1
                WHEN tier = 'MEDIUM' THEN 2
                WHEN tier = 'LOW' THEN 3
                WHEN tier = 'NEW' THEN 4
                ELSE 5 END
$$;

CREATE OR REPLACE FUNCTION ml.woe_pos_cond(item_condition text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN item_condition = 'new' THEN 1
                WHEN item_condition = 'like_new' THEN 2
                WHEN item_condition = 'good' THEN 3
                WHEN item_condition = 'fair' THEN 4
                WHEN item_condition = 'for_parts' THEN 5
                ELSE 6 END
$$;

-- One row per resolved snapshot of a training: its split, label, weight, fold, the slot of
-- each band that does not depend on the model's cuts, and its presentation score.
CREATE UNLOGGED TABLE ml.woe_anchor_training_rows_v1 (
    listing_id         bigint,
    generation         text,
    t0                 timestamptz,
    fold               integer,
    is_train           boolean,
    y                  smallint NOT NULL,
    w                  double precision NOT NULL,
    s_dsold            smallint,
    s_trust            smallint,
    s_ship             smallint,
    s_sale             smallint,
    s_cond             smallint,
    s_dmg              smallint,
    s_bat              smallint,
    s_vdmg             smallint,
    s_acc              smallint,
    presentation_score double precision
);
COMMENT ON TABLE ml.woe_anchor_training_rows_v1 IS
    'Scratch rows of the training in progress (woe_core.train), emptied after each training. '
    'Distributed next to the feature stores on Citus (woe distribute).';
REVOKE ALL ON ml.woe_anchor_training_rows_v1 FROM PUBLIC;

-- As V0018's, plus the training rows for trainers: they fill, read, delete and empty
-- them, and analyze them (MAINTAIN, PostgreSQL 17 on; before that ANALYZE by a trainer
-- is skipped with a warning, and the planner goes without the statistics). V0018's body
-- is kept under a name of its own and called first. A later migration that replaces
-- ml.grant_woe_anchor_roles must keep calling it and keep these grants.
ALTER FUNCTION ml.grant_woe_anchor_roles() RENAME TO grant_woe_anchor_roles_v0018;
REVOKE EXECUTE ON FUNCTION ml.grant_woe_anchor_roles_v0018() FROM PUBLIC;

CREATE FUNCTION ml.grant_woe_anchor_roles() RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    granted text[] := ml.grant_woe_anchor_roles_v0018();
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_trainer') THEN
        GRANT SELECT, INSERT, DELETE, TRUNCATE ON ml.woe_anchor_training_rows_v1 TO woe_trainer;
        IF current_setting('server_version_num')::int >= 170000 THEN
            EXECUTE 'GRANT MAINTAIN ON ml.woe_anchor_training_rows_v1 TO woe_trainer';
        END IF;
    END IF;
    RETURN granted;
END $$;
REVOKE EXECUTE ON FUNCTION ml.grant_woe_anchor_roles() FROM PUBLIC;
COMMENT ON FUNCTION ml.grant_woe_anchor_roles() IS
    'Grants woe_reader, woe_trainer, woe_certifier and woe_promoter (those that exist) their privileges; idempotent.';

SELECT ml.grant_woe_anchor_roles();

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
