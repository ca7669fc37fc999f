//! What the worker tells the outside: Prometheus metrics and health on the admin port, and the
//! progress ([`ReplicaProgress`], the API's annotation type) that [`crate::progress`] patches
//! onto the Pod.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use autoglm_api::{ReplicaProgress, WorkerState};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The worker's Prometheus metrics (prefix `autoglm_worker_`).
#[derive(Debug)]
pub struct Metrics {
    /// Items with a result (errors included), this process.
    pub items: Counter,
    /// Items whose record is an error, this process.
    pub items_failed: Counter,
    /// Items/s over this process's run so far.
    pub items_per_second: Gauge<f64, AtomicU64>,
    /// Rows per model batch.
    pub batch_size: Histogram,
    /// Seconds per model call.
    pub batch_latency_seconds: Histogram,
    /// Padded share of each batch's `rows x longest` token cells.
    pub padding_ratio: Histogram,
    /// The adaptive controller's current batch size.
    pub target_batch_size: Gauge,
    /// Checkpoints committed, this process.
    pub checkpoints: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            items: Counter::default(),
            items_failed: Counter::default(),
            items_per_second: Gauge::default(),
            // 1, 2, 4, ... 1024 rows
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            // 1 ms .. ~16 s
            batch_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            padding_ratio: Histogram::new([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]),
            target_batch_size: Gauge::default(),
            checkpoints: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("autoglm_worker");
        r.register(
            "items",
            "Items with a result, errors included",
            m.items.clone(),
        );
        r.register(
            "items_failed",
            "Items whose record is an error",
            m.items_failed.clone(),
        );
        r.register(
            "items_per_second",
            "Items/s over this run so far",
            m.items_per_second.clone(),
        );
        r.register("batch_size", "Rows per model batch", m.batch_size.clone());
        r.register(
            "batch_latency_seconds",
            "Seconds per model call",
            m.batch_latency_seconds.clone(),
        );
        r.register(
            "padding_ratio",
            "Padded share of each batch's rows x longest token cells",
            m.padding_ratio.clone(),
        );
        r.register(
            "target_batch_size",
            "The adaptive controller's current batch size",
            m.target_batch_size.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints committed",
            m.checkpoints.clone(),
        );
        m
    }
}

/// Shared between the pipeline, the admin server and the progress reporter.
#[derive(Debug)]
pub struct Telemetry {
    /// The metrics.
    pub metrics: Metrics,
    registry: Registry,
    ready: AtomicBool,
    progress: Mutex<ReplicaProgress>,
    /// Woken at each checkpoint and state change.
    pub changed: tokio::sync::Notify,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Fresh telemetry in state `Starting`.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Self {
            metrics,
            registry,
            ready: AtomicBool::new(false),
            progress: Mutex::new(ReplicaProgress {
                items_done: 0,
                items_total: None,
                items_failed: 0,
                items_per_second: 0.0,
                last_checkpoint_time: None,
                state: WorkerState::Starting,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Marks the worker ready (`/readyz` returns 200): the model is loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `/readyz` returns 200.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Updates the progress snapshot; `notify` wakes the reporter at once (checkpoints,
    /// state changes), otherwise it picks the change up on its next tick.
    pub fn update(&self, notify: bool, f: impl FnOnce(&mut ReplicaProgress)) {
        {
            let mut p = self
                .progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut p);
        }
        if notify {
            self.changed.notify_one();
        }
    }

    /// The current progress.
    #[must_use]
    pub fn snapshot(&self) -> ReplicaProgress {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The metrics in Prometheus text format.
    #[must_use]
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The admin router: `/livez` (always 200), `/readyz` (200 once the model is loaded, else
/// 503), `/metrics` (Prometheus text).
pub fn admin_router(t: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(t): State<Arc<Telemetry>>| async move {
                if t.is_ready() {
                    (StatusCode::OK, "ready").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(t): State<Arc<Telemetry>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    t.encode_metrics(),
                )
            }),
        )
        .with_state(t)
}

/// Serves the admin router on `addr` until the process ends.
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn serve_admin(addr: SocketAddr, t: Arc<Telemetry>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin server listening (/livez, /readyz, /metrics)");
    axum::serve(listener, admin_router(t)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_names_and_progress_json_is_camel_case() {
        let t = Telemetry::new();
        t.metrics.items.inc_by(3);
        t.metrics.batch_size.observe(4.0);
        let text = t.encode_metrics();
        assert!(text.contains("autoglm_worker_items_total 3"), "{text}");
        assert!(
            text.contains("autoglm_worker_batch_size_bucket{le=\"4.0\"} 1"),
            "{text}"
        );
        t.update(false, |p| {
            p.items_done = 5;
            p.state = WorkerState::Running;
        });
        let json = t.snapshot().to_annotation().unwrap();
        assert_eq!(
            json,
            r#"{"itemsDone":5,"itemsFailed":0,"itemsPerSecond":0.0,"state":"Running"}"#
        );
    }
}
