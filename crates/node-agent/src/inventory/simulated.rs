//! The simulated inventory: GPUs described in a YAML or JSON file, with usage modelled from
//! the GPU assignments of the pods bound to the node. For development and test clusters
//! without GPUs; everything it produces says `source: simulated`.
//!
//! File shape (YAML shown; the same keys in JSON work):
//!
//! ```yaml
//! # GPUs of every node that has no entry under `nodes`.
//! gpus:
//!   - product: NVIDIA A100-SXM4-80GB
//!     memoryMiB: 81920
//!     count: 4                # default 1
//!     computeCapability: "8.0" # optional
//! nodes:
//!   node-b:
//!     gpus:
//!       - { product: Tesla T4, memoryMiB: 15360, count: 1 }
//! ```
//!
//! # Model
//! - Memory used on a GPU = the sum of the MiB held by the pods assigned to it (a whole GPU
//!   holds all of it), capped at the GPU's total; free = total - used.
//! - GPU utilization = the sum of the compute shares held, in milli-GPU, divided by 10
//!   (1000 milli = 100 %), capped at 100. Memory-controller utilization, temperature and
//!   power are not modelled and are left out.
//! - UUIDs are `SIM-` followed by a UUID-shaped hash of the node name and GPU index, so they
//!   are stable across restarts and unique across nodes.

use std::collections::BTreeMap;
use std::path::Path;

use autoglm_api::{GpuStatus, InventorySource, MigMode};
use serde::Deserialize;

use super::{GpuInventory, InventoryError, InventorySnapshot};
use crate::allocations::{PodAllocation, gpu_allocations};

/// A group of identical simulated GPUs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatedGpus {
    /// Product name, as NVML would report it (e.g. "NVIDIA A100-SXM4-80GB").
    pub product: String,
    /// Memory of one GPU in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    /// Number of such GPUs on the node (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// CUDA compute capability (e.g. "8.0").
    #[serde(default)]
    pub compute_capability: Option<String>,
}

fn one() -> u32 {
    1
}

/// The GPUs of one named node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatedNode {
    /// GPU groups, in index order.
    pub gpus: Vec<SimulatedGpus>,
}

/// The whole simulated inventory file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatedConfig {
    /// GPU groups of every node without an entry in `nodes`, in index order.
    #[serde(default)]
    pub gpus: Vec<SimulatedGpus>,
    /// Per-node GPU groups, by Node name.
    #[serde(default)]
    pub nodes: BTreeMap<String, SimulatedNode>,
}

impl SimulatedConfig {
    /// Reads and validates a YAML or JSON file.
    ///
    /// # Errors
    /// [`InventoryError::ReadConfig`], [`InventoryError::ParseConfig`], or
    /// [`InventoryError::InvalidConfig`] naming the field and the rule it breaks.
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::ReadConfig {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates YAML or JSON text; `path` only names it in errors.
    ///
    /// # Errors
    /// As [`SimulatedConfig::load`], without the read error.
    pub fn parse(text: &str, path: &str) -> Result<Self, InventoryError> {
        let config: Self =
            serde_yaml::from_str(text).map_err(|source| InventoryError::ParseConfig {
                path: path.to_owned(),
                source,
            })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &str) -> Result<(), InventoryError> {
        let groups = self
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("gpus[{i}]"), g))
            .chain(self.nodes.iter().flat_map(|(name, node)| {
                node.gpus
                    .iter()
                    .enumerate()
                    .map(move |(i, g)| (format!("nodes.{name}.gpus[{i}]"), g))
            }));
        for (at, g) in groups {
            let invalid = |field: &str, rule| InventoryError::InvalidConfig {
                path: path.to_owned(),
                field: format!("{at}.{field}"),
                rule,
            };
            if g.product.trim().is_empty() {
                return Err(invalid("product", "must not be empty"));
            }
            if g.memory_mib <= 0 {
                return Err(invalid("memoryMiB", "must be > 0"));
            }
            if g.count == 0 {
                return Err(invalid("count", "must be >= 1"));
            }
        }
        Ok(())
    }

    /// The GPU groups of node `node`: its own entry, else the top-level `gpus`.
    #[must_use]
    pub fn groups_for(&self, node: &str) -> &[SimulatedGpus] {
        self.nodes
            .get(node)
            .map_or(self.gpus.as_slice(), |n| n.gpus.as_slice())
    }
}

