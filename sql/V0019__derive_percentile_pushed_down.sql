-- Promotion's re-derivation learns the presentation cuts on a distributed
-- PostgreSQL (Citus) without gathering the TRAIN scores on the coordinator.
--
-- V0017 left one ordered-set aggregate in ml.woe_anchor_derive_v1:
-- percentile_cont(1/3, 2/3) over every TRAIN presentation score. Citus computes it on
-- the coordinator, so every score travelled there (8 bytes a row: gigabytes at hundreds
-- of millions of snapshots). ml.woe_percentile_cont gives the same values from grouped
-- counts, which Citus computes on its shards:
--   * a score's 64 bits, read in float8 order (negative numbers with their bits
--     inverted, -0 with +0, every NaN last as PostgreSQL sorts it), are cut into four
--     16-bit digits;
--   * level 0 counts the scores per first digit (at most 65,537 groups, whatever the
--     number of rows) with their smallest and largest score; the running counts
--     locate the group holding each wanted rank;
--   * a group whose smallest and largest scores are equal gives its value; any other
--     is a range of scores [lo, hi] counted again: by value when every such range holds
--     at most 50,000 scores, else by the next digit (after the fourth digit every group
--     holds one value);
--   * the percentiles are then interpolated exactly as percentile_cont does (by
--     percentile_cont itself, over the two neighbouring values).
-- The values are selected, not estimated: they equal percentile_cont's.
--
-- Citus sends a query's parameters to the shards as text, written with the session's
-- settings: with extra_float_digits below 1 a float loses its last digits, and some
-- DateStyles write a date that reads otherwise. Both functions now set them
-- (extra_float_digits 3, DateStyle ISO), which also covers the cuts and cutoff that
-- V0017's cells query sends. And since each level is a statement of its own, which on
-- Citus reads the shards at its own moment, a range whose count changed between two
-- levels is refused (serialization_failure) rather than ranked.
--
-- Each level is a scan, and on one node one sort of the scores is cheaper than two
-- scans (1M snapshots: 1.4 s against 1.8 s; 10M: 11.7 s against 20.4 s, measured on
-- the 2-core development machine), so the derive keeps percentile_cont where no table
-- is distributed. Training learns its cuts the same way (woe_core.train._order_statistics,
-- over its own rows, one node or not).

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

