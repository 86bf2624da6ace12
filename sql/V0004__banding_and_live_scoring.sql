-- Banding (docs/model.md, band_schema_version 1) and live scoring.
--
-- Banding exists once: the ml.woe_band_* functions below, combined by
-- ml.woe_anchor_bands_v1(t1, t2, t3, t4, c1, c2). Training calls them with its own
-- thresholds and (per-fold) cuts; the live views call them with the active
-- model's. All are LANGUAGE sql and IMMUTABLE/STABLE, so the planner inlines them
-- into the calling query (no per-row function call overhead).

CREATE FUNCTION ml.woe_band_dsold(x double precision, t1 double precision, t2 double precision,
                                  t3 double precision, t4 double precision)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x IS NULL OR x = 'NaN'::double precision THEN 'dSold_missing'
                WHEN x < t1 THEN 'dSold_under'
                WHEN x < t2 THEN 'dSold_low'
                WHEN x < t3 THEN 'dSold_fair'
                WHEN x < t4 THEN 'dSold_high'
                ELSE 'dSold_over' END
$$;

CREATE FUNCTION ml.woe_band_trust(tier text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN tier IN ('HIGH', 'MEDIUM', 'LOW', 'NEW') THEN tier ELSE 'trust_missing' END
$$;

CREATE FUNCTION ml.woe_band_ship(ships boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ships THEN 'shipping_ok' WHEN NOT ships THEN 'shipping_no' ELSE 'ship_missing' END
$$;

CREATE FUNCTION ml.woe_band_sale(negotiable boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN negotiable THEN 'sale_negotiable' WHEN NOT negotiable THEN 'sale_fixed' ELSE 'sale_missing' END
$$;

CREATE FUNCTION ml.woe_band_cond(item_condition text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE item_condition
                WHEN 'new' THEN 'cond_new'
                WHEN 'like_new' THEN 'cond_like_new'
                WHEN 'good' THEN 'cond_good'
                WHEN 'fair' THEN 'cond_fair'
                WHEN 'for_parts' THEN 'cond_parts'
                ELSE 'cond_missing' END
$$;

-- dmg and vdmg share cut points (0.2, 0.5) and differ only in their prefix.
CREATE FUNCTION ml.woe_band_prob3(prefix text, p double precision)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT prefix || CASE WHEN p IS NULL OR p = 'NaN'::double precision THEN '_missing'
                          WHEN p >= 0.5 THEN '_hi'
                          WHEN p >= 0.2 THEN '_mid'
                          ELSE '_lo' END
$$;

CREATE FUNCTION ml.woe_band_bat(battery_health_pct smallint)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN battery_health_pct IS NULL THEN 'bat_missing'
                WHEN battery_health_pct >= 90 THEN 'bat_90p'
                WHEN battery_health_pct >= 80 THEN 'bat_80_89'
                ELSE 'bat_lt80' END
$$;

-- presentation_score = 0.4*photo_quality + 0.3*lighting + 0.2*background_clean
--                      + 0.1*least(n_photos, 10)/10; NULL without an image row or when
-- any input is NULL (PostgreSQL's least() would ignore a NULL n_photos, so no least()).
CREATE FUNCTION ml.woe_presentation_score(n_photos smallint, photo_quality double precision,
                                          lighting double precision, background_clean double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0.4 * photo_quality + 0.3 * lighting + 0.2 * background_clean
           + 0.1 * (CASE WHEN n_photos > 10 THEN 10 ELSE n_photos END)::double precision / 10.0
$$;

-- present_lo (< c1), present_mid [c1, c2), present_hi (>= c2), present_missing (NULL
-- or NaN). Written so that `score` is referenced once: the caller passes an
-- expression, and a single reference keeps the function inlinable.
CREATE FUNCTION ml.woe_band_present(score double precision, c1 double precision, c2 double precision)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((ARRAY['present_lo', 'present_mid', 'present_hi'])
                        [width_bucket(nullif(score, 'NaN'::double precision), ARRAY[c1, c2]) + 1],
                    'present_missing')
$$;

-- acc_missing: no image row, or both flags null; otherwise a null flag counts as not seen.
CREATE FUNCTION ml.woe_band_acc(has_image_row boolean, has_box boolean, has_charger boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN NOT coalesce(has_image_row, false) OR (has_box IS NULL AND has_charger IS NULL) THEN 'acc_missing'
                WHEN coalesce(has_box, false) AND coalesce(has_charger, false) THEN 'acc_full'
                WHEN coalesce(has_box, false) OR coalesce(has_charger, false) THEN 'acc_partial'
                ELSE 'acc_none' END
$$;

-- Cross-validation fold of a listing: one Park–Miller (MINSTD) step of
-- |listing_id| mod (2^31 - 1), then mod n_folds. All snapshots of a listing share a
-- fold; docs/model.md documents the formula.
CREATE FUNCTION ml.woe_fold(listing_id bigint, n_folds integer)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (((abs(listing_id) % 2147483647) * 48271 % 2147483647) % n_folds)::integer
$$;

-- Numerically safe logistic function (the logit is clamped to +-700 so exp never overflows).
CREATE FUNCTION ml.woe_sigmoid(x double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 1.0 / (1.0 + exp(-greatest(least(x, 700.0), -700.0)))
$$;

-- The band schema as data: every value each band can take, with a slot number.
-- The score views pack a model's final map into an array indexed by slot, so
-- scoring a row is ten array lookups instead of ten joins.
CREATE TABLE ml.woe_anchor_band_values_v1 (
    band_schema_version  integer NOT NULL,
    band_name            text NOT NULL,
    band_column          text NOT NULL,
    band_value           text NOT NULL,
    slot                 integer NOT NULL,
    PRIMARY KEY (band_schema_version, band_name, band_value),
    UNIQUE (band_schema_version, slot)
);
INSERT INTO ml.woe_anchor_band_values_v1 VALUES
    (1, 'dsold', 'dsold_band', 'dSold_under', 1),
    (1, 'dsold', 'dsold_band', 'dSold_low', 2),
    (1, 'dsold', 'dsold_band', 'dSold_fair', 3),
    (1, 'dsold', 'dsold_band', 'dSold_high', 4),
    (1, 'dsold', 'dsold_band', 'dSold_over', 5),
    (1, 'dsold', 'dsold_band', 'dSold_missing', 6),
    (1, 'trust', 'trust_tier', 'HIGH', 7),
    (1, 'trust', 'trust_tier', 'MEDIUM', 8),
    (1, 'trust', 'trust_tier', 'LOW', 9),
    (1, 'trust', 'trust_tier', 'NEW', 10),
    (1, 'trust', 'trust_tier', 'trust_missing', 11),
    (1, 'ship', 'ship_band', 'shipping_ok', 12),
    (1, 'ship', 'ship_band', 'shipping_no', 13),
    (1, 'ship', 'ship_band', 'ship_missing', 14),
    (1, 'sale', 'sale_band', 'sale_negotiable', 15),
    (1, 'sale', 'sale_band', 'sale_fixed', 16),
    (1, 'sale', 'sale_band', 'sale_missing', 17),
    (1, 'cond', 'cond_band', 'cond_new', 18),
    (1, 'cond', 'cond_band', 'cond_like_new', 19),
    (1, 'cond', 'cond_band', 'cond_good', 20),
    (1, 'cond', 'cond_band', 'cond_fair', 21),
    (1, 'cond', 'cond_band', 'cond_parts', 22),
    (1, 'cond', 'cond_band', 'cond_missing', 23),
    (1, 'dmg', 'dmg_ai_band', 'dmg_ai_hi', 24),
    (1, 'dmg', 'dmg_ai_band', 'dmg_ai_mid', 25),
    (1, 'dmg', 'dmg_ai_band', 'dmg_ai_lo', 26),
    (1, 'dmg', 'dmg_ai_band', 'dmg_ai_missing', 27),
    (1, 'bat', 'bat_band', 'bat_90p', 28),
    (1, 'bat', 'bat_band', 'bat_80_89', 29),
    (1, 'bat', 'bat_band', 'bat_lt80', 30),
    (1, 'bat', 'bat_band', 'bat_missing', 31),
    (1, 'present', 'presentation_band', 'present_lo', 32),
    (1, 'present', 'presentation_band', 'present_mid', 33),
    (1, 'present', 'presentation_band', 'present_hi', 34),
    (1, 'present', 'presentation_band', 'present_missing', 35),
    (1, 'vdmg', 'vdmg_band', 'vdmg_hi', 36),
    (1, 'vdmg', 'vdmg_band', 'vdmg_mid', 37),
    (1, 'vdmg', 'vdmg_band', 'vdmg_lo', 38),
    (1, 'vdmg', 'vdmg_band', 'vdmg_missing', 39),
    (1, 'acc', 'accessories_band', 'acc_full', 40),
    (1, 'acc', 'accessories_band', 'acc_partial', 41),
    (1, 'acc', 'accessories_band', 'acc_none', 42),
    (1, 'acc', 'accessories_band', 'acc_missing', 43);

-- Slot of a band value in ml.woe_anchor_band_values_v1 (schema version 1), one
-- function per band so that each stays inlinable. Training and the score views
-- both index a packed WOE array with these.

CREATE FUNCTION ml.woe_slot_dsold(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0 + array_position(ARRAY['dSold_under', 'dSold_low', 'dSold_fair', 'dSold_high', 'dSold_over', 'dSold_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_trust(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 6 + array_position(ARRAY['HIGH', 'MEDIUM', 'LOW', 'NEW', 'trust_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_ship(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 11 + array_position(ARRAY['shipping_ok', 'shipping_no', 'ship_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_sale(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 14 + array_position(ARRAY['sale_negotiable', 'sale_fixed', 'sale_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_cond(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 17 + array_position(ARRAY['cond_new', 'cond_like_new', 'cond_good', 'cond_fair', 'cond_parts', 'cond_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_dmg(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 23 + array_position(ARRAY['dmg_ai_hi', 'dmg_ai_mid', 'dmg_ai_lo', 'dmg_ai_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_bat(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 27 + array_position(ARRAY['bat_90p', 'bat_80_89', 'bat_lt80', 'bat_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_present(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 31 + array_position(ARRAY['present_lo', 'present_mid', 'present_hi', 'present_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_vdmg(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 35 + array_position(ARRAY['vdmg_hi', 'vdmg_mid', 'vdmg_lo', 'vdmg_missing'], v)
$$;

CREATE FUNCTION ml.woe_slot_acc(v text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 39 + array_position(ARRAY['acc_full', 'acc_partial', 'acc_none', 'acc_missing'], v)
$$;

-- Every snapshot of the certified entrypoint, banded with the given thresholds and
-- presentation cuts. The one place where rows become band values.
CREATE FUNCTION ml.woe_anchor_bands_v1(t1 double precision, t2 double precision, t3 double precision,
                                       t4 double precision, c1 double precision, c2 double precision)
RETURNS TABLE (
    listing_id bigint, generation text, t0 timestamptz, sold_at timestamptz,
    dsold_band text, trust_tier text, ship_band text, sale_band text, cond_band text,
    dmg_ai_band text, bat_band text, presentation_score double precision,
    presentation_band text, vdmg_band text, accessories_band text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT f.listing_id, f.generation, f.t0, f.sold_at,
           ml.woe_band_dsold(f.delta_vs_sold_median_30d, t1, t2, t3, t4),
           ml.woe_band_trust(f.seller_trust_tier),
           ml.woe_band_ship(f.ships),
           ml.woe_band_sale(f.negotiable),
           ml.woe_band_cond(f.item_condition),
           ml.woe_band_prob3('dmg_ai', f.dmg_ai_prob),
           ml.woe_band_bat(f.battery_health_pct),
           ml.woe_presentation_score(f.n_photos, f.photo_quality, f.lighting, f.background_clean),
           ml.woe_band_present(ml.woe_presentation_score(f.n_photos, f.photo_quality, f.lighting, f.background_clean), c1, c2),
           ml.woe_band_prob3('vdmg', f.vision_damage_prob),
           ml.woe_band_acc(f.has_image_row, f.has_box, f.has_charger)
      FROM ml.woe_anchor_feature_store_t0_v1_v AS f
$$;

-- Every snapshot banded under every model that has final cuts. Filter on
-- model_key (a candidate) or is_active (live); the planner pushes both down.
CREATE VIEW ml.v_woe_anchor_bands_by_model_v1 AS
SELECT m.model_key, m.is_active, m.band_schema_version, m.base_logit,
       m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4,
       c.c1 AS present_c1, c.c2 AS present_c2,
       b.*
  FROM ml.woe_anchor_model_registry_v1 AS m
  JOIN ml.woe_anchor_cuts_v1 AS c ON c.model_key = m.model_key AND c.fold_id IS NULL
 CROSS JOIN LATERAL ml.woe_anchor_bands_v1(m.dsold_t1, m.dsold_t2, m.dsold_t3, m.dsold_t4, c.c1, c.c2) AS b;

-- Bands of every snapshot under the active model.
CREATE VIEW ml.v_woe_anchor_bands_live_v1 AS
SELECT * FROM ml.v_woe_anchor_bands_by_model_v1 WHERE is_active;

-- Scores under every model: base_logit + the final map's WOE of each band value.
-- The model's final map is packed once per model into an array indexed by
-- ml.woe_anchor_band_values_v1.slot (NULL where the map has no row), and each
-- band value is found by ml.woe_slot_<band>. A band value the map
-- lacks contributes 0 and is listed in unmapped_bands.
CREATE VIEW ml.woe_anchor_scores_by_model_v1 AS
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
          FROM (SELECT b.*,
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
                  FROM ml.v_woe_anchor_bands_by_model_v1 AS b
                 CROSS JOIN LATERAL (
                       SELECT array_agg(mp.woe ORDER BY v.slot) AS woe
                         FROM ml.woe_anchor_band_values_v1 AS v
                         LEFT JOIN ml.woe_anchor_map_v1 AS mp
                                ON mp.model_key = b.model_key AND mp.fold_id IS NULL
                               AND mp.band_name = v.band_name AND mp.band_value = v.band_value
                        WHERE v.band_schema_version = b.band_schema_version) AS w
               ) AS t
       ) AS s;

-- Live scores under the active model.
CREATE VIEW ml.woe_anchor_scores_live_v1 AS
SELECT * FROM ml.woe_anchor_scores_by_model_v1 WHERE is_active;

-- Fail-closed live scores. The guard takes no row values, so it runs
-- once per query as a one-time filter and raises before any row is returned.
CREATE VIEW ml.woe_anchor_scores_live_train_v AS
SELECT * FROM ml.woe_anchor_scores_live_v1
 WHERE audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', interval '24 hours');

-- The same guard over any model's scores, for comparing a candidate with the active model.
CREATE VIEW ml.woe_anchor_scores_by_model_train_v AS
SELECT * FROM ml.woe_anchor_scores_by_model_v1
 WHERE audit.require_certified_strict('ml.woe_anchor_feature_store_t0_v1_v', interval '24 hours');
