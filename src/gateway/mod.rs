//! `craftplane gateway`: the player edge. One address for every server,
//! routed by the hostname a Java Edition client sends in its handshake.
//!
//! The pure parts, without I/O, each tested on its own:
//! - [`protocol`]: framing, handshake, login start, legacy ping, the
//!   answers the gateway gives itself (status, disconnect);
//! - [`proxy`]: PROXY protocol v1/v2 from trusted load balancers, v2 to servers;
//! - [`limits`]: per-source rate limits, open connections per server and tenant;
//! - [`routes`]: hostname → server, from the hostnames the operator granted.
//!
//! The runtime: [`cache`] (watches → routes and ready addresses),
//! [`server`] (the listener), [`splice`] (the bytes both ways), [`metrics`] (Prometheus, probes).

pub mod cache;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod splice;
pub mod wake;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::Client;
use tracing::info;

use routes::ServerKey;

/// Flags of `craftplane gateway`.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Address players connect to.
    #[arg(long, default_value = "0.0.0.0:25565", env = "CRAFTPLANE_GATEWAY_LISTEN")]
    pub listen: SocketAddr,
    /// Threads accepting and splicing players' connections, each its own
    /// event loop and listening socket; a connection stays on one (0: one
    /// per CPU this process may use: its CPU limit, else the machine's).
    #[arg(long, default_value_t = 0, env = "CRAFTPLANE_GATEWAY_WORKERS", value_parser = clap::value_parser!(u16))]
    pub workers: u16,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "CRAFTPLANE_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// The operator's base domain (`--base-domain` there): a hostname two
    /// servers' statuses name goes to the one whose default name it is.
    #[arg(long, env = "CRAFTPLANE_BASE_DOMAIN", default_value = "", value_parser = crate::controller::parse_base_domain)]
    pub base_domain: String,
    /// CIDR blocks of load balancers whose PROXY protocol v1/v2 header is
    /// believed (comma-separated; empty: nobody's).
    #[arg(long, env = "CRAFTPLANE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<proxy::Cidr>,
    /// Milliseconds a client has to send its handshake (slowloris guard).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub handshake_timeout_ms: u64,
    /// Milliseconds to connect to a server.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub connect_timeout_ms: u64,
    /// Shown to clients asking for a hostname no server has (status MOTD,
    /// login disconnect reason).
    #[arg(
        long,
        env = "CRAFTPLANE_UNKNOWN_HOST_MESSAGE",
        default_value = "No server has this address. Check the address you typed."
    )]
    pub unknown_host_message: String,
    /// `namespace/name` of a server unknown hostnames go to instead.
    #[arg(long, env = "CRAFTPLANE_DEFAULT_SERVER", value_parser = parse_server)]
    pub default_server: Option<ServerKey>,
    /// Send a PROXY protocol v2 header to servers (only for servers that
    /// read it: it precedes the client's bytes).
    #[arg(long)]
    pub proxy_protocol_to_servers: bool,
    /// Connections each source IP (IPv6: its /64) may open at once before
    /// the rate applies.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,
    /// Then one connection per this many milliseconds per source.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub rate_interval_ms: u64,
    /// Source addresses tracked at most; a new source beyond is refused.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sources: u64,
    /// Open connections per server (0: no limit).
    #[arg(long, default_value_t = 1000)]
    pub max_connections_per_server: u32,
    /// Open connections per tenant, all its servers (0: no limit).
    #[arg(long, default_value_t = 5000)]
    pub max_connections_per_tenant: u32,
    /// On SIGTERM: stop accepting, report unready, and wait up to this many
    /// seconds for open connections to end (players finish their session
    /// while new ones go to the other replicas).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_seconds: u64,
    /// On SIGTERM, first keep accepting for this many seconds while
    /// reporting unready: the Service drops a terminating pod at once, but
    /// every node's proxy needs a moment to stop sending new connections to
    /// it (closing the listener at once refuses those players).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_delay_seconds: u64,
    /// Only MinecraftServers matching this label selector (sharding).
    #[arg(long, env = "CRAFTPLANE_GATEWAY_SERVER_SELECTOR")]
    pub server_selector: Option<String>,
    /// Namespace of the wake Leases this gateway writes when a player joins
    /// a sleeping server (the operator's; the chart sets it). Empty: joins
    /// do not wake servers.
    #[arg(long, env = "CRAFTPLANE_WAKE_NAMESPACE", default_value = "")]
    pub wake_namespace: String,
    /// This gateway's name in wake requests (the chart sets the pod's name).
    #[arg(long, env = "POD_NAME", default_value = "craftplane-gateway")]
    pub identity: String,
    /// MOTD of a sleeping server's status answer.
    #[arg(long, env = "CRAFTPLANE_ASLEEP_MESSAGE", default_value = "This server is asleep. Join to wake it up!")]
    pub asleep_message: String,
    /// MOTD while a woken server starts.
    #[arg(long, env = "CRAFTPLANE_WAKING_MESSAGE", default_value = "This server is starting, join in a moment.")]
    pub waking_message: String,
    /// Seconds a join of a sleeping server is held while it starts, before
    /// the player is told to join again (the Java client gives up after 30).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub wake_hold_seconds: u64,
    /// Joins that may wake a server, per source IP: this many at once...
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub wake_burst_per_source: u32,
    /// ...then one per this many seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wake_interval_seconds_per_source: u64,
    /// Joins that may wake servers, per tenant: this many at once...
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub wake_burst_per_tenant: u32,
    /// ...then one per this many seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wake_interval_seconds_per_tenant: u64,
}

