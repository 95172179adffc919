//! `craftplane controller`: the long-running operator process.
//!
//! This module holds the process: configuration, the API connection, the
//! health/metrics endpoint and shutdown. Reconcilers (one per kind) plug in
//! here.

pub mod backup;
pub mod command;
pub mod conditions;
pub mod context;
pub mod drift;
pub mod error;
pub mod http;
pub mod lean;
pub mod metrics;
pub mod ping;
pub mod plugin;
pub mod rbac;
pub mod secrets;
pub mod server;
pub mod sku;
pub mod tenant;
pub mod watches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api;

/// Flags of `craftplane controller`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerArgs {
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "CRAFTPLANE_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Timeout for the first contact with the API server, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub connect_timeout: u64,
    /// Reconciles running at once, per kind (most of a reconcile is waiting
    /// for the API server: 64 kept N=1000 within 1.4x the API server's own
    /// pace in the scale benchmark, 16 did not).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Only manage Skus and MinecraftServers matching this label selector
    /// (sharding: several operators, each with its own selector).
    #[arg(long, env = "CRAFTPLANE_WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,
    /// Seconds between Server List Pings of each running server; 0 disables pinging.
    #[arg(long, default_value_t = 30)]
    pub slp_interval: u64,
    /// Ping this host:port instead of each server's Service (for running the
    /// operator outside the cluster during development).
    #[arg(long)]
    pub slp_address: Option<String>,
    /// Milliseconds to wait for more events of an object before reconciling it.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=10000))]
    pub debounce_ms: u64,
    /// Namespace the operator runs in: tenant NetworkPolicies let it reach
    /// the game and RCON ports.
    #[arg(long, env = "POD_NAMESPACE", default_value = "craftplane-system")]
    pub operator_namespace: String,
    /// Run only while holding the leader Lease (for several replicas).
    #[arg(long, env = "CRAFTPLANE_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Name of the leader Lease (in the operator namespace).
    #[arg(long, default_value = "craftplane-leader")]
    pub lease_name: String,
    /// Identity in the leader Lease; default: POD_NAME or hostname plus a random suffix.
    #[arg(long)]
    pub identity: Option<String>,
    /// Seconds the leader Lease stays valid without renewal.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
    pub lease_duration: u64,
    /// Modrinth API base URL; empty disables Modrinth sources.
    #[arg(long, env = "CRAFTPLANE_MODRINTH_URL", default_value = crate::plugins::modrinth::DEFAULT_BASE_URL)]
    pub modrinth_url: String,
    /// Image of the fetch-plugins init-container in server pods (the
    /// operator's own image; the Helm chart sets it).
    #[arg(long, env = "CRAFTPLANE_HELPER_IMAGE", default_value = crate::resources::image::OPERATOR_IMAGE)]
    pub helper_image: String,
    /// YAML file with the backup stores (see docs/backups.md); without it
    /// BackupSnapshots fail with StoreNotConfigured.
    #[arg(long, env = "CRAFTPLANE_BACKUP_STORES")]
    pub backup_stores: Option<std::path::PathBuf>,
    /// Seconds between periodic re-checks of every object.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=86400))]
    pub resync_seconds: u64,
    /// Shortest time in seconds between two runs of a server's backup
    /// schedule: a schedule whose slots come closer is refused (condition
    /// BackupSchedule=False, reason ScheduleTooFrequent). 0 allows any.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=604800))]
    pub min_backup_interval_seconds: u64,
    /// Shortest time in seconds between two runs of a scheduled task
    /// (`spec.tasks`); closer schedules are refused (condition
    /// TaskSchedule=False). 0 allows any.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=604800))]
    pub min_task_interval_seconds: u64,
    /// Base domain of the default hostnames: every server gets
    /// `<server>.<namespace>.<base domain>`, routed by the gateway (point a
    /// wildcard DNS record `*.<base domain>` at it). Custom hostnames under
    /// it are refused. Empty: no default hostnames.
    #[arg(long, env = "CRAFTPLANE_BASE_DOMAIN", default_value = "", value_parser = parse_base_domain)]
    pub base_domain: String,
    /// The port players connect to on the gateway (shown in
    /// `status.address` when it is not 25565).
    #[arg(long, env = "CRAFTPLANE_GATEWAY_PORT", default_value_t = 25565, value_parser = clap::value_parser!(u16).range(1..))]
    pub gateway_port: u16,
    /// `host:port` of the gateway's HTTP port (the chart's headless
    /// Service): before a server sleeps, every address it resolves to is
    /// asked whether a player's connection to it is open. Empty: no gateway
    /// (only the players online count).
    #[arg(long, env = "CRAFTPLANE_GATEWAY_HTTP", default_value = "")]
    pub gateway_http: String,
}

