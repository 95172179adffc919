//! The gateway's Prometheus metrics and its /healthz, /readyz, /metrics.
//! Per-server series are labelled by server and tenant (what an admin
//! bills and debugs by); refusals only by reason.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::cache::Cache;

/// A connection's server and tenant (empty: none).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// `namespace/name`.
    pub server: String,
    pub tenant: String,
}

/// Bytes one way.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// Client to server.
    Upstream,
    /// Server to client.
    Downstream,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub server: String,
    pub tenant: String,
    pub direction: Direction,
}

/// Why a connection was not spliced to a server.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Refusal {
    /// The source's connection rate is over its limit.
    RateLimited,
    /// The server has as many connections as it may.
    ServerLimit,
    /// The tenant has as many connections as it may.
    TenantLimit,
    /// No server has this hostname.
    UnknownHost,
    /// The server has no ready endpoint (stopped, starting).
    NotRunning,
    /// The server's address refused or did not answer.
    Unreachable,
    /// The handshake did not arrive in time.
    Timeout,
    /// Bytes that are no handshake (or a PROXY header from an untrusted peer).
    Malformed,
    /// A pre-1.7 ping answered by the gateway itself.
    Legacy,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: Refusal,
}

/// All metrics of the gateway process.
pub struct Metrics {
    registry: Registry,
    pub connections_open: Family<ServerLabels, Gauge>,
    pub connections: Family<ServerLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub handshake_seconds: Histogram,
    pub routes: Gauge,
    pub backends: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("craftplane_gateway");
        let m = Metrics {
            connections_open: Family::default(),
            connections: Family::default(),
            bytes: Family::default(),
            refusals: Family::default(),
            // 100 µs to ~3 s.
            handshake_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            routes: Gauge::default(),
            backends: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("connections_open", "Connections spliced to a server now", m.connections_open.clone());
        registry.register("connections", "Connections spliced to a server", m.connections.clone());
        registry.register("bytes", "Bytes forwarded, by direction", m.bytes.clone());
        registry.register("refusals", "Connections not spliced to a server, by reason", m.refusals.clone());
        registry.register(
            "handshake_duration_seconds",
            "From accept to the handshake read and routed",
            m.handshake_seconds.clone(),
        );
        registry.register("routes", "Hostnames in the route table", m.routes.clone());
        registry.register("backends", "Servers with a ready address", m.backends.clone());
        Metrics { registry, ..m }
    }

    pub fn refuse(&self, reason: Refusal) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct AppState {
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
}

/// Serves /healthz, /readyz (fails until the route cache synced) and
/// /metrics until `stop`.
pub async fn serve(
    listener: TcpListener,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { cache, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.cache.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: stopping\n")
    } else if s.cache.synced() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: route cache not synced yet\n")
    }
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    let snap = s.cache.get();
    s.metrics.routes.set(snap.routes.len() as i64);
    s.metrics.backends.set(snap.backends.len() as i64);
    match s.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}
