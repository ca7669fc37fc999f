//! Open-AutoGLM node agent: the per-node DaemonSet that
//! - reads the node's GPUs through a [`inventory::GpuInventory`] (NVML, or a simulated
//!   inventory file on machines without GPUs),
//! - publishes them as the node's `GpuNode` status and GFD-style Node labels
//!   ([`publish`]),
//! - runs a kubelet device plugin ([`deviceplugin`]) advertising whole GPUs
//!   (`autoglm.io/gpu`) and 1 GiB memory slices (`autoglm.io/gpu-memory-gib`), handing each
//!   container the GPU share the controller assigned it,
//! - serves `/livez`, `/readyz` and `/metrics` on an admin port ([`admin`]).
//!
//! The device-plugin client and server code (and the generated [`proto`]) are public so the
//! development node can reuse them.

pub mod admin;
pub mod agent;
pub mod allocations;
pub mod deviceplugin;
pub mod inventory;
pub mod metrics;
pub mod publish;
pub mod table;

pub mod proto {
    //! Generated kubelet device-plugin API (`deviceplugin/v1beta1`), from
    //! `proto/deviceplugin_v1beta1.proto`.
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("v1beta1");
}
