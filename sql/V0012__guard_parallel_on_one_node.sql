-- The guard in the live views' workers on one node, only in the leader on Citus.
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
