-- Banding that a distributed planner can run: no set-returning SQL function in FROM.
--
-- The live views banded every snapshot with LATERAL ml.woe_anchor_bands_v1(...), a
-- set-returning SQL function that PostgreSQL inlines into the calling query. Citus
-- decides whether a query is distributed before that inlining, finds no distributed
-- table in a function call, and then refuses the inlined result ("parameterized
-- queries for SQL functions referencing distributed tables are not supported"), with
-- constant arguments too. So on a cluster no view could score, and neither training
-- nor provenance could band.
--
-- Banding is now split where the model enters it:
--
-- * ml.v_woe_anchor_band_inputs_v1, a view: every snapshot of the certified entrypoint
--   with the eight bands that no model parameter changes, the presentation score, and
--   delta_vs_sold_median_30d. A view is a subquery to any planner; on Citus it is
--   pushed down to the shards with the entrypoint's co-located join.
-- * the two bands a model parameterises stay the scalar functions they were,
--   ml.woe_band_dsold(delta, t1..t4) and ml.woe_band_present(score, c1, c2), applied
--   to that view's columns by each caller with its own thresholds and cuts: the live
--   views with the model's, training with each fold's, provenance with the stored
--   ones.
--
-- Every band is still defined once (the ml.woe_band_* functions, unchanged), so every
-- band value and score is identical to V0009's. ml.woe_anchor_bands_v1 keeps its
-- signature and columns for single-node callers, as the same two calls over the view.
-- The views keep their columns, owner and grants; trainers may also read the inputs
-- view, which training bands from.
--
-- The guarded views call the guard from a scalar subquery, so that on Citus the
-- coordinator, which holds the certifications, runs it (below).

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

-- Every snapshot of the certified entrypoint with the bands no model parameter
-- changes, and the two values that the model-dependent bands are cut from.
CREATE VIEW ml.v_woe_anchor_band_inputs_v1 AS
SELECT f.listing_id, f.generation, f.t0, f.sold_at,
       f.delta_vs_sold_median_30d,
       ml.woe_band_trust(f.seller_trust_tier) AS trust_tier,
       ml.woe_band_ship(f.ships) AS ship_band,
       ml.woe_band_sale(f.negotiable) AS sale_band,
       ml.woe_band_cond(f.item_condition) AS cond_band,
       ml.woe_band_prob3('dmg_ai', f.dmg_ai_prob) AS dmg_ai_band,
       ml.woe_band_bat(f.battery_health_pct) AS bat_band,
       ml.woe_presentation_score(f.n_photos, f.photo_quality, f.lighting, f.background_clean) AS presentation_score,
       ml.woe_band_prob3('vdmg', f.vision_damage_prob) AS vdmg_band,
       ml.woe_band_acc(f.has_image_row, f.has_box, f.has_charger) AS accessories_band
  FROM ml.woe_anchor_feature_store_t0_v1_v AS f;

-- Every snapshot banded with the given thresholds and presentation cuts (one node
-- only: a distributed planner cannot plan a set-returning SQL function over
-- distributed tables; callers there band from the view above).
CREATE OR REPLACE FUNCTION ml.woe_anchor_bands_v1(t1 double precision, t2 double precision, t3 double precision,
                                                  t4 double precision, c1 double precision, c2 double precision)
RETURNS TABLE (
    listing_id bigint, generation text, t0 timestamptz, sold_at timestamptz,
    dsold_band text, trust_tier text, ship_band text, sale_band text, cond_band text,
    dmg_ai_band text, bat_band text, presentation_score double precision,
    presentation_band text, vdmg_band text, accessories_band text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT i.listing_id, i.generation, i.t0, i.sold_at,
           ml.woe_band_dsold(i.delta_vs_sold_median_30d, t1, t2, t3, t4),
           i.trust_tier, i.ship_band, i.sale_band, i.cond_band, i.dmg_ai_band, i.bat_band,
           i.presentation_score,
           ml.woe_band_present(i.presentation_score, c1, c2),
           i.vdmg_band, i.accessories_band
      FROM ml.v_woe_anchor_band_inputs_v1 AS i
$$;

-- Every snapshot banded under every model that has final cuts. Filter on model_key
-- (a candidate) or is_active (live); the planner pushes both down.
CREATE OR REPLACE VIEW ml.v_woe_anchor_bands_by_model_v1 AS
SELECT m.model_key, m.is_active, m.band_schema_version, m.base_logit,
       m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4,
       c.c1 AS present_c1, c.c2 AS present_c2,
       i.listing_id, i.generation, i.t0, i.sold_at,
       ml.woe_band_dsold(i.delta_vs_sold_median_30d, m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4) AS dsold_band,
       i.trust_tier, i.ship_band, i.sale_band, i.cond_band, i.dmg_ai_band, i.bat_band, i.presentation_score,
       ml.woe_band_present(i.presentation_score, c.c1, c.c2) AS presentation_band,
       i.vdmg_band, i.accessories_band
  FROM ml.woe_anchor_model_registry_v1 AS m
  JOIN ml.woe_anchor_cuts_v1 AS c ON c.model_key = m.model_key AND c.fold_id IS NULL
 CROSS JOIN ml.v_woe_anchor_band_inputs_v1 AS i;

-- Scores under every model, as in V0009: each model's scoring columns and final map
-- packed once into an array indexed by slot, every snapshot banded with that model's
-- thresholds and cuts, each band value's WOE found by ml.woe_slot_<band>. A band
-- value the map lacks contributes 0 and is listed in unmapped_bands.
CREATE OR REPLACE VIEW ml.woe_anchor_scores_by_model_v1 AS
SELECT s.*,
       s.base_logit + s.woe_sum AS woe_logit,
       ml.woe_sigmoid(s.base_logit + s.woe_sum) AS woe_anchor_p_slow21
  FROM (SELECT t.*,
               coalesce(t.woe_dsold, 0) + coalesce(t.woe_trust, 0) + coalesce(t.woe_ship, 0)
                 + coalesce(t.woe_sale, 0) + coalesce(t.woe_cond, 0) + coalesce(t.woe_dmg, 0)
                 + coalesce(t.woe_bat, 0) + coalesce(t.woe_present, 0) + coalesce(t.woe_vdmg, 0)
                 + coalesce(t.woe_acc, 0) AS woe_sum,
               array_remove(ARRAY[
                   CASE WHEN t.woe_dsold IS NULL THEN 'dsold' END, CASE WHEN t.woe_trust IS NULL THEN 'trust' END,
                   CASE WHEN t.woe_ship IS NULL THEN 'ship' END, CASE WHEN t.woe_sale IS NULL THEN 'sale' END,
                   CASE WHEN t.woe_cond IS NULL THEN 'cond' END, CASE WHEN t.woe_dmg IS NULL THEN 'dmg' END,
                   CASE WHEN t.woe_bat IS NULL THEN 'bat' END, CASE WHEN t.woe_present IS NULL THEN 'present' END,
                   CASE WHEN t.woe_vdmg IS NULL THEN 'vdmg' END, CASE WHEN t.woe_acc IS NULL THEN 'acc' END],
                   NULL) AS unmapped_bands
          FROM (SELECT b.model_key, b.is_active, b.band_schema_version, b.base_logit,
                       b.dsold_t1, b.dsold_t2, b.dsold_t3, b.dsold_t4, b.present_c1, b.present_c2,
                       b.listing_id, b.generation, b.t0, b.sold_at, b.dsold_band, b.trust_tier, b.ship_band,
                       b.sale_band, b.cond_band, b.dmg_ai_band, b.bat_band, b.presentation_score,
                       b.presentation_band, b.vdmg_band, b.accessories_band,
                       b.woe[ml.woe_slot_dsold(b.dsold_band)] AS woe_dsold,
                       b.woe[ml.woe_slot_trust(b.trust_tier)] AS woe_trust,
                       b.woe[ml.woe_slot_ship(b.ship_band)] AS woe_ship,
                       b.woe[ml.woe_slot_sale(b.sale_band)] AS woe_sale,
                       b.woe[ml.woe_slot_cond(b.cond_band)] AS woe_cond,
                       b.woe[ml.woe_slot_dmg(b.dmg_ai_band)] AS woe_dmg,
                       b.woe[ml.woe_slot_bat(b.bat_band)] AS woe_bat,
                       b.woe[ml.woe_slot_present(b.presentation_band)] AS woe_present,
                       b.woe[ml.woe_slot_vdmg(b.vdmg_band)] AS woe_vdmg,
                       b.woe[ml.woe_slot_acc(b.accessories_band)] AS woe_acc
                  FROM (SELECT w.model_key, w.is_active, w.band_schema_version, w.base_logit,
                               w.dsold_t1, w.dsold_t2, w.dsold_t3, w.dsold_t4, w.present_c1, w.present_c2, w.woe,
                               i.listing_id, i.generation, i.t0, i.sold_at,
                               ml.woe_band_dsold(i.delta_vs_sold_median_30d, w.dsold_t1, w.dsold_t2, w.dsold_t3,
                                                 w.dsold_t4) AS dsold_band,
                               i.trust_tier, i.ship_band, i.sale_band, i.cond_band, i.dmg_ai_band, i.bat_band,
                               i.presentation_score,
                               ml.woe_band_present(i.presentation_score, w.present_c1, w.present_c2) AS presentation_band,
                               i.vdmg_band, i.accessories_band
                          FROM (SELECT m.model_key, m.is_active, m.band_schema_version, m.base_logit,
                                       m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4,
                                       c.c1 AS present_c1, c.c2 AS present_c2,
                                       array_agg(mp.woe ORDER BY v.slot) AS woe
                                  FROM ml.woe_anchor_model_registry_v1 AS m
                                  JOIN ml.woe_anchor_cuts_v1 AS c ON c.model_key = m.model_key AND c.fold_id IS NULL
                                  LEFT JOIN ml.woe_anchor_band_values_v1 AS v
                                         ON v.band_schema_version = m.band_schema_version
                                  LEFT JOIN ml.woe_anchor_map_v1 AS mp
                                         ON mp.model_key = m.model_key AND mp.fold_id IS NULL
                                        AND mp.band_name = v.band_name AND mp.band_value = v.band_value
                                 GROUP BY m.model_key, c.c1, c.c2) AS w
                         CROSS JOIN ml.v_woe_anchor_band_inputs_v1 AS i) AS b
               ) AS t
       ) AS s;

-- The guarded views: the guard is now the one column of an uncorrelated scalar
-- subquery over the guard function, not a function call in WHERE. On one node this
-- is the same one-time filter, checked before any row is read (an init plan whose
-- value every parallel worker receives). On Citus it keeps the guard on the
-- coordinator: a function call in WHERE was shipped with the shard queries and run on
-- the workers, which do not hold the certifications; a function in a subquery's FROM
-- is run by the coordinator first, and the shards see only its result.
CREATE OR REPLACE VIEW ml.woe_anchor_scores_live_train_v AS
SELECT * FROM ml.woe_anchor_scores_live_v1
 WHERE (SELECT g.certified
          FROM audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', interval '24 hours') AS g(certified));

CREATE OR REPLACE VIEW ml.woe_anchor_scores_by_model_train_v AS
SELECT * FROM ml.woe_anchor_scores_by_model_v1
 WHERE (SELECT g.certified
          FROM audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', interval '24 hours') AS g(certified));

-- Provenance derives from the same view and the same two functions (otherwise as in
-- V0008).
CREATE OR REPLACE FUNCTION ml.woe_anchor_derive_v1(p_cutoff timestamptz, p_half_life double precision, p_eps double precision,
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
      FROM ml.v_woe_anchor_band_inputs_v1 AS b
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
              FROM (SELECT b.*, ml.woe_band_dsold(b.delta_vs_sold_median_30d, $3, $4, $5, $6) AS dsold_band,
                           ml.woe_band_present(b.presentation_score, $7, $8) AS presentation_band,
                           ml.woe_slow21(b.t0, b.sold_at, $1) AS y, ml.woe_weight(b.t0, $1, $2) AS w
                      FROM ml.v_woe_anchor_band_inputs_v1 AS b
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

-- Trainers band from the inputs view (otherwise as in V0008).
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
                        ml.v_woe_anchor_band_inputs_v1, ml.v_woe_anchor_bands_by_model_v1, ml.woe_anchor_scores_by_model_train_v,
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

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
