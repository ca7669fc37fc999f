//! A human-readable table of an inventory snapshot, as `--once` prints it.

use std::fmt::Write as _;

use autoglm_api::HealthStatus;

use crate::inventory::InventorySnapshot;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Renders `snapshot` as a fixed-width table, one row per GPU, preceded by a summary line.
#[must_use]
pub fn render(node: &str, snapshot: &InventorySnapshot) -> String {
    let mut out = String::new();
    let source = match snapshot.source {
        autoglm_api::InventorySource::Nvml => "nvml",
        autoglm_api::InventorySource::Simulated => "simulated",
    };
    let _ = writeln!(
        out,
        "node {node}: {} GPU(s), source {source}, driver {}, CUDA {}, free {} MiB",
        snapshot.gpus.len(),
        opt(snapshot.driver_version.as_deref()),
        opt(snapshot.cuda_version.as_deref()),
        snapshot.free_memory_mib()
    );
    let _ = writeln!(
        out,
        "{:>3}  {:<42} {:<28} {:>9} {:>9} {:>9} {:>5} {:>5} {:>4} {:<9} {:>5} {:>7}  HEALTH",
        "IDX",
        "UUID",
        "PRODUCT",
        "TOTAL_MiB",
        "USED_MiB",
        "FREE_MiB",
        "GPU%",
        "MEM%",
        "CC",
        "MIG",
        "TEMP",
        "POWER_W"
    );
    for g in &snapshot.gpus {
        let health = match g.health.status {
            HealthStatus::Healthy => "Healthy".to_owned(),
            HealthStatus::Unhealthy => format!(
                "Unhealthy ({})",
                g.health.reason.as_deref().unwrap_or("no reason")
            ),
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<42} {:<28} {:>9} {:>9} {:>9} {:>5} {:>5} {:>4} {:<9} {:>5} {:>7}  {}",
            g.index,
            g.uuid,
            g.product_name,
            g.memory_total_mib,
            g.memory_used_mib,
            g.memory_free_mib,
            opt(g.utilization_gpu_percent),
            opt(g.utilization_memory_percent),
            opt(g.compute_capability.as_deref()),
            format!("{:?}", g.mig_mode),
            opt(g.temperature_c),
            opt(g.power_w),
            health
        );
        for m in &g.mig_devices {
            let _ = writeln!(
                out,
                "     MIG {:<38} {:<28} {:>9}",
                m.uuid,
                opt(m.profile.as_deref()),
                m.memory_mib
            );
        }
    }
    out
}
