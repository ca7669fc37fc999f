//! Order of pending replica pods: priority, then deadline, then age, with aging.
//!
//! Effective priority = `spec.priority` + one point per [`AGING_PERIOD_S`] seconds the pod
//! has waited, so a low-priority pod eventually overtakes a stream of newer high-priority
//! ones (no starvation). Ties go to the earlier deadline (none counts as latest), then to
//! the older pod, then to the name (a total, deterministic order).

use std::cmp::Ordering;

use k8s_openapi::jiff::Timestamp;

/// Seconds of waiting that add one point of priority.
///
/// # Source
/// Our choice: Kubernetes priorities of user workloads are typically spaced by 100-1000
/// (PriorityClass values), so a job one class below overtakes after ~2-17 hours of waiting,
/// while equal-priority jobs stay in deadline/FIFO order.
pub const AGING_PERIOD_S: i64 = 60;

/// What the queue knows about one pending pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueItem {
    /// `spec.priority` of the job (0 when unset).
    pub priority: i64,
    /// `spec.deadline` of the job.
    pub deadline: Option<Timestamp>,
    /// When the pod was created (queue entry time).
    pub created: Timestamp,
    /// `namespace/name`, the last tie-break.
    pub name: String,
}

impl QueueItem {
    /// Priority plus aging at `now`.
    #[must_use]
    pub fn effective_priority(&self, now: Timestamp) -> i64 {
        let waited = now.duration_since(self.created).as_secs().max(0);
        self.priority.saturating_add(waited / AGING_PERIOD_S)
    }
}

/// Compares two items: `Less` means `a` is placed first.
#[must_use]
pub fn compare(a: &QueueItem, b: &QueueItem, now: Timestamp) -> Ordering {
    b.effective_priority(now)
        .cmp(&a.effective_priority(now))
        .then_with(|| match (a.deadline, b.deadline) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.created.cmp(&b.created))
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, priority: i64, created_s: i64, deadline_s: Option<i64>) -> QueueItem {
        let t = |s| Timestamp::from_second(1_700_000_000 + s).unwrap();
        QueueItem {
            priority,
            deadline: deadline_s.map(t),
            created: t(created_s),
            name: name.into(),
        }
    }

    #[test]
    fn priority_then_deadline_then_age() {
        let now = Timestamp::from_second(1_700_000_000 + 100).unwrap();
        let mut v = [
            item("old-low", 0, 0, None),
            item("new-high", 10, 90, None),
            item("mid-deadline", 1, 50, Some(500)),
            item("mid", 1, 41, None),
        ];
        v.sort_by(|a, b| compare(a, b, now));
        // old-low waited 100 s -> 0 + 1 = 1; mid-deadline waited 50 s -> 1 + 0; mid waited 59 s
        // -> 1 + 0: three-way tie on 1, broken by deadline, then age.
        let names: Vec<&str> = v.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["new-high", "mid-deadline", "old-low", "mid"]);
    }

    #[test]
    fn aging_overtakes() {
        // 0-priority pod waiting 600 s (10 points) beats a fresh priority-5 pod.
        let now = Timestamp::from_second(1_700_000_000 + 600).unwrap();
        let a = item("starved", 0, 0, None);
        let b = item("fresh", 5, 600, None);
        assert_eq!(compare(&a, &b, now), Ordering::Less);
    }
}
