//! The worker's metrics: every counter the alert rules read, created at 0 with every label value
//! they use once the recorder is installed (a series that first appears at 1 loses that first
//! increment to `rate()` and `increase()`). Each module owns its series; this is the one place
//! that starts them.

/// Call once, after the metrics recorder is installed.
pub fn init() {
    crate::activities::init_metrics();
    crate::deletion::init_metrics();
    crate::webhooks::init_metrics();
}
