-- Labels and weights as SQL functions, shared by training (woe_core.train) and the
-- database's own re-derivation of a model (provenance, V0008). Part of the code
-- hashed into every model's code_sha256.

-- slow21 as of asof: 1 when t0 + 21 days <= asof and not sold by then; 0 when
-- sold within 21 days of t0 and by asof; NULL (unresolved) otherwise. 21 days
-- are 504 hours, independent of the session's time zone.
CREATE FUNCTION ml.woe_slow21(t0 timestamptz, sold_at timestamptz, asof timestamptz)
RETURNS smallint LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (CASE WHEN sold_at IS NOT NULL AND sold_at <= t0 + interval '504 hours' AND sold_at <= asof THEN 0
                 WHEN t0 + interval '504 hours' <= asof
                      AND (sold_at IS NULL OR sold_at > t0 + interval '504 hours') THEN 1 END)::smallint
$$;

-- Time-decay weight of a TRAIN row: 0.5 ** (days(cutoff - t0) / half_life), days
-- fractional; the exponent is capped at 1000 (weight ~1e-301) so it never underflows.
CREATE FUNCTION ml.woe_weight(t0 timestamptz, cutoff timestamptz, half_life_days double precision)
RETURNS double precision LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT power(0.5, least((date_part('epoch', cutoff) - date_part('epoch', t0)) / 86400.0 / half_life_days, 1000.0))
$$;

