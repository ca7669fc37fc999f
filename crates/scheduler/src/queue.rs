//! Queue policies: the order in which pending replicas are offered to placement.
//!
//! - [`QueuePolicy::Fifo`]: arrival order.
//! - [`QueuePolicy::Priority`]: higher `priority` first, FIFO among equals.
//! - [`QueuePolicy::Dynamic`]: the seed design's dynamic priority (urgency, resource cost,
//!   deadline proximity) plus aging, see [`DynamicPriority`].
//! - [`QueuePolicy::Edf`]: earliest deadline first; items without a deadline after all
//!   items with one, FIFO among themselves.
//!
//! All orders are total and deterministic: ties fall back to arrival time, then name.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// A pending item (a job replica waiting for placement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    /// Name (unique).
    pub name: String,
    /// User priority (urgency); larger is more urgent.
    pub priority: i32,
    /// When it entered the queue, in ms.
    pub enqueued_ms: u64,
    /// Optional deadline, in ms on the same clock.
    pub deadline_ms: Option<u64>,
    /// Resource cost: GPUs asked (fractions allowed, e.g. 0.47 for 470 milli-GPU).
    pub gpus: f64,
}

/// Weights of the dynamic priority.
///
/// `score = priority + aging_per_s * waited_s + deadline_boost - cost_per_gpu * gpus`, where
/// `deadline_boost = max_deadline_boost * (1 - slack / deadline_horizon_s)` clamped to
/// `[0, max_deadline_boost]` (`slack` = seconds left to the deadline; past-due items get the
/// full boost).
///
/// # Guarantees
/// No starvation: the aging term grows without bound while the other terms are bounded, so
/// an item ranks above any other item whose wait is shorter by more than
/// [`DynamicPriority::starvation_bound_s`] (given the priority gap and the largest GPU ask).
///
/// # Source
/// Aging as in classic priority scheduling (Silberschatz, *Operating System Concepts*,
/// "aging"); deadline proximity as in least-slack-first; the cost term prefers small requests
/// like shortest-job-first. Defaults: one priority level per 60 s of waiting (a job one level
/// below overtakes after a minute), a 10-level boost over the last 600 s before a deadline,
/// and 0.5 level per GPU asked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DynamicPriority {
    /// Priority levels gained per second waited.
    pub aging_per_s: f64,
    /// Largest deadline boost, in priority levels.
    pub max_deadline_boost: f64,
    /// The boost starts this many seconds before the deadline.
    pub deadline_horizon_s: f64,
    /// Priority levels lost per GPU asked.
    pub cost_per_gpu: f64,
}

impl Default for DynamicPriority {
    fn default() -> Self {
        Self {
            aging_per_s: 1.0 / 60.0,
            max_deadline_boost: 10.0,
            deadline_horizon_s: 600.0,
            cost_per_gpu: 0.5,
        }
    }
}

impl DynamicPriority {
    /// The score of `item` at `now_ms` (higher runs first).
    pub fn score(&self, item: &QueueItem, now_ms: u64) -> f64 {
        let waited_s = now_ms.saturating_sub(item.enqueued_ms) as f64 / 1000.0;
        let boost = match item.deadline_ms {
            Some(d) => {
                let slack_s = (d as f64 - now_ms as f64) / 1000.0;
                (self.max_deadline_boost * (1.0 - slack_s / self.deadline_horizon_s))
                    .clamp(0.0, self.max_deadline_boost)
            }
            None => 0.0,
        };
        f64::from(item.priority) + self.aging_per_s * waited_s + boost
            - self.cost_per_gpu * item.gpus
    }
    /// Seconds of extra waiting after which an item outranks another whose priority is
    /// higher by `priority_gap` and whose cost is lower by at most `max_gpus` GPUs, whatever
    /// their deadlines.
    pub fn starvation_bound_s(&self, priority_gap: f64, max_gpus: f64) -> f64 {
        (priority_gap + self.max_deadline_boost + self.cost_per_gpu * max_gpus) / self.aging_per_s
    }
}

