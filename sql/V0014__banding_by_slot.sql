-- Banding by slot: each band defined once as the position of its value, scoring
-- without text.
--
-- Scoring a snapshot used to band it into text (ml.woe_band_*), look each text up in
-- its band's vocabulary (ml.woe_slot_*, array_position) and index the model's packed
-- WOE array with that slot. At 1M snapshots the text and the lookups were about 1.2 s
-- of CPU of a full scoring's 3.4 s in one process; the same arithmetic on integers
-- takes 2.2 s.
--
-- Now:
--
-- * ml.woe_pos_<band>(inputs) is the one definition of each band: the 1-based
--   position of the row's value in the band's vocabulary (the order of
--   ml.woe_anchor_band_values_v1), an integer CASE on the inputs. dmg and vdmg share
--   ml.woe_pos_prob3.
-- * ml.woe_band_<band>, same signatures and values as before, is that position's
--   value: its vocabulary indexed by the position. Band values and explanations read
--   these.
-- * ml.woe_slot_of_<band>(inputs) is the slot of the row's value in
--   ml.woe_anchor_band_values_v1, the band's first slot less one plus the position:
--   ml.woe_slot_<band>(ml.woe_band_<band>(inputs)) without the text.
-- * ml.v_woe_anchor_band_inputs_v1 gains the slots of the eight bands no model
--   parameter changes (<band>_slot, after its existing columns); the score views index
--   the packed WOE with them and with ml.woe_slot_of_dsold / ml.woe_slot_of_present
--   under the model's thresholds and cuts. Training reads the same columns and
--   functions, so training and serving still band identically.
--
-- Every band value, slot and score is unchanged (tests/test_bands.py checks each
-- boundary through the text and the slot functions alike).

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

-- Positions: the banding rules (docs/model.md), each once.

