//! State shared by the job reconciler and the binder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use autoglm_api::{GpuNode, InferenceJob, InferenceJobStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Tunables of the controller (from the CLI).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `GpuNode` heartbeats older than this (seconds) make a node's GPUs unavailable; `None`
    /// disables the check (simulated inventories that never refresh).
    pub max_heartbeat_age_s: Option<i64>,
    /// Seconds a Node may stay NotReady before its replicas are rescheduled elsewhere.
    pub node_lost_after_s: i64,
    /// Worker image override (else `spec.workerImage`).
    pub worker_image: Option<String>,
    /// Bind calls in flight at once.
    pub bind_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_heartbeat_age_s: None,
            node_lost_after_s: 60,
            worker_image: None,
            bind_concurrency: 32,
        }
    }
}

/// Everything a reconcile or placement pass needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (events on InferenceJobs).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cache of all pods.
    pub pods: Store<Pod>,
    /// Cache of Nodes.
    pub nodes: Store<Node>,
    /// Cache of GpuNodes.
    pub gpu_nodes: Store<GpuNode>,
    /// Cache of InferenceJobs.
    pub jobs: Store<InferenceJob>,
    /// Wakes the binder (pods, nodes, inventory or jobs changed).
    pub wake_binder: Arc<Notify>,
    /// Tunables.
    pub settings: Settings,
    /// True once every cache (jobs, pods, nodes, GpuNodes) has listed once; reconciles wait
    /// for it, or a missing pod in a half-filled cache would look like a lost replica.
    pub synced: Arc<std::sync::atomic::AtomicBool>,
    /// Statuses this controller applied that the job cache may not show yet.
    pub status_memo: Arc<StatusMemo>,
}

/// Most writes remembered per job between a write and the cache showing it.
const MEMO_DEPTH: usize = 8;

/// The statuses this controller applied to each job (by UID) that the job cache does not
/// show yet, with the `resourceVersion`s involved: kept until the cache shows the last of
/// them, or any version the memo did not see.
///
/// A reconcile starts from the job in the cache, and a pod event can trigger one before the
/// watch event of the controller's own last status write arrives. Starting from the older
/// status, it would apply the same status and record the same phase event again (under load
/// this added about 1.5 status writes and 1.5 event patches per job, which slowed the API
/// server further). [`StatusMemo::known`] gives the status the controller last applied
/// while the cached job is a version from before that write: the version cached when its
/// first unseen write was made, or the version an earlier unseen write returned. Any other
/// version (the cache caught up, or someone else changed the job) wins, and the memo forgets
/// the job. Versions are compared for equality only, as the API conventions allow.
#[derive(Debug, Default)]
pub struct StatusMemo(Mutex<HashMap<String, Writes>>);

/// A job's writes since the cache last caught up.
#[derive(Debug)]
struct Writes {
    /// `resourceVersion` of the cached job when the first of them was made.
    base: Option<String>,
    /// `(resourceVersion returned, status applied)`, oldest first (at most [`MEMO_DEPTH`]).
    applied: Vec<(Option<String>, InferenceJobStatus)>,
}

impl StatusMemo {
    /// The job's status as this controller knows it, given the cached job's
    /// `resourceVersion` and status: its last applied status while the cached version is
    /// one from before that write; else the cached status, and the memo forgets the job.
    pub fn known(
        &self,
        uid: &str,
        cached_version: Option<&str>,
        cached: Option<&InferenceJobStatus>,
    ) -> Option<InferenceJobStatus> {
        let mut memo = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = memo.get(uid) else {
            return cached.cloned();
        };
        let earlier = w.applied.iter().rev().skip(1).map(|(v, _)| v.as_deref());
        let behind = cached_version.is_some()
            && std::iter::once(w.base.as_deref())
                .chain(earlier)
                .any(|v| v == cached_version);
        if behind && let Some((_, last)) = w.applied.last() {
            return Some(last.clone());
        }
        memo.remove(uid);
        cached.cloned()
    }