/// A queue ordering policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum QueuePolicy {
    /// Arrival order.
    Fifo,
    /// Static priority, FIFO among equals.
    Priority,
    /// Dynamic priority with aging.
    Dynamic(DynamicPriority),
    /// Earliest deadline first.
    Edf,
}

fn fifo(a: &QueueItem, b: &QueueItem) -> Ordering {
    a.enqueued_ms
        .cmp(&b.enqueued_ms)
        .then_with(|| a.name.cmp(&b.name))
}

/// Indexes of `items` in the order `policy` serves them at `now_ms`.
pub fn order(items: &[QueueItem], policy: QueuePolicy, now_ms: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    match policy {
        QueuePolicy::Fifo => idx.sort_by(|&a, &b| fifo(&items[a], &items[b])),
        QueuePolicy::Priority => idx.sort_by(|&a, &b| {
            items[b]
                .priority
                .cmp(&items[a].priority)
                .then_with(|| fifo(&items[a], &items[b]))
        }),
        QueuePolicy::Dynamic(d) => {
            let scores: Vec<f64> = items.iter().map(|i| d.score(i, now_ms)).collect();
            idx.sort_by(|&a, &b| {
                scores[b]
                    .total_cmp(&scores[a])
                    .then_with(|| fifo(&items[a], &items[b]))
            });
        }
        QueuePolicy::Edf => idx.sort_by(|&a, &b| {
            let key = |i: &QueueItem| i.deadline_ms.unwrap_or(u64::MAX);
            key(&items[a])
                .cmp(&key(&items[b]))
                .then_with(|| fifo(&items[a], &items[b]))
        }),
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(
        name: &str,
        priority: i32,
        enqueued_ms: u64,
        deadline_ms: Option<u64>,
        gpus: f64,
    ) -> QueueItem {
        QueueItem {
            name: name.into(),
            priority,
            enqueued_ms,
            deadline_ms,
            gpus,
        }
    }

    #[test]
    fn fifo_priority_edf() {
        let items = vec![
            item("a", 1, 300, None, 1.0),
            item("b", 5, 200, Some(9_000), 1.0),
            item("c", 5, 100, Some(5_000), 1.0),
            item("d", 0, 50, Some(7_000), 1.0),
        ];
        assert_eq!(order(&items, QueuePolicy::Fifo, 0), vec![3, 2, 1, 0]);
        assert_eq!(order(&items, QueuePolicy::Priority, 0), vec![2, 1, 0, 3]);
        assert_eq!(order(&items, QueuePolicy::Edf, 0), vec![2, 3, 1, 0]);
    }

    #[test]
    fn dynamic_score_by_hand() {
        let d = DynamicPriority::default();
        // priority 2, waited 120 s -> +2, deadline in 300 s -> boost 10 * (1 - 300/600) = 5,
        // 2 GPUs -> -1: total 8.
        let i = item("x", 2, 0, Some(420_000), 2.0);
        assert!((d.score(&i, 120_000) - 8.0).abs() < 1e-9);
        // Past due: full boost 10; no wait; 0 GPUs: 2 + 10 = 12.
        let late = item("y", 2, 500_000, Some(400_000), 0.0);
        assert!((d.score(&late, 500_000) - 12.0).abs() < 1e-9);
    }

    #[test]
    fn aging_prevents_starvation() {
        let d = DynamicPriority::default();
        // A priority-0 job asking 8 GPUs against a stream of fresh priority-10 jobs with
        // imminent deadlines asking nothing: bound = (10 + 10 + 0.5 * 8) * 60 = 1440 s.
        let bound = d.starvation_bound_s(10.0, 8.0);
        assert!((bound - 1440.0).abs() < 1e-9);
        let old = item("old", 0, 0, None, 8.0);
        let now = (bound as u64 + 1) * 1000;
        let fresh = item("fresh", 10, now, Some(now), 0.0);
        let o = order(&[fresh, old], QueuePolicy::Dynamic(d), now);
        assert_eq!(o, vec![1, 0]);
    }
}
