//! Open-AutoGLM scheduling core: a pure model of GPU nodes and pod requests, feasibility with
//! explanations, placement policies (the baselines people run, the FGD paper's set, and our
//! `autoglm`), queue policies, dependency DAG ordering and retry backoff, plus the
//! trace-driven simulators behind `autoglm-sim`.
//!
//! No kube, no tokio, no NVML: the controller converts Kubernetes objects into these types
//! at its edge.
//!
//! # Example
//! ```
//! use autoglm_scheduler::model::{Cluster, GpuRequest, NodeState, PodRequest};
//! use autoglm_scheduler::policy::BestFit;
//!
//! let mut cluster = Cluster::new(vec![NodeState::new("n0", 32_000, 131_072, 2, "T4", 16_384)]);
//! let req = PodRequest::new("p", 4_000, 8_192, GpuRequest::Shared { milli: 500, mem_mib: 4_096 });
//! let placement = cluster.place(&req, &mut BestFit::new()).expect("fits");
//! cluster.allocate(&req, &placement).expect("checked");
//! assert_eq!(cluster.nodes[0].gpu_milli_used(), 500);
//! ```

pub mod backoff;
pub mod dag;
pub mod feasibility;
pub mod model;
pub mod policy;
pub mod queue;
pub mod sim;

pub use feasibility::{Reason, Unschedulable};
pub use model::{Cluster, Gpu, GpuRequest, GpuShare, ModelError, NodeState, Placement, PodRequest};
pub use policy::{Placer, Policy, policy_by_name};
