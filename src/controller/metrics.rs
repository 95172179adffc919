//! Prometheus metrics (OpenMetrics). Labels are kinds and outcomes, never
//! object names, to keep cardinality bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Kind reconciled, e.g. MinecraftServer.
    pub kind: String,
    /// `ok` or an error category.
    pub result: String,
}

/// Labels that only name a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind reconciled.
    pub kind: String,
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by kind and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration in seconds by kind.
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Reconciles running now, by kind: at `--concurrency` the workers are
    /// the limit, below it the operator waits for events (the cluster).
    pub reconciles_in_flight: Family<KindLabels, Gauge>,
    /// Always 1; carries the version.
    pub build_info: Family<Vec<(String, String)>, Gauge>,
    /// 1 while this process holds the leader Lease (or runs without election).
    pub leader: Gauge,
    /// Objects in the operator's caches by kind.
    pub managed_objects: Family<KindLabels, Gauge>,
    /// MinecraftServers by phase.
    pub servers_by_phase: Family<PhaseLabels, Gauge>,
    /// Players online per server, from Server List Ping.
    pub players_online: Family<ServerLabels, Gauge>,
    /// Bytes written by completed backups.
    pub backup_bytes: Counter,
    /// Duration of backups in seconds.
    pub backup_duration: Histogram,
    /// Failed backups.
    pub backup_failures: Counter,
    /// Servers put to sleep (`spec.sleep`).
    pub sleeps: Counter,
    /// Sleeping servers woken.
    pub wakes: Counter,
    /// From a wake to the server Running (pod start and server start).
    pub wake_duration: Histogram,
    /// A wake in parts: `operator` (the gateway's request to the
    /// StatefulSet scaled up), `pod_start` (to the server container
    /// started: scheduling, sandbox, init-containers) and `server_start`
    /// (to the server Running).
    pub wake_parts: Family<WakePartLabels, Histogram>,
}

/// Labels of the wake parts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakePartLabels {
    /// `operator`, `pod_start` or `server_start`.
    pub part: &'static str,
}

/// A running reconcile, counted in `reconciles_in_flight` while it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Labels of the phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Server phase.
    pub phase: String,
}

/// Labels naming one server (players gauge only: bounded by the number of servers).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// Namespace of the server.
    pub namespace: String,
    /// Name of the server.
    pub server: String,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("craftplane");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by kind and result", reconciles.clone());
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("reconcile_duration_seconds", "Reconcile duration by kind", reconcile_duration.clone());
        let reconciles_in_flight = Family::<KindLabels, Gauge>::default();
        registry.register("reconciles_in_flight", "Reconciles running now by kind", reconciles_in_flight.clone());
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register("build_info", "craftplane build information", build_info.clone());
        build_info.get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())]).set(1);
        let leader = Gauge::default();
        registry.register("leader", "1 while this process is the active leader", leader.clone());
        let managed_objects = Family::<KindLabels, Gauge>::default();
        registry.register("managed_objects", "Objects in the operator's caches by kind", managed_objects.clone());
        let servers_by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("servers", "MinecraftServers by phase", servers_by_phase.clone());
        let players_online = Family::<ServerLabels, Gauge>::default();
        registry.register("players_online", "Players online per server (Server List Ping)", players_online.clone());
        let backup_bytes = Counter::default();
        registry.register("backup_bytes", "Bytes written by completed backups", backup_bytes.clone());
        let backup_duration = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register("backup_duration_seconds", "Duration of backups", backup_duration.clone());
        let backup_failures = Counter::default();
        registry.register("backup_failures", "Failed backups", backup_failures.clone());
        let sleeps = Counter::default();
        registry.register("server_sleeps", "Servers put to sleep after their idle time", sleeps.clone());
        let wakes = Counter::default();
        registry.register("server_wakes", "Sleeping servers woken", wakes.clone());
        // 0.5 s to ~17 min.
        let wake_duration = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register(
            "server_wake_duration_seconds",
            "From a wake to the server Running (pod start and server start)",
            wake_duration.clone(),
        );
        // 10 ms to ~5.5 min.
        let wake_parts = Family::<WakePartLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 16))
        });
        registry.register(
            "server_wake_part_seconds",
            "A wake in parts: operator (request to StatefulSet scaled up), pod_start (to the server container started), server_start (to Running)",
            wake_parts.clone(),
        );
        // Without election the single process is the leader.
        leader.set(1);
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            reconciles_in_flight,
            build_info,
            leader,
            managed_objects,
            servers_by_phase,
            players_online,
            backup_bytes,
            backup_duration,
            backup_failures,
            sleeps,
            wakes,
            wake_duration,
            wake_parts,
        }
    }

    /// Counts a reconcile of `kind` as running until the guard is dropped.
    pub fn in_flight(&self, kind: &str) -> InFlight {
        let g = self.reconciles_in_flight.get_or_create(&KindLabels { kind: kind.into() }).clone();
        g.inc();
        InFlight(g)
    }

    /// Records one reconcile of `kind`: its duration and result (`ok` or the
    /// error category).
    pub fn observe_reconcile(&self, kind: &str, took: std::time::Duration, error: Option<&str>) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind: kind.into(), result: error.unwrap_or("ok").into() })
            .inc();
        self.reconcile_duration.get_or_create(&KindLabels { kind: kind.into() }).observe(took.as_secs_f64());
    }

    /// Recomputes the gauges from the caches.
    pub fn update_gauges(&self, ctx: &super::context::Context) {
        use kube::ResourceExt;
        let servers = ctx.servers.state();
        for (kind, n) in [
            ("MinecraftServer", servers.len()),
            ("Sku", ctx.skus.state().len()),
            ("Tenant", ctx.tenants.state().len()),
            ("PluginInstallation", ctx.plugins.state().len()),
        ] {
            self.managed_objects.get_or_create(&KindLabels { kind: kind.into() }).set(n as i64);
        }
        let mut by_phase = std::collections::BTreeMap::<String, i64>::new();
        for p in [
            "Pending",
            "Provisioning",
            "Starting",
            "Running",
            "Stopping",
            "Stopped",
            "Restoring",
            "Hibernated",
            "Failed",
        ] {
            by_phase.insert(p.into(), 0);
        }
        for s in &servers {
            let phase =
                s.status.as_ref().and_then(|st| st.phase).map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into());
            *by_phase.entry(phase).or_default() += 1;
        }
        for (phase, n) in by_phase {
            self.servers_by_phase.get_or_create(&PhaseLabels { phase }).set(n);
        }
        self.players_online.clear();
        for s in &servers {
            if let Some(players) = s.status.as_ref().and_then(|st| st.players.as_ref()) {
                let labels = ServerLabels { namespace: s.namespace().unwrap_or_default(), server: s.name_any() };
                self.players_online.get_or_create(&labels).set(i64::from(players.online));
            }
        }
    }

    /// The OpenMetrics text exposition.
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
