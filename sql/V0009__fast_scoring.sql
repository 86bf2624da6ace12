-- Live scoring that PostgreSQL can run in parallel (docs/model.md, "Scoring").
--
-- The views of V0004 scored every row in one process: the final map was packed by a
-- LATERAL subquery correlated with each model row, and a correlated subquery's
-- parameters keep the planner from any parallel plan; the guard, PARALLEL
-- RESTRICTED, did the same for the guarded views. Here:
--
-- * each model's scoring inputs (thresholds, final cuts, the final map packed into
--   an array indexed by ml.woe_anchor_band_values_v1.slot) are one row of an
--   uncorrelated grouped subquery, which the rows are then banded with; a filter on
--   model_key or is_active still reaches the registry scan, and the whole plan
--   may run under Gather with a partial aggregate in every worker;
-- * the guard is PARALLEL SAFE: it reads two indexed rows and writes nothing, so
--   it stays a one-time filter, checked by every process of the query before it
--   returns a row.
--
-- Banding is unchanged (ml.woe_anchor_bands_v1 and the ml.woe_band_* functions,
-- inlined), as are the slots, the packed array and the arithmetic, so every score
-- is bit-identical to V0004's. The views keep their columns, owner and grants.

-- A migration's own DDL is recorded by the migration ledger, not as a change (as in
-- V0008): the event triggers are off while this script runs as their owner and are
-- on again, firing always, at its end.
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

-- Scores under every model: base_logit + the final map's WOE of each band value.
-- w has one row per model with final cuts: its scoring columns and its final map
-- packed once into an array indexed by slot (NULL where the map has no row); each
-- snapshot is banded with that model's thresholds and cuts, and each band value is
-- found by ml.woe_slot_<band>. A band value the map lacks contributes 0 and is
-- listed in unmapped_bands.
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
          FROM (SELECT w.model_key, w.is_active, w.band_schema_version, w.base_logit,
               w.dsold_t1, w.dsold_t2, w.dsold_t3, w.dsold_t4, w.present_c1, w.present_c2, b.*,
               w.woe[ml.woe_slot_dsold(b.dsold_band)] AS woe_dsold,
               w.woe[ml.woe_slot_trust(b.trust_tier)] AS woe_trust,
               w.woe[ml.woe_slot_ship(b.ship_band)] AS woe_ship,
               w.woe[ml.woe_slot_sale(b.sale_band)] AS woe_sale,
               w.woe[ml.woe_slot_cond(b.cond_band)] AS woe_cond,
               w.woe[ml.woe_slot_dmg(b.dmg_ai_band)] AS woe_dmg,
               w.woe[ml.woe_slot_bat(b.bat_band)] AS woe_bat,
               w.woe[ml.woe_slot_present(b.presentation_band)] AS woe_present,
               w.woe[ml.woe_slot_vdmg(b.vdmg_band)] AS woe_vdmg,
               w.woe[ml.woe_slot_acc(b.accessories_band)] AS woe_acc
                  FROM (SELECT m.model_key, m.is_active, m.band_schema_version, m.base_logit,
                               m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4,
                               c.c1 AS present_c1, c.c2 AS present_c2,
                               array_agg(mp.woe ORDER BY v.slot) AS woe
                          FROM ml.woe_anchor_model_registry_v1 AS m
                          JOIN ml.woe_anchor_cuts_v1 AS c ON c.model_key = m.model_key AND c.fold_id IS NULL
                          LEFT JOIN ml.woe_anchor_band_values_v1 AS v ON v.band_schema_version = m.band_schema_version
                          LEFT JOIN ml.woe_anchor_map_v1 AS mp
                                 ON mp.model_key = m.model_key AND mp.fold_id IS NULL
                                AND mp.band_name = v.band_name AND mp.band_value = v.band_value
                         GROUP BY m.model_key, c.c1, c.c2) AS w
                 CROSS JOIN LATERAL ml.woe_anchor_bands_v1(w.dsold_t1, w.dsold_t2, w.dsold_t3, w.dsold_t4,
                                                           w.present_c1, w.present_c2) AS b
               ) AS t
       ) AS s;

-- The guard reads and writes nothing else than before; PARALLEL SAFE lets the
-- guarded views' plans run in parallel workers, each checking it once.
ALTER FUNCTION audit.require_certified_strict(text, interval) PARALLEL SAFE;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
