//! Prometheus metrics of the controller (`prometheus-client`).
//!
//! One [`Metrics`] struct registers every series on construction; `/metrics` on the admin
//! port encodes the registry in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`crate::Error::category`] of the failure.
    pub category: String,
}

/// Label set of the placement outcome counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `bound`, `unschedulable` or `bind_error`.
    pub outcome: String,
}

/// All controller series.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles of InferenceJobs run (`autoglm_controller_reconciles_total`).
    pub reconciles: Counter,
    /// Failed reconciles by category (`autoglm_controller_reconcile_errors_total`).
    pub errors: Family<ErrorLabels, Counter>,
    /// Replica pods waiting for a placement at the end of the last placement pass
    /// (`autoglm_controller_queue_depth`).
    pub queue_depth: Gauge,
    /// Seconds from a placement pass picking a pod to the bind call returning
    /// (`autoglm_controller_placement_latency_seconds`).
    pub placement_latency: Histogram,
    /// Placement outcomes (`autoglm_controller_placements_total{outcome}`).
    pub placements: Family<OutcomeLabels, Counter>,
    /// GPU memory asked for by replicas still unplaced, MiB
    /// (`autoglm_controller_pending_gpu_memory_mib`).
    pub pending_gpu_memory_mib: Gauge,
    /// Whole GPUs asked for by replicas still unplaced (`autoglm_controller_pending_gpus`).
    pub pending_gpus: Gauge,
    /// 1 while this process holds the leader Lease (`autoglm_controller_leader`).
    pub leader: Gauge,
}

impl Metrics {
    /// Creates the series and registers them under the `autoglm_controller` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        // Placement latency: 100 µs .. ~3.3 s in 16 doubling buckets; a bind on a local API
        // server takes ~1-5 ms, a loaded one tens of ms.
        let m = Self {
            reconciles: Counter::default(),
            errors: Family::default(),
            queue_depth: Gauge::default(),
            placement_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            placements: Family::default(),
            pending_gpu_memory_mib: Gauge::default(),
            pending_gpus: Gauge::default(),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("autoglm_controller");
        r.register(
            "reconciles",
            "InferenceJob reconciles run",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by category",
            m.errors.clone(),
        );
        r.register(
            "queue_depth",
            "Replica pods waiting for placement",
            m.queue_depth.clone(),
        );
        r.register(
            "placement_latency_seconds",
            "Time from picking a pending pod to its binding returning",
            m.placement_latency.clone(),
        );
        r.register("placements", "Placement outcomes", m.placements.clone());
        r.register(
            "pending_gpu_memory_mib",
            "GPU memory (MiB) requested by unplaced replicas",
            m.pending_gpu_memory_mib.clone(),
        );
        r.register(
            "pending_gpus",
            "Whole GPUs requested by unplaced replicas",
            m.pending_gpus.clone(),
        );
        r.register(
            "leader",
            "1 while this process holds the leader Lease",
            m.leader.clone(),
        );
        m
    }

    /// Counts one failed reconcile or placement of `category`.
    pub fn error(&self, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: category.to_owned(),
            })
            .inc();
    }

    /// Counts one placement outcome.
    pub fn outcome(&self, outcome: &str) {
        self.placements
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
