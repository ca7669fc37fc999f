//! Bounded exponential backoff with jitter for retrying failed placements and reconciles.
//!
//! `delay(attempt) = cap(attempt) * (1 - jitter * u)`, with
//! `cap(attempt) = min(max_ms, base_ms * 2^attempt)` and `u` uniform in `[0, 1)`.
//!
//! # Guarantees
//! - `cap(attempt) * (1 - jitter) <= delay(attempt) <= cap(attempt) <= max_ms`.
//! - `cap` never decreases with the attempt number, and reaches `max_ms` after
//!   `ceil(log2(max_ms / base_ms))` attempts.
//!
//! # Source
//! Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog (2015): jitter
//! spreads retries of many clients that failed together. Defaults: 500 ms base, 5 min cap,
//! half the delay jittered. client-go's controller rate limiter
//! (`workqueue.DefaultControllerRateLimiter`) uses 5 ms and 1000 s for API errors; placement
//! retries wait for the cluster to change, so they start later and cap sooner.

use serde::{Deserialize, Serialize};

/// Errors of the backoff settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffError {
    /// A setting breaks a rule.
    #[error("invalid backoff {field}: {rule}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Rule.
        rule: &'static str,
    },
}

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// First delay, in ms.
    pub base_ms: u64,
    /// Largest delay, in ms.
    pub max_ms: u64,
    /// Share of the delay that is randomised, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_ms: 500,
            max_ms: 300_000,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Checked settings.
    ///
    /// # Errors
    /// [`BackoffError::Invalid`] when `base_ms` is 0, `max_ms < base_ms`, or `jitter` is
    /// outside `[0, 1]`.
    pub fn new(base_ms: u64, max_ms: u64, jitter: f64) -> Result<Self, BackoffError> {
        if base_ms == 0 {
            return Err(BackoffError::Invalid {
                field: "base_ms",
                rule: "must be at least 1",
            });
        }
        if max_ms < base_ms {
            return Err(BackoffError::Invalid {
                field: "max_ms",
                rule: "must be at least base_ms",
            });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::Invalid {
                field: "jitter",
                rule: "must be within [0, 1]",
            });
        }
        Ok(Self {
            base_ms,
            max_ms,
            jitter,
        })
    }
    /// Upper bound of the delay before retry number `attempt` (0-based), in ms.
    pub fn cap_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.min(63);
        self.base_ms
            .checked_mul(1u64 << shift)
            .map_or(self.max_ms, |d| d.min(self.max_ms))
    }
    /// The delay before retry `attempt`, in ms, for a uniform draw `u` in `[0, 1)` (pass
    /// `rand::random::<f64>()`; a fixed `u` makes it deterministic for tests).
    pub fn delay_ms(&self, attempt: u32, u: f64) -> u64 {
        let cap = self.cap_ms(attempt) as f64;
        let u = u.clamp(0.0, 1.0);
        (cap * (1.0 - self.jitter * u)).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubling_then_cap() {
        let b = Backoff::new(500, 300_000, 0.5).unwrap();
        let caps: Vec<u64> = (0..12).map(|a| b.cap_ms(a)).collect();
        assert_eq!(
            caps,
            vec![
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
        assert_eq!(b.cap_ms(200), 300_000);
        // u = 0.5, jitter 0.5: 4000 * (1 - 0.25) = 3000.
        assert_eq!(b.delay_ms(3, 0.5), 3_000);
        assert!(Backoff::new(0, 1, 0.1).is_err());
        assert!(Backoff::new(10, 5, 0.1).is_err());
        assert!(Backoff::new(10, 50, 1.5).is_err());
    }

    proptest! {
        #[test]
        fn delay_within_bounds(base in 1u64..10_000, extra in 0u64..1_000_000, jitter in 0.0f64..=1.0, attempt in 0u32..100, u in 0.0f64..1.0) {
            let b = Backoff::new(base, base + extra, jitter).unwrap();
            let d = b.delay_ms(attempt, u);
            let cap = b.cap_ms(attempt);
            prop_assert!(d <= cap && cap <= b.max_ms);
            prop_assert!(d as f64 >= (cap as f64 * (1.0 - jitter)).floor());
            prop_assert!(b.cap_ms(attempt + 1) >= cap);
        }
    }
}