CREATE FUNCTION ml.woe_pos_dsold(x double precision, t1 double precision, t2 double precision,
                                 t3 double precision, t4 double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x IS NULL OR x = 'NaN'::double precision THEN 6
                WHEN x < t1 THEN 1
                WHEN x < t2 THEN 2
                WHEN x < t3 THEN 3
                WHEN x < t4 THEN 4
                ELSE 5 END
$$;

CREATE FUNCTION ml.woe_pos_trust(tier text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE tier WHEN 'HIGH' THEN 1 WHEN 'MEDIUM' THEN 2 WHEN 'LOW' THEN 3 WHEN 'NEW' THEN 4 ELSE 5 END
$$;

CREATE FUNCTION ml.woe_pos_ship(ships boolean) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ships THEN 1 WHEN NOT ships THEN 2 ELSE 3 END
$$;

CREATE FUNCTION ml.woe_pos_sale(negotiable boolean) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN negotiable THEN 1 WHEN NOT negotiable THEN 2 ELSE 3 END
$$;

CREATE FUNCTION ml.woe_pos_cond(item_condition text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE item_condition
                WHEN 'new' THEN 1
                WHEN 'like_new' THEN 2
                WHEN 'good' THEN 3
                WHEN 'fair' THEN 4
                WHEN 'for_parts' THEN 5
                ELSE 6 END
$$;

CREATE FUNCTION ml.woe_pos_prob3(p double precision) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p IS NULL OR p = 'NaN'::double precision THEN 4
                WHEN p >= 0.5 THEN 1
                WHEN p >= 0.2 THEN 2
                ELSE 3 END
$$;

CREATE FUNCTION ml.woe_pos_bat(battery_health_pct smallint) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN battery_health_pct IS NULL THEN 4
                WHEN battery_health_pct >= 90 THEN 1
                WHEN battery_health_pct >= 80 THEN 2
                ELSE 3 END
$$;

-- Below the first cut, between the cuts, from the second cut on; missing (NULL or NaN) last.
CREATE FUNCTION ml.woe_pos_present(score double precision, c1 double precision, c2 double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(width_bucket(nullif(score, 'NaN'::double precision), ARRAY[c1, c2]) + 1, 4)
$$;

CREATE FUNCTION ml.woe_pos_acc(has_image_row boolean, has_box boolean, has_charger boolean)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN NOT coalesce(has_image_row, false) OR (has_box IS NULL AND has_charger IS NULL) THEN 4
                WHEN coalesce(has_box, false) AND coalesce(has_charger, false) THEN 1
                WHEN coalesce(has_box, false) OR coalesce(has_charger, false) THEN 2
                ELSE 3 END
$$;

-- Band values: the vocabulary (in slot order) at the position.

CREATE OR REPLACE FUNCTION ml.woe_band_dsold(x double precision, t1 double precision, t2 double precision,
                                             t3 double precision, t4 double precision)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['dSold_under', 'dSold_low', 'dSold_fair', 'dSold_high', 'dSold_over', 'dSold_missing'])
               [ml.woe_pos_dsold(x, t1, t2, t3, t4)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_trust(tier text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['HIGH', 'MEDIUM', 'LOW', 'NEW', 'trust_missing'])[ml.woe_pos_trust(tier)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_ship(ships boolean) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['shipping_ok', 'shipping_no', 'ship_missing'])[ml.woe_pos_ship(ships)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_sale(negotiable boolean) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['sale_negotiable', 'sale_fixed', 'sale_missing'])[ml.woe_pos_sale(negotiable)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_cond(item_condition text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['cond_new', 'cond_like_new', 'cond_good', 'cond_fair', 'cond_parts', 'cond_missing'])
               [ml.woe_pos_cond(item_condition)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_prob3(prefix text, p double precision)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT prefix || (ARRAY['_hi', '_mid', '_lo', '_missing'])[ml.woe_pos_prob3(p)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_bat(battery_health_pct smallint)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['bat_90p', 'bat_80_89', 'bat_lt80', 'bat_missing'])[ml.woe_pos_bat(battery_health_pct)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_present(score double precision, c1 double precision, c2 double precision)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['present_lo', 'present_mid', 'present_hi', 'present_missing'])[ml.woe_pos_present(score, c1, c2)]
$$;

CREATE OR REPLACE FUNCTION ml.woe_band_acc(has_image_row boolean, has_box boolean, has_charger boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['acc_full', 'acc_partial', 'acc_none', 'acc_missing'])[ml.woe_pos_acc(has_image_row, has_box, has_charger)]
$$;

-- Slots: the band's first slot in ml.woe_anchor_band_values_v1 less one, plus the
-- position (the offsets of ml.woe_slot_<band>).

CREATE FUNCTION ml.woe_slot_of_dsold(x double precision, t1 double precision, t2 double precision,
                                     t3 double precision, t4 double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0 + ml.woe_pos_dsold(x, t1, t2, t3, t4)
$$;

CREATE FUNCTION ml.woe_slot_of_trust(tier text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 6 + ml.woe_pos_trust(tier)
$$;

CREATE FUNCTION ml.woe_slot_of_ship(ships boolean) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 11 + ml.woe_pos_ship(ships)
$$;

CREATE FUNCTION ml.woe_slot_of_sale(negotiable boolean) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 14 + ml.woe_pos_sale(negotiable)
$$;

CREATE FUNCTION ml.woe_slot_of_cond(item_condition text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 17 + ml.woe_pos_cond(item_condition)
$$;

CREATE FUNCTION ml.woe_slot_of_dmg(p double precision) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 23 + ml.woe_pos_prob3(p)
$$;

CREATE FUNCTION ml.woe_slot_of_bat(battery_health_pct smallint) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 27 + ml.woe_pos_bat(battery_health_pct)
$$;

CREATE FUNCTION ml.woe_slot_of_present(score double precision, c1 double precision, c2 double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 31 + ml.woe_pos_present(score, c1, c2)
$$;

CREATE FUNCTION ml.woe_slot_of_vdmg(p double precision) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 35 + ml.woe_pos_prob3(p)
$$;

CREATE FUNCTION ml.woe_slot_of_acc(has_image_row boolean, has_box boolean, has_charger boolean)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 39 + ml.woe_pos_acc(has_image_row, has_box, has_charger)
$$;

-- The inputs view, as in V0013, with the slots of the eight fixed bands after its columns.
CREATE OR REPLACE VIEW ml.v_woe_anchor_band_inputs_v1 AS
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
       ml.woe_band_acc(f.has_image_row, f.has_box, f.has_charger) AS accessories_band,
       ml.woe_slot_of_trust(f.seller_trust_tier) AS trust_slot,
       ml.woe_slot_of_ship(f.ships) AS ship_slot,
       ml.woe_slot_of_sale(f.negotiable) AS sale_slot,
       ml.woe_slot_of_cond(f.item_condition) AS cond_slot,
       ml.woe_slot_of_dmg(f.dmg_ai_prob) AS dmg_slot,
       ml.woe_slot_of_bat(f.battery_health_pct) AS bat_slot,
       ml.woe_slot_of_vdmg(f.vision_damage_prob) AS vdmg_slot,
       ml.woe_slot_of_acc(f.has_image_row, f.has_box, f.has_charger) AS acc_slot
  FROM ml.woe_anchor_feature_store_t0_v1_v AS f;

-- Scores under every model, as in V0013, with each band's WOE found by its slot
-- computed from the inputs (the inputs view's fixed-band slots, and the model's
-- thresholds and cuts for dsold and present) instead of from the band's text. The
-- text band columns stay for explanations; a query that does not select them does not
-- compute them.
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
                       b.woe[b.dsold_slot] AS woe_dsold,
                       b.woe[b.trust_slot] AS woe_trust,
                       b.woe[b.ship_slot] AS woe_ship,
                       b.woe[b.sale_slot] AS woe_sale,
                       b.woe[b.cond_slot] AS woe_cond,
                       b.woe[b.dmg_slot] AS woe_dmg,
                       b.woe[b.bat_slot] AS woe_bat,
                       b.woe[b.present_slot] AS woe_present,
                       b.woe[b.vdmg_slot] AS woe_vdmg,
                       b.woe[b.acc_slot] AS woe_acc
                  FROM (SELECT w.model_key, w.is_active, w.band_schema_version, w.base_logit,
                               w.dsold_t1, w.dsold_t2, w.dsold_t3, w.dsold_t4, w.present_c1, w.present_c2, w.woe,
                               i.listing_id, i.generation, i.t0, i.sold_at,
                               ml.woe_band_dsold(i.delta_vs_sold_median_30d, w.dsold_t1, w.dsold_t2, w.dsold_t3,
                                                 w.dsold_t4) AS dsold_band,
                               i.trust_tier, i.ship_band, i.sale_band, i.cond_band, i.dmg_ai_band, i.bat_band,
                               i.presentation_score,
                               ml.woe_band_present(i.presentation_score, w.present_c1, w.present_c2) AS presentation_band,
                               i.vdmg_band, i.accessories_band,
                               ml.woe_slot_of_dsold(i.delta_vs_sold_median_30d, w.dsold_t1, w.dsold_t2, w.dsold_t3,
                                                    w.dsold_t4) AS dsold_slot,
                               i.trust_slot, i.ship_slot, i.sale_slot, i.cond_slot, i.dmg_slot, i.bat_slot,
                               ml.woe_slot_of_present(i.presentation_score, w.present_c1, w.present_c2) AS present_slot,
                               i.vdmg_slot, i.acc_slot
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

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
