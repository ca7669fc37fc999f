//! `autoglm-devnode`: a development node for Open-AutoGLM. **A test and demo tool, never a
//! production kubelet.**
//!
//! On a machine with no container runtime and no GPU it stands in for a kubelet so that the
//! whole flow (apply an `InferenceJob` -> the controller binds replica pods -> the worker runs
//! -> `Complete`) runs against a real control plane:
//!
//! - [`node`]: registers a Node with capacity (cpu, memory, pods and the GPU extended
//!   resources its device plugins advertise), a `Ready` condition, heartbeats and a Lease;
//! - [`plugins`]: plays the kubelet toward the node agent's device plugin: serves
//!   `kubelet.sock` (`Registration`), follows each plugin's `ListAndWatch`, and calls
//!   `Allocate` for each container's GPU resources;
//! - [`pods`]: runs the containers of pods bound to the node as local processes: a known
//!   image ([`image`]) maps to a locally built binary, the container's command, args, env
//!   (downward API included) and volume paths are translated ([`launch`]), and phases and
//!   container statuses ([`status`]) are reported back, restarts included.
//!
//! An image it does not know is never run: the pod fails with `ErrImageNeverPull` and a
//! message naming the image.

pub mod error;
pub mod image;
pub mod launch;
pub mod node;
pub mod plugins;
pub mod pods;
pub mod status;

pub use error::Error;

/// `error: cause: cause ...` on one line, for logs.
#[must_use]
pub fn display_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