    /// Records that `applied` was written (the write returned `written_version`) while the
    /// cache showed `cached_version`.
    pub fn record(
        &self,
        uid: &str,
        cached_version: Option<&str>,
        written_version: Option<&str>,
        applied: InferenceJobStatus,
    ) {
        let mut memo = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let w = memo.entry(uid.to_owned()).or_insert_with(|| Writes {
            base: cached_version.map(str::to_owned),
            applied: Vec::new(),
        });
        if w.applied.len() == MEMO_DEPTH {
            w.applied.remove(0);
        }
        w.applied
            .push((written_version.map(str::to_owned), applied));
    }

    /// Forgets a job (deleted).
    pub fn forget(&self, uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
    }

    /// Jobs with writes the cache does not show yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// No job has writes the cache does not show yet.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoglm_api::JobPhase;

    fn status(phase: JobPhase) -> InferenceJobStatus {
        InferenceJobStatus {
            phase: Some(phase),
            ..InferenceJobStatus::default()
        }
    }

    #[test]
    fn a_stale_cache_yields_the_last_applied_status_until_it_catches_up() {
        let memo = StatusMemo::default();
        let (pending, scheduled) = (status(JobPhase::Pending), status(JobPhase::Scheduled));
        // Nothing recorded: the cache is the truth.
        assert_eq!(memo.known("u", Some("1"), None), None);
        // Pending applied while the cache showed version 1; the write made version 2.
        memo.record("u", Some("1"), Some("2"), pending.clone());
        assert_eq!(memo.known("u", Some("1"), None), Some(pending.clone()));
        // Scheduled applied (version 3) before the cache showed version 2.
        memo.record("u", Some("1"), Some("3"), scheduled.clone());
        assert_eq!(memo.known("u", Some("1"), None), Some(scheduled.clone()));
        // The cache shows version 2 (the first write): still behind.
        assert_eq!(
            memo.known("u", Some("2"), Some(&pending)),
            Some(scheduled.clone())
        );
        assert_eq!(memo.len(), 1);
        // The cache shows version 3: caught up, forgotten.
        assert_eq!(
            memo.known("u", Some("3"), Some(&scheduled)),
            Some(scheduled.clone())
        );
        assert!(memo.is_empty());
        // forget drops a job's writes.
        memo.record("u", Some("3"), Some("4"), pending);
        memo.forget("u");
        assert_eq!(memo.known("u", Some("3"), None), None);
    }

    #[test]
    fn any_version_the_memo_did_not_see_wins_even_with_an_old_status() {
        // Another writer (an old leader, a person) sets the status back to Pending after
        // this controller's Scheduled: the cached version is new, so the cache wins and the
        // next reconcile writes Scheduled again.
        let memo = StatusMemo::default();
        let (pending, scheduled) = (status(JobPhase::Pending), status(JobPhase::Scheduled));
        memo.record("u", Some("1"), Some("2"), scheduled);
        assert_eq!(
            memo.known("u", Some("5"), Some(&pending)),
            Some(pending.clone())
        );
        assert!(memo.is_empty());
        // A cache without versions never counts as behind.
        memo.record("u", None, None, status(JobPhase::Running));
        assert_eq!(memo.known("u", None, Some(&pending)), Some(pending));
    }

    #[test]
    fn the_memo_keeps_only_the_last_writes() {
        let memo = StatusMemo::default();
        let s = status(JobPhase::Running);
        for v in 0..=MEMO_DEPTH {
            memo.record("u", Some("base"), Some(&v.to_string()), s.clone());
        }
        // The first write's version dropped out: a cache showing it no longer counts as
        // behind (the old behaviour: a possible duplicate write, never a skipped one).
        let cached = status(JobPhase::Scheduled);
        assert_eq!(
            memo.known("u", Some("0"), Some(&cached)),
            Some(cached.clone())
        );
    }
}
