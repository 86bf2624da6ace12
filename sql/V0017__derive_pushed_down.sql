-- Promotion's re-derivation sums the TRAIN rows by cell, so that a distributed
-- PostgreSQL (Citus) computes the sums on its shards.
--
-- V0013's ml.woe_anchor_derive_v1 read the banded TRAIN rows through an OFFSET 0
-- subquery and summed them by GROUPING SETS. Citus pushes down neither: it gathered
-- every TRAIN row on the coordinator as an intermediate result, and at 10 million
-- snapshots that exceeded citus.max_intermediate_result_size (1 GB), so promotion
-- failed. Now the sums come in two steps:
--   1. one plain GROUP BY over the banded rows: weight and count per cell, a cell
--      being the label and the slot of every band (ml.woe_anchor_band_values_v1) of
--      the row. Citus computes it per shard and adds the shards' cells up on the
--      coordinator; a cell count is bounded by the band vocabulary (with the label,
--      at most 2 x 6 x 5 x 3 x 3 x 6 x 4 x 4 x 4 x 4 x 4 = 3,317,760), not by the
--      data (125 thousand at a million snapshots);
--   2. the cells are unpivoted into one row per (band, slot) and summed there, and
--      each slot is named by the band values table.
-- One node uses the same SQL, as fast as before (the cells step runs in parallel
-- workers; GROUPING SETS did not), with 64 MB of work_mem for this function so that the
-- cells are hashed in memory rather than sorted on disk. The results are those of V0013 within
-- the provenance check's 1e-9 (sums of the same terms in another order), counts and
-- cuts exactly. The percentile of the presentation score (an ordered-set aggregate)
-- is unchanged; Citus gathers the TRAIN scores for it (8 bytes a row).

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

CREATE OR REPLACE FUNCTION ml.woe_anchor_derive_v1(p_cutoff timestamptz, p_half_life double precision, p_eps double precision,
                                        p_t1 double precision, p_t2 double precision, p_t3 double precision,
                                        p_t4 double precision, p_band_schema_version integer DEFAULT 1)
RETURNS TABLE (item text, band_name text, band_value text, value double precision,
               w_pos double precision, w_neg double precision, n_pos bigint, n_neg bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET work_mem = '64MB' AS $$
DECLARE
    q       double precision[];
    n_cut   bigint;
    keys     text;
    bands    text;
    slots    text;
    ordinals text;
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
    -- Every band of the schema by its slot: dsold under this call's thresholds and
    -- present under the cuts just derived (the functions the score views use), the
    -- fixed bands from the inputs view's <band>_slot columns. A cell's columns are
    -- named slot_<band>, apart from its own y, w and n.
    SELECT string_agg(format('%s AS %I', CASE v.band_name
                                 WHEN 'dsold' THEN 'ml.woe_slot_of_dsold(b.delta_vs_sold_median_30d, $3, $4, $5, $6)'
                                 WHEN 'present' THEN 'ml.woe_slot_of_present(b.presentation_score, $7, $8)'
                                 ELSE format('b.%I', v.band_name || '_slot') END, 'slot_' || v.band_name),
                      ', ' ORDER BY v.band_name),
           string_agg(quote_literal(v.band_name), ', ' ORDER BY v.band_name),
           string_agg(format('c.%I', 'slot_' || v.band_name), ', ' ORDER BY v.band_name),
           string_agg(v.n::text, ', ' ORDER BY v.band_name)
      INTO keys, bands, slots, ordinals
      FROM (SELECT d.band_name, row_number() OVER (ORDER BY d.band_name) + 1 AS n
              FROM (SELECT DISTINCT bv.band_name FROM ml.woe_anchor_band_values_v1 AS bv
                     WHERE bv.band_schema_version = p_band_schema_version) AS d) AS v;
    RETURN QUERY EXECUTE format($q$
        WITH cells AS MATERIALIZED (
            SELECT ml.woe_slow21(b.t0, b.sold_at, $1) AS y, %1$s, sum(ml.woe_weight(b.t0, $1, $2)) AS w, count(*) AS n
              FROM ml.v_woe_anchor_band_inputs_v1 AS b
             WHERE b.t0 < $1 AND ml.woe_slow21(b.t0, b.sold_at, $1) IS NOT NULL
             GROUP BY 1, %2$s),
        -- Each slot named by the band values of its own band; a slot that is not one
        -- of them stays, named as such, so that provenance reports it rather than
        -- losing its rows.
        sums AS (
            SELECT s.band_name, coalesce(bv.band_value, format('no value of band schema %%s has slot %%s', $10, s.slot))
                       AS band_value,
                   coalesce(sum(c.w) FILTER (WHERE c.y = 1), 0) AS w1, coalesce(sum(c.w) FILTER (WHERE c.y = 0), 0) AS w0,
                   coalesce(sum(c.n) FILTER (WHERE c.y = 1), 0)::bigint AS n1,
                   coalesce(sum(c.n) FILTER (WHERE c.y = 0), 0)::bigint AS n0
              FROM cells AS c
             CROSS JOIN LATERAL unnest(ARRAY[%3$s], ARRAY[%4$s]) AS s (band_name, slot)
              LEFT JOIN ml.woe_anchor_band_values_v1 AS bv
                     ON bv.band_schema_version = $10 AND bv.band_name = s.band_name AND bv.slot = s.slot
             GROUP BY 1, 2),
        fit AS (SELECT t.p, CASE WHEN t.p > 0 AND t.p < 1 THEN ln(t.p / (1 - t.p)) END AS logit
                  FROM (SELECT sum(c.w) FILTER (WHERE c.y = 1) / nullif(sum(c.w), 0) AS p FROM cells AS c) AS t)
        SELECT 'base_rate', NULL::text, NULL::text, f.p, NULL::float8, NULL::float8, NULL::bigint, NULL::bigint
          FROM fit AS f
        UNION ALL
        SELECT 'base_logit', NULL, NULL, f.logit, NULL, NULL, NULL, NULL FROM fit AS f
        UNION ALL
        SELECT 'map', s.band_name, s.band_value, ln((s.w1 + $9 * f.p) / (s.w0 + $9 * (1 - f.p))) - f.logit,
               s.w1, s.w0, s.n1, s.n0
          FROM sums AS s CROSS JOIN fit AS f
        $q$, keys, ordinals, bands, slots)
    USING p_cutoff, p_half_life, p_t1, p_t2, p_t3, p_t4, q[1], q[2], p_eps, p_band_schema_version;
END $$;

DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        PERFORM audit.install_change_tracking();
    END IF;
END $$;
