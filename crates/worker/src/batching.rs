//! Dynamic batching: length-sorted windows cut into batches bounded by size and token budget,
//! and the adaptive batch-size controller.
//!
//! # Windows and length buckets
//! The model thread gathers a *window* of up to [`window_len`] tokenized items, consecutive in
//! shard order, sorts it by token count and cuts it greedily into batches: an item joins the
//! current batch while `rows + 1 <= batch size` and `(rows + 1) * its length <= max batch
//! tokens` (the window is sorted, so the newcomer is the longest row and `rows * length` is
//! the padded size). Sorting puts items of similar length together, which is what length
//! buckets are for, without fixed bucket edges. A window is cut short when `--max-delay-ms`
//! passes after its first item arrived, or at the end of the input.
//!
//! Windows are a deterministic function of the shard (they start where the previous window
//! ended, and checkpoints fall only on window ends), so with a fixed batch size a resumed run
//! forms exactly the same batches as an uninterrupted one and its outputs are bit-identical.

use std::collections::VecDeque;
use std::time::Duration;

/// Items per window for a given maximum batch size: four full batches, so sorting has
/// material to group lengths while the reorder buffer stays small.
#[must_use]
pub fn window_len(max_batch_size: usize) -> usize {
    max_batch_size.max(1) * 4
}

