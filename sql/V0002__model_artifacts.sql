-- Model artifacts (docs/governance.md). Every artifact row references its registry row, so
-- nothing can point to a missing model, and deleting a never-active candidate
-- removes everything it wrote.

CREATE TABLE ml.woe_anchor_model_registry_v1 (
    model_key            text PRIMARY KEY
                         CHECK (model_key ~ '^tom_aft_v1_[0-9]{8}_[0-9]{6}(_[0-9]{1,3})?$'),
    train_cutoff_ts      timestamptz NOT NULL,
    half_life_days       double precision NOT NULL
                         CHECK (half_life_days > 0 AND half_life_days < 'Infinity'),
    eps                  double precision NOT NULL CHECK (eps > 0 AND eps < 'Infinity'),
    n_folds              integer NOT NULL CHECK (n_folds >= 2),
    band_schema_version  integer NOT NULL CHECK (band_schema_version >= 1),
    code_sha256          text NOT NULL CHECK (code_sha256 ~ '^[0-9a-f]{64}$'),
    is_active            boolean NOT NULL DEFAULT false,
    base_rate            double precision NOT NULL CHECK (base_rate > 0 AND base_rate < 1),
    base_logit           double precision NOT NULL CHECK (base_logit > '-Infinity' AND base_logit < 'Infinity'),
    dsold_t1             double precision NOT NULL,
    dsold_t2             double precision NOT NULL,
    dsold_t3             double precision NOT NULL,
    dsold_t4             double precision NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_by           text NOT NULL,
    metrics              jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT dsold_thresholds_increasing
        CHECK (dsold_t1 < dsold_t2 AND dsold_t2 < dsold_t3 AND dsold_t3 < dsold_t4
               AND dsold_t1 > '-Infinity' AND dsold_t4 < 'Infinity')
);
COMMENT ON TABLE ml.woe_anchor_model_registry_v1 IS
    'One row per trained WOE mapping package; is_active marks the one model live inference uses.';
-- At most one active model, whatever any client does.
CREATE UNIQUE INDEX woe_anchor_model_registry_v1_one_active
    ON ml.woe_anchor_model_registry_v1 ((true)) WHERE is_active;

CREATE TABLE ml.woe_anchor_cuts_v1 (
    model_key  text NOT NULL REFERENCES ml.woe_anchor_model_registry_v1 (model_key) ON DELETE CASCADE,
    fold_id    integer CHECK (fold_id >= 0),
    c1         double precision NOT NULL,
    c2         double precision NOT NULL,
    n_rows     bigint NOT NULL CHECK (n_rows >= 0),
    CONSTRAINT cuts_ordered CHECK (c1 <= c2)
);
COMMENT ON TABLE ml.woe_anchor_cuts_v1 IS
    'Presentation-score band cutpoints; fold_id NULL = final cuts, 0..K-1 = per-fold cuts (learned without that fold).';
CREATE UNIQUE INDEX woe_anchor_cuts_v1_final ON ml.woe_anchor_cuts_v1 (model_key) WHERE fold_id IS NULL;
CREATE UNIQUE INDEX woe_anchor_cuts_v1_fold ON ml.woe_anchor_cuts_v1 (model_key, fold_id) WHERE fold_id IS NOT NULL;

CREATE TABLE ml.woe_anchor_map_v1 (
    model_key   text NOT NULL REFERENCES ml.woe_anchor_model_registry_v1 (model_key) ON DELETE CASCADE,
    fold_id     integer CHECK (fold_id >= 0),
    band_name   text NOT NULL
                CHECK (band_name IN ('dsold', 'trust', 'ship', 'sale', 'cond', 'dmg', 'bat', 'present', 'vdmg', 'acc')),
    band_value  text NOT NULL,
    woe         double precision NOT NULL CHECK (woe > '-Infinity' AND woe < 'Infinity'),
    w_pos       double precision NOT NULL CHECK (w_pos >= 0),
    w_neg       double precision NOT NULL CHECK (w_neg >= 0),
    n_pos       bigint NOT NULL CHECK (n_pos >= 0),
    n_neg       bigint NOT NULL CHECK (n_neg >= 0)
);
COMMENT ON TABLE ml.woe_anchor_map_v1 IS
    'WOE contribution per (band_name, band_value); fold_id NULL = final map. w_pos/w_neg are the weighted '
    'slow21 = 1 / 0 sums and n_pos/n_neg the row counts behind each WOE.';
CREATE UNIQUE INDEX woe_anchor_map_v1_final
    ON ml.woe_anchor_map_v1 (model_key, band_name, band_value) INCLUDE (woe) WHERE fold_id IS NULL;
CREATE UNIQUE INDEX woe_anchor_map_v1_fold
    ON ml.woe_anchor_map_v1 (model_key, fold_id, band_name, band_value) WHERE fold_id IS NOT NULL;

CREATE TABLE ml.woe_anchor_scores_v1 (
    model_key   text NOT NULL REFERENCES ml.woe_anchor_model_registry_v1 (model_key) ON DELETE CASCADE,
    generation  text NOT NULL,
    listing_id  bigint NOT NULL,
    t0          timestamptz NOT NULL,
    fold_id     integer CHECK (fold_id >= 0),
    is_oof      boolean NOT NULL,
    woe_logit   double precision NOT NULL,
    p_slow21    double precision NOT NULL CHECK (p_slow21 >= 0 AND p_slow21 <= 1),
    slow21      smallint CHECK (slow21 IN (0, 1)),
    PRIMARY KEY (model_key, generation, listing_id, t0),
    CONSTRAINT oof_has_fold CHECK (NOT is_oof OR fold_id IS NOT NULL)
) PARTITION BY LIST (model_key);
COMMENT ON TABLE ml.woe_anchor_scores_v1 IS
    'Row-level scores; is_oof = true rows are out-of-fold scores of TRAIN rows, scored by the map of their fold. '
    'One partition per model (ml.woe_anchor_scores_v1__<model_key>), loaded before it is attached so that a '
    'million scores cost one index build and one foreign-key check instead of a million of each.';
