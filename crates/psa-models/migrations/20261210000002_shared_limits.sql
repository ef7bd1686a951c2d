-- Limits that are security controls hold across every replica of the API: sign-in attempts per
-- account and per client address (passwords, second-factor codes, reset requests). Each key is
-- one row of a generic cell rate algorithm (GCRA): its theoretical arrival time. Unlogged (a
-- crash forgets them, which only resets the limits) and pruned by `psa serve` every minute.
CREATE UNLOGGED TABLE rate_limits (
    key text PRIMARY KEY CHECK (length(key) <= 128),
    tat timestamptz NOT NULL
);
REVOKE ALL ON rate_limits FROM PUBLIC;

-- Takes one from `key`'s allowance of `per_minute` a minute (bursts up to the same number):
-- 0 when allowed, else the seconds until it would be. One statement, whichever replica asks.
CREATE FUNCTION psa_rate_take(k text, per_minute integer) RETURNS double precision
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    step interval := make_interval(secs => 60.0 / greatest(per_minute, 1));
    span interval := make_interval(secs => 60.0);
    taken timestamptz;
BEGIN
    INSERT INTO public.rate_limits AS r (key, tat) VALUES (k, now_ + step)
    ON CONFLICT (key) DO UPDATE SET tat = greatest(r.tat, now_) + step
        WHERE greatest(r.tat, now_) + step - now_ <= span
    RETURNING tat INTO taken;
    IF FOUND THEN
        RETURN 0;
    END IF;
    -- (A row pruned since, which only an allowance of one a minute allows: a second.)
    RETURN greatest(coalesce(extract(epoch FROM (SELECT tat FROM public.rate_limits WHERE key = k)
                                                 + step - span - now_), 1), 0.001);
END
$$;
REVOKE ALL ON FUNCTION psa_rate_take(text, integer) FROM PUBLIC;
-- The API's login role only: the tenant-confined role has no business with sign-in limits.
GRANT EXECUTE ON FUNCTION psa_rate_take(text, integer) TO psa_api;

-- Forgets keys whose allowance has fully come back.
CREATE FUNCTION psa_rate_prune() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM public.rate_limits WHERE tat < clock_timestamp() RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION psa_rate_prune() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_rate_prune() TO psa_api;