/// A base domain: empty, or a DNS name with room for
/// `<server>.<namespace>.` in front (at most 253 - 117 characters).
pub(crate) fn parse_base_domain(s: &str) -> std::result::Result<String, String> {
    let d = crate::resources::hostname::normalize(s.trim());
    if d.is_empty() {
        return Ok(d);
    }
    if !crate::resources::hostname::valid_dns_name(&d) {
        return Err(format!("{s:?} is not a DNS name (labels of letters, digits and '-', at most 63 characters each)"));
    }
    if d.len() > 253 - 117 {
        return Err(format!(
            "{s:?} is too long: {} characters, at most {} leave room for <server>.<namespace>. in front",
            d.len(),
            253 - 117
        ));
    }
    Ok(d)
}

/// Shared process health, read by /readyz.
#[derive(Debug, Default)]
pub struct Health {
    ready: std::sync::atomic::AtomicBool,
    reason: std::sync::Mutex<String>,
    /// Last tick of the housekeeping loop (liveness).
    heartbeat: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Health {
    /// Marks the process ready or not, with a reason shown by /readyz.
    pub fn set(&self, ready: bool, reason: impl Into<String>) {
        self.ready.store(ready, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.into();
        }
    }

    /// Records that the process is alive and making progress.
    pub fn beat(&self) {
        if let Ok(mut h) = self.heartbeat.lock() {
            *h = Some(std::time::Instant::now());
        }
    }

    /// Liveness: false when the housekeeping loop has not ticked for `max`.
    pub fn alive(&self, max: Duration) -> bool {
        self.heartbeat.lock().ok().and_then(|h| *h).is_none_or(|t| t.elapsed() < max)
    }

    /// Whether the process is ready, and why (not).
    pub fn get(&self) -> (bool, String) {
        let reason = self.reason.lock().map(|r| r.clone()).unwrap_or_default();
        (self.ready.load(std::sync::atomic::Ordering::SeqCst), reason)
    }
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: ControllerArgs) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration found (not in a cluster and no usable KUBECONFIG)")?;
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).with_context(|| format!("cannot build a client for {url}"))?;
    let version = tokio::time::timeout(Duration::from_secs(args.connect_timeout), client.apiserver_version())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot reach the Kubernetes API server at {url}: no answer within {}s",
                args.connect_timeout
            )
        })?
        .with_context(|| format!("cannot reach the Kubernetes API server at {url}"))?;
    info!(server = %url, version = %version.git_version, "connected to the API server");

    let health = Arc::new(Health::default());
    health.set(false, "waiting for craftplane CRDs to be Established");
    let metrics = Arc::new(metrics::Metrics::new());

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, health.clone(), metrics.clone(), stop_rx.clone()));
    let mut operator = tokio::spawn(run_controllers(client.clone(), args, health.clone(), metrics, stop_rx.clone()));

    tokio::select! {
        _ = shutdown_signal() => {}
        r = &mut operator => {
            // The controllers ended on their own: leadership lost or a fatal error.
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("controller task failed: {e}")),
            };
        }
    }
    info!("shutdown signal received; stopping");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(20), operator).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %format!("{e:#}"), "controllers ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "controller task failed"),
        Err(_) => warn!("controllers did not stop within 20s"),
    }
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "http server ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "http server task failed"),
        Err(_) => warn!("http server did not stop within 10s"),
    }
    info!("stopped");
    Ok(())
}

