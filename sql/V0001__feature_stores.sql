-- Upstream feature stores (docs/model.md, docs/architecture.md).
--
-- In production the customer owns the two *_train_v views. The project ships base
-- tables behind them so that demo data and tests have somewhere to live; the views
-- expose exactly the contract's columns, so swapping the base tables for the
-- customer's sources is a CREATE OR REPLACE VIEW away.
--
-- The base tables are deliberately permissive (no NOT NULL, no unique key): they
-- play the role of an upstream source the product does not control, and
-- certification (V0003) is the gate that rejects bad data.

CREATE SCHEMA IF NOT EXISTS ml;
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE ml.socio_market_snapshots (
    listing_id               bigint,
    generation               text,
    t0                       timestamptz,
    delta_vs_sold_median_30d double precision,
    seller_trust_tier        text,
    ships                    boolean,
    negotiable               boolean,
    item_condition           text,
    dmg_ai_prob              double precision,
    battery_health_pct       smallint,
    sold_at                  timestamptz,
    feature_asof_ts          timestamptz
);
COMMENT ON TABLE ml.socio_market_snapshots IS
    'Base table behind ml.socio_market_feature_store_train_v: one row per listing snapshot (listing_id, t0).';
CREATE INDEX socio_market_snapshots_listing_t0_idx ON ml.socio_market_snapshots (listing_id, t0);

CREATE TABLE ml.iphone_image_features (
    listing_id          bigint,
    t0                  timestamptz,
    n_photos            smallint,
    photo_quality       double precision,
    lighting            double precision,
    background_clean    double precision,
    vision_damage_prob  double precision,
    has_box             boolean,
    has_charger         boolean
);
COMMENT ON TABLE ml.iphone_image_features IS
    'Base table behind ml.iphone_image_features_unified_v1_train_v: at most one row per (listing_id, t0).';
CREATE INDEX iphone_image_features_listing_t0_idx ON ml.iphone_image_features (listing_id, t0);

CREATE VIEW ml.socio_market_feature_store_train_v AS
SELECT listing_id, generation, t0, delta_vs_sold_median_30d, seller_trust_tier,
       ships, negotiable, item_condition, dmg_ai_prob, battery_health_pct,
       sold_at, feature_asof_ts
  FROM ml.socio_market_snapshots;
COMMENT ON VIEW ml.socio_market_feature_store_train_v IS
    'Socio-market feature store (T0-safe contract: feature_asof_ts <= t0), one row per listing snapshot.';

CREATE VIEW ml.iphone_image_features_unified_v1_train_v AS
SELECT listing_id, t0, n_photos, photo_quality, lighting, background_clean,
       vision_damage_prob, has_box, has_charger
  FROM ml.iphone_image_features;
COMMENT ON VIEW ml.iphone_image_features_unified_v1_train_v IS
    'Vision feature store, at most one row per (listing_id, t0).';

-- The certified entrypoint (docs/certification.md): both stores joined per snapshot, with
-- edited_date (alias of t0) for audit.dataset_sha256. Certification, training and
-- live scoring all read the data through this one view.
CREATE VIEW ml.woe_anchor_feature_store_t0_v1_v AS
SELECT s.listing_id,
       s.generation,
       s.t0,
       s.t0 AS edited_date,
       s.delta_vs_sold_median_30d,
       s.seller_trust_tier,
       s.ships,
       s.negotiable,
       s.item_condition,
       s.dmg_ai_prob,
       s.battery_health_pct,
       s.sold_at,
       s.feature_asof_ts,
       (i.listing_id IS NOT NULL) AS has_image_row,
       i.n_photos,
       i.photo_quality,
       i.lighting,
       i.background_clean,
       i.vision_damage_prob,
       i.has_box,
       i.has_charger
  FROM ml.socio_market_feature_store_train_v s
  LEFT JOIN ml.iphone_image_features_unified_v1_train_v i
         ON i.listing_id = s.listing_id AND i.t0 = s.t0;
COMMENT ON VIEW ml.woe_anchor_feature_store_t0_v1_v IS
    'Certified entrypoint: one row per listing snapshot with socio-market and vision features; edited_date = t0.';
