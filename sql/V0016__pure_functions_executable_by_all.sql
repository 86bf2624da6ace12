-- The pure functions of banding and scoring, executable by every role explicitly.
--
-- The live views and training call the ml.woe_band_*, woe_pos_*, woe_slot_*,
-- woe_slot_of_* functions, woe_sigmoid and the like with the rights of the session's
-- user (PostgreSQL checks EXECUTE for the caller, not for a view's owner, and Citus
-- runs the shard queries as that user). Until now they were executable only through
-- PostgreSQL's default EXECUTE for PUBLIC, which a server may have revoked
-- (ALTER DEFAULT PRIVILEGES ... REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC): there a
-- reader's guarded lookup and a trainer's training were refused. Every IMMUTABLE
-- function of ml is pure (it reads no table and changes nothing), so granting it to
-- PUBLIC discloses nothing; the grant is derived from the catalogue rather than listed,
-- and tests/test_roles.py checks that every such function carries it.

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
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc AS p
              WHERE p.pronamespace = 'ml'::regnamespace AND p.provolatile = 'i' AND NOT p.prosecdef
              ORDER BY 1 LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
END $$;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
