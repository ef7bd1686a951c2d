//! Determinism: recorded histories of the workflow's runs (happy path, rollback after each core
//! step, cancel, tracking failure) replay against today's code. A change that would break runs
//! in flight (an activity reordered, added or removed without a patch marker) fails here.
//! docs/workflow.md ("Changing the workflow") says when and how to record new histories.

use std::path::{Path, PathBuf};

use psa_workflows::workflow::TenantCreationWorkflow;
use temporalio_client::{WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

use super::*;

/// Where the recorded histories live: one folder per version of the workflow (the top level is
/// the first; `welcome-email/` adds the welcome email step behind its patch marker;
/// `local-steps/` runs the short steps as local activities and the customer record in one
/// step). New recordings go into the newest.
pub fn histories_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

/// The versions whose recorded runs must still replay, oldest first.
const VERSIONS: [&str; 3] = ["", "welcome-email", "local-steps"];

/// Replays one history against the current workflow code.
pub async fn replay(history: WorkflowHistory) -> Result<(), String> {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<TenantCreationWorkflow>()
        .map_err(|e| e.to_string())?
        .build();
    let replayer = WorkflowReplayer::new(options).map_err(|e| e.to_string())?;
    replayer
        .replay_workflow(history)
        .await
        .map_err(|e| e.to_string())
}

impl Env {
    /// Replays the finished run `workflow_id` against the current code; with
    /// `PSA_RECORD_HISTORIES=1`, also records its history as `tests/histories/<name>.json`.
    pub async fn check_replay(&self, workflow_id: &str, name: &str) {
        let json = self
            .workflows
            .client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id)
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await
            .expect("the history is readable");
        replay(WorkflowHistory::from_json(&json).unwrap())
            .await
            .unwrap_or_else(|e| panic!("the run's own history does not replay: {e}"));
        if std::env::var_os("PSA_RECORD_HISTORIES").is_some() {
            let dir = histories_dir().join(VERSIONS[VERSIONS.len() - 1]);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.json")), json).unwrap();
        }
    }
}

/// The scenarios whose histories are kept (one file each).
const RECORDED: [&str; 7] = [
    "happy_path",
    "rollback_after_create_tenant",
    "rollback_after_run_onboarding_seeds",
    "rollback_after_create_admin_user",
    "rollback_after_setup_tenant_data",
    "cancel",
    "tracking_failure",
];

#[tokio::test]
async fn recorded_histories_still_replay() {
    for (version, name) in VERSIONS
        .iter()
        .flat_map(|v| RECORDED.iter().map(move |n| (v, n)))
    {
        let path = histories_dir().join(version).join(format!("{name}.json"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): record it with `PSA_RECORD_HISTORIES=1 scripts/test`",
                path.display()
            )
        });
        let history = WorkflowHistory::from_json(&bytes).unwrap();
        replay(history)
            .await
            .unwrap_or_else(|e| panic!("{version}/{name}: a recorded run no longer replays: {e}"));
    }
}
