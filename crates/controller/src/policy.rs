//! Choice of the core placement policy for a pass.

use autoglm_scheduler::model::PodRequest;
use autoglm_scheduler::policy::{BestFit, Policy, policy_by_name};

/// Seed of the tie-breaking RNG of seeded policies. Fixed so that a replayed pass makes the
/// same decisions (useful when reading logs); fairness across nodes does not depend on it.
pub const SEED: u64 = 42;

/// Builds policy `name` (a core policy name, see [`crate::convert::policy_name`]). The
/// fragmentation-aware policies measure fragmentation against the live pending queue
/// (`pending`), not a historical trace.
#[must_use]
pub fn build(name: &str, pending: &[Option<PodRequest>]) -> Box<dyn Policy> {
    let workload: Vec<PodRequest> = pending.iter().flatten().cloned().collect();
    policy_by_name(name, SEED, &workload).unwrap_or_else(|e| {
        // Names come from `convert::policy_name`, all known to the core; keep placing anyway.
        tracing::error!(error = %e, "unknown core policy; using best-fit");
        Box::new(BestFit::new())
    })
}

/// The fallback used when a policy's choice is refused by the model.
#[must_use]
pub fn fallback() -> Box<dyn Policy> {
    Box::new(BestFit::new())
}