fn parse_cidr(s: &str) -> Result<proxy::Cidr, String> {
    s.trim().parse()
}

fn parse_server(s: &str) -> Result<ServerKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ServerKey { namespace: ns.into(), name: name.into() })
        }
        _ => Err(format!("{s:?} is not namespace/name")),
    }
}

impl GatewayArgs {
    pub fn settings(&self) -> server::Settings {
        let limit = |n: u32| (n > 0).then_some(n);
        server::Settings {
            trusted_proxies: self.trusted_proxies.clone(),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            unknown_host_message: self.unknown_host_message.clone(),
            default_server: self.default_server.clone(),
            proxy_protocol_to_servers: self.proxy_protocol_to_servers,
            rate_interval: Duration::from_millis(self.rate_interval_ms),
            rate_burst: self.rate_burst,
            max_sources: usize::try_from(self.max_sources).unwrap_or(usize::MAX),
            max_per_server: limit(self.max_connections_per_server),
            max_per_tenant: limit(self.max_connections_per_tenant),
            asleep_message: self.asleep_message.clone(),
            waking_message: self.waking_message.clone(),
            wake_hold: Duration::from_secs(self.wake_hold_seconds),
            wake_source_interval: Duration::from_secs(self.wake_interval_seconds_per_source),
            wake_source_burst: self.wake_burst_per_source,
            wake_tenant_interval: Duration::from_secs(self.wake_interval_seconds_per_tenant),
            wake_tenant_burst: self.wake_burst_per_tenant,
        }
    }
}

/// Runs the gateway until SIGTERM/Ctrl-C.
pub async fn run(args: GatewayArgs) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration found (not in a cluster and no usable KUBECONFIG)")?;
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).with_context(|| format!("cannot build a client for {url}"))?;
    let cache = Arc::new(cache::Cache::default());
    let metrics = Arc::new(metrics::Metrics::new());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);

    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    info!(addr = %http.local_addr()?, "serving /healthz, /readyz and /metrics");
    let workers = match args.workers {
        0 => workers::default_count(),
        n => usize::from(n),
    };
    let players = workers::listen(args.listen, workers)?;
    let settings = args.settings();
    server::log_start(players[0].local_addr()?, workers, &settings);

    let watch_cfg = cache::WatchConfig {
        base_domain: Some(args.base_domain.clone()).filter(|d| !d.is_empty()),
        server_selector: args.server_selector.clone(),
    };
    let wakes = if args.wake_namespace.is_empty() {
        info!("no --wake-namespace: joins do not wake sleeping servers");
        None
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(wake::run(client.clone(), args.wake_namespace.clone(), args.identity.clone(), rx));
        Some(tx)
    };
    let gateway = server::Gateway::new(settings, cache.clone(), metrics.clone(), wakes, args.identity.clone());
    let g = gateway.clone();
    let open: metrics::OpenCount = Arc::new(move |server: &str| g.open_to(server));
    let http_task = tokio::spawn(metrics::serve(http, cache.clone(), metrics, open, stop.clone()));
    let watch_task = tokio::spawn(cache::run(client, watch_cfg, cache, stop.clone()));
    let pruner = tokio::spawn(gateway.clone().prune());
    let (stop_accepting_tx, stop_accepting) = tokio::sync::watch::channel(false);
    let threads = workers::start(&gateway, players, &stop_accepting, &stop)?;

    crate::controller::shutdown_signal().await;
    gateway.cache.set_draining();
    if args.shutdown_delay_seconds > 0 {
        info!(
            seconds = args.shutdown_delay_seconds,
            "stopping: unready, still accepting while the Service forgets this pod"
        );
        tokio::time::sleep(Duration::from_secs(args.shutdown_delay_seconds)).await;
    }
    info!(drain_seconds = args.drain_seconds, "stopping: no new connections, draining open ones");
    // The listening sockets close as the workers stop accepting; spliced
    // connections go on on their tasks until drained.
    let _ = stop_accepting_tx.send(true);
    let left = gateway.drain(Duration::from_secs(args.drain_seconds)).await;
    info!(left, "stopped");
    let _ = stop_tx.send(true);
    pruner.abort();
    let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    let _ = watch_task.await;
    let _ = http_task.await;
    Ok(())
}
