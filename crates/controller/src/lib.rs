//! Open-AutoGLM controller: reconciles `InferenceJob`s into scored, bound worker pods.
//!
//! Layout:
//! - [`reconcile`]: per job (finalizer, validation, `dependsOn`, `suspend`, replica pods,
//!   retries with backoff, node loss, status through server-side apply, events);
//! - [`binder`]: placement of pending replica pods in priority order through the
//!   scheduling core, and binding through `pods/binding`, with the in-flight [`ledger`];
//! - [`convert`]: Kubernetes objects to core types and back;
//! - [`leader`], [`admin`], [`metrics`], [`app`]: operations.

pub mod admin;
pub mod app;
pub mod binder;
pub mod context;
pub mod convert;
pub mod deps;
pub mod error;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod pods;
pub mod policy;
pub mod queue;
pub mod reconcile;

pub use error::{Error, Result};