/// Waits for the CRDs, then runs every reconciler until `stop`.
async fn run_controllers(
    client: Client,
    args: ControllerArgs,
    health: Arc<Health>,
    metrics: Arc<metrics::Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    use kube::runtime::events::Reporter;
    use kube::runtime::reflector::ObjectRef;

    use crate::api::{BackupSnapshot, MinecraftServer, PluginInstallation, Sku, Tenant};

    // Controllers need their kinds: wait until every CRD is Established.
    loop {
        let missing = missing_crds(&client).await;
        if missing.is_empty() {
            break;
        }
        health.set(false, format!("CRDs not Established: {}", missing.join(", ")));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    info!("all craftplane CRDs are Established");

    // Leader election: wait for the Lease before touching anything.
    let mut leadership = None;
    if args.leader_elect {
        match lead(&client, &args, &health, &metrics, &mut stop).await? {
            Some(l) => leadership = Some(l),
            None => return Ok(()),
        }
    }
    info!("starting controllers");
    health.set(false, "starting controllers");

    let w = watches::Watches::new(
        client.clone(),
        args.watch_label_selector.as_deref(),
        args.concurrency,
        Duration::from_millis(args.debounce_ms),
        stop.clone(),
    );
    // One cache per kind, shared by every reconciler (the SKU cache is the
    // SKU controller's and read by the others too); the stream of each is
    // its controller's own trigger.
    let (sku_store, sku_events) = watches::primary::<Sku>(&client, &w.selected, "Sku");
    let (tenant_store, tenant_events) = watches::primary::<Tenant>(&client, &w.selected, "Tenant");
    let (server_store, server_events) = watches::primary::<MinecraftServer>(&client, &w.selected, "MinecraftServer");
    let (plugin_store, plugin_events) =
        watches::primary::<PluginInstallation>(&client, &w.selected, "PluginInstallation");
    let (snapshot_store, snapshot_events) = watches::primary::<BackupSnapshot>(&client, &w.selected, "BackupSnapshot");
    let (command_store, command_events) =
        watches::primary::<crate::api::ConsoleCommand>(&client, &w.selected, "ConsoleCommand");
    let (child_stores, child_events) = context::Children::watch(&w);
    // The gateway's wake requests: Leases in the operator's namespace.
    let (wake_store, wake_events) = watches::cached(
        kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &args.operator_namespace),
        w.all.clone().labels(crate::api::sleep::WAKE_LEASE_LABEL),
        "Lease",
        |_| {},
        false,
    );
    let stores = match &args.backup_stores {
        Some(p) => Some(crate::backup::stores::Stores::load(p).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    let modrinth = if args.modrinth_url.is_empty() {
        None
    } else {
        Some(
            crate::plugins::modrinth::Client::new(&args.modrinth_url, Duration::from_secs(20))
                .map_err(|e| anyhow::anyhow!(e))?,
        )
    };
    let reporter = Reporter {
        controller: "craftplane".into(),
        instance: std::env::var("POD_NAME").ok().or_else(|| std::env::var("HOSTNAME").ok()),
    };
    let ctx = Arc::new(context::Context::new(
        client.clone(),
        metrics.clone(),
        reporter,
        sku_store.clone(),
        server_store.clone(),
        tenant_store,
        plugin_store,
        snapshot_store,
        child_stores,
        wake_store,
        context::Settings {
            slp_interval: (args.slp_interval > 0).then(|| Duration::from_secs(args.slp_interval)),
            slp_address: args.slp_address.clone(),
            resync: Duration::from_secs(args.resync_seconds),
            operator_namespace: args.operator_namespace.clone(),
            helper_image: args.helper_image.clone(),
            min_backup_interval: Duration::from_secs(args.min_backup_interval_seconds),
            min_task_interval: Duration::from_secs(args.min_task_interval_seconds),
            base_domain: Some(args.base_domain.clone()).filter(|d| !d.is_empty()),
            gateway_port: args.gateway_port,
            gateway_http: Some(args.gateway_http.clone()).filter(|g| !g.is_empty()),
        },
        modrinth,
        stores,
    ));

    // The pinger asks for a server's reconcile when its ping result changes.
    let (ping_tx, ping_rx) = tokio::sync::mpsc::channel::<ObjectRef<MinecraftServer>>(256);
    let pings = futures::stream::unfold(ping_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });

    let ready_health = health.clone();
    let (sku_ready, server_ready) = (sku_store.clone(), server_store.clone());
    let readiness = async move {
        // Polled, not awaited: a task parked in wait_until_ready() was seen
        // never to wake once it ran on its own task.
        while !context::store_ready(&sku_ready) || !context::store_ready(&server_ready) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ready_health.set(true, "ok");
        info!("caches synced; ready");
    };
    let pinger = async {
        match ctx.settings.slp_interval {
            Some(interval) => ping::run(ctx.clone(), interval, ping_tx).await,
            None => {
                drop(ping_tx);
                futures::future::pending::<()>().await
            }
        }
    };
    let lost = async {
        match leadership.as_mut() {
            Some((rx, _)) => loop {
                if rx.changed().await.is_err() || !*rx.borrow_and_update() {
                    return;
                }
            },
            None => futures::future::pending::<()>().await,
        }
    };
    let housekeeping = housekeeping(ctx.clone(), health.clone());
    // Each controller on its own task: one busy or stuck controller cannot
    // starve the others (and they run on every worker thread). Aborted when
    // this function returns (leadership lost, shutdown).
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    let mut tasks = AbortOnDrop(vec![
        tokio::spawn(server::controller(&w, ctx.clone(), server_events, child_events, wake_events, pings)),
        tokio::spawn(sku::controller(&w, ctx.clone(), sku_events)),
        tokio::spawn(tenant::controller(&w, ctx.clone(), tenant_events)),
        tokio::spawn(plugin::controller(&w, ctx.clone(), plugin_events)),
        tokio::spawn(backup::controller(&w, ctx.clone(), snapshot_events)),
        tokio::spawn(command::controller(&w, ctx.clone(), command_store, command_events)),
        tokio::spawn(readiness),
    ]);
    let controllers = async {
        for t in tasks.0.iter_mut() {
            let _ = t.await;
        }
    };
    let result = tokio::select! {
        _ = controllers => Ok(()),
        _ = pinger => Ok(()),
        _ = housekeeping => Ok(()),
        _ = lost => {
            // Stop reconciling at once: dropping the controllers here cancels them.
            metrics.leader.set(0);
            Err(anyhow::anyhow!("lost the leader Lease; exiting so a new leader can take over"))
        }
    };
    health.set(false, "stopping");
    if let Some((rx, task)) = leadership {
        // Closing the channel makes the manager release the Lease.
        drop(rx);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result
}

/// The leader Lease's state channel and the task that keeps it.
type Leadership = (
    watch::Receiver<bool>,
    tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
);

/// Waits until this process holds the leader Lease; `None` when asked to stop first.
async fn lead(
    client: &Client,
    args: &ControllerArgs,
    health: &Health,
    metrics: &metrics::Metrics,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Leadership>> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let base =
            std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "craftplane".into());
        format!("{base}-{}", crate::resources::secret::generate_password().get(..8).unwrap_or("x").to_lowercase())
    });
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.operator_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration)
        .with_grace((args.lease_duration / 3).max(2))
        .build()
        .await
        .context("cannot set up the leader Lease")?;
    metrics.leader.set(0);
    let (mut rx, task) = manager.watch().await;
    health.set(true, "standby: waiting for the leader Lease");
    info!(identity = %identity, lease = %args.lease_name, "waiting for leadership");
    loop {
        if *rx.borrow_and_update() {
            break;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { anyhow::bail!("the leader election task ended"); },
            _ = stop.changed() => return Ok(None),
        }
    }
    info!(identity = %identity, "became the leader");
    metrics.leader.set(1);
    Ok(Some((rx, task)))
}

/// Every 5 s: liveness heartbeat and the gauges derived from the caches.
async fn housekeeping(ctx: Arc<context::Context>, health: Arc<Health>) {
    loop {
        health.beat();
        ctx.metrics.update_gauges(&ctx);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// CRDs of craftplane that are missing or not yet Established.
async fn missing_crds(client: &Client) -> Vec<String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for name in crd_names() {
        let established = match crds.get_opt(&name).await {
            Ok(Some(crd)) => crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            Ok(None) => false,
            Err(e) => {
                warn!(error = %e, crd = %name, "cannot read CRD");
                false
            }
        };
        if !established {
            missing.push(name);
        }
    }
    missing
}

/// Names of the CRDs this operator needs.
pub fn crd_names() -> Vec<String> {
    api::crds().into_iter().filter_map(|c| c.metadata.name).collect()
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