-- The percentiles p_fractions (one or more numbers in [0, 1]) of column v of the query
-- p_source (NULLs left out, v read as float8), equal to percentile_cont(p_fractions)
-- WITHIN GROUP (ORDER BY v) (a zero may come back as -0 where the sort gives +0, or the
-- reverse), and the number n of values. p_source may use $3 (p_arg); $1 and $2 are this
-- function's own. Runs the query with the caller's rights (not SECURITY DEFINER), so it
-- grants nothing. Citus sends the parameters to the shards as text: extra_float_digits
-- and DateStyle are set so that they arrive exact and unambiguous.
CREATE FUNCTION ml.woe_percentile_cont(p_source text, p_fractions double precision[],
                                       p_arg timestamptz DEFAULT NULL,
                                       OUT percentiles double precision[], OUT n bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET extra_float_digits = 3 SET "DateStyle" = 'ISO, YMD'
AS $$
DECLARE
    ranks   bigint[];            -- the wanted ranks (1-based, ascending, distinct)
    rank_in bigint[];            -- each wanted rank's rank within its range
    range_of int[];              -- each wanted rank's range at this level (0 when found)
    found   double precision[];  -- each wanted rank's value
    lo      double precision[];  -- the ranges counted at this level
    hi      double precision[];
    next_lo double precision[];
    next_hi double precision[];
    counted bigint[];            -- how many values each range held when it was found
    next_n  bigint[];
    widest  bigint;              -- the most values in one of the next ranges
    g_r     int[];               -- the groups of this level in order: range, count,
    g_n     bigint[];            -- smallest and largest value
    g_lo    double precision[];
    g_hi    double precision[];
    grp     record;
    digit   text;
    which   text;
    inside  text;
    below   bigint;
    i       int;
    j       int;
    t       int;
    pos     double precision;
    f       double precision;
    a       double precision;
    b       double precision;
BEGIN
    IF p_fractions IS NULL OR cardinality(p_fractions) = 0
       OR EXISTS (SELECT FROM unnest(p_fractions) AS x WHERE x IS NULL OR NOT (x >= 0 AND x <= 1)) THEN
        RAISE EXCEPTION 'percentile fractions must be between 0 and 1, got %', p_fractions
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    FOR level IN 0..3 LOOP
        -- the level's 16-bit digit of v in float8 order: bytes 2*level and 2*level + 1
        digit := format('(get_byte(float8send(t.v), %s) * 256 + get_byte(float8send(t.v), %s))', 2 * level,
                        2 * level + 1);
        IF level = 0 THEN
            digit := format('CASE WHEN t.v = ''NaN'' THEN 131072 WHEN t.v = 0 THEN 32768 '
                            'WHEN t.v < 0 THEN 65535 - %1$s ELSE 32768 + %1$s END', digit);
            which := '1';
            inside := '';
        ELSE
            -- ranges of at most 50,000 values are counted by value (no further level needed)
            digit := CASE WHEN widest <= 50000 THEN 't.v'
                          ELSE format('CASE WHEN t.v < 0 THEN 65535 - %1$s ELSE %1$s END', digit) END;
            SELECT 'CASE ' || string_agg(format('WHEN t.v >= $1[%1$s] AND t.v <= $2[%1$s] THEN %1$s', k), ' ')
                   || ' END',
                   ' AND (' || string_agg(format('t.v >= $1[%1$s] AND t.v <= $2[%1$s]', k), ' OR ') || ')'
              INTO which, inside
              FROM generate_series(1, cardinality(lo)) AS k;
        END IF;
        -- A plain grouped query: Citus counts on each shard and merges the groups on the
        -- coordinator, with no intermediate result.
        g_r := '{}';
        g_n := '{}';
        g_lo := '{}';
        g_hi := '{}';
        FOR grp IN EXECUTE format($q$
            SELECT %1$s AS r, %2$s AS d, count(*) AS n, min(t.v) AS lo, max(t.v) AS hi
              FROM (SELECT s.v::float8 AS v FROM (%3$s) AS s) AS t
             WHERE t.v IS NOT NULL%4$s
             GROUP BY 1, 2
             ORDER BY 1, 2
            $q$, which, digit, p_source, inside)
            USING lo, hi, p_arg LOOP
            g_r := g_r || grp.r;
            g_n := g_n || grp.n;
            g_lo := g_lo || grp.lo;
            g_hi := g_hi || grp.hi;
        END LOOP;
        IF level = 0 THEN
            n := coalesce((SELECT sum(x) FROM unnest(g_n) AS x), 0);
            IF n = 0 THEN
                RETURN;
            END IF;
            -- percentile_cont's neighbours of position f * (n - 1)
            SELECT array_agg(DISTINCT r ORDER BY r) INTO ranks
              FROM unnest(p_fractions) AS x(f),
                   LATERAL (VALUES (floor(x.f * (n - 1)::float8)::bigint + 1),
                                   (ceil(x.f * (n - 1)::float8)::bigint + 1)) AS y(r);
            rank_in := ranks;
            range_of := array_fill(1, ARRAY[cardinality(ranks)]);
            found := array_fill(NULL::float8, ARRAY[cardinality(ranks)]);
        END IF;
        IF level > 0 THEN
            -- On Citus each level is a statement of its own, read on the shards at its own
            -- moment (READ COMMITTED): a range that no longer holds what it held is refused.
            FOR k IN 1..cardinality(lo) LOOP
                IF coalesce((SELECT sum(g_n[x]) FROM generate_subscripts(g_r, 1) AS x WHERE g_r[x] = k), 0)
                   <> counted[k] THEN
                    RAISE EXCEPTION 'the values changed while their percentiles were being counted: the range '
                                    '[%, %] held % values, then %', lo[k], hi[k], counted[k],
                                    coalesce((SELECT sum(g_n[x]) FROM generate_subscripts(g_r, 1) AS x
                                               WHERE g_r[x] = k), 0)
                        USING ERRCODE = 'serialization_failure', HINT = 'Run it again.';
                END IF;
            END LOOP;
        END IF;
        next_lo := '{}';
        next_hi := '{}';
        next_n := '{}';
        widest := 0;
        FOR t IN 1..cardinality(ranks) LOOP
            CONTINUE WHEN range_of[t] = 0;
            below := 0;
            i := 1;
            WHILE i <= cardinality(g_r) AND (g_r[i] <> range_of[t] OR below + g_n[i] < rank_in[t]) LOOP
                IF g_r[i] = range_of[t] THEN
                    below := below + g_n[i];
                END IF;
                i := i + 1;
            END LOOP;
            IF i > cardinality(g_r) THEN
                RAISE EXCEPTION 'rank % not found among % values', ranks[t], n USING ERRCODE = 'internal_error';
            END IF;
            IF g_lo[i] = g_hi[i] THEN
                found[t] := g_lo[i];
                range_of[t] := 0;
            ELSE
                j := coalesce(array_position(next_lo, g_lo[i]), 0);
                IF j = 0 THEN
                    next_lo := next_lo || g_lo[i];
                    next_hi := next_hi || g_hi[i];
                    next_n := next_n || g_n[i];
                    j := cardinality(next_lo);
                END IF;
                range_of[t] := j;
                rank_in[t] := rank_in[t] - below;
                widest := greatest(widest, g_n[i]);
            END IF;
        END LOOP;
        EXIT WHEN cardinality(next_lo) = 0;
        IF level = 3 THEN
            RAISE EXCEPTION 'values left unresolved after the last digit' USING ERRCODE = 'internal_error';
        END IF;
        lo := next_lo;
        hi := next_hi;
        counted := next_n;
    END LOOP;
    percentiles := '{}';
    FOREACH f IN ARRAY p_fractions LOOP
        pos := f * (n - 1)::float8;
        a := found[array_position(ranks, floor(pos)::bigint + 1)];
        b := found[array_position(ranks, ceil(pos)::bigint + 1)];
        IF floor(pos) = ceil(pos) THEN
            percentiles := percentiles || a;
        ELSE
            -- percentile_cont over the two rows a <= b at fraction pos - floor(pos) interpolates
            -- a + (b - a) * (pos - floor(pos)), in C, as it does over all the rows
            percentiles := percentiles
                || (SELECT percentile_cont(pos - floor(pos)) WITHIN GROUP (ORDER BY x) FROM unnest(ARRAY[a, b]) AS x);
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION ml.woe_percentile_cont(text, double precision[], timestamptz) IS
    'percentile_cont(p_fractions) of column v of a query, from grouped counts that a distributed PostgreSQL computes on its shards; runs the query with the caller''s rights.';
GRANT EXECUTE ON FUNCTION ml.woe_percentile_cont(text, double precision[], timestamptz) TO PUBLIC;

CREATE OR REPLACE FUNCTION ml.woe_anchor_derive_v1(p_cutoff timestamptz, p_half_life double precision, p_eps double precision,
                                        p_t1 double precision, p_t2 double precision, p_t3 double precision,
                                        p_t4 double precision, p_band_schema_version integer DEFAULT 1)
RETURNS TABLE (item text, band_name text, band_value text, value double precision,
               w_pos double precision, w_neg double precision, n_pos bigint, n_neg bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET work_mem = '64MB' SET extra_float_digits = 3
SET "DateStyle" = 'ISO, YMD' AS $$
DECLARE
    q       double precision[];
    n_cut   bigint;
    keys     text;
    bands    text;
    slots    text;
    ordinals text;
    distributed boolean := false;
BEGIN
    -- The cuts: percentile_cont(1/3, 2/3) of the TRAIN presentation scores. Where Citus
    -- distributes the tables, from counts made on the shards (ml.woe_percentile_cont);
    -- on one node one sort costs less than its scans.
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition)' INTO distributed;
    END IF;
    IF distributed THEN
        SELECT s.percentiles, s.n INTO q, n_cut
          FROM ml.woe_percentile_cont(
                   'SELECT b.presentation_score AS v FROM ml.v_woe_anchor_band_inputs_v1 AS b '
                   'WHERE b.t0 < $3 AND ml.woe_slow21(b.t0, b.sold_at, $3) IS NOT NULL',
                   ARRAY[1::float8 / 3, 2::float8 / 3], p_cutoff) AS s;
    ELSE
        SELECT percentile_cont(ARRAY[1::float8 / 3, 2::float8 / 3]) WITHIN GROUP (ORDER BY b.presentation_score),
               count(b.presentation_score)
          INTO q, n_cut
          FROM ml.v_woe_anchor_band_inputs_v1 AS b
         WHERE b.t0 < p_cutoff AND ml.woe_slow21(b.t0, b.sold_at, p_cutoff) IS NOT NULL;
    END IF;
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
