-- A login role for the API that cannot leave its confinement.
--
-- The API may connect as a role that is a member of `psa_app` (tenant data, under row-level
-- security, which applies to members too: `RESET ROLE` changes nothing) and of `psa_api` (the
-- few platform operations the API needs, each narrow):
--  * finding who holds a bearer token, across tenants, and recording its use;
--  * purging sessions that ended;
--  * claiming and reading provisioning records (management callers only, checked in the API).
-- Those run as SECURITY DEFINER functions owned by the schema owner, with a fixed search_path.
-- docs/operations.md ("Database roles") shows how to create the login role.
DO $$
BEGIN
    CREATE ROLE psa_api NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created by another database of the same cluster
END
$$;

GRANT USAGE ON SCHEMA public TO psa_api;
GRANT SELECT, INSERT ON tenant_provisioning TO psa_api;

CREATE FUNCTION psa_authenticate(kind text, digest bytea, session_idle_seconds double precision)
RETURNS TABLE (tenant uuid, user_id uuid, credential_id uuid, client_portal boolean, stale boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.tenant, s.user_id, s.session_id, u.user_type = 'client',
           s.last_seen_at < now() - interval '1 minute'
    FROM sessions s JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id
    WHERE kind = 'session' AND s.token_hash = digest AND s.revoked_at IS NULL
      AND s.expires_at > now()
      AND s.last_seen_at > now() - make_interval(secs => session_idle_seconds)
      AND NOT u.is_inactive
    UNION ALL
    SELECT k.tenant, k.user_id, k.api_key_id, u.user_type = 'client',
           k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute'
    FROM api_keys k JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id
    WHERE kind = 'api_key' AND k.key_hash = digest AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now()) AND NOT u.is_inactive
$$;

CREATE FUNCTION psa_touch_credential(kind text, for_tenant uuid, id uuid)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    UPDATE sessions SET last_seen_at = now()
    WHERE kind = 'session' AND tenant = for_tenant AND session_id = id;
    UPDATE api_keys SET last_used_at = now()
    WHERE kind = 'api_key' AND tenant = for_tenant AND api_key_id = id;
$$;

CREATE FUNCTION psa_purge_sessions() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH gone AS (
        DELETE FROM sessions WHERE expires_at < now() - interval '1 day'
                                OR revoked_at < now() - interval '1 day'
        RETURNING 1)
    SELECT count(*) FROM gone
$$;

REVOKE ALL ON FUNCTION psa_authenticate(text, bytea, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION psa_touch_credential(text, uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION psa_purge_sessions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_authenticate(text, bytea, double precision) TO psa_api;
GRANT EXECUTE ON FUNCTION psa_touch_credential(text, uuid, uuid) TO psa_api;
GRANT EXECUTE ON FUNCTION psa_purge_sessions() TO psa_api;
