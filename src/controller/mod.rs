//! `craftplane controller`: the long-running operator process.
//!
//! This module holds the process: configuration, the API connection, the
//! health/metrics endpoint and shutdown. Reconcilers (one per kind) plug in
//! here.

pub mod backup;
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
pub mod server;
pub mod server_backup;
pub mod server_status;
pub mod sku;
pub mod tenant;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, ResourceExt};
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
    use futures::StreamExt;
    use kube::runtime::controller::{Config as CtrlConfig, Controller};
    use kube::runtime::events::Reporter;
    use kube::runtime::reflector::{self, ObjectRef};
    use kube::runtime::{WatchStreamExt, watcher};

    use crate::api::{BackupSnapshot, MinecraftServer, PluginInstallation, Sku, Tenant};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};

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
        let identity = args.identity.clone().unwrap_or_else(|| {
            let base = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "craftplane".into());
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
                _ = stop.changed() => return Ok(()),
            }
        }
        info!(identity = %identity, "became the leader");
        metrics.leader.set(1);
        leadership = Some((rx, task));
    }
    info!("starting controllers");
    health.set(false, "starting controllers");

    let base = || watcher::Config::default().page_size(50);
    let mut wc = base();
    if let Some(sel) = &args.watch_label_selector {
        wc = wc.labels(sel);
    }
    let children = base().labels("app.kubernetes.io/managed-by=craftplane");
    let pods = base().labels("app.kubernetes.io/managed-by=craftplane,app.kubernetes.io/component=server");

    // Every watch stream retries with backoff and never hands an error to a
    // controller: watcher errors (e.g. while the API server restarts) are
    // logged here. (An error reaching a controller's trigger queue was the
    // suspect when controllers stopped reconciling after an API server
    // restart.)
    fn no_errors<K: kube::Resource>(
        kind: &'static str,
    ) -> impl FnMut(Result<K, watcher::Error>) -> futures::future::Ready<Option<Result<K, watcher::Error>>> {
        move |r| {
            futures::future::ready(match r {
                Ok(o) => Some(Ok(o)),
                Err(e) => {
                    warn!(kind, error = %e, "watch failed; retrying");
                    None
                }
            })
        }
    }
    /// A trigger stream (no cache) for `Controller::watches_stream`/`owns_stream`.
    fn trigger<K>(
        api: Api<K>,
        cfg: watcher::Config,
        kind: &'static str,
    ) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: kube::Resource + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    {
        watcher(api, cfg).default_backoff().touched_objects().filter_map(no_errors(kind))
    }
    /// A cache (managedFields and what `slim` drops left out) and the
    /// stream of the objects it sees: applied objects for a controller's
    /// own kind (`deletes: false`), deletions too for children (an owner
    /// must notice a deleted child).
    fn cached<K>(
        api: Api<K>,
        cfg: watcher::Config,
        kind: &'static str,
        slim: fn(&mut K),
        deletes: bool,
    ) -> (reflector::Store<K>, futures::stream::BoxStream<'static, Result<K, watcher::Error>>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + Send
            + Sync
            + serde::de::DeserializeOwned
            + 'static,
    {
        let (store, writer) = reflector::store::<K>();
        let events = watcher(api, cfg)
            .default_backoff()
            .modify(move |o: &mut K| {
                // `slim` keeps the operator's own field sets (drift detection).
                slim(o);
                o.meta_mut().managed_fields = None;
            })
            .reflect(writer);
        let stream = if deletes {
            events.touched_objects().filter_map(no_errors(kind)).boxed()
        } else {
            events.applied_objects().filter_map(no_errors(kind)).boxed()
        };
        (store, stream)
    }
    /// The cache and trigger stream of a controller's own kind.
    fn primary<K>(
        api: Api<K>,
        cfg: watcher::Config,
        kind: &'static str,
    ) -> (reflector::Store<K>, futures::stream::BoxStream<'static, Result<K, watcher::Error>>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + Send
            + Sync
            + serde::de::DeserializeOwned
            + 'static,
    {
        cached(api, cfg, kind, |_| {}, false)
    }

    let sku_api: Api<Sku> = Api::all(client.clone());
    let server_api: Api<MinecraftServer> = Api::all(client.clone());
    // One SKU cache: the SKU controller's, read by the other reconcilers too.
    let (sku_store, sku_stream) = primary(sku_api.clone(), wc.clone(), "Sku");

    let tenant_api: Api<Tenant> = Api::all(client.clone());
    let (tenant_store, tenant_stream) = primary(tenant_api.clone(), wc.clone(), "Tenant");
    let tenant_ctrl = Controller::for_stream(tenant_stream, tenant_store.clone());
    let (server_store, server_stream) = primary(server_api.clone(), wc.clone(), "MinecraftServer");
    let server_ctrl = Controller::for_stream(server_stream, server_store.clone());
    let plugin_api: Api<PluginInstallation> = Api::all(client.clone());
    let (plugin_store, plugin_stream) = primary(plugin_api.clone(), wc.clone(), "PluginInstallation");
    let plugin_ctrl = Controller::for_stream(plugin_stream, plugin_store.clone());
    let (snapshot_store, snapshot_stream) =
        primary(Api::<BackupSnapshot>::all(client.clone()), wc.clone(), "BackupSnapshot");
    let backup_controller = Controller::for_stream(snapshot_stream, snapshot_store.clone());
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
    // Caches of the servers' children; the controller is triggered by the
    // same streams that fill them.
    let (sts_store, sts_stream) = cached(
        Api::<lean::StatefulSet>::all(client.clone()),
        children.clone(),
        "StatefulSet",
        lean::StatefulSet::slim,
        true,
    );
    let (pvc_store, pvc_stream) = cached(
        Api::<lean::PersistentVolumeClaim>::all(client.clone()),
        children.clone(),
        "PersistentVolumeClaim",
        lean::PersistentVolumeClaim::slim,
        true,
    );
    let (svc_store, svc_stream) =
        cached(Api::<lean::Service>::all(client.clone()), children.clone(), "Service", lean::Service::slim, true);
    let (cm_store, cm_stream) =
        cached(Api::<lean::ConfigMap>::all(client.clone()), children.clone(), "ConfigMap", lean::ConfigMap::slim, true);
    let (secret_store, secret_stream) =
        cached(Api::<lean::Secret>::all(client.clone()), children.clone(), "Secret", lean::Secret::slim, true);
    let (pod_store, pod_stream) =
        cached(Api::<lean::Pod>::all(client.clone()), pods.clone(), "Pod", lean::Pod::slim, true);
    let child_stores = context::Children {
        statefulsets: sts_store,
        pvcs: pvc_store,
        services: svc_store,
        config_maps: cm_store,
        secrets: secret_store,
        pods: pod_store,
    };

    let ctx = Arc::new(context::Context::new(
        client.clone(),
        metrics.clone(),
        reporter,
        sku_store.clone(),
        server_store.clone(),
        tenant_store.clone(),
        plugin_store.clone(),
        snapshot_store.clone(),
        child_stores,
        context::Settings {
            slp_interval: (args.slp_interval > 0).then(|| Duration::from_secs(args.slp_interval)),
            slp_address: args.slp_address.clone(),
            resync: Duration::from_secs(args.resync_seconds),
            operator_namespace: args.operator_namespace.clone(),
            helper_image: args.helper_image.clone(),
        },
        modrinth,
        stores,
    ));

    let (ping_tx, ping_rx) = tokio::sync::mpsc::channel::<ObjectRef<MinecraftServer>>(256);
    let ping_stream = futures::stream::unfold(ping_rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let stop_fut = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Debounce: a burst of child events (a pod becoming Ready updates the
    // pod and the StatefulSet) becomes one reconcile and one status write.
    let cfg = CtrlConfig::default().concurrency(args.concurrency).debounce(Duration::from_millis(args.debounce_ms));

    let servers_for_skus = server_store.clone();
    let server_ctrl = server_ctrl
        .owns_stream(sts_stream)
        .owns_stream(pvc_stream)
        .owns_stream(svc_stream)
        .owns_stream(cm_stream)
        .owns_stream(secret_stream)
        .watches_stream(pod_stream, |pod| Some(ObjectRef::new(pod.server()?).within(&pod.namespace()?)))
        .watches_stream(trigger(sku_api.clone(), wc.clone(), "Sku"), move |sku| {
            let name = sku.name_any();
            servers_for_skus
                .state()
                .into_iter()
                .filter(|s| s.spec.sku == name)
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(trigger(plugin_api.clone(), wc.clone(), "PluginInstallation"), |p| {
            Some(ObjectRef::new(&p.spec.server).within(&p.namespace()?))
        })
        .watches_stream(trigger(Api::<BackupSnapshot>::all(client.clone()), wc.clone(), "BackupSnapshot"), |b| {
            Some(ObjectRef::new(&b.spec.server).within(&b.namespace()?))
        })
        .reconcile_on(ping_stream)
        .with_config(cfg.clone())
        .graceful_shutdown_on(stop_fut(stop.clone()))
        .run(
            |obj, ctx: Arc<context::Context>| timed("MinecraftServer", ctx.clone(), server::reconcile(obj, ctx)),
            server::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let sku_ctrl = Controller::for_stream(sku_stream, sku_store.clone())
        .watches_stream(trigger(server_api.clone(), wc.clone(), "MinecraftServer"), |s| {
            Some(ObjectRef::new(&s.spec.sku))
        })
        .with_config(cfg)
        .graceful_shutdown_on(stop_fut(stop.clone()))
        .run(
            |obj, ctx: Arc<context::Context>| timed("Sku", ctx.clone(), sku::reconcile(obj, ctx)),
            sku::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    // Plugins: re-evaluated when their server changes (type, version,
    // phase) and when another plugin of the same server changes (a
    // dependency it provides).
    fn plugins_of(
        store: &reflector::Store<PluginInstallation>,
        ns: Option<String>,
        server: &str,
    ) -> Vec<ObjectRef<PluginInstallation>> {
        store
            .state()
            .into_iter()
            .filter(|p| p.namespace() == ns && p.spec.server == server)
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }
    // ...and when a ConfigMap their files come from changes (`configFiles`,
    // or the operator's own for inline `files`): metadata only, every
    // namespace (tenants' ConfigMaps carry no label of ours).
    fn plugins_reading(
        store: &reflector::Store<PluginInstallation>,
        ns: Option<String>,
        config_map: &str,
    ) -> Vec<ObjectRef<PluginInstallation>> {
        store
            .state()
            .into_iter()
            .filter(|p| p.namespace() == ns)
            .filter(|p| {
                p.spec.config_files.as_ref().is_some_and(|c| c.name == config_map)
                    || (!p.spec.files.is_empty()
                        && crate::resources::config_map::plugin_files_name(&p.name_any()) == config_map)
            })
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }
    let plugins_c = plugin_store.clone();
    let config_map_meta =
        trigger(Api::<kube::core::PartialObjectMeta<ConfigMap>>::all(client.clone()), base(), "ConfigMap");
    let (plugins_a, plugins_b) = (plugin_store.clone(), plugin_store.clone());
    let plugin_ctrl = plugin_ctrl
        .watches_stream(config_map_meta, move |cm| plugins_reading(&plugins_c, cm.namespace(), &cm.name_any()))
        .watches_stream(trigger(server_api.clone(), wc.clone(), "MinecraftServer"), move |s| {
            plugins_of(&plugins_a, s.namespace(), &s.name_any())
        })
        .watches_stream(trigger(plugin_api, wc.clone(), "PluginInstallation"), move |p| {
            let me = p.name_any();
            plugins_of(&plugins_b, p.namespace(), &p.spec.server)
                .into_iter()
                .filter(|r| r.name != me)
                .collect::<Vec<_>>()
        })
        .with_config(CtrlConfig::default().concurrency(args.concurrency))
        .graceful_shutdown_on(stop_fut(stop.clone()))
        .run(
            |obj, ctx: Arc<context::Context>| timed("PluginInstallation", ctx.clone(), plugin::reconcile(obj, ctx)),
            plugin::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    // Backups: one Job each.
    let backup_ctrl = backup_controller
        .owns_stream(trigger(Api::<Job>::all(client.clone()), children.clone(), "Job"))
        .with_config(CtrlConfig::default().concurrency(args.concurrency))
        .graceful_shutdown_on(stop_fut(stop.clone()))
        .run(
            |obj, ctx: Arc<context::Context>| timed("BackupSnapshot", ctx.clone(), backup::reconcile(obj, ctx)),
            backup::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    // Tenants: their objects carry the tenant label; SKU and server changes
    // change the effective SKUs and the usage.
    fn by_tenant_label<K: kube::Resource>(o: &K) -> Option<ObjectRef<Tenant>> {
        Some(ObjectRef::new(o.meta().labels.as_ref()?.get(crate::api::tenant::TENANT_LABEL)?))
    }
    let tenant_objects = base().labels(crate::api::tenant::TENANT_LABEL);
    let tenants_for_skus = tenant_store.clone();
    let tenants_for_servers = tenant_store.clone();
    let tenants_for_roles = tenant_store.clone();
    let tenant_ctrl = tenant_ctrl
        .watches_stream(trigger(Api::<Namespace>::all(client.clone()), tenant_objects.clone(), "Namespace"), move |o| {
            by_tenant_label(&o)
        })
        .watches_stream(
            trigger(Api::<RoleBinding>::all(client.clone()), tenant_objects.clone(), "RoleBinding"),
            move |o| by_tenant_label(&o),
        )
        .watches_stream(
            trigger(Api::<NetworkPolicy>::all(client.clone()), tenant_objects.clone(), "NetworkPolicy"),
            move |o| by_tenant_label(&o),
        )
        .watches_stream(
            trigger(Api::<ResourceQuota>::all(client.clone()), tenant_objects.clone(), "ResourceQuota"),
            move |o| by_tenant_label(&o),
        )
        .watches_stream(
            trigger(Api::<LimitRange>::all(client.clone()), tenant_objects.clone(), "LimitRange"),
            move |o| by_tenant_label(&o),
        )
        .watches_stream(trigger(Api::<ConfigMap>::all(client.clone()), tenant_objects.clone(), "ConfigMap"), move |o| {
            by_tenant_label(&o)
        })
        .watches_stream(
            trigger(Api::<ClusterRoleBinding>::all(client.clone()), tenant_objects.clone(), "ClusterRoleBinding"),
            move |o| by_tenant_label(&o),
        )
        // Per-tenant ClusterRoles, and the owners' ClusterRole all tenants
        // bind (no tenant label).
        .watches_stream(trigger(Api::<ClusterRole>::all(client.clone()), children.clone(), "ClusterRole"), move |o| {
            match by_tenant_label(&o) {
                Some(t) => vec![t],
                None if o.name_any() == crate::resources::tenant::OWNER_CLUSTER_ROLE => {
                    tenants_for_roles.state().into_iter().map(|t| ObjectRef::from_obj(t.as_ref())).collect()
                }
                None => vec![],
            }
        })
        .watches_stream(trigger(Api::<Sku>::all(client.clone()), wc.clone(), "Sku"), move |_| {
            tenants_for_skus.state().into_iter().map(|t| ObjectRef::from_obj(t.as_ref())).collect::<Vec<_>>()
        })
        .watches_stream(trigger(Api::<MinecraftServer>::all(client.clone()), base(), "MinecraftServer"), move |s| {
            let ns = s.namespace()?;
            tenants_for_servers
                .state()
                .into_iter()
                .find(|t| {
                    t.status.as_ref().is_some_and(|st| st.namespaces.contains(&ns))
                        || t.desired_namespaces().contains(&ns)
                })
                .map(|t| ObjectRef::from_obj(t.as_ref()))
        })
        .with_config(CtrlConfig::default().concurrency(args.concurrency))
        .graceful_shutdown_on(stop_fut(stop.clone()))
        .run(
            |obj, ctx: Arc<context::Context>| timed("Tenant", ctx.clone(), tenant::reconcile(obj, ctx)),
            tenant::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

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
        tokio::spawn(server_ctrl),
        tokio::spawn(sku_ctrl),
        tokio::spawn(tenant_ctrl),
        tokio::spawn(plugin_ctrl),
        tokio::spawn(backup_ctrl),
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

/// Runs one reconcile and records its duration and result by kind.
async fn timed<T>(
    kind: &'static str,
    ctx: Arc<context::Context>,
    reconcile: impl std::future::Future<Output = error::Result<T>>,
) -> error::Result<T> {
    let t0 = std::time::Instant::now();
    let r = reconcile.await;
    ctx.metrics.observe_reconcile(kind, t0.elapsed(), r.as_ref().err().map(|e| e.category()));
    r
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
