//! GPU health from error events, with recovery.
//!
//! NVIDIA's device plugin marks a GPU unhealthy on its first critical XID and never marks it
//! healthy again without a restart. Here a GPU is unhealthy while errors keep arriving and
//! turns healthy again once no error has been seen for a configurable recovery period.
//!
//! # Guarantees
//! - A GPU with a recorded error is reported unhealthy for at least the recovery period after
//!   its latest error.
//! - Time is passed in by the caller, so the rule is tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use autoglm_api::{GpuHealth, HealthStatus};

/// Default recovery period: a GPU is healthy again 5 minutes after its last error.
///
/// Five minutes covers the bursts of repeated XIDs a failing GPU emits (they arrive within
/// seconds of each other) while letting a GPU that hit a one-off fault be used again without
/// a node restart.
pub const DEFAULT_RECOVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct LastError {
    at: Instant,
    reason: String,
}

/// Tracks the latest error per GPU (by UUID) and derives health from it.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    recovery: Duration,
    last: HashMap<String, LastError>,
}

impl HealthTracker {
    /// A tracker whose GPUs recover `recovery` after their last error.
    #[must_use]
    pub fn new(recovery: Duration) -> Self {
        Self {
            recovery,
            last: HashMap::new(),
        }
    }

    /// The recovery period.
    #[must_use]
    pub fn recovery(&self) -> Duration {
        self.recovery
    }

    /// Records an error on GPU `uuid` at time `at` (e.g. `"XID 79"`).
    pub fn record(&mut self, uuid: &str, reason: impl Into<String>, at: Instant) {
        self.last.insert(
            uuid.to_owned(),
            LastError {
                at,
                reason: reason.into(),
            },
        );
    }

    /// Health of GPU `uuid` at time `now`: unhealthy (with the last error as reason) while
    /// `now - last_error < recovery`, healthy otherwise.
    #[must_use]
    pub fn health(&self, uuid: &str, now: Instant) -> GpuHealth {
        match self.last.get(uuid) {
            Some(e) if now.saturating_duration_since(e.at) < self.recovery => GpuHealth {
                status: HealthStatus::Unhealthy,
                reason: Some(e.reason.clone()),
            },
            _ => GpuHealth::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_until_the_recovery_period_has_passed_without_errors() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(Duration::from_secs(60));
        assert_eq!(h.health("GPU-a", t0).status, HealthStatus::Healthy);

        h.record("GPU-a", "XID 79", t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(h.health("GPU-a", at(0)).status, HealthStatus::Unhealthy);
        assert_eq!(h.health("GPU-a", at(0)).reason.as_deref(), Some("XID 79"));
        assert_eq!(h.health("GPU-a", at(59)).status, HealthStatus::Unhealthy);
        // Another GPU is unaffected.
        assert_eq!(h.health("GPU-b", at(1)).status, HealthStatus::Healthy);

        // A second error at 30 s restarts the clock: still unhealthy at 60..89 s.
        h.record("GPU-a", "double-bit ECC error", at(30));
        assert_eq!(h.health("GPU-a", at(60)).status, HealthStatus::Unhealthy);
        assert_eq!(
            h.health("GPU-a", at(89)).reason.as_deref(),
            Some("double-bit ECC error")
        );
        assert_eq!(h.health("GPU-a", at(90)), GpuHealth::default());
    }
}
