//! How activities fail: a model error classified once (transient failures are retried with
//! backoff, everything else fails the step for good), and the fail points of the tests.

use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

use crate::types::ActivityName;

/// Classifies a model error: transient failures are retried, the rest are final.
pub fn to_activity_error(e: psa_models::Error) -> ActivityError {
    classify(None, e)
}

/// [`to_activity_error`], the message naming the part of the step that failed, if given.
pub(crate) fn classify(part: Option<ActivityName>, e: psa_models::Error) -> ActivityError {
    let prefix = part.map(|p| format!("{p}: ")).unwrap_or_default();
    if e.is_transient() {
        ActivityError::application(ApplicationFailure::new(format!(
            "{prefix}transient database failure: {}",
            transient_cause(&e)
        )))
    } else {
        let message = match e.field() {
            Some(f) if !f.is_empty() => format!("{prefix}{e} ({f})"),
            _ => format!("{prefix}{e}"),
        };
        ActivityError::application(
            ApplicationFailure::builder(message)
                .type_name(e.code().to_owned())
                .non_retryable(true)
                .build(),
        )
    }
}

/// What a transient database failure was, for the operator: the connection error, or the
/// SQLSTATE and message of a server error of the retried classes (connection loss, failover,
/// serialization, deadlock, overload), whose messages carry no row data.
fn transient_cause(e: &psa_models::Error) -> String {
    match e {
        psa_models::Error::Database(inner) => match inner.as_database_error() {
            Some(db) => format!(
                "SQLSTATE {}: {}",
                db.code().as_deref().unwrap_or("-"),
                db.message()
            ),
            None => inner.to_string(),
        },
        other => other.to_string(),
    }
}

/// Evaluates the fail point `name` (a no-op without the `failpoints` feature).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
pub(crate) fn failpoint(name: &str) -> Result<(), ActivityError> {
    fail::fail_point!(name, |arg: Option<String>| {
        if arg.as_deref() == Some("permanent") {
            Err(ActivityError::application(
                ApplicationFailure::builder(format!("fail point {name} (permanent)"))
                    .type_name("failpoint".to_owned())
                    .non_retryable(true)
                    .build(),
            ))
        } else {
            Err(ActivityError::application(ApplicationFailure::new(
                format!("fail point {name} (transient)"),
            )))
        }
    });
    Ok(())
}

/// Why a step's transaction failed: a model error (classified by [`to_activity_error`], named by
/// the part of the step it happened in when the step has several), or an activity error as is
/// (a fail point).
pub(crate) enum Failure {
    Model {
        part: Option<ActivityName>,
        error: psa_models::Error,
    },
    Activity(ActivityError),
}

impl Failure {
    /// A model error in one part of a step of several parts (the customer record).
    pub(crate) fn in_part(part: ActivityName) -> impl FnOnce(psa_models::Error) -> Failure {
        move |error| Failure::Model {
            part: Some(part),
            error,
        }
    }

    pub(crate) fn into_activity_error(self) -> ActivityError {
        match self {
            Failure::Model { part, error } => classify(part, error),
            Failure::Activity(e) => e,
        }
    }
}

impl From<psa_models::Error> for Failure {
    fn from(error: psa_models::Error) -> Self {
        Failure::Model { part: None, error }
    }
}

impl From<ActivityError> for Failure {
    fn from(e: ActivityError) -> Self {
        Failure::Activity(e)
    }
}
