-- Who did it, as structured columns: the kind of actor and its id, and for a user's session or
-- API key the user behind it. `actor` stays as the display text (`user:<id>`, `api_key:<id>`,
-- `operator:<account>@<host>`, `platform:<part>`, `anonymous`).
ALTER TABLE audit_log
    ADD COLUMN actor_kind text,
    ADD COLUMN actor_id   text,
    ADD COLUMN actor_user uuid;

-- Today's rows: `user:<uuid>` (API and console), `cli` and `cli:<login>` (the command line),
-- `anonymous` (failed sign-ins, reset requests), and bare names of the platform's parts
-- (`sweeper`, `reconcile`, `deadline`, ...).
UPDATE audit_log SET
    actor_kind = CASE
        WHEN actor ~ '^user:[0-9a-fA-F-]{36}$' THEN 'user'
        WHEN actor = 'cli' OR actor LIKE 'cli:%' THEN 'operator'
        WHEN actor = 'anonymous' THEN 'anonymous'
        ELSE 'platform'
    END,
    actor_id = CASE
        WHEN actor ~ '^user:[0-9a-fA-F-]{36}$' THEN lower(substr(actor, 6))
        WHEN actor = 'cli' THEN 'unknown'
        WHEN actor LIKE 'cli:%' THEN substr(actor, 5)
        WHEN actor = 'anonymous' THEN ''
        ELSE actor
    END,
    actor_user = CASE WHEN actor ~ '^user:[0-9a-fA-F-]{36}$' THEN substr(actor, 6)::uuid END;
UPDATE audit_log SET actor = actor_kind || ':' || actor_id WHERE actor_kind IN ('operator', 'platform');

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
