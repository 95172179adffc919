//! `craftplane controller`: the long-running operator process.
//!
//! This module holds the process: configuration, the API connection, the
//! health/metrics endpoint and shutdown. Reconcilers (one per kind) plug in
//! here.

pub mod http;
pub mod metrics;

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
}

/// Shared process health, read by /readyz.
#[derive(Debug, Default)]
pub struct Health {
    ready: std::sync::atomic::AtomicBool,
    reason: std::sync::Mutex<String>,
}

impl Health {
    /// Marks the process ready or not, with a reason shown by /readyz.
    pub fn set(&self, ready: bool, reason: impl Into<String>) {
        self.ready.store(ready, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.into();
        }
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
    let registry = Arc::new(metrics::Metrics::new());

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, health.clone(), registry.clone(), stop_rx.clone()));
    let crd_check = tokio::spawn(watch_crds(client.clone(), health.clone(), stop_rx.clone()));

    shutdown_signal().await;
    info!("shutdown signal received; stopping");
    let _ = stop_tx.send(true);
    crd_check.abort();
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "http server ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "http server task failed"),
        Err(_) => warn!("http server did not stop within 10s"),
    }
    info!("stopped");
    Ok(())
}

/// Names of the CRDs this operator needs.
pub fn crd_names() -> Vec<String> {
    api::crds().into_iter().filter_map(|c| c.metadata.name).collect()
}

/// Keeps /readyz false until every craftplane CRD is Established.
async fn watch_crds(client: Client, health: Arc<Health>, mut stop: watch::Receiver<bool>) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    loop {
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
        if missing.is_empty() {
            if !health.get().0 {
                info!("all craftplane CRDs are Established; ready");
            }
            health.set(true, "ok");
        } else {
            health.set(false, format!("CRDs not Established: {}", missing.join(", ")));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(if missing.is_empty() { 30 } else { 2 })) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
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
