-- Who did it, as structured columns: the kind of actor and its id, and for a user's session or
-- API key the user behind it. `actor` stays as the display text (`user:<id>`,
-- `api_key:<key>/<user>`, `operator:<account>@<host>`, `platform:<part>`, `anonymous`).
ALTER TABLE audit_log
    ADD COLUMN actor_kind text,
    ADD COLUMN actor_id   text,
    ADD COLUMN actor_user uuid;

-- The structured columns from the text, for today's rows and for a row written by a binary of
-- the previous version during a rolling upgrade (it knows only `actor`). Older spellings:
-- `user:<uuid>` (API and console), `cli` and `cli:<login>` (the command line), `anonymous`
-- (failed sign-ins, reset requests), `workflow:tenant_creation` and `workflow:<deletion id>`
-- (the workflows), and bare names of the platform's parts (`sweeper`, `reconcile`, ...).
CREATE FUNCTION audit_actor_columns(actor text, OUT kind text, OUT id text, OUT usr uuid)
LANGUAGE sql IMMUTABLE AS $$
    SELECT
        CASE
            WHEN actor ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN 'user'
            WHEN actor ~ '^api_key:[0-9a-f-]{36}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN 'api_key'
            WHEN actor = 'cli' OR actor LIKE 'cli:%' OR actor LIKE 'operator:%' THEN 'operator'
            WHEN actor = 'anonymous' THEN 'anonymous'
            ELSE 'platform'
        END,
        CASE
            WHEN actor ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN substr(actor, 6)
            WHEN actor ~ '^api_key:' THEN split_part(substr(actor, 9), '/', 1)
            WHEN actor = 'cli' THEN 'unknown'
            WHEN actor LIKE 'cli:%' THEN substr(actor, 5)
            WHEN actor LIKE 'operator:%' THEN substr(actor, 10)
            WHEN actor = 'anonymous' THEN ''
            WHEN actor = 'workflow:tenant_creation' THEN 'provisioning'
            WHEN actor LIKE 'workflow:tenant-deletion-%' THEN 'deletion'
            WHEN actor LIKE 'platform:%' THEN substr(actor, 10)
            ELSE actor
        END,
        CASE
            WHEN actor ~ '^user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN substr(actor, 6)::uuid
            WHEN actor ~ '^api_key:[0-9a-f-]{36}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN split_part(actor, '/', 2)::uuid
        END
$$;

UPDATE audit_log SET (actor_kind, actor_id, actor_user) =
    (SELECT kind, id, usr FROM audit_actor_columns(actor));

CREATE FUNCTION audit_log_fill_actor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.actor_kind IS NULL THEN
        SELECT kind, id, usr INTO NEW.actor_kind, NEW.actor_id, NEW.actor_user
        FROM audit_actor_columns(NEW.actor);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_fill_actor BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_fill_actor();

ALTER TABLE audit_log
    ALTER COLUMN actor_kind SET NOT NULL,
    ALTER COLUMN actor_id SET NOT NULL,
    ADD CONSTRAINT audit_log_actor_kind_check
        CHECK (actor_kind IN ('user', 'api_key', 'operator', 'platform', 'anonymous')),
    -- A user's session or key names its user; nothing else does.
    ADD CONSTRAINT audit_log_actor_user_check
        CHECK ((actor_kind IN ('user', 'api_key')) = (actor_user IS NOT NULL));

CREATE INDEX audit_log_tenant_actor ON audit_log (tenant, actor_kind, actor_id, created_at DESC);

-- "Delete now" is recorded on the deletion before its workflow is told, so that the worker's
-- sweeper can tell it when the one who confirmed could not (Temporal down).
ALTER TABLE tenant_deletions ADD COLUMN confirmed_at timestamptz;
UPDATE tenant_deletions SET confirmed_at = coalesce(ended_at, updated_at) WHERE confirmed_by IS NOT NULL;
