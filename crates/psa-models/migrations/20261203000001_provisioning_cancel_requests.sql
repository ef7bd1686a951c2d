-- A request to cancel a provisioning run, read by each of its steps before it writes: the
-- workflow's short steps run as local activities, several in one workflow task, so a cancel
-- signal reaches the workflow only when that task ends; the steps must see the request sooner.
-- Its own table, without a foreign key, so that recording a request never waits for a step's
-- lock on the run's record.
CREATE TABLE tenant_provisioning_cancel_requests (
    workflow_id  text PRIMARY KEY,
    reason       text NOT NULL CONSTRAINT tenant_provisioning_cancel_requests_reason_check
                     CHECK (length(reason) BETWEEN 1 AND 500),
    requested_at timestamptz NOT NULL DEFAULT now()
);
