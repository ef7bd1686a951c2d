-- Retention (docs/operations.md, "What is kept"): a deleted tenant's personal data in the
-- platform's own records is redacted once the retention period after its deletion has passed.
ALTER TABLE tenant_deletions ADD COLUMN redacted_at timestamptz;
