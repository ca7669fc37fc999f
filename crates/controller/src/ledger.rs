//! The in-flight binding ledger.
//!
//! Watch caches lag the API server: right after this controller binds a pod, its cached copy
//! still shows the pod unbound, with no assignment annotation. Without a record of that
//! binding the next placement pass would see the GPU memory as free and promise it twice.
//! The ledger holds every binding issued whose result the pod cache has not shown yet.
//!
//! # Guarantees
//! - Between a placement decision and the cache showing the pod bound, the pod's GPU shares,
//!   CPU and memory are counted as used (the pass reads [`Ledger::entries`]).
//! - An entry is dropped when the cache shows the pod bound (its annotation then carries
//!   the same shares), when the pod is gone from the cache, or when the bind call fails.
//!
//! # Assumptions
//! - Only one placement pass runs at a time (the binder is a single task), and only in the
//!   leader; so the ledger needs no lock beyond `&mut`.
//!
//! # Caveats
//! - The ledger lives in memory. A restarted (or newly elected) controller starts empty and
//!   rebuilds the picture from the pods themselves once its caches have synced: a binding
//!   either happened (the pod has `spec.nodeName` and the annotation, set atomically by the
//!   same `pods/binding` call) or did not (the pod is still pending and is placed again).

use std::collections::HashMap;
use std::time::Instant;

use autoglm_api::GpuAssignment;

/// One binding issued and not yet seen in the pod cache.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// Node it was bound to.
    pub node: String,
    /// The assignment sent with the binding.
    pub assignment: GpuAssignment,
    /// CPU requested, milli-CPU.
    pub cpu_milli: u64,
    /// Memory requested, MiB.
    pub mem_mib: u64,
    /// When the binding was issued.
    pub since: Instant,
}

/// In-flight bindings by pod UID.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<String, Entry>,
}

impl Ledger {
    /// Records a binding about to be issued for pod `uid`.
    pub fn insert(&mut self, uid: String, entry: Entry) {
        self.entries.insert(uid, entry);
    }

    /// Forgets pod `uid` (bind failed, or the cache caught up).
    pub fn remove(&mut self, uid: &str) -> Option<Entry> {
        self.entries.remove(uid)
    }

    /// The in-flight binding of pod `uid`.
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<&Entry> {
        self.entries.get(uid)
    }

    /// Whether pod `uid` has a binding in flight.
    #[must_use]
    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
    }

    /// The in-flight bindings.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Drops entries for which `seen(uid)` says the cache has caught up (pod bound or gone).
    pub fn retain_unseen(&mut self, mut seen: impl FnMut(&str) -> bool) {
        self.entries.retain(|uid, _| !seen(uid));
    }

    /// Number of bindings in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no binding is in flight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
