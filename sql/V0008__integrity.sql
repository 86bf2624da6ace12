-- Governance integrity: what was certified and reviewed is exactly what is served.
--
-- What this script makes hold, for every role (the table owner included, up to a
-- recorded break-glass; a superuser is outside any database's control):
--
-- * Certification is made by the database: audit.certify_dataset runs the
--   contract, row and plausibility checks and the hash itself and stamps time
--   and session_user. No role may write audit.dataset_certifications.
-- * Every change to certified data invalidates it: change triggers fire ALWAYS
--   (also for rows applied by replication, session_replication_role = replica),
--   and an event trigger records any DDL on a dataset's sources (a replaced
--   view, a disabled or dropped trigger, a new child table or partition).
--   Certification refuses a dataset whose sources are not all tracked.
-- * A model is immutable from the moment it is registered: its registry row
--   (every column but is_active), cuts and maps cannot change; is_active changes
--   only in a transaction that recorded a promotion of that model; a model is
--   deleted only in a transaction that recorded its deletion. A row inserted by
--   this transaction is the proof, so a stale snapshot cannot help.
-- * Provenance: promotion re-derives from the certified entrypoint everything
--   live scoring uses and refuses any difference beyond 1e-9.
-- * Locks are rows of ml.woe_anchor_locks_v1 that only the project's functions
--   may lock, with bounded waits; no login outside the project can stall them.
-- * Break-glass: the owner inserts a reason into audit.break_glass_log and makes
--   the change in the same transaction; DDL on governance tables is logged there
--   by the event trigger.

-- ---------------------------------------------------------------------------
-- Event rows: who, when and in which transaction, stamped by the database.
-- ---------------------------------------------------------------------------

-- Stamps NEW with the database's own time (column named by TG_ARGV[0]),
-- session_user and the current top-level transaction id, whatever the client sent.
CREATE FUNCTION audit.stamp_event() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW := jsonb_populate_record(NEW, jsonb_build_object(
        TG_ARGV[0], clock_timestamp(), 'db_user', session_user, 'xact_id', pg_current_xact_id()::text));
    RETURN NEW;
END $$;

CREATE TABLE audit.break_glass_log (
    break_glass_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    logged_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_user         text NOT NULL DEFAULT session_user,
    xact_id         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    model_key       text,
    reason          text NOT NULL CHECK (reason ~ '[^[:space:]]'),
    is_bypass       boolean NOT NULL DEFAULT true
);
COMMENT ON COLUMN audit.break_glass_log.is_bypass IS
    'true: the owner''s deliberate bypass (allows governed changes in its transaction); false: DDL logged by the '
    'event trigger, a record only.';
COMMENT ON TABLE audit.break_glass_log IS
    'Owner-only record of every deliberate bypass of governance (model_key NULL: not about one model) and of '
    'every DDL on a governance table. A governed change is allowed in the transaction that logged it. Append-only.';
CREATE TRIGGER break_glass_log_stamp BEFORE INSERT ON audit.break_glass_log
    FOR EACH ROW EXECUTE FUNCTION audit.stamp_event('logged_at');
CREATE TRIGGER break_glass_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit.break_glass_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

CREATE FUNCTION audit.break_glass_active(p_model_key text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM audit.break_glass_log AS b
                    WHERE b.xact_id = pg_current_xact_id() AND b.is_bypass
                      AND (b.model_key IS NULL OR b.model_key = p_model_key))
$$;

