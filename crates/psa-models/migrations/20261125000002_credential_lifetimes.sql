-- Credential lifetimes: a session also ends after a period without use (idle timeout), an API
-- key may expire; both record when they were last used (updated at most once a minute).
ALTER TABLE sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
CREATE INDEX sessions_tenant_user ON sessions (tenant, user_id) WHERE revoked_at IS NULL;
