//! Leader election through a `coordination.k8s.io/v1` Lease (`kube-lease-manager`).
//!
//! # Guarantees
//! - At most one controller process acts (reconciles jobs, binds pods) at a time, as long as
//!   clocks are skewed by less than the grace period: the holder renews `grace` seconds
//!   before its lease would expire, and a process only acts after it observed itself as the
//!   holder.
//! - A process that loses the lease stops acting: [`run_as_leader`] returns
//!   [`LeaderOutcome::Lost`] and the binary exits, so a restarted process rebuilds all
//!   in-memory state (the binding ledger in particular) from the API server. This is what
//!   controller-runtime does too; it is simpler and safer than trying to drain in place.
//!
//! # Assumptions
//! - Every controller replica uses the same Lease name and namespace and a unique identity
//!   (the pod name by default, from `POD_NAME`, else hostname plus process id).
//!
//! # Caveats
//! - Between a leader freezing (e.g. `kill -STOP`) and its lease expiring (`duration`
//!   seconds) nobody acts; binding pauses for at most that long.
//! - A process killed with SIGKILL does not release the lease; the next one waits for it to
//!   expire.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio_util::sync::CancellationToken;

/// Leader-election settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Lease object name.
    pub lease_name: String,
    /// Namespace holding the Lease.
    pub namespace: String,
    /// This process's identity (unique among replicas).
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal.
    pub duration_s: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_s: u64,
}

/// How [`run_as_leader`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaderOutcome {
    /// The work future finished (shutdown); the lease was released.
    Finished,
    /// Leadership was lost while working; the caller must exit.
    Lost,
}

/// Waits until this process holds the Lease (or `shutdown` is cancelled), then runs `work`
/// until it finishes (it should watch `shutdown` itself to drain) or the lease is lost. `on_change` is told each change of leadership (for the `leader` gauge).
///
/// # Errors
/// Fails when the Lease cannot be created or read.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    cfg: &LeaderConfig,
    shutdown: &CancellationToken,
    on_change: impl Fn(bool),
    work: F,
) -> Result<LeaderOutcome, kube_lease_manager::LeaseManagerError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, &cfg.lease_name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration_s)
        .with_grace(cfg.grace_s)
        .with_field_manager(format!(
            "{}-lease",
            autoglm_api::wellknown::CONTROLLER_FIELD_MANAGER
        ))
        .with_create_mode(LeaseCreateMode::AutoCreate)
        .build()
        .await?;
    let (mut rx, handle) = manager.watch().await;
    tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "waiting for leadership");
    loop {
        if *rx.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    tracing::warn!("lease manager stopped before leadership was acquired");
                    return Ok(LeaderOutcome::Lost);
                }
            }
            () = shutdown.cancelled() => {
                drop(rx);
                let _ = handle.await;
                return Ok(LeaderOutcome::Finished);
            }
        }
    }
    tracing::info!(identity = %cfg.identity, "acquired leadership");
    on_change(true);
    let work = work();
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            // `work` observes the same token and drains on shutdown.
            () = &mut work => break LeaderOutcome::Finished,
            changed = rx.changed() => {
                if changed.is_err() || !*rx.borrow_and_update() {
                    tracing::error!(identity = %cfg.identity, "lost leadership");
                    break LeaderOutcome::Lost;
                }
            }
        }
    };
    on_change(false);
    // Dropping the receiver makes the manager release the lease and stop.
    drop(rx);
    let _ = handle.await;
    Ok(outcome)
}
