-- Governance (docs/governance.md): promotion history, the one promotion function, the
-- guard on is_active, deletion of candidates and the group roles.
--
-- What holds, and for whom
-- ------------------------
-- * At most one active model: the partial unique index of V0002.
-- * is_active changes only inside ml.promote_woe_anchor_model, for every role
--   that is not the registry's owner (nor a superuser, nor a member of the owner
--   role):
--     - no such role is granted UPDATE on ml.woe_anchor_model_registry_v1;
--     - the triggers below refuse, whatever the session's settings, any change
--       of is_active and any INSERT of an active row unless the current user is
--       (a member of) the registry's owner AND the transaction-local setting
--       woe.promoting is on;
--     - the promotion function is SECURITY DEFINER (it runs as the owner) and
--       is the only function that sets woe.promoting, just around its two
--       UPDATEs, restoring the previous value before it returns.
--   The owner itself is refused too, unless it deliberately runs
--   SELECT set_config('woe.promoting', 'on', true) in its transaction first: a
--   break-glass for fixtures and repairs (it writes no history row). Nothing
--   inside a database can bind its owner (it may also disable triggers), so the
--   owner's login belongs to administrators; applications log in as members of
--   the roles below.
-- * The active model cannot be deleted, a model named in the promotion history
--   cannot be deleted (foreign keys), and the final cuts and map of the active or
--   a once-promoted model cannot change (so the completeness checked at
--   promotion stays true and rolling back restores the same scores).
-- * Every promotion is a row of the append-only ml.woe_anchor_promotions_v1,
--   written in the same transaction as the switch.
--
-- Roles
-- -----
-- Four NOLOGIN group roles, created here when missing (roles are cluster-wide,
-- so every database of a server shares them; creating them needs CREATEROLE,
-- and without it this script warns and an administrator creates them later):
--
--   woe_reader     reads fail-closed live scores (ml.woe_anchor_scores_live_train_v; also the
--                  entrypoint view, which the scores' banding function reads as the caller)
--   woe_trainer    reads the feature stores, writes candidate models, deletes candidates
--   woe_certifier  reads the feature stores, records certifications
--   woe_promoter   runs the promotion preflight and promotes, reads registry and history
--
-- ml.grant_woe_anchor_roles() grants their privileges (re-runnable; this
-- script runs it once). A deployment lets its own logins act through them:
--
--   CREATE ROLE app_login LOGIN PASSWORD '...';
--   GRANT woe_reader TO app_login;
--   GRANT woe_trainer, woe_certifier, woe_promoter TO reviewer_login;
--   -- when the roles did not exist at migration time, as an administrator:
--   CREATE ROLE woe_reader NOLOGIN;  -- ... and the three others, then as the owner:
--   SELECT ml.grant_woe_anchor_roles();

-- The promotion lock: pg_advisory_xact_lock(2294458197846082618), the first 8
-- bytes of sha256('woe_core.promotion') as a signed int64 (woe_core.promote uses
-- the same key). Promotions and ml.delete_woe_anchor_model take it exclusively;
-- any other DELETE of models, and UPDATE or DELETE of cuts and maps, take it shared.

CREATE TABLE ml.woe_anchor_promotions_v1 (
    promotion_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    promoted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor           text NOT NULL CHECK (actor ~ '[^[:space:]]'),
    from_model_key  text REFERENCES ml.woe_anchor_model_registry_v1 (model_key),
    to_model_key    text NOT NULL REFERENCES ml.woe_anchor_model_registry_v1 (model_key),
    reason          text NOT NULL CHECK (reason ~ '[^[:space:]]'),
    db_user         text NOT NULL DEFAULT session_user,
    CONSTRAINT promotion_changes_model CHECK (from_model_key IS DISTINCT FROM to_model_key)
);
COMMENT ON TABLE ml.woe_anchor_promotions_v1 IS
    'One row per promotion, in commit order: who (actor, db_user), when, from which active model (NULL = none) '
    'to which, and why. Append-only; ml.promote_woe_anchor_model writes it (no other role may insert).';
CREATE INDEX woe_anchor_promotions_v1_from_idx ON ml.woe_anchor_promotions_v1 (from_model_key);
CREATE INDEX woe_anchor_promotions_v1_to_idx ON ml.woe_anchor_promotions_v1 (to_model_key);

CREATE TRIGGER woe_anchor_promotions_v1_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ml.woe_anchor_promotions_v1
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

-- True when the current transaction may change is_active or governed artifacts:
-- woe.promoting is on and the current user is (a member of) the registry's owner.
-- Inside ml.promote_woe_anchor_model both hold.
CREATE FUNCTION ml.woe_anchor_governance_bypass() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(current_setting('woe.promoting', true) = 'on', false)
           AND pg_has_role(current_user,
                           (SELECT c.relowner FROM pg_class AS c
                             WHERE c.oid = 'ml.woe_anchor_model_registry_v1'::regclass),
                           'MEMBER')
$$;

CREATE FUNCTION ml.woe_anchor_guard_is_active() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ml.woe_anchor_governance_bypass() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        RAISE EXCEPTION 'model % cannot be registered as active: new models start inactive (is_active = false)',
            quote_literal(NEW.model_key)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Promote it with ml.promote_woe_anchor_model(model_key, actor, reason).';
    ELSIF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'is_active of model % cannot be changed directly: only ml.promote_woe_anchor_model changes the active model',
            quote_literal(OLD.model_key)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SELECT ml.promote_woe_anchor_model(model_key, actor, reason) switches the active model and records why.';
    END IF;
    RAISE EXCEPTION 'model % cannot be deleted: it is the active model', quote_literal(OLD.model_key)
        USING ERRCODE = 'insufficient_privilege', HINT = 'Promote another model first.';
END $$;

CREATE TRIGGER woe_anchor_model_registry_v1_insert_inactive
    BEFORE INSERT ON ml.woe_anchor_model_registry_v1
    FOR EACH ROW WHEN (NEW.is_active) EXECUTE FUNCTION ml.woe_anchor_guard_is_active();
CREATE TRIGGER woe_anchor_model_registry_v1_is_active_by_promotion
    BEFORE UPDATE ON ml.woe_anchor_model_registry_v1
    FOR EACH ROW WHEN (NEW.is_active IS DISTINCT FROM OLD.is_active) EXECUTE FUNCTION ml.woe_anchor_guard_is_active();
CREATE TRIGGER woe_anchor_model_registry_v1_keep_active
    BEFORE DELETE ON ml.woe_anchor_model_registry_v1
    FOR EACH ROW WHEN (OLD.is_active) EXECUTE FUNCTION ml.woe_anchor_guard_is_active();

-- Deleting models and changing or deleting artifacts take the promotion lock
-- shared, before the statement touches (and locks) any row: such a statement
-- waits for a promotion in flight and a promotion waits for it, so it cannot slip
-- between a promotion's completeness check and its commit, and the two never
-- deadlock on row locks. Inserts only add rows and do not wait (training
-- transactions can be long).
CREATE FUNCTION ml.woe_anchor_share_promotion_lock() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(2294458197846082618);
    RETURN NULL;
END $$;

CREATE TRIGGER woe_anchor_model_registry_v1_delete_lock BEFORE DELETE ON ml.woe_anchor_model_registry_v1
    FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_share_promotion_lock();
CREATE TRIGGER woe_anchor_cuts_v1_change_lock BEFORE UPDATE OR DELETE ON ml.woe_anchor_cuts_v1
    FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_share_promotion_lock();
CREATE TRIGGER woe_anchor_map_v1_change_lock BEFORE UPDATE OR DELETE ON ml.woe_anchor_map_v1
    FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_share_promotion_lock();

-- The final cuts and map of the active model, or of any model in the promotion
-- history, never change (rows added, altered or removed). Statement-level, over
-- the transition tables, so training's bulk inserts pay one small query.
CREATE FUNCTION ml.woe_anchor_guard_artifacts() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    governed text;
BEGIN
    IF ml.woe_anchor_governance_bypass() THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT n.model_key INTO governed
          FROM (SELECT DISTINCT model_key FROM new_rows) AS n
          JOIN ml.woe_anchor_model_registry_v1 AS r ON r.model_key = n.model_key
         WHERE r.is_active
            OR EXISTS (SELECT FROM ml.woe_anchor_promotions_v1 AS p
                        WHERE p.to_model_key = n.model_key OR p.from_model_key = n.model_key)
         LIMIT 1;
    END IF;
    IF governed IS NULL AND TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT o.model_key INTO governed
          FROM (SELECT DISTINCT model_key FROM old_rows) AS o
          JOIN ml.woe_anchor_model_registry_v1 AS r ON r.model_key = o.model_key
         WHERE r.is_active
            OR EXISTS (SELECT FROM ml.woe_anchor_promotions_v1 AS p
                        WHERE p.to_model_key = o.model_key OR p.from_model_key = o.model_key)
         LIMIT 1;
    END IF;
    IF governed IS NOT NULL THEN
        RAISE EXCEPTION '% of model % cannot change: it is the active model or appears in the promotion history',
            TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, quote_literal(governed)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Train a new candidate instead; promoted models stay as they were promoted.';
    END IF;
    -- A model's cuts and map are written in the transaction that registers it
    -- (as training does). Adding rows to a model registered earlier is refused:
    -- otherwise a row inserted by a transaction still open while the model is
    -- promoted would join the active model unreviewed.
    IF TG_OP = 'INSERT' THEN
        SELECT n.model_key INTO governed
          FROM (SELECT DISTINCT model_key FROM new_rows) AS n
          JOIN ml.woe_anchor_model_registry_v1 AS r ON r.model_key = n.model_key
         WHERE r.xmin <> xid(pg_current_xact_id())
         LIMIT 1;
        IF governed IS NOT NULL THEN
            RAISE EXCEPTION '% rows of model % can only be added in the transaction that registers the model',
                TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, quote_literal(governed)
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Train a new candidate instead of adding to an existing one.';
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER woe_anchor_cuts_v1_governed_insert AFTER INSERT ON ml.woe_anchor_cuts_v1
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_guard_artifacts();
CREATE TRIGGER woe_anchor_cuts_v1_governed_update AFTER UPDATE ON ml.woe_anchor_cuts_v1
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_guard_artifacts();
CREATE TRIGGER woe_anchor_cuts_v1_governed_delete AFTER DELETE ON ml.woe_anchor_cuts_v1
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_guard_artifacts();
CREATE TRIGGER woe_anchor_map_v1_governed_insert AFTER INSERT ON ml.woe_anchor_map_v1
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_guard_artifacts();
CREATE TRIGGER woe_anchor_map_v1_governed_update AFTER UPDATE ON ml.woe_anchor_map_v1
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_guard_artifacts();
CREATE TRIGGER woe_anchor_map_v1_governed_delete AFTER DELETE ON ml.woe_anchor_map_v1
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ml.woe_anchor_guard_artifacts();

-- The promotion checklist of one model, in order: model_exists, schema_served,
-- artifacts_complete, not_active, certification_fresh. detail says what was found;
-- for a failed check it completes the sentence "promotion of model 'k' refused: ...".
-- The promotion function refuses on the first failed check, so the checklist a
-- reviewer sees and the rules the database enforces are the same code.
CREATE FUNCTION ml.woe_anchor_promotion_preflight_v1(p_model_key text)
RETURNS TABLE (check_name text, passed boolean, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m         record;
    found_m   boolean;
    served    integer[];
    has_cuts  boolean;
    bands     text;
    missing   text;
    active    text;
BEGIN
    SELECT r.model_key, r.band_schema_version, r.is_active INTO m
      FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.model_key = p_model_key;
    found_m := FOUND;
    SELECT array_agg(DISTINCT v.band_schema_version ORDER BY v.band_schema_version) INTO served
      FROM ml.woe_anchor_band_values_v1 AS v;

    check_name := 'model_exists';
    passed := found_m;
    detail := CASE WHEN found_m THEN format('model %L is registered', p_model_key)
                   ELSE 'it does not exist in ml.woe_anchor_model_registry_v1' END;
    RETURN NEXT;

    check_name := 'schema_served';
    passed := found_m AND m.band_schema_version = ANY (served);
    detail := CASE WHEN NOT found_m THEN 'no such model'
                   WHEN passed THEN format('band_schema_version %s is served by the live views', m.band_schema_version)
                   ELSE format('its band_schema_version %s is not served by the live views (they serve: %s)',
                               m.band_schema_version, array_to_string(served, ', ')) END;
    RETURN NEXT;

    check_name := 'artifacts_complete';
    IF NOT found_m THEN
        passed := false;
        detail := 'no such model';
    ELSIF NOT (m.band_schema_version = ANY (served)) THEN
        passed := false;
        detail := format('cannot be checked: band_schema_version %s is not served', m.band_schema_version);
    ELSE
        has_cuts := EXISTS (SELECT FROM ml.woe_anchor_cuts_v1 AS c
                             WHERE c.model_key = p_model_key AND c.fold_id IS NULL);
        SELECT string_agg(b.band_name, ', ' ORDER BY b.first_slot),
               string_agg(b.band_name, ', ' ORDER BY b.first_slot)
                   FILTER (WHERE NOT EXISTS (SELECT FROM ml.woe_anchor_map_v1 AS mp
                                              WHERE mp.model_key = p_model_key AND mp.fold_id IS NULL
                                                AND mp.band_name = b.band_name))
          INTO bands, missing
          FROM (SELECT v.band_name, min(v.slot) AS first_slot
                  FROM ml.woe_anchor_band_values_v1 AS v
                 WHERE v.band_schema_version = m.band_schema_version
                 GROUP BY v.band_name) AS b;
        passed := has_cuts AND missing IS NULL;
        detail := CASE
            WHEN passed THEN format('final cuts and a final map for every band of schema %s (%s)',
                                    m.band_schema_version, bands)
            ELSE concat_ws('; ',
                           CASE WHEN NOT has_cuts THEN 'it has no final cuts (no ml.woe_anchor_cuts_v1 row with fold_id NULL)' END,
                           CASE WHEN missing IS NOT NULL THEN format('its final map lacks the bands: %s', missing) END)
        END;
    END IF;
    RETURN NEXT;

    SELECT r.model_key INTO active FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.is_active;
    check_name := 'not_active';
    passed := found_m AND NOT m.is_active;
    detail := CASE WHEN NOT found_m THEN 'no such model'
                   WHEN m.is_active THEN 'it is already the active model'
                   WHEN active IS NULL THEN 'no model is active'
                   ELSE format('the active model is %L', active) END;
    RETURN NEXT;

    check_name := 'certification_fresh';
    BEGIN
        PERFORM audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', interval '24 hours');
        passed := true;
        detail := 'ml.woe_anchor_feature_store_t0_v1_v has a passing certification younger than 24 hours '
                  'and its data has not changed since';
    EXCEPTION WHEN SQLSTATE 'WC001' THEN
        passed := false;
        detail := SQLERRM;
    END;
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION ml.woe_anchor_promotion_preflight_v1(text) IS
    'Promotion checklist of a model (check_name, passed, detail); ml.promote_woe_anchor_model refuses on the first failed check.';

-- The only way to change the active model. Serialised by the promotion lock:
-- a waiting call re-reads the registry after the previous promotion committed
-- (READ COMMITTED takes a new snapshot per statement), so the history's
-- from_model_key of each row is the to_model_key of the row before it.
-- Refusals raise SQLSTATE WP001 naming the model and the reason; a stale or
-- missing certification raises the guard's SQLSTATE WC001. Deactivates first:
-- the partial unique index allows one active row at any moment.
CREATE FUNCTION ml.promote_woe_anchor_model(p_model_key text, p_actor text, p_reason text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c         record;
    previous  text;
    hint      text;
    new_id    bigint;
    setting   text := current_setting('woe.promoting', true);
BEGIN
    IF p_actor IS NULL OR p_actor !~ '[^[:space:]]' THEN
        RAISE EXCEPTION 'promotion of model % refused: actor must be a non-empty name, got %',
            quote_nullable(p_model_key), quote_nullable(p_actor) USING ERRCODE = 'WP001';
    END IF;
    IF p_reason IS NULL OR p_reason !~ '[^[:space:]]' THEN
        RAISE EXCEPTION 'promotion of model % refused: a reason is required, got %',
            quote_nullable(p_model_key), quote_nullable(p_reason) USING ERRCODE = 'WP001';
    END IF;

    PERFORM pg_advisory_xact_lock(2294458197846082618);

    FOR c IN SELECT * FROM ml.woe_anchor_promotion_preflight_v1(p_model_key) AS f
              WHERE f.check_name <> 'certification_fresh' LOOP
        IF NOT c.passed THEN
            RAISE EXCEPTION 'promotion of model % refused: %', quote_nullable(p_model_key), c.detail
                USING ERRCODE = 'WP001';
        END IF;
    END LOOP;
    BEGIN
        PERFORM audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', interval '24 hours');
    EXCEPTION WHEN SQLSTATE 'WC001' THEN
        GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
        RAISE EXCEPTION 'promotion of model % refused: %', quote_literal(p_model_key), SQLERRM
            USING ERRCODE = 'WC001', HINT = hint;
    END;

    SELECT r.model_key INTO previous FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.is_active;
    -- Set here rather than in a SET clause: a non-superuser owner may not store
    -- a custom setting in a function definition. An error aborts the transaction
    -- (or the caller's savepoint), which reverts the setting too.
    PERFORM set_config('woe.promoting', 'on', true);
    UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false WHERE is_active;
    UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = p_model_key;
    IF NOT FOUND THEN  -- deleted by a concurrent transaction after the checks
        RAISE EXCEPTION 'promotion of model % refused: it was deleted while being promoted',
            quote_literal(p_model_key) USING ERRCODE = 'WP001';
    END IF;
    PERFORM set_config('woe.promoting', coalesce(setting, ''), true);
    INSERT INTO ml.woe_anchor_promotions_v1 (actor, from_model_key, to_model_key, reason)
    VALUES (btrim(p_actor), previous, p_model_key, btrim(p_reason))
    RETURNING promotion_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION ml.promote_woe_anchor_model(text, text, text) IS
    'Makes a complete, schema-served candidate the one active model (certification must be fresh) and appends '
    'the promotion history row; returns its promotion_id. Refusals raise SQLSTATE WP001 (WC001 for certification).';

-- Deletes a candidate and every artifact it wrote (the foreign keys cascade, and
-- a per-model partition of the scores, if any, is dropped).
-- Refuses (WP001) a missing model, the active model and any model named in the
-- promotion history: promoted models are kept for audit and rollback.
CREATE FUNCTION ml.delete_woe_anchor_model(p_model_key text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m     record;
    used  bigint;
    part  regclass;
BEGIN
    PERFORM pg_advisory_xact_lock(2294458197846082618);
    SELECT r.is_active INTO m FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.model_key = p_model_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model % cannot be deleted: it does not exist', quote_nullable(p_model_key)
            USING ERRCODE = 'WP001';
    END IF;
    IF m.is_active THEN
        RAISE EXCEPTION 'model % cannot be deleted: it is the active model', quote_literal(p_model_key)
            USING ERRCODE = 'WP001', HINT = 'Promote another model first.';
    END IF;
    SELECT min(p.promotion_id) INTO used FROM ml.woe_anchor_promotions_v1 AS p
     WHERE p.from_model_key = p_model_key OR p.to_model_key = p_model_key;
    IF used IS NOT NULL THEN
        RAISE EXCEPTION 'model % cannot be deleted: it appears in the promotion history (promotion #%); '
                        'promoted models are kept for audit and rollback', quote_literal(p_model_key), used
            USING ERRCODE = 'WP001';
    END IF;
    DELETE FROM ml.woe_anchor_model_registry_v1 WHERE model_key = p_model_key;
    -- When scores are partitioned per model, the emptied partition goes too.
    FOR part IN SELECT i.inhrelid::regclass
                  FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'ml.woe_anchor_scores_v1'::regclass
                   AND c.relname = 'woe_anchor_scores_v1__' || p_model_key LOOP
        EXECUTE format('DROP TABLE %s', part);
    END LOOP;
END $$;
COMMENT ON FUNCTION ml.delete_woe_anchor_model(text) IS
    'Deletes a never-promoted, inactive candidate with all its cuts, maps and scores; refuses (WP001) anything else.';

REVOKE EXECUTE ON FUNCTION ml.promote_woe_anchor_model(text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ml.woe_anchor_promotion_preflight_v1(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ml.delete_woe_anchor_model(text) FROM PUBLIC;

-- The group roles, created when missing. Several databases may run this script
-- at the same time on one server, so a concurrent creation counts as success.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['woe_reader', 'woe_trainer', 'woe_certifier', 'woe_promoter'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'role % does not exist and % may not create it; an administrator should run '
                              'CREATE ROLE % NOLOGIN, then the owner SELECT ml.grant_woe_anchor_roles()',
                              r, current_user, r;
        END;
    END LOOP;
END $$;

-- Grants each existing group role its privileges; returns the roles granted.
-- Idempotent: run it again after creating a missing role.
CREATE FUNCTION ml.grant_woe_anchor_roles() RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    granted text[] := '{}';
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_reader') THEN
        -- A view reads its tables with the view owner's rights, and the guard is
        -- SECURITY DEFINER, but a function a view calls runs with the caller's:
        -- the score views band rows through ml.woe_anchor_bands_v1 (LANGUAGE sql,
        -- inlined for speed), which reads the certified entrypoint view, so the
        -- reader needs SELECT on that view too. It sees features, never a model,
        -- a map or an unguarded score; the base tables stay closed.
        GRANT USAGE ON SCHEMA ml TO woe_reader;
        GRANT SELECT ON ml.woe_anchor_scores_live_train_v, ml.woe_anchor_feature_store_t0_v1_v TO woe_reader;
        GRANT EXECUTE ON FUNCTION audit.require_certified_strict(text, interval) TO woe_reader;
        granted := granted || 'woe_reader'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_trainer') THEN
        GRANT USAGE ON SCHEMA ml, audit TO woe_trainer;
        GRANT SELECT ON ml.socio_market_feature_store_train_v, ml.iphone_image_features_unified_v1_train_v,
                        ml.woe_anchor_feature_store_t0_v1_v, ml.woe_anchor_band_values_v1,
                        ml.v_woe_anchor_bands_by_model_v1, ml.woe_anchor_scores_by_model_train_v,
                        ml.woe_anchor_scores_live_train_v, ml.woe_anchor_promotions_v1
                     TO woe_trainer;
        -- INSERT names is_active (training writes false explicitly); the trigger
        -- refuses true for anyone but the owner. No UPDATE at all.
        GRANT SELECT, INSERT, DELETE ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_cuts_v1,
                                        ml.woe_anchor_map_v1 TO woe_trainer;
        -- Scores arrive as a staged partition (ml.woe_anchor_scores_stage_v1) and leave
        -- with their model; no trainer deletes score rows directly (those of the
        -- active model included).
        GRANT SELECT, INSERT ON ml.woe_anchor_scores_v1 TO woe_trainer;
        GRANT EXECUTE ON FUNCTION
            ml.woe_band_dsold(double precision, double precision, double precision, double precision, double precision),
            ml.woe_band_trust(text), ml.woe_band_ship(boolean), ml.woe_band_sale(boolean), ml.woe_band_cond(text),
            ml.woe_band_prob3(text, double precision), ml.woe_band_bat(smallint),
            ml.woe_presentation_score(smallint, double precision, double precision, double precision),
            ml.woe_band_present(double precision, double precision, double precision),
            ml.woe_band_acc(boolean, boolean, boolean), ml.woe_fold(bigint, integer), ml.woe_sigmoid(double precision),
            ml.woe_anchor_bands_v1(double precision, double precision, double precision, double precision,
                                   double precision, double precision),
            audit.require_certified_strict(text, interval),
            ml.delete_woe_anchor_model(text),
            ml.woe_anchor_scores_stage_v1(text), ml.woe_anchor_scores_attach_v1(text)
            TO woe_trainer;
        granted := granted || 'woe_trainer'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_certifier') THEN
        GRANT USAGE ON SCHEMA ml, audit TO woe_certifier;
        GRANT SELECT ON ml.socio_market_feature_store_train_v, ml.iphone_image_features_unified_v1_train_v,
                        ml.woe_anchor_feature_store_t0_v1_v, audit.dataset_changes
                     TO woe_certifier;
        GRANT SELECT, INSERT ON audit.dataset_certifications TO woe_certifier;
        GRANT EXECUTE ON FUNCTION audit.dataset_sha256(text, text[]), audit.require_certified_strict(text, interval),
                                  audit.lock_dataset_sources(text)
            TO woe_certifier;
        granted := granted || 'woe_certifier'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_promoter') THEN
        GRANT USAGE ON SCHEMA ml TO woe_promoter;
        GRANT SELECT ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_promotions_v1 TO woe_promoter;
        GRANT EXECUTE ON FUNCTION ml.promote_woe_anchor_model(text, text, text),
                                  ml.woe_anchor_promotion_preflight_v1(text)
            TO woe_promoter;
        granted := granted || 'woe_promoter'::text;
    END IF;
    RETURN granted;
END $$;
REVOKE EXECUTE ON FUNCTION ml.grant_woe_anchor_roles() FROM PUBLIC;
COMMENT ON FUNCTION ml.grant_woe_anchor_roles() IS
    'Grants woe_reader, woe_trainer, woe_certifier and woe_promoter (those that exist) their privileges; idempotent.';

SELECT ml.grant_woe_anchor_roles();
