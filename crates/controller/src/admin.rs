//! The admin HTTP server: `/livez`, `/readyz`, `/metrics`.
//!
//! Served on its own port (`--admin-addr`) so probes and scrapes never compete with anything
//! else. `/readyz` turns 200 only once the controller's watch caches have synced (see
//! [`AdminState::set_ready`]); `/livez` is 200 as long as the process serves HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Shared state behind the admin routes.
#[derive(Debug, Default)]
pub struct AdminState {
    ready: AtomicBool,
    registry: Registry,
}

impl AdminState {
    /// Wraps the metrics registry; readiness starts false.
    #[must_use]
    pub fn new(registry: Registry) -> Self {
        Self {
            ready: AtomicBool::new(false),
            registry,
        }
    }

    /// Marks the process ready (caches synced) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The admin router (exposed for tests).
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {e}"),
        )
            .into_response(),
    }
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
///
/// # Errors
/// Fails when the server stops with an I/O error.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