/// Cuts `lengths` (token counts, in shard order) into batches: returns the index lists into
/// `lengths`, each batch sorted by length, batches in ascending length order.
///
/// Bounds: at most `batch_size` rows; `rows * longest <= max_tokens` unless a single item is
/// longer than that on its own (it then runs alone).
#[must_use]
pub fn plan_batches(lengths: &[usize], batch_size: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep shard order, so the plan is deterministic.
    order.sort_by_key(|&i| lengths[i]);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        let rows = current.len() + 1;
        if !current.is_empty() && (rows > batch_size.max(1) || rows * lengths[i] > max_tokens) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Share of padded positions in a batch: `1 - real / (rows * longest)`, 0 for an empty batch.
#[must_use]
pub fn padding_ratio(lengths: &[usize]) -> f64 {
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let cells = lengths.len() * longest;
    if cells == 0 {
        return 0.0;
    }
    1.0 - lengths.iter().sum::<usize>() as f64 / cells as f64
}

/// The batch-size controller.
///
/// # Control law
/// Additive increase, multiplicative decrease on the latency target, after Clipper's
/// adaptive batching, plus a throughput hill-climb so the size settles where items/s peaks
/// instead of at the largest size the target allows (on CPU a larger batch is often slower
/// per item):
/// - after every batch whose latency exceeds the target, the size drops by 10%
///   (`size - max(1, size / 10)`) and the measurement epoch restarts (the climb then resumes
///   upwards, guarded by the prediction below);
/// - otherwise, after an epoch of [`AdaptiveBatchSize::EPOCH`] batches at the same size, the
///   epoch's throughput (`sum items / sum latency`, items/s) is compared with the previous
///   epoch's: moving up continues unless throughput fell by more than 2%; moving down
///   continues only while throughput rose by more than 2%; otherwise the direction reverses. A step is `max(1, max_size / 16)` items. A step up is
///   skipped when the epoch's worst latency scaled to the new size
///   (`worst * new / size`) would pass the target.
/// - the size stays within `[1, max_size]`.
///
/// With no target (`None`) the size is fixed at `max_size`.
///
/// # Source
/// D. Crankshaw et al., "Clipper: A Low-Latency Online Prediction Serving System", NSDI 2017,
/// section 4.3 (AIMD batch size; 10% multiplicative backoff). The hill-climb is ours.
#[derive(Debug, Clone)]
pub struct AdaptiveBatchSize {
    size: usize,
    max_size: usize,
    target: Option<Duration>,
    epoch_items: usize,
    epoch_latency: Duration,
    epoch_worst: Duration,
    epoch_batches: usize,
    last_throughput: Option<f64>,
    up: bool,
    recent: VecDeque<Duration>,
}

impl AdaptiveBatchSize {
    /// Batches per measurement epoch.
    pub const EPOCH: usize = 8;
    /// Latencies kept for [`AdaptiveBatchSize::p99`].
    pub const WINDOW: usize = 200;

    /// A controller for sizes up to `max_size`. With a target it starts at
    /// `max(1, max_size / 4)` and climbs; without one it stays at `max_size`.
    #[must_use]
    pub fn new(max_size: usize, target: Option<Duration>) -> Self {
        let max_size = max_size.max(1);
        let size = if target.is_some() {
            (max_size / 4).max(1)
        } else {
            max_size
        };
        Self {
            size,
            max_size,
            target,
            epoch_items: 0,
            epoch_latency: Duration::ZERO,
            epoch_worst: Duration::ZERO,
            epoch_batches: 0,
            last_throughput: None,
            up: true,
            recent: VecDeque::with_capacity(Self::WINDOW),
        }
    }

    /// The batch size to use now.
    #[must_use]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The 99th percentile (nearest rank) of the last [`AdaptiveBatchSize::WINDOW`] batch
    /// latencies; zero before the first batch.
    #[must_use]
    pub fn p99(&self) -> Duration {
        let mut v: Vec<Duration> = self.recent.iter().copied().collect();
        v.sort();
        percentile(&v, 0.99)
    }

    fn step(&self) -> usize {
        (self.max_size / 16).max(1)
    }

    /// Records a finished batch of `items` rows that took `latency`; `full` says whether it
    /// had the current size (the last batch of a window is often smaller, and only full
    /// batches inform the climb).
    pub fn observe(&mut self, items: usize, latency: Duration, full: bool) {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(latency);
        let Some(target) = self.target else { return };
        if latency > target {
            self.size = self.size.saturating_sub((self.size / 10).max(1)).max(1);
            self.up = true;
            self.reset_epoch();
            self.last_throughput = None;
            return;
        }
        if !full {
            return;
        }
        self.epoch_items += items;
        self.epoch_latency += latency;
        self.epoch_worst = self.epoch_worst.max(latency);
        self.epoch_batches += 1;
        if self.epoch_batches < Self::EPOCH {
            return;
        }
        let throughput = self.epoch_items as f64 / self.epoch_latency.as_secs_f64().max(1e-9);
        if let Some(last) = self.last_throughput {
            // Going up must not lose more than 2%; going down must win more than 2%
            // (smaller batches cost items/s, so they have to earn it).
            let reverse = if self.up {
                throughput < last * 0.98
            } else {
                throughput <= last * 1.02
            };
            if reverse {
                self.up = !self.up;
            }
        }
        self.last_throughput = Some(throughput);
        let worst = self.epoch_worst;
        self.reset_epoch();
        if self.up {
            let next = (self.size + self.step()).min(self.max_size);
            let predicted = worst.mul_f64(next as f64 / self.size as f64);
            if predicted <= target {
                self.size = next;
            } else {
                self.up = false;
            }
        } else {
            self.size = self.size.saturating_sub(self.step()).max(1);
        }
    }

    fn reset_epoch(&mut self) {
        self.epoch_items = 0;
        self.epoch_latency = Duration::ZERO;
        self.epoch_worst = Duration::ZERO;
        self.epoch_batches = 0;
    }
}

/// Nearest-rank percentile of a sorted slice (`q` in 0..=1); zero when empty.
#[must_use]
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_window_cuts_padding() {
        // lengths: 3 10 4 9 ; batch size 2 -> [3,4] and [9,10]
        let plan = plan_batches(&[3, 10, 4, 9], 2, 1000);
        assert_eq!(plan, vec![vec![0, 2], vec![3, 1]]);
        // unsorted pairs would pad (3,10): 7 of 20 cells; sorted pads 1/8 and 1/20
        assert!((padding_ratio(&[3, 4]) - 0.125).abs() < 1e-12);
        assert!((padding_ratio(&[3, 10]) - 0.35).abs() < 1e-12);
    }

    #[test]
    fn token_budget_bounds_rows_times_longest() {
        // budget 20: [5,5,5] = 15 ok, adding 6 makes 4*6 = 24 > 20 -> cut; [6,6,7] = 21 > 20 -> cut
        let plan = plan_batches(&[5, 5, 5, 6, 6, 7], 10, 20);
        assert_eq!(plan, vec![vec![0, 1, 2], vec![3, 4], vec![5]]);
        // a single item over the budget runs alone
        assert_eq!(plan_batches(&[50, 2], 10, 20), vec![vec![1], vec![0]]);
    }

    #[test]
    fn fixed_size_without_target() {
        let mut c = AdaptiveBatchSize::new(32, None);
        assert_eq!(c.size(), 32);
        c.observe(32, Duration::from_secs(10), true);
        assert_eq!(c.size(), 32);
    }

    #[test]
    fn over_target_backs_off_ten_percent() {
        let mut c = AdaptiveBatchSize::new(256, Some(Duration::from_millis(100)));
        assert_eq!(c.size(), 64);
        c.observe(64, Duration::from_millis(150), true);
        assert_eq!(c.size(), 58); // 64 - 6
        c.observe(58, Duration::from_millis(150), true);
        assert_eq!(c.size(), 53); // 58 - 5
        let mut small = AdaptiveBatchSize::new(4, Some(Duration::from_millis(1)));
        assert_eq!(small.size(), 1);
        small.observe(1, Duration::from_millis(5), true);
        assert_eq!(small.size(), 1);
    }

    /// Latency model: 10 ms fixed + 1 ms per item up to 40 items, then 3 ms per extra item
    /// (throughput peaks at 40 items: 40/50 ms = 800 items/s; 44 items: 44/62 ms = 710 items/s).
    fn latency(items: usize) -> Duration {
        let ms = 10 + items.min(40) + 3 * items.saturating_sub(40);
        Duration::from_millis(ms as u64)
    }

    #[test]
    fn climbs_to_the_throughput_peak_and_stays_near_it() {
        let mut c = AdaptiveBatchSize::new(64, Some(Duration::from_millis(500)));
        assert_eq!(c.size(), 16);
        let mut seen = Vec::new();
        for _ in 0..(AdaptiveBatchSize::EPOCH * 40) {
            let n = c.size();
            c.observe(n, latency(n), true);
            seen.push(c.size());
        }
        // step is 64/16 = 4: 16 -> 20 -> ... -> 40 -> 44 (worse) -> 40 -> 36 (worse) -> 40 ...
        let tail = &seen[seen.len() - AdaptiveBatchSize::EPOCH * 10..];
        assert!(tail.iter().all(|&s| (36..=44).contains(&s)), "{tail:?}");
    }

    #[test]
    fn does_not_step_past_the_target() {
        // 2 ms per item, target 50 ms: 24 items = 48 ms ok, 28 items predicted 56 ms > target
        let mut c = AdaptiveBatchSize::new(64, Some(Duration::from_millis(50)));
        for _ in 0..(AdaptiveBatchSize::EPOCH * 20) {
            let n = c.size();
            c.observe(n, Duration::from_millis(2 * n as u64), true);
            assert!(c.size() <= 24, "size {}", c.size());
        }
        // flat throughput: it holds the largest size under the target instead of drifting down
        assert_eq!(c.size(), 24);
    }

    #[test]
    fn nearest_rank_percentile() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
