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
    /// The server sleeps: a status answered by the gateway, or a join that
    /// may not wake it (`wakeOnJoin` false).
    Asleep,
    /// A join of a sleeping server by a player its whitelist refuses.
    NotWhitelisted,
    /// A join that would wake a server, over the source's or tenant's wake rate.
    WakeLimited,
    /// The server did not become ready while the join was held.
    WakeTimeout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: Refusal,
}

/// One of the gateway's worker threads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
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
    /// Wake requests sent to the operator.
    pub wakes: Counter,
    /// From a join of a sleeping server to its spliced connection.
    pub wake_seconds: Histogram,
    /// Connections open on each worker thread (spliced, held or still in
    /// their handshake).
    pub worker_connections: Family<WorkerLabels, Gauge>,
    /// Connections a worker accepted and passed to a less busy one.
    pub handoffs: Counter,
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
            wakes: Counter::default(),
            // 0.25 s to ~8.5 min.
            wake_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            worker_connections: Family::default(),
            handoffs: Counter::default(),
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
        registry.register("wakes", "Wake requests for sleeping servers sent to the operator", m.wakes.clone());
        registry.register(
            "wake_duration_seconds",
            "From a join of a sleeping server to the player's connection reaching it",
            m.wake_seconds.clone(),
        );
        registry.register(
            "worker_connections",
            "Connections open on each worker thread of this gateway",
            m.worker_connections.clone(),
        );
        registry.register(
            "handoffs",
            "Connections a worker thread accepted and passed to a less busy one",
            m.handoffs.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Worker `i`'s open-connections gauge (a handle on the series).
    pub fn worker(&self, i: usize) -> Gauge {
        self.worker_connections.get_or_create(&WorkerLabels { worker: i.to_string() }).clone()
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

/// Players' connections open to a server on this replica (the operator
/// asks before it puts a server to sleep).
pub type OpenCount = Arc<dyn Fn(&str) -> u32 + Send + Sync>;

#[derive(Clone)]
struct AppState {
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    open: OpenCount,
}

/// Serves /healthz, /readyz (fails until the route cache synced),
/// /metrics and /connections until `stop`.
pub async fn serve(
    listener: TcpListener,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    open: OpenCount,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route("/connections", get(connections))
        .with_state(AppState { cache, metrics, open });
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

/// `GET /connections?server=<namespace>/<name>`: `{"open": N}`, the
/// players' connections to it open on this replica (held joins included).
async fn connections(
    State(s): State<AppState>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> impl IntoResponse {
    let server = q.as_deref().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("server=")).unwrap_or("");
    if server.split('/').count() != 2 {
        return (StatusCode::BAD_REQUEST, "server=<namespace>/<name> required\n".to_string()).into_response();
    }
    let open = (s.open)(server);
    ([(header::CONTENT_TYPE, "application/json")], format!("{{\"open\":{open}}}\n")).into_response()
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
