//! Prometheus metrics of the node agent (`autoglm_node_agent_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::inventory::InventorySnapshot;

/// Labels naming a GPU.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    /// GPU index.
    pub gpu: String,
    /// GPU UUID.
    pub uuid: String,
}

/// Labels naming an extended resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Extended resource name.
    pub resource: String,
}

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// The node agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// GpuNode status publications, by result.
    pub publishes: Family<ResultLabels, Counter>,
    /// Inventory readings, by result.
    pub inventory_reads: Family<ResultLabels, Counter>,
    /// Successful kubelet registrations, by resource.
    pub registrations: Family<ResourceLabels, Counter>,
    /// 1 while registered with the kubelet, by resource.
    pub registered: Family<ResourceLabels, Gauge>,
    /// GPUs on the node.
    pub gpus: Gauge,
    /// Free GPU memory in MiB, per GPU.
    pub gpu_memory_free_mib: Family<GpuLabels, Gauge>,
    /// Total GPU memory in MiB, per GPU.
    pub gpu_memory_total_mib: Family<GpuLabels, Gauge>,
    /// GPU utilization in percent, per GPU.
    pub gpu_utilization_percent: Family<GpuLabels, Gauge>,
    /// 1 when the GPU is healthy, 0 otherwise.
    pub gpu_healthy: Family<GpuLabels, Gauge>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under `autoglm_node_agent_`.
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("autoglm_node_agent");
        r.register(
            "publishes",
            "GpuNode status publications by result",
            m.publishes.clone(),
        );
        r.register(
            "inventory_reads",
            "GPU inventory readings by result",
            m.inventory_reads.clone(),
        );
        r.register(
            "registrations",
            "Successful kubelet device-plugin registrations",
            m.registrations.clone(),
        );
        r.register(
            "registered",
            "1 while the device plugin is registered with the kubelet",
            m.registered.clone(),
        );
        r.register("gpus", "GPUs on the node", m.gpus.clone());
        r.register(
            "gpu_memory_free_mib",
            "Free GPU memory in MiB",
            m.gpu_memory_free_mib.clone(),
        );
        r.register(
            "gpu_memory_total_mib",
            "Total GPU memory in MiB",
            m.gpu_memory_total_mib.clone(),
        );
        r.register(
            "gpu_utilization_percent",
            "GPU utilization in percent",
            m.gpu_utilization_percent.clone(),
        );
        r.register(
            "gpu_healthy",
            "1 when the GPU is healthy",
            m.gpu_healthy.clone(),
        );
        m
    }

    /// Updates the per-GPU gauges from a snapshot.
    pub fn observe(&self, snapshot: &InventorySnapshot) {
        self.gpus
            .set(i64::try_from(snapshot.gpus.len()).unwrap_or(i64::MAX));
        for g in &snapshot.gpus {
            let l = GpuLabels {
                gpu: g.index.to_string(),
                uuid: g.uuid.clone(),
            };
            self.gpu_memory_free_mib
                .get_or_create(&l)
                .set(g.memory_free_mib);
            self.gpu_memory_total_mib
                .get_or_create(&l)
                .set(g.memory_total_mib);
            self.gpu_utilization_percent
                .get_or_create(&l)
                .set(i64::from(g.utilization_gpu_percent.unwrap_or(0)));
            self.gpu_healthy.get_or_create(&l).set(i64::from(
                g.health.status == autoglm_api::HealthStatus::Healthy,
            ));
        }
    }

    /// Counts an outcome in `family`.
    pub fn count(family: &Family<ResultLabels, Counter>, ok: bool) {
        family
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }
}