/// 64-bit FNV-1a.
///
/// # Source
/// Fowler–Noll–Vo hash, offset basis 0xcbf29ce484222325, prime 0x100000001b3.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stable UUID of simulated GPU `index` on `node`: `SIM-` and 32 hex digits in UUID groups
/// (40 characters, the length of an NVML `GPU-...` UUID).
#[must_use]
pub fn simulated_uuid(node: &str, index: u32) -> String {
    let key = format!("{node}/{index}");
    let hex = format!(
        "{:016x}{:016x}",
        fnv1a(key.as_bytes(), 0),
        fnv1a(key.as_bytes(), 0x5157)
    );
    format!(
        "SIM-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Simulated GPUs of one node.
#[derive(Debug, Clone)]
pub struct SimulatedInventory {
    node: String,
    gpus: Vec<SimulatedGpus>,
}

impl SimulatedInventory {
    /// The inventory of node `node` from `config`.
    #[must_use]
    pub fn new(config: &SimulatedConfig, node: &str) -> Self {
        Self {
            node: node.to_owned(),
            gpus: config.groups_for(node).to_vec(),
        }
    }
}

impl GpuInventory for SimulatedInventory {
    fn source(&self) -> InventorySource {
        InventorySource::Simulated
    }

    fn snapshot(&self, allocations: &[PodAllocation]) -> Result<InventorySnapshot, InventoryError> {
        let mut gpus = Vec::new();
        let mut index = 0_u32;
        for group in &self.gpus {
            for _ in 0..group.count {
                let mut gpu = GpuStatus {
                    index: i32::try_from(index).unwrap_or(i32::MAX),
                    uuid: simulated_uuid(&self.node, index),
                    product_name: group.product.clone(),
                    memory_total_mib: group.memory_mib,
                    memory_used_mib: 0,
                    memory_free_mib: group.memory_mib,
                    utilization_gpu_percent: Some(0),
                    utilization_memory_percent: None,
                    compute_capability: group.compute_capability.clone(),
                    mig_mode: MigMode::Unsupported,
                    mig_devices: Vec::new(),
                    temperature_c: None,
                    power_w: None,
                    health: Default::default(),
                    allocations: Vec::new(),
                };
                gpu.allocations = gpu_allocations(&gpu, allocations);
                let used: i64 = gpu.allocations.iter().map(|a| a.memory_mib).sum();
                let milli: i64 = gpu
                    .allocations
                    .iter()
                    .map(|a| i64::from(a.compute_milli))
                    .sum();
                gpu.memory_used_mib = used.clamp(0, gpu.memory_total_mib);
                gpu.memory_free_mib = gpu.memory_total_mib - gpu.memory_used_mib;
                gpu.utilization_gpu_percent =
                    Some(i32::try_from((milli / 10).clamp(0, 100)).unwrap_or(100));
                gpus.push(gpu);
                index += 1;
            }
        }
        Ok(InventorySnapshot {
            source: InventorySource::Simulated,
            driver_version: None,
            cuda_version: None,
            gpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoglm_api::{AssignedGpu, GpuAssignment};

    const FILE: &str = r#"
gpus:
  - product: NVIDIA A100-SXM4-80GB
    memoryMiB: 81920
    count: 2
    computeCapability: "8.0"
nodes:
  node-t4:
    gpus:
      - { product: Tesla T4, memoryMiB: 15360 }
"#;

    fn alloc(pod: &str, uuid: &str, memory_mib: Option<i64>, milli: Option<i32>) -> PodAllocation {
        PodAllocation {
            namespace: "team".into(),
            pod: pod.into(),
            uid: format!("uid-{pod}"),
            job: None,
            created: None,
            started: true,
            assignment: GpuAssignment {
                node: "node-a".into(),
                gpus: vec![AssignedGpu {
                    index: 0,
                    uuid: uuid.into(),
                }],
                memory_mib,
                compute_milli: milli,
            },
        }
    }

    #[test]
    fn parses_yaml_and_json() {
        let c = SimulatedConfig::parse(FILE, "sim.yaml").expect("valid");
        assert_eq!(c.groups_for("node-a")[0].count, 2);
        assert_eq!(c.groups_for("node-t4")[0].product, "Tesla T4");
        assert_eq!(c.groups_for("node-t4")[0].count, 1);
        let json = r#"{"gpus":[{"product":"NVIDIA H100 80GB HBM3","memoryMiB":81559,"count":8}]}"#;
        let c = SimulatedConfig::parse(json, "sim.json").expect("valid");
        assert_eq!(c.gpus[0].memory_mib, 81_559);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let err = SimulatedConfig::parse("gpus: [{product: X, memoryMiB: 0}]", "f")
            .expect_err("memory 0");
        assert_eq!(
            err.to_string(),
            "invalid simulated inventory f: gpus[0].memoryMiB must be > 0"
        );
        let err = SimulatedConfig::parse(
            "nodes: {n1: {gpus: [{product: X, memoryMiB: 1, count: 0}]}}",
            "f",
        )
        .expect_err("count 0");
        assert_eq!(
            err.to_string(),
            "invalid simulated inventory f: nodes.n1.gpus[0].count must be >= 1"
        );
        let err = SimulatedConfig::parse("gpus: [{product: X, memoryMB: 1}]", "f")
            .expect_err("unknown field");
        assert!(err.to_string().contains("memoryMB"), "{err}");
    }

    #[test]
    fn uuids_are_stable_unique_and_gpu_uuid_sized() {
        let a0 = simulated_uuid("node-a", 0);
        assert_eq!(a0, simulated_uuid("node-a", 0));
        assert_ne!(a0, simulated_uuid("node-a", 1));
        assert_ne!(a0, simulated_uuid("node-b", 0));
        assert_eq!(a0.len(), "GPU-fef8089b-4820-abfc-e83e-94318197576e".len());
        assert!(a0.starts_with("SIM-"));
    }

    #[test]
    fn models_usage_from_assignments() {
        let c = SimulatedConfig::parse(FILE, "sim.yaml").expect("valid");
        let inv = SimulatedInventory::new(&c, "node-a");
        let gpu0 = simulated_uuid("node-a", 0);
        let gpu1 = simulated_uuid("node-a", 1);
        let idle = inv.snapshot(&[]).expect("snapshot");
        assert_eq!(idle.source, InventorySource::Simulated);
        assert_eq!(idle.gpus.len(), 2);
        assert_eq!(idle.free_memory_mib(), 2 * 81_920);

        // GPU 0: slices of 20480 MiB (250 milli given) and 10240 MiB (no compute share:
        // 10240 * 1000 / 81920 = 125 milli). GPU 1: a whole GPU.
        let snap = inv
            .snapshot(&[
                alloc("p1", &gpu0, Some(20_480), Some(250)),
                alloc("p2", &gpu0, Some(10_240), None),
                alloc("p3", &gpu1, None, None),
            ])
            .expect("snapshot");
        let g0 = &snap.gpus[0];
        assert_eq!(g0.memory_used_mib, 30_720);
        assert_eq!(g0.memory_free_mib, 51_200);
        assert_eq!(g0.utilization_gpu_percent, Some(37)); // 375 milli -> 37 %
        assert_eq!(g0.allocations.len(), 2);
        let g1 = &snap.gpus[1];
        assert_eq!((g1.memory_used_mib, g1.memory_free_mib), (81_920, 0));
        assert_eq!(g1.utilization_gpu_percent, Some(100));
        assert_eq!(g1.compute_capability.as_deref(), Some("8.0"));
        assert_eq!(snap.free_memory_mib(), 51_200);
    }
}