-- Governance functions decide on what is committed now: a REPEATABLE READ or
-- SERIALIZABLE transaction would check data and models as of a snapshot taken
-- before its locks, so they refuse to run in one.
CREATE FUNCTION audit.require_read_committed(p_what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% must run in a READ COMMITTED transaction, not %: a snapshot taken before its locks '
                        'could check data or models that have changed since', p_what,
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
END $$;

-- True when the current call stack contains the given PL/pgSQL function (its
-- signature as PostgreSQL prints it): lets a trigger accept rows written by
-- that function only. Faking the stack needs a function created for it, and
-- every CREATE FUNCTION is recorded in audit.break_glass_log.
CREATE FUNCTION audit.called_from(p_function text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ctx text;
BEGIN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    RETURN EXISTS (SELECT FROM regexp_split_to_table(ctx, E'\n') AS line
                    WHERE line ~ ('^PL/pgSQL function ' || regexp_replace(p_function, '([.()\[\]])', '\\\1', 'g')
                                  || ' line [0-9]+ at '));
END $$;

ALTER TABLE ml.woe_anchor_promotions_v1
    ADD COLUMN xact_id xid8,
    ADD COLUMN artifact_sha256 text CHECK (artifact_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN acknowledged_checks text[] NOT NULL DEFAULT '{}',
    ADD COLUMN actor_identity text;
COMMENT ON COLUMN ml.woe_anchor_promotions_v1.artifact_sha256 IS 'ml.woe_anchor_artifact_digest_v1 of the promoted model.';
COMMENT ON COLUMN ml.woe_anchor_promotions_v1.acknowledged_checks IS
    'Advisory checks that failed and that the promoting reviewer acknowledged.';
COMMENT ON COLUMN ml.woe_anchor_promotions_v1.actor_identity IS
    'Real identity of the promoter (ml.woe_identity_v1): the declared actor only when the login vouches for it.';
CREATE TRIGGER woe_anchor_promotions_v1_stamp BEFORE INSERT ON ml.woe_anchor_promotions_v1
    FOR EACH ROW EXECUTE FUNCTION audit.stamp_event('promoted_at');

CREATE TABLE ml.woe_anchor_model_deletions_v1 (
    deletion_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deleted_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_user          text NOT NULL DEFAULT session_user,
    xact_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    model_key        text NOT NULL,
    artifact_sha256  text
);
COMMENT ON TABLE ml.woe_anchor_model_deletions_v1 IS
    'One row per deleted candidate (written by ml.delete_woe_anchor_model); append-only.';
CREATE TRIGGER woe_anchor_model_deletions_v1_stamp BEFORE INSERT ON ml.woe_anchor_model_deletions_v1
    FOR EACH ROW EXECUTE FUNCTION audit.stamp_event('deleted_at');
CREATE TRIGGER woe_anchor_model_deletions_v1_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ml.woe_anchor_model_deletions_v1
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

ALTER TABLE audit.dataset_certifications ADD COLUMN xact_id xid8;
CREATE TRIGGER dataset_certifications_stamp BEFORE INSERT ON audit.dataset_certifications
    FOR EACH ROW EXECUTE FUNCTION audit.stamp_event('certified_at');

-- ---------------------------------------------------------------------------
-- Locks that only the project's functions can take, with bounded waits.
-- ---------------------------------------------------------------------------

CREATE TABLE ml.woe_anchor_locks_v1 (
    lock_name  text PRIMARY KEY,
    purpose    text NOT NULL
);
INSERT INTO ml.woe_anchor_locks_v1 VALUES
    ('promotion', 'promotions, rollbacks and deletions of models run one at a time'),
    ('training', 'trainings run one at a time (model keys and score partitions)');
COMMENT ON TABLE ml.woe_anchor_locks_v1 IS
    'The project''s locks: a row locked FOR UPDATE by ml.woe_anchor_lock_v1. Nobody else may lock these rows.';

-- Takes lock p_lock until the calling transaction ends, waiting at most p_wait;
-- raises SQLSTATE WL001 naming the lock when it is still held after that.
CREATE FUNCTION ml.woe_anchor_lock_v1(p_lock text, p_wait interval DEFAULT interval '30 seconds')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous text := current_setting('lock_timeout');
    purpose  text;
BEGIN
    SELECT l.purpose INTO purpose FROM ml.woe_anchor_locks_v1 AS l WHERE l.lock_name = p_lock;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown lock %: allowed are %', quote_nullable(p_lock),
            (SELECT string_agg(quote_literal(lock_name), ', ' ORDER BY lock_name) FROM ml.woe_anchor_locks_v1)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_wait IS NULL OR p_wait < interval '1 millisecond' OR p_wait > interval '1 hour' THEN
        RAISE EXCEPTION 'lock wait must be between 1 millisecond and 1 hour, got %', quote_nullable(p_wait)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('lock_timeout', ceil(extract(epoch FROM p_wait) * 1000)::bigint::text, true);
    BEGIN
        PERFORM FROM ml.woe_anchor_locks_v1 AS l WHERE l.lock_name = p_lock FOR UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('lock_timeout', previous, true);
        RAISE EXCEPTION 'the % lock is held by another session (%); gave up after waiting %',
            p_lock, purpose, p_wait
            USING ERRCODE = 'WL001', HINT = 'Try again when the other operation has finished.';
    END;
    PERFORM set_config('lock_timeout', previous, true);
END $$;
REVOKE EXECUTE ON FUNCTION ml.woe_anchor_lock_v1(text, interval) FROM PUBLIC;
COMMENT ON FUNCTION ml.woe_anchor_lock_v1(text, interval) IS
    'Locks one of ml.woe_anchor_locks_v1 until commit, waiting at most p_wait (SQLSTATE WL001 after that). '
    'Granted to nobody: the promotion functions take the promotion lock themselves.';

-- The one lock a client takes itself: trainers serialise their trainings.
CREATE FUNCTION ml.woe_anchor_training_lock_v1(p_wait interval) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ml.woe_anchor_lock_v1('training', p_wait)
$$;
COMMENT ON FUNCTION ml.woe_anchor_training_lock_v1(interval) IS
    'Takes the training lock until commit, waiting at most p_wait (WL001 after that).';

-- ---------------------------------------------------------------------------
-- Real identities.
-- ---------------------------------------------------------------------------

-- Logins granted woe_sso vouch for the actor they declare (the app, behind its
-- sign-in). For any other login the identity is the login itself. Superusers
-- vouch for nobody: they are members of every role implicitly.
CREATE FUNCTION ml.woe_identity_v1(p_db_user text, p_actor text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN EXISTS (SELECT FROM pg_roles AS r
                              WHERE r.rolname = p_db_user AND NOT r.rolsuper
                                AND EXISTS (SELECT FROM pg_roles AS s WHERE s.rolname = 'woe_sso')
                                AND pg_has_role(r.oid, 'woe_sso', 'MEMBER'))
                     AND p_actor ~ '[^[:space:]]'
                THEN 'sso:' || lower(btrim(p_actor))
                ELSE 'login:' || p_db_user END
$$;
COMMENT ON FUNCTION ml.woe_identity_v1(text, text) IS
    'The real identity behind (database login, declared actor): sso:<actor> when the login is a (non-superuser) '
    'member of woe_sso, else login:<database login>. Four-eyes compares these, never declared names.';

-- ---------------------------------------------------------------------------
-- The model registry: immutable from registration.
-- ---------------------------------------------------------------------------

ALTER TABLE ml.woe_anchor_model_registry_v1
    ADD COLUMN created_db_user text,
    ADD COLUMN registered_xact xid8;
COMMENT ON COLUMN ml.woe_anchor_model_registry_v1.created_by IS 'Declared trainer (the actor the client named).';
COMMENT ON COLUMN ml.woe_anchor_model_registry_v1.created_db_user IS 'Database login that registered the model (session_user).';

DROP TRIGGER woe_anchor_model_registry_v1_insert_inactive ON ml.woe_anchor_model_registry_v1;
DROP TRIGGER woe_anchor_model_registry_v1_is_active_by_promotion ON ml.woe_anchor_model_registry_v1;
DROP TRIGGER woe_anchor_model_registry_v1_keep_active ON ml.woe_anchor_model_registry_v1;
DROP TRIGGER woe_anchor_model_registry_v1_delete_lock ON ml.woe_anchor_model_registry_v1;
DROP TRIGGER woe_anchor_cuts_v1_change_lock ON ml.woe_anchor_cuts_v1;
DROP TRIGGER woe_anchor_map_v1_change_lock ON ml.woe_anchor_map_v1;
DROP TRIGGER woe_anchor_cuts_v1_governed_insert ON ml.woe_anchor_cuts_v1;
DROP TRIGGER woe_anchor_cuts_v1_governed_update ON ml.woe_anchor_cuts_v1;
DROP TRIGGER woe_anchor_cuts_v1_governed_delete ON ml.woe_anchor_cuts_v1;
DROP TRIGGER woe_anchor_map_v1_governed_insert ON ml.woe_anchor_map_v1;
DROP TRIGGER woe_anchor_map_v1_governed_update ON ml.woe_anchor_map_v1;
DROP TRIGGER woe_anchor_map_v1_governed_delete ON ml.woe_anchor_map_v1;
DROP FUNCTION ml.woe_anchor_guard_is_active();
DROP FUNCTION ml.woe_anchor_share_promotion_lock();
DROP FUNCTION ml.woe_anchor_guard_artifacts();
DROP FUNCTION ml.woe_anchor_governance_bypass();

CREATE FUNCTION ml.woe_anchor_registry_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unchanged ml.woe_anchor_model_registry_v1;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT FROM ml.woe_anchor_model_deletions_v1 AS d WHERE d.model_key = NEW.model_key) THEN
            RAISE EXCEPTION 'model key % belonged to a deleted model: model keys are never reused',
                quote_literal(NEW.model_key) USING ERRCODE = 'insufficient_privilege';
        END IF;
        NEW.created_at := clock_timestamp();
        NEW.created_db_user := session_user;
        NEW.registered_xact := pg_current_xact_id();
        IF NEW.is_active AND NOT audit.break_glass_active(NEW.model_key) THEN
            RAISE EXCEPTION 'model % cannot be registered as active: new models start inactive (is_active = false)',
                quote_literal(NEW.model_key)
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Promote it with ml.promote_woe_anchor_model(model_key, actor, reason).';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT FROM ml.woe_anchor_model_deletions_v1 AS d
                        WHERE d.xact_id = pg_current_xact_id() AND d.model_key = OLD.model_key)
           AND NOT audit.break_glass_active(OLD.model_key) THEN
            RAISE EXCEPTION 'model % cannot be deleted directly: only ml.delete_woe_anchor_model deletes models '
                            '(never-promoted candidates only)', quote_literal(OLD.model_key)
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    unchanged := NEW;
    unchanged.is_active := OLD.is_active;
    IF unchanged IS DISTINCT FROM OLD AND NOT audit.break_glass_active(OLD.model_key) THEN
        RAISE EXCEPTION 'model % is immutable: its registry row cannot change after registration (only is_active, '
                        'through ml.promote_woe_anchor_model)', quote_literal(OLD.model_key)
            USING ERRCODE = 'insufficient_privilege', HINT = 'Train a new candidate instead.';
    END IF;
    IF NEW.is_active IS DISTINCT FROM OLD.is_active
       AND NOT EXISTS (SELECT FROM ml.woe_anchor_promotions_v1 AS p
                        WHERE p.xact_id = pg_current_xact_id()
                          AND CASE WHEN NEW.is_active THEN p.to_model_key = NEW.model_key
                                   ELSE p.from_model_key = OLD.model_key END)
       AND NOT audit.break_glass_active(OLD.model_key) THEN
        RAISE EXCEPTION 'is_active of model % cannot be changed directly: only ml.promote_woe_anchor_model changes '
                        'the active model', quote_literal(OLD.model_key)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'SELECT ml.promote_woe_anchor_model(model_key, actor, reason) switches the active model and records why.';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER woe_anchor_model_registry_v1_guard
    BEFORE INSERT OR UPDATE OR DELETE ON ml.woe_anchor_model_registry_v1
    FOR EACH ROW EXECUTE FUNCTION ml.woe_anchor_registry_guard();
CREATE TRIGGER woe_anchor_model_registry_v1_no_truncate BEFORE TRUNCATE ON ml.woe_anchor_model_registry_v1
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

-- Cuts and maps: added only by the transaction that registers their model,
-- never updated, deleted only with their model.
CREATE FUNCTION ml.woe_anchor_artifact_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    key text := CASE WHEN TG_OP = 'INSERT' THEN NEW.model_key ELSE OLD.model_key END;
BEGIN
    IF audit.break_glass_active(key) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM ml.woe_anchor_model_registry_v1 AS r
                        WHERE r.model_key = key AND r.registered_xact = pg_current_xact_id()) THEN
            RAISE EXCEPTION '% rows of model % can only be added in the transaction that registers the model',
                TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, quote_literal(key)
                USING ERRCODE = 'insufficient_privilege', HINT = 'Train a new candidate instead of adding to an existing one.';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND EXISTS (SELECT FROM ml.woe_anchor_model_deletions_v1 AS d
                                     WHERE d.xact_id = pg_current_xact_id() AND d.model_key = key) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% of model % is immutable: % is not allowed (a model is deleted whole, with '
                    'ml.delete_woe_anchor_model)', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, quote_literal(key), TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Train a new candidate instead.';
END $$;

CREATE TRIGGER woe_anchor_cuts_v1_guard BEFORE INSERT OR UPDATE OR DELETE ON ml.woe_anchor_cuts_v1
    FOR EACH ROW EXECUTE FUNCTION ml.woe_anchor_artifact_guard();
CREATE TRIGGER woe_anchor_map_v1_guard BEFORE INSERT OR UPDATE OR DELETE ON ml.woe_anchor_map_v1
    FOR EACH ROW EXECUTE FUNCTION ml.woe_anchor_artifact_guard();
CREATE TRIGGER woe_anchor_cuts_v1_no_truncate BEFORE TRUNCATE ON ml.woe_anchor_cuts_v1
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();
CREATE TRIGGER woe_anchor_map_v1_no_truncate BEFORE TRUNCATE ON ml.woe_anchor_map_v1
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

-- Score partitions, like cuts and maps, belong to the transaction that registers
-- their model: attaching one to a model registered earlier is refused.
CREATE OR REPLACE FUNCTION ml.woe_anchor_scores_attach_v1(p_model_key text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part text := ml.woe_anchor_scores_partition_name(p_model_key);
    n    bigint;
BEGIN
    IF to_regclass('ml.' || quote_ident(part)) IS NULL THEN
        RAISE EXCEPTION 'no staged score table for model %: call ml.woe_anchor_scores_stage_v1 first', p_model_key
            USING ERRCODE = 'undefined_table';
    END IF;
    IF NOT EXISTS (SELECT FROM ml.woe_anchor_model_registry_v1 AS r
                    WHERE r.model_key = p_model_key AND r.registered_xact = pg_current_xact_id()) THEN
        RAISE EXCEPTION 'scores of model % can only be attached in the transaction that registers the model',
            quote_literal(p_model_key) USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('REVOKE ALL ON ml.%I FROM %I', part, session_user);
    EXECUTE format('ALTER TABLE ml.%I ADD PRIMARY KEY (model_key, generation, listing_id, t0)', part);
    EXECUTE format('ALTER TABLE ml.woe_anchor_scores_v1 ATTACH PARTITION ml.%I FOR VALUES IN (%L)', part, p_model_key);
    EXECUTE format('SELECT count(*) FROM ml.%I', part) INTO n;
    RETURN n;
END $$;

-- ---------------------------------------------------------------------------
-- Artifact digest: what a reviewer saw is what gets promoted.
-- ---------------------------------------------------------------------------

-- sha256 (hex) of the lines: every scoring column of the registry row, every
-- cuts row (final first, then by fold) and every final map row (by band_name,
-- band_value), as PostgreSQL text in UTC with shortest exact floats, joined by
-- newlines. NULL when the model does not exist.
CREATE FUNCTION ml.woe_anchor_artifact_digest_v1(p_model_key text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD' SET extra_float_digits = 1
SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(convert_to(
               concat_ws(E'\n',
                   (SELECT format('model|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', r.model_key, r.train_cutoff_ts,
                                  r.half_life_days, r.eps, r.n_folds, r.band_schema_version, r.code_sha256,
                                  r.base_rate, r.base_logit, r.dsold_t1, r.dsold_t2, r.dsold_t3, r.dsold_t4)),
                   (SELECT string_agg(format('cuts|%s|%s|%s|%s', coalesce(c.fold_id::text, 'final'), c.c1, c.c2, c.n_rows),
                                      E'\n' ORDER BY c.fold_id NULLS FIRST)
                      FROM ml.woe_anchor_cuts_v1 AS c WHERE c.model_key = r.model_key),
                   (SELECT string_agg(format('map|%s|%s|%s|%s|%s|%s|%s', m.band_name, m.band_value, m.woe,
                                             m.w_pos, m.w_neg, m.n_pos, m.n_neg),
                                      E'\n' ORDER BY m.band_name, m.band_value)
                      FROM ml.woe_anchor_map_v1 AS m WHERE m.model_key = r.model_key AND m.fold_id IS NULL)),
               'UTF8')), 'hex')
      FROM ml.woe_anchor_model_registry_v1 AS r
     WHERE r.model_key = p_model_key
$$;
COMMENT ON FUNCTION ml.woe_anchor_artifact_digest_v1(text) IS
    'sha256 over a model''s scoring columns, cuts and final map: identical digests mean identical live scores.';

-- ---------------------------------------------------------------------------
-- Provenance: the certified data must produce the model.
-- ---------------------------------------------------------------------------

-- Derives from the certified entrypoint what live scoring uses of a model with
-- the given cutoff, half-life, eps and dsold thresholds: item 'c1' and 'c2'
-- (final cuts; n is the number of rows they were learned from), 'base_rate',
-- 'base_logit', and one 'map' row per band value seen (woe with its weighted
-- sums and counts), exactly as training defines them.
CREATE FUNCTION ml.woe_anchor_derive_v1(p_cutoff timestamptz, p_half_life double precision, p_eps double precision,
                                        p_t1 double precision, p_t2 double precision, p_t3 double precision,
                                        p_t4 double precision, p_band_schema_version integer DEFAULT 1)
RETURNS TABLE (item text, band_name text, band_value text, value double precision,
               w_pos double precision, w_neg double precision, n_pos bigint, n_neg bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q           double precision[];
    n_cut       bigint;
    sets        text;
    name_expr   text;
    value_expr  text;
BEGIN
    SELECT percentile_cont(ARRAY[1::float8 / 3, 2::float8 / 3]) WITHIN GROUP (ORDER BY b.presentation_score),
           count(b.presentation_score)
      INTO q, n_cut
      FROM ml.woe_anchor_bands_v1(p_t1, p_t2, p_t3, p_t4, 0, 0) AS b
     WHERE b.t0 < p_cutoff AND ml.woe_slow21(b.t0, b.sold_at, p_cutoff) IS NOT NULL;
    RETURN QUERY SELECT 'c1', NULL::text, NULL::text, q[1], NULL::float8, NULL::float8, n_cut, NULL::bigint
                 UNION ALL SELECT 'c2', NULL, NULL, q[2], NULL, NULL, n_cut, NULL;
    IF q IS NULL THEN
        RETURN;
    END IF;
    -- One pass: every TRAIN row's band values (with the derived cuts), labelled
    -- and weighted once (OFFSET 0 keeps the label and weight from being
    -- recomputed per use), summed per band value by GROUPING SETS; the band
    -- columns come from the band schema table, so this code names no band.
    SELECT string_agg(format('(r.%I)', v.band_column), ', ' ORDER BY v.band_name),
           'CASE ' || string_agg(format('WHEN GROUPING(r.%I) = 0 THEN %L', v.band_column, v.band_name), ' '
                                 ORDER BY v.band_name) || ' END',
           'coalesce(' || string_agg(format('r.%I', v.band_column), ', ' ORDER BY v.band_name) || ')'
      INTO sets, name_expr, value_expr
      FROM (SELECT DISTINCT bv.band_name, bv.band_column FROM ml.woe_anchor_band_values_v1 AS bv
             WHERE bv.band_schema_version = p_band_schema_version) AS v;
    RETURN QUERY EXECUTE format($q$
        WITH sums AS (
            SELECT %s AS band_name, %s AS band_value,
                   coalesce(sum(r.w) FILTER (WHERE r.y = 1), 0) AS w1, coalesce(sum(r.w) FILTER (WHERE r.y = 0), 0) AS w0,
                   count(*) FILTER (WHERE r.y = 1) AS n1, count(*) FILTER (WHERE r.y = 0) AS n0
              FROM (SELECT b.*, ml.woe_slow21(b.t0, b.sold_at, $1) AS y, ml.woe_weight(b.t0, $1, $2) AS w
                      FROM ml.woe_anchor_bands_v1($3, $4, $5, $6, $7, $8) AS b
                     WHERE b.t0 < $1 OFFSET 0) AS r
             WHERE r.y IS NOT NULL
             GROUP BY GROUPING SETS (%s)),
        base AS (SELECT sum(s.w1) / nullif(sum(s.w1) + sum(s.w0), 0) AS p
                   FROM sums AS s WHERE s.band_name = (SELECT min(band_name) FROM sums)),
        fit AS (SELECT base.p, CASE WHEN base.p > 0 AND base.p < 1 THEN ln(base.p / (1 - base.p)) END AS logit
                  FROM base)
        SELECT 'base_rate', NULL::text, NULL::text, f.p, NULL::float8, NULL::float8, NULL::bigint, NULL::bigint
          FROM fit AS f
        UNION ALL
        SELECT 'base_logit', NULL, NULL, f.logit, NULL, NULL, NULL, NULL FROM fit AS f
        UNION ALL
        SELECT 'map', s.band_name, s.band_value, ln((s.w1 + $9 * f.p) / (s.w0 + $9 * (1 - f.p))) - f.logit,
               s.w1, s.w0, s.n1, s.n0
          FROM sums AS s CROSS JOIN fit AS f
        $q$, name_expr, value_expr, sets)
    USING p_cutoff, p_half_life, p_t1, p_t2, p_t3, p_t4, q[1], q[2], p_eps;
END $$;
COMMENT ON FUNCTION ml.woe_anchor_derive_v1(timestamptz, double precision, double precision, double precision,
                                            double precision, double precision, double precision, integer) IS
    'Final cuts, base rate/logit and final map that the certified entrypoint produces for these hyperparameters.';

-- Compares what is stored for model p_model_key with what ml.woe_anchor_derive_v1
-- derives at the model's own cutoff, half-life, eps and thresholds. One row per
-- compared item; passed is false where they differ by more than 1e-9 (relative
-- to max(1, |value|)), where a count differs, or where a band value is present
-- on one side only.
CREATE FUNCTION ml.woe_anchor_provenance_v1(p_model_key text)
RETURNS TABLE (item text, stored text, derived text, passed boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET extra_float_digits = 1 AS $$
DECLARE
    m  ml.woe_anchor_model_registry_v1;
BEGIN
    SELECT * INTO m FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.model_key = p_model_key;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'model'::text, NULL::text, NULL::text, false;
        RETURN;
    END IF;
    RETURN QUERY
    WITH d AS (SELECT * FROM ml.woe_anchor_derive_v1(m.train_cutoff_ts, m.half_life_days, m.eps, m.dsold_t1,
                                                    m.dsold_t2, m.dsold_t3, m.dsold_t4, m.band_schema_version)),
         cuts AS (SELECT * FROM ml.woe_anchor_cuts_v1 AS c WHERE c.model_key = p_model_key AND c.fold_id IS NULL),
         stored_map AS (SELECT * FROM ml.woe_anchor_map_v1 AS mp WHERE mp.model_key = p_model_key AND mp.fold_id IS NULL),
         scalars (name, s, dv, exact) AS (
             -- Cuts are exact percentiles of the same rows: compared exactly, since live
             -- banding uses the stored ones and a nudged cut would move rows between bands.
             SELECT 'final cuts c1', (SELECT c1 FROM cuts), (SELECT value FROM d WHERE d.item = 'c1'), true
             UNION ALL SELECT 'final cuts c2', (SELECT c2 FROM cuts), (SELECT value FROM d WHERE d.item = 'c2'), true
             UNION ALL SELECT 'final cuts n_rows', (SELECT n_rows FROM cuts)::float8,
                              (SELECT d.n_pos FROM d WHERE d.item = 'c1')::float8, true
             UNION ALL SELECT 'base_rate', m.base_rate, (SELECT value FROM d WHERE d.item = 'base_rate'), false
             UNION ALL SELECT 'base_logit', m.base_logit, (SELECT value FROM d WHERE d.item = 'base_logit'), false)
    SELECT x.name, x.s::text, x.dv::text,
           coalesce(CASE WHEN x.exact THEN x.s = x.dv ELSE abs(x.s - x.dv) <= 1e-9 * greatest(1, abs(x.dv)) END, false)
      FROM scalars AS x
    UNION ALL
    SELECT * FROM (
        SELECT 'map ' || coalesce(st.band_name, dm.band_name) || '=' || coalesce(st.band_value, dm.band_value)
               || ' ' || c.what, c.s, c.dv, c.ok
          FROM stored_map AS st
          FULL JOIN (SELECT * FROM d WHERE d.item = 'map') AS dm
                 ON dm.band_name = st.band_name AND dm.band_value = st.band_value
         CROSS JOIN LATERAL (VALUES
             ('woe', st.woe::text, dm.value::text, coalesce(abs(st.woe - dm.value) <= 1e-9 * greatest(1, abs(dm.value)), false)),
             ('w_pos', st.w_pos::text, dm.w_pos::text, coalesce(abs(st.w_pos - dm.w_pos) <= 1e-9 * greatest(1, abs(dm.w_pos)), false)),
             ('w_neg', st.w_neg::text, dm.w_neg::text, coalesce(abs(st.w_neg - dm.w_neg) <= 1e-9 * greatest(1, abs(dm.w_neg)), false)),
             ('n_pos', st.n_pos::text, dm.n_pos::text, coalesce(st.n_pos = dm.n_pos, false)),
             ('n_neg', st.n_neg::text, dm.n_neg::text, coalesce(st.n_neg = dm.n_neg, false))) AS c (what, s, dv, ok)
         ORDER BY 1) AS map_rows;
END $$;
REVOKE EXECUTE ON FUNCTION ml.woe_anchor_provenance_v1(text) FROM PUBLIC;
COMMENT ON FUNCTION ml.woe_anchor_provenance_v1(text) IS
    'Re-derives a model''s final cuts, base rate/logit and final map from the certified entrypoint and compares '
    'them with the stored artifacts (tolerance 1e-9); one row per compared item.';

-- Recorded provenance verifications, for the promotion checklist. Promotion
-- itself never trusts them: it re-derives every time.
CREATE TABLE ml.woe_anchor_provenance_checks_v1 (
    model_key         text NOT NULL REFERENCES ml.woe_anchor_model_registry_v1 (model_key) ON DELETE CASCADE,
    certification_id  bigint NOT NULL REFERENCES audit.dataset_certifications (certification_id),
    artifact_sha256   text NOT NULL,
    checked_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    passed            boolean NOT NULL,
    failures          text[] NOT NULL,
    duration_ms       double precision,
    PRIMARY KEY (model_key, certification_id, checked_at)
);
COMMENT ON TABLE ml.woe_anchor_provenance_checks_v1 IS
    'Outcome of each provenance re-derivation of a model against a certification (written by '
    'ml.woe_anchor_verify_provenance_v1).';

-- The id of a dataset's latest certification when the guard would serve it
-- (passed, younger than the dataset's max_age, data unchanged since); else the
-- guard's WC001 refusal.
CREATE FUNCTION audit.fresh_certification_id(p_dataset text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM audit.require_certified_strict(
        p_dataset, coalesce((SELECT d.max_age FROM audit.certifiable_datasets AS d WHERE d.dataset = p_dataset),
                            interval '0'));
    RETURN (SELECT c.certification_id FROM audit.dataset_certifications AS c WHERE c.dataset = p_dataset
             ORDER BY c.certified_at DESC, c.certification_id DESC LIMIT 1);
END $$;

-- Verifies a model's provenance against the current (fresh) certification,
-- reusing a passing verification of the same artifacts under it; records and
-- returns the failures (empty array: verified).
CREATE FUNCTION ml.woe_anchor_verify_provenance_v1(p_model_key text) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cert     bigint := audit.fresh_certification_id('ml.woe_anchor_feature_store_t0_v1_v');
    digest   text := ml.woe_anchor_artifact_digest_v1(p_model_key);
    started  timestamptz := clock_timestamp();
    fails    text[];
BEGIN
    IF digest IS NULL THEN
        RAISE EXCEPTION 'model % does not exist', quote_nullable(p_model_key) USING ERRCODE = 'WP001';
    END IF;
    PERFORM audit.require_read_committed('provenance verification');
    SELECT coalesce(array_agg(format('%s: stored %s, derived %s', pv.item, coalesce(pv.stored, 'none'),
                                     coalesce(pv.derived, 'none')) ORDER BY pv.item), '{}')
      INTO fails
      FROM ml.woe_anchor_provenance_v1(p_model_key) AS pv WHERE NOT pv.passed;
    INSERT INTO ml.woe_anchor_provenance_checks_v1 (model_key, certification_id, artifact_sha256, passed, failures,
                                                    duration_ms)
    VALUES (p_model_key, cert, digest, cardinality(fails) = 0, fails,
            extract(epoch FROM clock_timestamp() - started) * 1000);
    RETURN fails;
END $$;
REVOKE EXECUTE ON FUNCTION ml.woe_anchor_verify_provenance_v1(text) FROM PUBLIC;
COMMENT ON FUNCTION ml.woe_anchor_verify_provenance_v1(text) IS
    'Re-derives the model from the freshly certified data and records the outcome (the preflight shows the latest); '
    'returns the differences, empty when the data produces exactly this model. Promotion always re-derives.';

-- ---------------------------------------------------------------------------
-- Preflight, promotion, rollback and deletion.
-- ---------------------------------------------------------------------------

-- The checklist of V0006 plus provenance (from the last verification under the
-- current certification; promotion runs it when missing).
CREATE OR REPLACE FUNCTION ml.woe_anchor_promotion_preflight_v1(p_model_key text)
RETURNS TABLE (check_name text, passed boolean, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m         record;
    found_m   boolean;
    served    integer[];
    has_cuts  boolean;
    bands     text;
    missing   text;
    partial   text;
    active    text;
    cert      bigint;
    digest    text;
    v         record;
BEGIN
    SELECT r.model_key, r.band_schema_version, r.is_active INTO m
      FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.model_key = p_model_key;
    found_m := FOUND;
    SELECT array_agg(DISTINCT bv.band_schema_version ORDER BY bv.band_schema_version) INTO served
      FROM ml.woe_anchor_band_values_v1 AS bv;

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
        -- Every band needs a final map row for at least one value, and no value
        -- of the schema may be missing unless the model never saw it (its
        -- weighted sums say so: provenance checks that).
        SELECT string_agg(b.band_name, ', ' ORDER BY b.first_slot),
               string_agg(b.band_name, ', ' ORDER BY b.first_slot) FILTER (WHERE b.mapped = 0)
          INTO bands, missing
          FROM (SELECT bv.band_name, min(bv.slot) AS first_slot, count(mp.band_value) AS mapped
                  FROM ml.woe_anchor_band_values_v1 AS bv
                  LEFT JOIN ml.woe_anchor_map_v1 AS mp
                         ON mp.model_key = p_model_key AND mp.fold_id IS NULL
                        AND mp.band_name = bv.band_name AND mp.band_value = bv.band_value
                 WHERE bv.band_schema_version = m.band_schema_version
                 GROUP BY bv.band_name) AS b;
        SELECT string_agg(DISTINCT mp.band_name || '=' || mp.band_value, ', ') INTO partial
          FROM ml.woe_anchor_map_v1 AS mp
         WHERE mp.model_key = p_model_key AND mp.fold_id IS NULL
           AND NOT EXISTS (SELECT FROM ml.woe_anchor_band_values_v1 AS bv
                            WHERE bv.band_schema_version = m.band_schema_version
                              AND bv.band_name = mp.band_name AND bv.band_value = mp.band_value);
        passed := has_cuts AND missing IS NULL AND partial IS NULL;
        detail := CASE
            WHEN passed THEN format('final cuts and a final map for every band of schema %s (%s)',
                                    m.band_schema_version, bands)
            ELSE concat_ws('; ',
                           CASE WHEN NOT has_cuts THEN 'it has no final cuts (no ml.woe_anchor_cuts_v1 row with fold_id NULL)' END,
                           CASE WHEN missing IS NOT NULL THEN format('its final map lacks the bands: %s', missing) END,
                           CASE WHEN partial IS NOT NULL THEN format('its final map has values outside the schema: %s', partial) END)
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
        cert := audit.fresh_certification_id('ml.woe_anchor_feature_store_t0_v1_v');
        passed := true;
        detail := format('ml.woe_anchor_feature_store_t0_v1_v has a passing certification (#%s) younger than %s '
                         'and its data has not changed since', cert,
                         (SELECT d.max_age FROM audit.certifiable_datasets AS d
                           WHERE d.dataset = 'ml.woe_anchor_feature_store_t0_v1_v'));
    EXCEPTION WHEN SQLSTATE 'WC001' THEN
        passed := false;
        detail := SQLERRM;
    END;
    RETURN NEXT;

    check_name := 'provenance';
    digest := ml.woe_anchor_artifact_digest_v1(p_model_key);
    SELECT pc.passed, pc.failures, pc.checked_at INTO v
      FROM ml.woe_anchor_provenance_checks_v1 AS pc
     WHERE pc.model_key = p_model_key AND pc.certification_id = cert AND pc.artifact_sha256 = digest
     ORDER BY pc.checked_at DESC LIMIT 1;
    IF NOT found_m THEN
        passed := false;
        detail := 'no such model';
    ELSIF cert IS NULL THEN
        passed := false;
        detail := 'cannot be checked without a fresh certification';
    ELSIF v IS NULL THEN
        passed := NULL;
        detail := format('not yet verified against certification #%s: promotion re-derives the model from the '
                         'certified data first', cert);
    ELSIF v.passed THEN
        passed := true;
        detail := format('certification #%s data reproduces the model (verified %s)', cert, v.checked_at);
    ELSE
        passed := false;
        detail := format('certification #%s data does not reproduce the model: %s', cert,
                         array_to_string(v.failures[1:3], '; ')
                         || CASE WHEN cardinality(v.failures) > 3
                                 THEN format(' (and %s more)', cardinality(v.failures) - 3) ELSE '' END);
    END IF;
    RETURN NEXT;
END $$;

DROP FUNCTION ml.promote_woe_anchor_model(text, text, text);

-- The only way to change the active model (and, through rollback, to return to
-- the previous one). Serialised by the promotion lock. Refusals raise WP001
-- naming the model and the reason; a stale or missing certification WC001.
CREATE FUNCTION ml.promote_woe_anchor_model(p_model_key text, p_actor text, p_reason text,
                                            p_expected_digest text DEFAULT NULL,
                                            p_acknowledged text[] DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c         record;
    previous  text;
    hint      text;
    new_id    bigint;
    digest    text;
    fails     text[];
BEGIN
    IF p_actor IS NULL OR p_actor !~ '[^[:space:]]' THEN
        RAISE EXCEPTION 'promotion of model % refused: actor must be a non-empty name, got %',
            quote_nullable(p_model_key), quote_nullable(p_actor) USING ERRCODE = 'WP001';
    END IF;
    IF length(p_actor) > 200 THEN
        RAISE EXCEPTION 'promotion of model % refused: actor must be at most 200 characters, got %',
            quote_nullable(p_model_key), length(p_actor) USING ERRCODE = 'WP001';
    END IF;
    IF p_reason IS NULL OR p_reason !~ '[^[:space:]]' THEN
        RAISE EXCEPTION 'promotion of model % refused: a reason is required, got %',
            quote_nullable(p_model_key), quote_nullable(p_reason) USING ERRCODE = 'WP001';
    END IF;
    IF length(p_reason) > 2000 THEN
        RAISE EXCEPTION 'promotion of model % refused: reason must be at most 2000 characters, got %',
            quote_nullable(p_model_key), length(p_reason) USING ERRCODE = 'WP001';
    END IF;
    IF p_expected_digest IS NOT NULL AND p_expected_digest !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'promotion of model % refused: expected digest must be 64 lowercase hex digits, got %',
            quote_nullable(p_model_key), quote_literal(left(p_expected_digest, 70)) USING ERRCODE = 'WP001';
    END IF;

    PERFORM audit.require_read_committed('promotion');
    PERFORM ml.woe_anchor_lock_v1('promotion');

    FOR c IN SELECT * FROM ml.woe_anchor_promotion_preflight_v1(p_model_key) AS f
              WHERE f.check_name NOT IN ('certification_fresh', 'provenance') LOOP
        IF NOT c.passed THEN
            RAISE EXCEPTION 'promotion of model % refused: %', quote_nullable(p_model_key), c.detail
                USING ERRCODE = 'WP001';
        END IF;
    END LOOP;
    BEGIN
        PERFORM audit.fresh_certification_id('ml.woe_anchor_feature_store_t0_v1_v');
    EXCEPTION WHEN SQLSTATE 'WC001' THEN
        GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
        RAISE EXCEPTION 'promotion of model % refused: %', quote_literal(p_model_key), SQLERRM
            USING ERRCODE = 'WC001', HINT = hint;
    END;
    IF (SELECT s.four_eyes FROM ml.woe_anchor_governance_settings_v1 AS s)
       AND ml.woe_identity_v1(session_user, p_actor) = (SELECT ml.woe_identity_v1(r.created_db_user, r.created_by)
                                                          FROM ml.woe_anchor_model_registry_v1 AS r
                                                         WHERE r.model_key = p_model_key) THEN
        RAISE EXCEPTION 'promotion of model % refused: four-eyes: % registered it, so another identity must promote it',
            quote_literal(p_model_key), ml.woe_identity_v1(session_user, p_actor) USING ERRCODE = 'WP001';
    END IF;
    digest := ml.woe_anchor_artifact_digest_v1(p_model_key);
    IF p_expected_digest IS NOT NULL AND digest IS DISTINCT FROM p_expected_digest THEN
        RAISE EXCEPTION 'promotion of model % refused: its artifact digest is %, not % that the reviewer saw',
            quote_literal(p_model_key), digest, p_expected_digest USING ERRCODE = 'WP001';
    END IF;
    fails := ml.woe_anchor_verify_provenance_v1(p_model_key);
    IF cardinality(fails) > 0 THEN
        RAISE EXCEPTION 'promotion of model % refused: the certified data does not reproduce it (% differences): %',
            quote_literal(p_model_key), cardinality(fails), array_to_string(fails[1:3], '; ')
            USING ERRCODE = 'WP001', DETAIL = array_to_string(fails, E'\n');
    END IF;

    -- The data may not have changed while it was being re-derived.
    PERFORM audit.fresh_certification_id('ml.woe_anchor_feature_store_t0_v1_v');
    SELECT r.model_key INTO previous FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.is_active;
    INSERT INTO ml.woe_anchor_promotions_v1 (actor, from_model_key, to_model_key, reason, artifact_sha256,
                                             acknowledged_checks, actor_identity)
    VALUES (btrim(p_actor), previous, p_model_key, btrim(p_reason), digest,
            coalesce((SELECT array_agg(DISTINCT btrim(a) ORDER BY btrim(a)) FROM unnest(p_acknowledged) AS a
                       WHERE a ~ '[^[:space:]]'), '{}'),
            ml.woe_identity_v1(session_user, p_actor))
    RETURNING promotion_id INTO new_id;
    UPDATE ml.woe_anchor_model_registry_v1 SET is_active = false WHERE is_active;
    UPDATE ml.woe_anchor_model_registry_v1 SET is_active = true WHERE model_key = p_model_key;
    IF NOT FOUND THEN  -- deleted by a concurrent transaction after the checks
        RAISE EXCEPTION 'promotion of model % refused: it was deleted while being promoted',
            quote_literal(p_model_key) USING ERRCODE = 'WP001';
    END IF;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION ml.promote_woe_anchor_model(text, text, text, text, text[]) IS
    'Makes a complete candidate that the certified data reproduces the one active model and appends the history '
    'row (with its artifact digest and acknowledged advisory checks); returns its promotion_id. Refuses with '
    'WP001 (WC001 for certification) naming the reason.';

-- Promotes the model that was active before the current one, with the same checks.
CREATE FUNCTION ml.rollback_woe_anchor_model(p_actor text, p_reason text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    latest  record;
    active  text;
BEGIN
    PERFORM audit.require_read_committed('rollback');
    PERFORM ml.woe_anchor_lock_v1('promotion');
    SELECT p.promotion_id, p.from_model_key, p.to_model_key INTO latest
      FROM ml.woe_anchor_promotions_v1 AS p ORDER BY p.promotion_id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollback refused: no promotion has been recorded, so there is no previous model'
            USING ERRCODE = 'WP001';
    END IF;
    IF latest.from_model_key IS NULL THEN
        RAISE EXCEPTION 'rollback refused: the latest promotion (#%, to %) had no previously active model to return to',
            latest.promotion_id, quote_literal(latest.to_model_key) USING ERRCODE = 'WP001';
    END IF;
    SELECT r.model_key INTO active FROM ml.woe_anchor_model_registry_v1 AS r WHERE r.is_active;
    IF active IS DISTINCT FROM latest.to_model_key THEN
        RAISE EXCEPTION 'rollback refused: the active model is %, not % that the latest promotion (#%) activated; '
                        'promote the model you want explicitly',
            quote_nullable(active), quote_literal(latest.to_model_key), latest.promotion_id USING ERRCODE = 'WP001';
    END IF;
    PERFORM ml.promote_woe_anchor_model(latest.from_model_key, p_actor, p_reason);
    RETURN latest.from_model_key;
END $$;
REVOKE EXECUTE ON FUNCTION ml.rollback_woe_anchor_model(text, text) FROM PUBLIC;
COMMENT ON FUNCTION ml.rollback_woe_anchor_model(text, text) IS
    'Promotes the from_model_key of the latest promotion (it must still be the active model''s promotion); returns that key.';

CREATE OR REPLACE FUNCTION ml.delete_woe_anchor_model(p_model_key text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m     record;
    used  bigint;
    part  regclass;
BEGIN
    PERFORM audit.require_read_committed('deleting a model');
    PERFORM ml.woe_anchor_lock_v1('promotion');
    -- Bounded: a session holding a lock on the model's score partition (any login can, through
    -- pg_partition_tree) makes the deletion fail instead of holding the promotion lock forever.
    PERFORM set_config('lock_timeout', '5s', true);
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
    INSERT INTO ml.woe_anchor_model_deletions_v1 (model_key, artifact_sha256)
    VALUES (p_model_key, ml.woe_anchor_artifact_digest_v1(p_model_key));
    DELETE FROM ml.woe_anchor_model_registry_v1 WHERE model_key = p_model_key;
    FOR part IN SELECT i.inhrelid::regclass
                  FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'ml.woe_anchor_scores_v1'::regclass
                   AND c.relname = 'woe_anchor_scores_v1__' || p_model_key LOOP
        BEGIN
            EXECUTE format('DROP TABLE %s', part);
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'model % cannot be deleted now: another session has held a lock on its scores (%) '
                            'for 5 s', quote_literal(p_model_key), part
                USING ERRCODE = 'WL001', HINT = 'Try again when that session has finished.';
        END;
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------
-- Certification, made by the database.
-- ---------------------------------------------------------------------------

CREATE TABLE audit.certifiable_datasets (
    dataset      text PRIMARY KEY,
    key_columns  text[] NOT NULL CHECK (cardinality(key_columns) > 0),
    max_age      interval NOT NULL CHECK (max_age > interval '0')
);
COMMENT ON TABLE audit.certifiable_datasets IS
    'Datasets audit.certify_dataset may certify, with their key columns and how long a certification stays '
    'fresh (the guarded views name the same age; a test checks that they agree).';
INSERT INTO audit.certifiable_datasets VALUES ('ml.woe_anchor_feature_store_t0_v1_v', ARRAY['listing_id', 't0'],
                                               interval '24 hours');

-- The feature-store contract: every column each store must expose, with its type.
CREATE TABLE audit.dataset_contract (
    relation     text NOT NULL,
    column_name  text NOT NULL,
    column_type  text NOT NULL,
    position     integer NOT NULL,
    PRIMARY KEY (relation, column_name)
);
COMMENT ON TABLE audit.dataset_contract IS
    'Columns (with format_type() type names) that each feature store must expose.';
INSERT INTO audit.dataset_contract VALUES
    ('ml.socio_market_feature_store_train_v', 'listing_id', 'bigint', 1),
    ('ml.socio_market_feature_store_train_v', 'generation', 'text', 2),
    ('ml.socio_market_feature_store_train_v', 't0', 'timestamp with time zone', 3),
    ('ml.socio_market_feature_store_train_v', 'delta_vs_sold_median_30d', 'double precision', 4),
    ('ml.socio_market_feature_store_train_v', 'seller_trust_tier', 'text', 5),
    ('ml.socio_market_feature_store_train_v', 'ships', 'boolean', 6),
    ('ml.socio_market_feature_store_train_v', 'negotiable', 'boolean', 7),
    ('ml.socio_market_feature_store_train_v', 'item_condition', 'text', 8),
    ('ml.socio_market_feature_store_train_v', 'dmg_ai_prob', 'double precision', 9),
    ('ml.socio_market_feature_store_train_v', 'battery_health_pct', 'smallint', 10),
    ('ml.socio_market_feature_store_train_v', 'sold_at', 'timestamp with time zone', 11),
    ('ml.socio_market_feature_store_train_v', 'feature_asof_ts', 'timestamp with time zone', 12),
    ('ml.iphone_image_features_unified_v1_train_v', 'listing_id', 'bigint', 1),
    ('ml.iphone_image_features_unified_v1_train_v', 't0', 'timestamp with time zone', 2),
    ('ml.iphone_image_features_unified_v1_train_v', 'n_photos', 'smallint', 3),
    ('ml.iphone_image_features_unified_v1_train_v', 'photo_quality', 'double precision', 4),
    ('ml.iphone_image_features_unified_v1_train_v', 'lighting', 'double precision', 5),
    ('ml.iphone_image_features_unified_v1_train_v', 'background_clean', 'double precision', 6),
    ('ml.iphone_image_features_unified_v1_train_v', 'vision_damage_prob', 'double precision', 7),
    ('ml.iphone_image_features_unified_v1_train_v', 'has_box', 'boolean', 8),
    ('ml.iphone_image_features_unified_v1_train_v', 'has_charger', 'boolean', 9);

CREATE FUNCTION audit.contract_problems() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(problem ORDER BY relation, position), '{}')
      FROM (SELECT c.relation, 0 AS position, format('%s does not exist', c.relation) AS problem
              FROM (SELECT DISTINCT relation FROM audit.dataset_contract) AS c
             WHERE to_regclass(c.relation) IS NULL
            UNION ALL
            SELECT c.relation, c.position,
                   CASE WHEN a.attname IS NULL
                        THEN format('%s is missing column %L (expected %s)', c.relation, c.column_name, c.column_type)
                        ELSE format('%s.%s has type %L, expected %L', c.relation, c.column_name,
                                    format_type(a.atttypid, a.atttypmod), c.column_type) END
              FROM audit.dataset_contract AS c
              LEFT JOIN pg_attribute AS a
                     ON a.attrelid = to_regclass(c.relation) AND a.attname = c.column_name
                    AND a.attnum > 0 AND NOT a.attisdropped
             WHERE to_regclass(c.relation) IS NOT NULL
               AND (a.attname IS NULL OR format_type(a.atttypid, a.atttypmod) <> c.column_type)) AS p
$$;
COMMENT ON FUNCTION audit.contract_problems() IS
    'Every missing store, missing column and wrong type of the feature-store contract, as sentences (empty: ok).';

-- iPhone generations the marketplace lists; anything else is implausible.
CREATE TABLE ml.woe_known_generations (
    generation  text PRIMARY KEY CHECK (generation ~ '^iphone_[a-z0-9_]+$'),
    released    date NOT NULL
);
COMMENT ON TABLE ml.woe_known_generations IS 'iPhone generations a listing may name (certification check known_generation).';
INSERT INTO ml.woe_known_generations VALUES
    ('iphone_original', '2007-06-29'), ('iphone_3g', '2008-07-11'), ('iphone_3gs', '2009-06-19'),
    ('iphone_4', '2010-06-24'), ('iphone_4s', '2011-10-14'), ('iphone_5', '2012-09-21'),
    ('iphone_5c', '2013-09-20'), ('iphone_5s', '2013-09-20'), ('iphone_6', '2014-09-19'),
    ('iphone_6_plus', '2014-09-19'), ('iphone_6s', '2015-09-25'), ('iphone_6s_plus', '2015-09-25'),
    ('iphone_se', '2016-03-31'), ('iphone_7', '2016-09-16'), ('iphone_7_plus', '2016-09-16'),
    ('iphone_8', '2017-09-22'), ('iphone_8_plus', '2017-09-22'), ('iphone_x', '2017-11-03'),
    ('iphone_xr', '2018-10-26'), ('iphone_xs', '2018-09-21'), ('iphone_xs_max', '2018-09-21'),
    ('iphone_11', '2019-09-20'), ('iphone_se_2', '2020-04-24'), ('iphone_12', '2020-10-23'),
    ('iphone_13', '2021-09-24'), ('iphone_se_3', '2022-03-18'), ('iphone_14', '2022-09-16'),
    ('iphone_15', '2023-09-22'), ('iphone_16', '2024-09-20'), ('iphone_16e', '2025-02-28'),
    ('iphone_17', '2025-09-19'), ('iphone_air', '2025-09-19');

-- Row checks: "violation" is a predicate over a dataset row d; $1 is the time the
-- certification started. All are evaluated in one scan. Dates must lie between
-- the first iPhone (2007-06-29) and the certification time plus one hour; no
-- infinities; counts and magnitudes are bounded.
CREATE TABLE audit.dataset_row_checks (
    dataset      text NOT NULL REFERENCES audit.certifiable_datasets (dataset),
    check_name   text NOT NULL CHECK (check_name ~ '^[a-z][a-z0-9_]*$'),
    position     integer NOT NULL,
    description  text NOT NULL,
    violation    text NOT NULL,
    PRIMARY KEY (dataset, check_name)
);
COMMENT ON TABLE audit.dataset_row_checks IS
    'Row checks of each certifiable dataset: violation is a SQL predicate over a row d ($1 = certification time).';
INSERT INTO audit.dataset_row_checks (dataset, check_name, position, description, violation)
SELECT 'ml.woe_anchor_feature_store_t0_v1_v', c.*
  FROM (VALUES
    ('non_null_keys', 1, 'listing_id, generation, t0 and feature_asof_ts are never null',
     'd.listing_id IS NULL OR d.generation IS NULL OR d.t0 IS NULL OR d.feature_asof_ts IS NULL'),
    ('t0_safe', 2, 'no feature is newer than its snapshot: feature_asof_ts <= t0', 'd.feature_asof_ts > d.t0'),
    ('positive_listing_id', 3, 'listing_id > 0', 'd.listing_id <= 0'),
    ('sold_not_before_t0', 4, 'sold_at, when set, is not before t0', 'd.sold_at < d.t0'),
    ('plausible_t0', 5, 't0 lies between 2007-06-29 (the first iPhone) and the certification time plus one hour',
     'NOT (d.t0 >= timestamptz ''2007-06-29 00:00:00+00'' AND d.t0 <= $1 + interval ''1 hour'')'),
    ('plausible_sold_at', 6, 'sold_at is null or lies between 2007-06-29 and the certification time plus one hour',
     'NOT (d.sold_at >= timestamptz ''2007-06-29 00:00:00+00'' AND d.sold_at <= $1 + interval ''1 hour'')'),
    ('plausible_feature_asof_ts', 7,
     'feature_asof_ts lies between 2007-06-29 and the certification time plus one hour',
     'NOT (d.feature_asof_ts >= timestamptz ''2007-06-29 00:00:00+00'' AND d.feature_asof_ts <= $1 + interval ''1 hour'')'),
    ('known_generation', 8, 'generation is one of ml.woe_known_generations',
     'd.generation NOT IN (SELECT g.generation FROM ml.woe_known_generations AS g)'),
    ('range_delta_vs_sold_median_30d', 9, 'delta_vs_sold_median_30d is null or between -1 and 100',
     'NOT (d.delta_vs_sold_median_30d >= -1 AND d.delta_vs_sold_median_30d <= 100)'),
    ('range_seller_trust_tier', 10, 'seller_trust_tier is null or one of HIGH, MEDIUM, LOW, NEW',
     'd.seller_trust_tier NOT IN (''HIGH'', ''MEDIUM'', ''LOW'', ''NEW'')'),
    ('range_item_condition', 11, 'item_condition is null or one of new, like_new, good, fair, for_parts',
     'd.item_condition NOT IN (''new'', ''like_new'', ''good'', ''fair'', ''for_parts'')'),
    ('range_dmg_ai_prob', 12, 'dmg_ai_prob is null or in [0, 1]', 'NOT (d.dmg_ai_prob BETWEEN 0 AND 1)'),
    ('range_battery_health_pct', 13, 'battery_health_pct is null or in [0, 100]',
     'NOT (d.battery_health_pct BETWEEN 0 AND 100)'),
    ('range_n_photos', 14, 'an image row has n_photos in [0, 100]',
     'd.has_image_row AND NOT coalesce(d.n_photos BETWEEN 0 AND 100, false)'),
    ('range_vision_scores', 15, 'an image row has photo_quality, lighting, background_clean in [0, 1]',
     'd.has_image_row AND NOT coalesce(d.photo_quality BETWEEN 0 AND 1 AND d.lighting BETWEEN 0 AND 1 '
     'AND d.background_clean BETWEEN 0 AND 1, false)'),
    ('range_vision_damage_prob', 16, 'vision_damage_prob is null or in [0, 1]',
     'NOT (d.vision_damage_prob BETWEEN 0 AND 1)')
  ) AS c (check_name, position, description, violation);

-- Every object a dataset reads: the views and tables reached through view
-- definitions, the functions those definitions call, and every inheritance
-- child or partition of those tables (a row written into a child is a row of
-- its parent).
CREATE FUNCTION audit.dataset_source_objects(p_dataset text)
RETURNS TABLE (classid regclass, objid oid, kind text, identity text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE deps(classid, objid) AS (
        SELECT 'pg_class'::regclass, to_regclass(p_dataset)::oid WHERE to_regclass(p_dataset) IS NOT NULL
        UNION
        SELECT x.classid, x.objid
          FROM deps
          CROSS JOIN LATERAL (
                SELECT d.refclassid::regclass AS classid, d.refobjid AS objid
                  FROM pg_rewrite AS r
                  JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                 WHERE deps.classid = 'pg_class'::regclass AND r.ev_class = deps.objid
                   AND d.refclassid IN ('pg_class'::regclass, 'pg_proc'::regclass)
                   AND NOT (d.refclassid = 'pg_class'::regclass AND d.refobjid = deps.objid)
                UNION ALL
                SELECT 'pg_proc'::regclass, o.oprcode::oid  -- the function behind an operator
                  FROM pg_rewrite AS r
                  JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                     AND d.refclassid = 'pg_operator'::regclass
                  JOIN pg_operator AS o ON o.oid = d.refobjid
                 WHERE deps.classid = 'pg_class'::regclass AND r.ev_class = deps.objid
                UNION ALL
                SELECT 'pg_class'::regclass, i.inhrelid
                  FROM pg_inherits AS i
                 WHERE deps.classid = 'pg_class'::regclass AND i.inhparent = deps.objid) AS x
    )
    SELECT d.classid, d.objid,
           CASE WHEN d.classid = 'pg_proc'::regclass THEN 'function'
                ELSE (SELECT c.relkind::text FROM pg_class AS c WHERE c.oid = d.objid) END,
           CASE WHEN d.classid = 'pg_proc'::regclass THEN d.objid::regprocedure::text ELSE d.objid::regclass::text END
      FROM deps AS d
     WHERE d.classid = 'pg_proc'::regclass
        OR EXISTS (SELECT FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                    WHERE c.oid = d.objid AND n.nspname NOT IN ('pg_catalog', 'information_schema'))
$$;
REVOKE EXECUTE ON FUNCTION audit.dataset_source_objects(text) FROM PUBLIC;

-- Why changes to a dataset might go unnoticed: sources without an always-firing
-- change trigger, the DDL event triggers missing or not firing always, sources
-- whose changes cannot be tracked (foreign tables, non-immutable functions).
CREATE FUNCTION audit.dataset_tracking_problems(p_dataset text) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(problem ORDER BY problem), '{}') FROM (
        SELECT format('event trigger %s is missing or does not fire always (needs a superuser: '
                      'SELECT audit.install_change_tracking())', e.name) AS problem
          FROM (VALUES ('woe_dataset_ddl'), ('woe_dataset_drop')) AS e (name)
         WHERE NOT EXISTS (SELECT FROM pg_event_trigger AS t WHERE t.evtname = e.name AND t.evtenabled = 'A')
        UNION ALL
        SELECT format('table %s has no change trigger firing always for %s '
                      '(owner: SELECT audit.track_dataset_sources(%L))', s.identity, w.what, p_dataset)
          FROM audit.dataset_source_objects(p_dataset) AS s
         CROSS JOIN (VALUES (61, 60, 'INSERT, UPDATE, DELETE and TRUNCATE statements'),
                            (29, 29, 'rows applied by logical replication')) AS w (mask, bits, what)
         WHERE s.kind IN ('r', 'p')
           AND NOT EXISTS (SELECT FROM pg_trigger AS t
                            WHERE t.tgrelid = s.objid AND t.tgenabled = 'A'
                              AND t.tgfoid = 'audit.note_dataset_change()'::regprocedure
                              AND (t.tgtype & w.mask) = w.bits)  -- ROW 1, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32
        UNION ALL
        SELECT format('%s %s: changes to it cannot be tracked', CASE s.kind WHEN 'f' THEN 'foreign table'
                                                                           ELSE 'relation' END, s.identity)
          FROM audit.dataset_source_objects(p_dataset) AS s
         WHERE s.kind NOT IN ('r', 'p', 'v', 'm', 'function')
        UNION ALL
        -- A function may read anything (an IMMUTABLE label is only a promise), so
        -- only PostgreSQL's own IMMUTABLE functions may appear in a dataset's views.
        SELECT format('function %s is %s: what it reads cannot be tracked', s.identity,
                      CASE WHEN p.pronamespace <> 'pg_catalog'::regnamespace THEN 'user-defined'
                           ELSE 'not IMMUTABLE' END)
          FROM audit.dataset_source_objects(p_dataset) AS s
          JOIN pg_proc AS p ON s.kind = 'function' AND p.oid = s.objid
         WHERE p.provolatile <> 'i' OR p.pronamespace <> 'pg_catalog'::regnamespace
    ) AS problems
$$;
REVOKE EXECUTE ON FUNCTION audit.dataset_tracking_problems(text) FROM PUBLIC;

-- What each dataset read when it was last certified (the event triggers match DDL against it).
CREATE TABLE audit.dataset_sources (
    dataset   text NOT NULL REFERENCES audit.certifiable_datasets (dataset),
    classid   regclass NOT NULL,
    objid     oid NOT NULL,
    identity  text NOT NULL,
    PRIMARY KEY (dataset, classid, objid)
);

-- Installs (or re-enables) the change trigger on every table the dataset reads,
-- firing always. Run by the owner of those tables.
CREATE FUNCTION audit.track_dataset_sources(p_dataset text) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s     record;
    done  text[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT FROM audit.certifiable_datasets WHERE dataset = p_dataset) THEN
        RAISE EXCEPTION 'dataset % is not certifiable: allowed are %', quote_nullable(p_dataset),
            (SELECT string_agg(quote_literal(dataset), ', ') FROM audit.certifiable_datasets)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR s IN SELECT * FROM audit.dataset_source_objects(p_dataset) WHERE kind IN ('r', 'p') LOOP
        IF NOT EXISTS (SELECT FROM pg_trigger AS t WHERE t.tgrelid = s.objid AND t.tgname = 'woe_dataset_changed') THEN
            EXECUTE format('CREATE TRIGGER woe_dataset_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                           'FOR EACH STATEMENT EXECUTE FUNCTION audit.note_dataset_change(%L)', s.identity, p_dataset);
        END IF;
        -- Logical replication's apply worker fires row triggers only (and runs with
        -- session_replication_role = replica): this one records what it applies.
        IF NOT EXISTS (SELECT FROM pg_trigger AS t WHERE t.tgrelid = s.objid AND t.tgname = 'woe_dataset_replicated') THEN
            EXECUTE format('CREATE TRIGGER woe_dataset_replicated AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
                           'WHEN (pg_catalog.current_setting(''session_replication_role'') = ''replica'') '
                           'EXECUTE FUNCTION audit.note_dataset_change(%L)', s.identity, p_dataset);
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER woe_dataset_changed', s.identity);
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER woe_dataset_replicated', s.identity);
        done := done || s.identity;
    END LOOP;
    RETURN done;
END $$;
REVOKE EXECUTE ON FUNCTION audit.track_dataset_sources(text) FROM PUBLIC;

-- The demo base tables: their V0003 triggers become the standard ones, firing always.
DROP TRIGGER socio_market_snapshots_changed ON ml.socio_market_snapshots;
DROP TRIGGER iphone_image_features_changed ON ml.iphone_image_features;
SELECT audit.track_dataset_sources('ml.woe_anchor_feature_store_t0_v1_v');

-- Locks every source of a certifiable dataset against writers (tables IN SHARE
-- MODE) and against redefinition (views), waiting at most 60 s. Refuses
-- anything that is not a registered dataset.
CREATE OR REPLACE FUNCTION audit.lock_dataset_sources(p_dataset text)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tables    text[];
    views     text[];
    previous  text := current_setting('lock_timeout');
BEGIN
    IF NOT EXISTS (SELECT FROM audit.certifiable_datasets WHERE dataset = p_dataset) THEN
        RAISE EXCEPTION 'dataset % is not certifiable: allowed are %', quote_nullable(p_dataset),
            (SELECT string_agg(quote_literal(dataset), ', ') FROM audit.certifiable_datasets)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(identity ORDER BY objid) FILTER (WHERE kind IN ('r', 'p')),
           array_agg(identity ORDER BY objid) FILTER (WHERE kind IN ('v', 'm'))
      INTO tables, views
      FROM audit.dataset_source_objects(p_dataset) WHERE classid = 'pg_class'::regclass;
    PERFORM set_config('lock_timeout', '60000', true);
    BEGIN
        IF views IS NOT NULL THEN
            EXECUTE 'LOCK TABLE ' || array_to_string(views, ', ') || ' IN ACCESS SHARE MODE';
        END IF;
        IF tables IS NOT NULL THEN
            EXECUTE 'LOCK TABLE ' || array_to_string(tables, ', ') || ' IN SHARE MODE';
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('lock_timeout', previous, true);
        RAISE EXCEPTION 'dataset % cannot be certified now: a writer kept its tables locked for 60 s', p_dataset
            USING ERRCODE = 'WL001', HINT = 'Try again when the load has finished.';
    END;
    PERFORM set_config('lock_timeout', previous, true);
    RETURN coalesce(tables, '{}') || coalesce(views, '{}');
END $$;
REVOKE EXECUTE ON FUNCTION audit.lock_dataset_sources(text) FROM PUBLIC;

-- Counts of every row check, the row count and the edited_date range, in one
-- scan (RETURN QUERY lets PostgreSQL use parallel workers).
CREATE FUNCTION audit.dataset_row_check_counts(p_dataset text, p_at timestamptz) RETURNS SETOF jsonb ROWS 1
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    filters text;
BEGIN
    SELECT string_agg(format('count(*) FILTER (WHERE %s) AS %I', c.violation, c.check_name), E',\n'
                      ORDER BY c.position)
      INTO filters
      FROM audit.dataset_row_checks AS c WHERE c.dataset = p_dataset;
    RETURN QUERY EXECUTE format(
        'SELECT to_jsonb(r) FROM (SELECT count(*) AS row_count, '
        'min(d.edited_date) FILTER (WHERE isfinite(d.edited_date)) AS min_edited_date, '
        'max(d.edited_date) FILTER (WHERE isfinite(d.edited_date)) AS max_edited_date%s FROM %s AS d) AS r',
        coalesce(E',\n' || filters, ''), p_dataset::regclass) USING p_at;
END $$;
REVOKE EXECUTE ON FUNCTION audit.dataset_row_check_counts(text, timestamptz) FROM PUBLIC;

CREATE FUNCTION audit.dataset_duplicate_keys(p_dataset text, p_key text[]) RETURNS SETOF bigint ROWS 1
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT coalesce(sum(n - 1), 0)::bigint FROM (SELECT count(*) AS n FROM %s GROUP BY %s HAVING count(*) > 1) AS dup',
        p_dataset::regclass, (SELECT string_agg(format('%I', k), ', ') FROM unnest(p_key) AS k));
END $$;
REVOKE EXECUTE ON FUNCTION audit.dataset_duplicate_keys(text, text[]) FROM PUBLIC;

-- Certifies a dataset: locks its sources, runs the contract, row and
-- plausibility checks, the change-tracking check and the hash on that frozen
-- data, and records the outcome (passed or failed) stamped with the database's
-- time and session_user. Returns the certification_id. The only way to write
-- audit.dataset_certifications.
CREATE FUNCTION audit.certify_dataset(p_dataset text, p_actor text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    spec      audit.certifiable_datasets;
    started   timestamptz := clock_timestamp();
    problems  text[];
    results   jsonb := '[]';
    counts    jsonb;
    dups      bigint;
    sha       text;
    n_rows    bigint;
    c         record;
    new_id    bigint;
BEGIN
    IF p_actor IS NULL OR p_actor !~ '[^[:space:]]' OR length(p_actor) > 200 THEN
        RAISE EXCEPTION 'actor must be a non-empty name of at most 200 characters, got %', quote_nullable(left(p_actor, 40))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM audit.require_read_committed('certification');
    SELECT * INTO spec FROM audit.certifiable_datasets AS d WHERE d.dataset = p_dataset;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown dataset %; certifiable datasets: %', quote_nullable(p_dataset),
            (SELECT string_agg(dataset, ', ') FROM audit.certifiable_datasets)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass(p_dataset) IS NOT NULL THEN
        PERFORM audit.lock_dataset_sources(p_dataset);
    END IF;
    problems := audit.contract_problems();
    IF to_regclass(p_dataset) IS NULL THEN
        problems := problems || format('%s does not exist', p_dataset);
    END IF;
    IF cardinality(problems) > 0 THEN
        results := jsonb_build_array(jsonb_build_object('name', 'contract', 'description', array_to_string(problems, '; '),
                                                        'passed', false, 'violations', cardinality(problems)));
    ELSE
        SELECT * INTO counts FROM audit.dataset_row_check_counts(p_dataset, started);
        SELECT * INTO dups FROM audit.dataset_duplicate_keys(p_dataset, spec.key_columns);
        n_rows := (counts ->> 'row_count')::bigint;
        results := jsonb_build_array(
            jsonb_build_object('name', 'contract', 'description', 'feature stores match the contract (columns and types)',
                               'passed', true, 'violations', 0),
            jsonb_build_object('name', 'non_empty', 'description', 'the dataset has at least one row',
                               'passed', n_rows > 0, 'violations', CASE WHEN n_rows > 0 THEN 0 ELSE 1 END),
            jsonb_build_object('name', 'unique_snapshot_key',
                               'description', format('(%s) identifies one row', array_to_string(spec.key_columns, ', ')),
                               'passed', dups = 0, 'violations', dups));
        FOR c IN SELECT * FROM audit.dataset_row_checks AS r WHERE r.dataset = p_dataset ORDER BY r.position LOOP
            results := results || jsonb_build_object(
                'name', c.check_name, 'description', c.description,
                'passed', (counts ->> c.check_name)::bigint = 0, 'violations', (counts ->> c.check_name)::bigint);
        END LOOP;
        SELECT * INTO sha FROM audit.dataset_sha256(p_dataset, spec.key_columns);
    END IF;
    problems := audit.dataset_tracking_problems(p_dataset);
    results := results || jsonb_build_object(
        'name', 'change_tracking',
        'description', CASE WHEN cardinality(problems) = 0
                            THEN 'every change to the dataset''s sources and definition invalidates the certification'
                            ELSE array_to_string(problems, '; ') END,
        'passed', cardinality(problems) = 0, 'violations', cardinality(problems));

    INSERT INTO audit.dataset_certifications
        (dataset, certified_by, passed, row_count, dataset_sha256, min_edited_date, max_edited_date, checks,
         duration_ms)
    VALUES (p_dataset, btrim(p_actor),
            NOT EXISTS (SELECT FROM jsonb_array_elements(results) AS e WHERE NOT (e ->> 'passed')::boolean),
            n_rows, sha, (counts ->> 'min_edited_date')::timestamptz, (counts ->> 'max_edited_date')::timestamptz,
            results, extract(epoch FROM clock_timestamp() - started) * 1000)
    RETURNING certification_id INTO new_id;

    DELETE FROM audit.dataset_sources WHERE dataset = p_dataset;
    INSERT INTO audit.dataset_sources (dataset, classid, objid, identity)
    SELECT p_dataset, s.classid, s.objid, s.identity FROM audit.dataset_source_objects(p_dataset) AS s;
    RETURN new_id;
END $$;
REVOKE EXECUTE ON FUNCTION audit.certify_dataset(text, text) FROM PUBLIC;
COMMENT ON FUNCTION audit.certify_dataset(text, text) IS
    'Runs every check and the hash of a certifiable dataset on locked data and records the outcome (passed or '
    'failed) with the database''s time and session_user; returns the certification_id.';

-- The guard of V0003, also refusing a certification stamped in the future.
CREATE OR REPLACE FUNCTION audit.require_certified_strict(p_dataset text, p_max_age interval)
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
    RETURN true;
END $$;

-- ---------------------------------------------------------------------------
-- DDL tracking: event triggers (creating them needs a superuser).
-- ---------------------------------------------------------------------------

-- Marks every dataset whose sources an object belongs to as changed now.
CREATE FUNCTION audit.note_source_ddl(p_classid oid, p_objid oid, p_what text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel  oid;
BEGIN
    -- A trigger or rule counts as a change of its table.
    rel := CASE p_classid
               WHEN 'pg_trigger'::regclass THEN (SELECT t.tgrelid FROM pg_trigger AS t WHERE t.oid = p_objid)
               WHEN 'pg_rewrite'::regclass THEN (SELECT r.ev_class FROM pg_rewrite AS r WHERE r.oid = p_objid)
               WHEN 'pg_class'::regclass THEN p_objid END;
    INSERT INTO audit.dataset_changes AS c (dataset, changed_at)
    SELECT t.dataset, clock_timestamp()
      FROM (SELECT DISTINCT s.dataset
              FROM audit.dataset_sources AS s
             WHERE (s.classid = p_classid::regclass AND s.objid = p_objid)
                OR (rel IS NOT NULL AND s.classid = 'pg_class'::regclass
                    AND (s.objid = rel
                         OR s.objid IN (WITH RECURSIVE up(oid) AS (
                                            SELECT i.inhparent FROM pg_inherits AS i WHERE i.inhrelid = rel
                                            UNION SELECT i.inhparent FROM up JOIN pg_inherits AS i ON i.inhrelid = up.oid)
                                        SELECT oid FROM up)))) AS t
    ON CONFLICT (dataset) DO UPDATE SET changed_at = greatest(c.changed_at, excluded.changed_at);
    -- A record, never a bypass: any function created or replaced anywhere (a
    -- function can change scores, checks or what a call stack shows), and any
    -- DDL on the project's schemas except the score partitions training attaches.
    IF p_classid = 'pg_proc'::regclass
       OR EXISTS (SELECT FROM pg_class AS c
                   WHERE c.oid = rel AND c.relnamespace IN ('ml'::regnamespace, 'audit'::regnamespace)
                     AND c.relname !~ '^woe_anchor_scores_v1') THEN
        INSERT INTO audit.break_glass_log (reason, is_bypass)
        VALUES (format('DDL on %s: %s', coalesce(rel::regclass::text, p_what), p_what), false);
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION audit.note_source_ddl(oid, oid, text) FROM PUBLIC;

CREATE FUNCTION audit.on_ddl_command_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd record;
BEGIN
    FOR cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        PERFORM audit.note_source_ddl(cmd.classid, cmd.objid, cmd.command_tag || ' ' || coalesce(cmd.object_identity, ''));
    END LOOP;
END $$;

CREATE FUNCTION audit.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        -- The dropped object is gone from the catalogs; match it by identity.
        INSERT INTO audit.dataset_changes AS c (dataset, changed_at)
        SELECT t.dataset, clock_timestamp()
          FROM (SELECT DISTINCT s.dataset
                  FROM audit.dataset_sources AS s
                 WHERE (s.classid = obj.classid::regclass AND s.objid = obj.objid)
                    OR (obj.object_type IN ('trigger', 'rule', 'table constraint')
                        AND obj.address_names[1] IS NOT NULL AND s.classid = 'pg_class'::regclass
                        AND s.identity = quote_ident(obj.address_names[1]) || '.' || quote_ident(obj.address_names[2]))
               ) AS t
        ON CONFLICT (dataset) DO UPDATE SET changed_at = greatest(c.changed_at, excluded.changed_at);
    END LOOP;
END $$;

-- Creates the two event triggers, firing always (also under
-- session_replication_role = replica). Needs a superuser; the migration runs it
-- when it can and warns otherwise (certification then fails its
-- change_tracking check until a superuser runs it).
CREATE FUNCTION audit.install_change_tracking() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'woe_dataset_ddl') THEN
        CREATE EVENT TRIGGER woe_dataset_ddl ON ddl_command_end EXECUTE FUNCTION audit.on_ddl_command_end();
    END IF;
    IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'woe_dataset_drop') THEN
        CREATE EVENT TRIGGER woe_dataset_drop ON sql_drop EXECUTE FUNCTION audit.on_sql_drop();
    END IF;
    ALTER EVENT TRIGGER woe_dataset_ddl ENABLE ALWAYS;
    ALTER EVENT TRIGGER woe_dataset_drop ENABLE ALWAYS;
END $$;
REVOKE EXECUTE ON FUNCTION audit.install_change_tracking() FROM PUBLIC;


-- Four-eyes for every client: when on, promotion refuses a model whose
-- registering identity is the promoter's (ml.woe_identity_v1).
CREATE TABLE ml.woe_anchor_governance_settings_v1 (
    one_row    boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    four_eyes  boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE ml.woe_anchor_governance_settings_v1 IS
    'Governance settings (one row). four_eyes: promotion refuses the identity that registered the model.';
INSERT INTO ml.woe_anchor_governance_settings_v1 DEFAULT VALUES;

-- audit.dataset_changes only moves forward, stamped by the database's clock.
CREATE FUNCTION audit.dataset_changes_stamp() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.dataset IS DISTINCT FROM OLD.dataset THEN
        RAISE EXCEPTION 'audit.dataset_changes rows keep their dataset' USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.changed_at := clock_timestamp();
    RETURN NEW;
END $$;
CREATE TRIGGER dataset_changes_stamp BEFORE INSERT OR UPDATE ON audit.dataset_changes
    FOR EACH ROW EXECUTE FUNCTION audit.dataset_changes_stamp();
CREATE TRIGGER dataset_changes_keep BEFORE DELETE OR TRUNCATE ON audit.dataset_changes
    FOR EACH STATEMENT EXECUTE FUNCTION audit.forbid_rewrite();

-- Configuration (band schema, checks, contract, generations, datasets, locks,
-- settings) changes only in a transaction that broke the glass for every model.
CREATE FUNCTION audit.configuration_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT audit.break_glass_active(NULL) THEN
        RAISE EXCEPTION '% is governance configuration: % needs a break-glass record in the same transaction',
            TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'INSERT INTO audit.break_glass_log (reason) VALUES (''why'') first, in the same transaction.';
    END IF;
    RETURN NULL;
END $$;

-- Rows that only one function writes: a certification only by audit.certify_dataset,
-- a provenance record only by ml.woe_anchor_verify_provenance_v1 (removed only with
-- its model), the sources of a dataset only by audit.certify_dataset. Anything else
-- needs a break-glass record.
CREATE FUNCTION audit.written_by_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT audit.called_from(TG_ARGV[0]) AND NOT (TG_NARGS > 1 AND audit.called_from(TG_ARGV[1]))
       AND NOT audit.break_glass_active(NULL) THEN
        RAISE EXCEPTION '% is written only by %: % refused', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
            TG_ARGV[0], TG_OP USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER dataset_certifications_written_by BEFORE INSERT ON audit.dataset_certifications
    FOR EACH STATEMENT EXECUTE FUNCTION audit.written_by_guard('audit.certify_dataset(text,text)');
CREATE TRIGGER provenance_checks_written_by BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON ml.woe_anchor_provenance_checks_v1
    FOR EACH STATEMENT EXECUTE FUNCTION audit.written_by_guard('ml.woe_anchor_verify_provenance_v1(text)',
                                                               'ml.delete_woe_anchor_model(text)');
CREATE TRIGGER dataset_sources_written_by BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON audit.dataset_sources
    FOR EACH STATEMENT EXECUTE FUNCTION audit.written_by_guard('audit.certify_dataset(text,text)');

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ml.woe_anchor_band_values_v1', 'ml.woe_known_generations', 'audit.dataset_row_checks',
                             'audit.dataset_contract', 'audit.certifiable_datasets', 'ml.woe_anchor_locks_v1',
                             'ml.woe_anchor_governance_settings_v1'] LOOP
        EXECUTE format('CREATE TRIGGER configuration_guard BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION audit.configuration_guard()', t);
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER configuration_guard', t);
    END LOOP;
END $$;
ALTER TABLE audit.dataset_changes ENABLE ALWAYS TRIGGER dataset_changes_stamp;
ALTER TABLE audit.dataset_changes ENABLE ALWAYS TRIGGER dataset_changes_keep;
ALTER TABLE audit.dataset_certifications ENABLE ALWAYS TRIGGER dataset_certifications_written_by;
ALTER TABLE ml.woe_anchor_provenance_checks_v1 ENABLE ALWAYS TRIGGER provenance_checks_written_by;
ALTER TABLE audit.dataset_sources ENABLE ALWAYS TRIGGER dataset_sources_written_by;

-- Every governance trigger fires always, also for rows applied by replication.
ALTER TABLE audit.dataset_certifications ENABLE ALWAYS TRIGGER dataset_certifications_append_only;
ALTER TABLE audit.dataset_certifications ENABLE ALWAYS TRIGGER dataset_certifications_stamp;
ALTER TABLE audit.break_glass_log ENABLE ALWAYS TRIGGER break_glass_log_stamp;
ALTER TABLE audit.break_glass_log ENABLE ALWAYS TRIGGER break_glass_log_append_only;
ALTER TABLE ml.woe_anchor_promotions_v1 ENABLE ALWAYS TRIGGER woe_anchor_promotions_v1_append_only;
ALTER TABLE ml.woe_anchor_promotions_v1 ENABLE ALWAYS TRIGGER woe_anchor_promotions_v1_stamp;
ALTER TABLE ml.woe_anchor_model_deletions_v1 ENABLE ALWAYS TRIGGER woe_anchor_model_deletions_v1_stamp;
ALTER TABLE ml.woe_anchor_model_deletions_v1 ENABLE ALWAYS TRIGGER woe_anchor_model_deletions_v1_append_only;
ALTER TABLE ml.woe_anchor_model_registry_v1 ENABLE ALWAYS TRIGGER woe_anchor_model_registry_v1_guard;
ALTER TABLE ml.woe_anchor_model_registry_v1 ENABLE ALWAYS TRIGGER woe_anchor_model_registry_v1_no_truncate;
ALTER TABLE ml.woe_anchor_cuts_v1 ENABLE ALWAYS TRIGGER woe_anchor_cuts_v1_guard;
ALTER TABLE ml.woe_anchor_cuts_v1 ENABLE ALWAYS TRIGGER woe_anchor_cuts_v1_no_truncate;
ALTER TABLE ml.woe_anchor_map_v1 ENABLE ALWAYS TRIGGER woe_anchor_map_v1_guard;
ALTER TABLE ml.woe_anchor_map_v1 ENABLE ALWAYS TRIGGER woe_anchor_map_v1_no_truncate;

-- ---------------------------------------------------------------------------
-- Roles: certification only through the function; no direct deletes; locks.
-- ---------------------------------------------------------------------------

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'woe_sso') THEN
        BEGIN
            CREATE ROLE woe_sso NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'role woe_sso does not exist and % may not create it', current_user;
        END;
    END IF;
END $$;

-- No SECURITY DEFINER function of the project is executable by PUBLIC: each
-- role gets exactly the ones it needs from ml.grant_woe_anchor_roles().
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
              WHERE n.nspname IN ('ml', 'audit') AND p.prosecdef LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ml.grant_woe_anchor_roles() RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    granted text[] := '{}';
    r       text;
BEGIN
    -- Every project login may see which migrations were applied (a client that finds
    -- none pending starts without DDL).
    FOREACH r IN ARRAY ARRAY['woe_reader', 'woe_trainer', 'woe_certifier', 'woe_promoter', 'woe_sso'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r);
        EXECUTE format('GRANT USAGE ON SCHEMA audit TO %I', r);
        EXECUTE format('GRANT SELECT ON audit.schema_migrations TO %I', r);
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_reader') THEN
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
                        ml.woe_anchor_scores_live_train_v, ml.woe_anchor_promotions_v1,
                        ml.woe_anchor_model_deletions_v1, ml.woe_anchor_provenance_checks_v1
                     TO woe_trainer;
        -- Models are registered (INSERT), never changed; deleted only through
        -- ml.delete_woe_anchor_model. Scores arrive as a staged partition.
        REVOKE DELETE ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_cuts_v1, ml.woe_anchor_map_v1 FROM woe_trainer;
        REVOKE INSERT ON ml.woe_anchor_scores_v1 FROM woe_trainer;
        GRANT SELECT, INSERT ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_cuts_v1, ml.woe_anchor_map_v1
            TO woe_trainer;
        GRANT SELECT ON ml.woe_anchor_scores_v1 TO woe_trainer;
        GRANT EXECUTE ON FUNCTION
            ml.woe_band_dsold(double precision, double precision, double precision, double precision, double precision),
            ml.woe_band_trust(text), ml.woe_band_ship(boolean), ml.woe_band_sale(boolean), ml.woe_band_cond(text),
            ml.woe_band_prob3(text, double precision), ml.woe_band_bat(smallint),
            ml.woe_presentation_score(smallint, double precision, double precision, double precision),
            ml.woe_band_present(double precision, double precision, double precision),
            ml.woe_band_acc(boolean, boolean, boolean), ml.woe_fold(bigint, integer), ml.woe_sigmoid(double precision),
            ml.woe_slow21(timestamptz, timestamptz, timestamptz), ml.woe_weight(timestamptz, timestamptz, double precision),
            ml.woe_anchor_bands_v1(double precision, double precision, double precision, double precision,
                                   double precision, double precision),
            audit.require_certified_strict(text, interval),
            ml.delete_woe_anchor_model(text),
            ml.woe_anchor_scores_stage_v1(text), ml.woe_anchor_scores_attach_v1(text),
            ml.woe_anchor_training_lock_v1(interval), ml.woe_anchor_artifact_digest_v1(text),
            ml.woe_identity_v1(text, text), audit.fresh_certification_id(text),
            ml.woe_anchor_derive_v1(timestamptz, double precision, double precision, double precision,
                                    double precision, double precision, double precision, integer)
            TO woe_trainer;
        granted := granted || 'woe_trainer'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_certifier') THEN
        GRANT USAGE ON SCHEMA ml, audit TO woe_certifier;
        GRANT SELECT ON ml.socio_market_feature_store_train_v, ml.iphone_image_features_unified_v1_train_v,
                        ml.woe_anchor_feature_store_t0_v1_v, audit.dataset_changes, audit.dataset_certifications,
                        audit.dataset_row_checks, audit.dataset_contract, audit.certifiable_datasets
                     TO woe_certifier;
        -- Certifications are recorded by audit.certify_dataset only.
        REVOKE INSERT ON audit.dataset_certifications FROM woe_certifier;
        REVOKE EXECUTE ON FUNCTION audit.lock_dataset_sources(text) FROM woe_certifier;
        GRANT EXECUTE ON FUNCTION audit.certify_dataset(text, text), audit.dataset_sha256(text, text[]),
                                  audit.require_certified_strict(text, interval), audit.contract_problems(),
                                  audit.fresh_certification_id(text)
            TO woe_certifier;
        granted := granted || 'woe_certifier'::text;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'woe_promoter') THEN
        GRANT USAGE ON SCHEMA ml TO woe_promoter;
        GRANT SELECT ON ml.woe_anchor_model_registry_v1, ml.woe_anchor_promotions_v1,
                        ml.woe_anchor_provenance_checks_v1, ml.woe_anchor_governance_settings_v1 TO woe_promoter;
        GRANT EXECUTE ON FUNCTION ml.promote_woe_anchor_model(text, text, text, text, text[]),
                                  ml.rollback_woe_anchor_model(text, text),
                                  ml.woe_anchor_promotion_preflight_v1(text),
                                  ml.woe_anchor_verify_provenance_v1(text),
                                  ml.woe_anchor_artifact_digest_v1(text),
                                  ml.woe_identity_v1(text, text), audit.fresh_certification_id(text)
            TO woe_promoter;
        granted := granted || 'woe_promoter'::text;
    END IF;
    RETURN granted;
END $$;

SELECT ml.grant_woe_anchor_roles();

-- Last, so that this script's own DDL is not recorded as a change.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    ELSE
        RAISE WARNING 'DDL change tracking is not installed: % is not a superuser. Certification fails its '
                      'change_tracking check until a superuser runs SELECT audit.install_change_tracking()',
                      current_user;
    END IF;
END $$;
