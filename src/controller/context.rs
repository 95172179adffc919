//! State shared by all reconcilers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use super::metrics::Metrics;
use super::watches::{Events, Watches};
use crate::api::{MinecraftServer, Sku, Tenant};
use crate::minecraft::slp;

/// Settings from the command line that reconcilers read.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interval between Server List Pings of each running server; `None` disables them.
    pub slp_interval: Option<Duration>,
    /// Ping this address instead of each server's Service (local development).
    pub slp_address: Option<String>,
    /// Periodic re-check of every object even without events.
    pub resync: Duration,
    /// Namespace the operator runs in (may reach RCON in tenant namespaces).
    pub operator_namespace: String,
    /// Image of the server pods' fetch-plugins init-container.
    pub helper_image: String,
    /// Shortest time between two slots of a backup schedule
    /// (`spec.backup.schedule`); closer schedules are refused.
    pub min_backup_interval: Duration,
    /// Shortest time between two slots of a task's schedule (`spec.tasks`).
    pub min_task_interval: Duration,
    /// The admin's base domain: every server gets the hostname
    /// `<server>.<namespace>.<base domain>`; `None`: no default hostnames.
    pub base_domain: Option<String>,
    /// The port the gateway listens on for players (shown in
    /// `status.address` when not 25565).
    pub gateway_port: u16,
    /// The gateway's HTTP `host:port`, asked for open connections before a
    /// server sleeps; `None`: no gateway.
    pub gateway_http: Option<String>,
}

/// Caches of the objects the operator creates for servers (label
/// `app.kubernetes.io/managed-by=craftplane`, managedFields stripped), so a
/// reconcile reads them without API requests.
#[derive(Clone)]
pub struct Children {
    pub statefulsets: Store<super::lean::StatefulSet>,
    pub pvcs: Store<super::lean::PersistentVolumeClaim>,
    pub services: Store<super::lean::Service>,
    pub config_maps: Store<super::lean::ConfigMap>,
    pub secrets: Store<super::lean::Secret>,
    pub pods: Store<super::lean::Pod>,
}

/// The event streams of the [`Children`] caches (the server controller's
/// `owns` triggers: the same watches fill the caches).
pub struct ChildEvents {
    pub statefulsets: Events<super::lean::StatefulSet>,
    pub pvcs: Events<super::lean::PersistentVolumeClaim>,
    pub services: Events<super::lean::Service>,
    pub config_maps: Events<super::lean::ConfigMap>,
    pub secrets: Events<super::lean::Secret>,
    pub pods: Events<super::lean::Pod>,
}

impl Children {
    /// Starts the caches of the servers' children; their streams feed the
    /// server controller.
    pub fn watch(w: &Watches) -> (Children, ChildEvents) {
        use super::lean;
        use super::watches::cached;
        let api = || w.client.clone();
        let (statefulsets, sts) =
            cached(Api::all(api()), w.children.clone(), "StatefulSet", lean::StatefulSet::slim, true);
        let (pvcs, pvc) = cached(
            Api::all(api()),
            w.children.clone(),
            "PersistentVolumeClaim",
            lean::PersistentVolumeClaim::slim,
            true,
        );
        let (services, svc) = cached(Api::all(api()), w.children.clone(), "Service", lean::Service::slim, true);
        let (config_maps, cm) = cached(Api::all(api()), w.children.clone(), "ConfigMap", lean::ConfigMap::slim, true);
        let (secrets, secret) = cached(Api::all(api()), w.children.clone(), "Secret", lean::Secret::slim, true);
        let (pods, pod) = cached(Api::all(api()), w.pods.clone(), "Pod", lean::Pod::slim, true);
        (
            Children { statefulsets, pvcs, services, config_maps, secrets, pods },
            ChildEvents { statefulsets: sts, pvcs: pvc, services: svc, config_maps: cm, secrets: secret, pods: pod },
        )
    }

    /// Whether every cache has completed its first list.
    pub fn ready(&self) -> bool {
        store_ready(&self.statefulsets)
            && store_ready(&self.pvcs)
            && store_ready(&self.services)
            && store_ready(&self.config_maps)
            && store_ready(&self.secrets)
            && store_ready(&self.pods)
    }
}

/// A cached object by namespace and name (cloned out of the cache).
pub fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns)).map(|o| (*o).clone())
}

/// A cached child by namespace and name, as its full type (see `lean`).
pub fn cached_full<L>(store: &Store<L>, ns: &str, name: &str) -> Option<L::Full>
where
    L: super::lean::Lean + kube::Resource<DynamicType = ()> + Clone + 'static,
{
    cached(store, ns, name).map(L::into_full)
}

/// Key of a namespaced object.
pub type Key = (String, String);

/// The operator's own writes of an object, by key: the resourceVersion it
/// wrote over and the one its write produced. A reconcile is triggered the
/// moment the previous one ends (a child's watch event waited for it),
/// often before the object's own watch event has brought the write into
/// the cache: planned from that copy, the write is undone (a server that
/// just fell asleep looked awake and was scaled up again). A cached copy
/// still at the version written over is stale: wait for the watch. Two
/// writes in one reconcile (both over the same cached copy) make the first
/// one's version stale too.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<Key, (Vec<String>, String)>>);

impl OwnWrites {
    /// Records a write that turned version `over` into `produced`.
    pub fn wrote(&self, key: Key, over: Option<&str>, produced: Option<&str>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (over, produced) {
            (Some(o), Some(p)) if o != p => {
                let entry = m.entry(key).or_insert_with(|| (Vec::new(), String::new()));
                if entry.0.iter().any(|v| v == o) || (!entry.1.is_empty() && entry.1 == o) {
                    // A second write over the same copy, or over our last
                    // write: the earlier version is superseded by ours.
                    let previous = std::mem::take(&mut entry.1);
                    entry.0.push(previous);
                } else {
                    entry.0 = vec![o.to_string()];
                }
                entry.1 = p.to_string();
            }
            _ => {
                m.remove(&key);
            }
        }
    }

    /// Whether a cached copy at `version` predates this process's last
    /// write of it. Once the cache shows any other version, the record is
    /// dropped.
    pub fn stale(&self, key: &Key, version: Option<&str>) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(key) {
            Some((over, _)) if version.is_some_and(|v| over.iter().any(|o| o == v)) => true,
            Some(_) => {
                m.remove(key);
                false
            }
            None => false,
        }
    }

    /// Forgets `key` (the object is gone).
    pub fn forget(&self, key: &Key) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Who publishes Events (controller and instance).
    pub reporter: Reporter,
    pub skus: Store<Sku>,
    pub servers: Store<MinecraftServer>,
    pub tenants: Store<Tenant>,
    pub plugins: Store<crate::api::PluginInstallation>,
    pub snapshots: Store<crate::api::BackupSnapshot>,
    pub children: Children,
    /// The gateway's wake requests (Leases in the operator's namespace).
    pub wake_leases: Store<k8s_openapi::api::coordination::v1::Lease>,
    /// HTTP client for the gateways' open-connection counts.
    pub http: reqwest::Client,
    pub settings: Settings,
    /// Modrinth API client; `None` when disabled.
    pub modrinth: Option<crate::plugins::modrinth::Client>,
    /// Backup stores the admin configured; `None`: backups are off.
    pub stores: Option<crate::backup::stores::Stores>,
    /// Last Server List Ping result per server.
    pub pings: Mutex<HashMap<Key, Result<slp::Status, String>>>,
    /// The servers' status writes the cache may not show yet.
    pub status_writes: OwnWrites,
    /// Consecutive failures per object UID, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Scheduled task runs of this process (`server::tasks`).
    pub tasks: super::server::tasks::Runs,
    /// Live-settings sessions of this process (`server::live`).
    pub live: super::server::live::Sessions,
    /// Bounds on concurrent RCON sessions, in all and per tenant.
    pub rcon_slots: super::server::live::Slots,
    /// ConsoleCommands being sent by this process (`command`).
    pub commands: super::command::Runs,
    /// Asks for a server's reconcile (a task finished); the server
    /// controller takes the receiving end once ([`Context::wakes`]).
    wake_tx: tokio::sync::mpsc::Sender<kube::runtime::reflector::ObjectRef<MinecraftServer>>,
    wake_rx: Mutex<Option<tokio::sync::mpsc::Receiver<kube::runtime::reflector::ObjectRef<MinecraftServer>>>>,
    /// The newest Minecraft versions (from Modrinth) and when they were
    /// fetched; see [`Context::latest_versions`].
    latest: tokio::sync::Mutex<Option<(std::time::Instant, Option<crate::resources::version::LatestVersions>)>>,
}

impl Context {
    /// The placement of a SKU (for a server's Jobs), from the SKU cache.
    pub fn sku_placement(&self, sku: &str) -> Option<crate::api::sku::Placement> {
        self.skus.get(&kube::runtime::reflector::ObjectRef::new(sku))?.spec.placement.clone()
    }

    // One argument per shared cache: grouping them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        skus: Store<Sku>,
        servers: Store<MinecraftServer>,
        tenants: Store<Tenant>,
        plugins: Store<crate::api::PluginInstallation>,
        snapshots: Store<crate::api::BackupSnapshot>,
        children: Children,
        wake_leases: Store<k8s_openapi::api::coordination::v1::Lease>,
        settings: Settings,
        modrinth: Option<crate::plugins::modrinth::Client>,
        stores: Option<crate::backup::stores::Stores>,
    ) -> Context {
        let (wake_tx, wake_rx) = tokio::sync::mpsc::channel(256);
        Context {
            client,
            metrics,
            reporter,
            skus,
            servers,
            tenants,
            plugins,
            snapshots,
            children,
            wake_leases,
            http: reqwest::Client::new(),
            settings,
            modrinth,
            stores,
            pings: Mutex::default(),
            status_writes: OwnWrites::default(),
            failures: Mutex::default(),
            tasks: Default::default(),
            live: Default::default(),
            rcon_slots: Default::default(),
            commands: Default::default(),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
            latest: tokio::sync::Mutex::default(),
        }
    }

    /// Asks for a reconcile of `server`.
    pub async fn wake(&self, server: kube::runtime::reflector::ObjectRef<MinecraftServer>) {
        let _ = self.wake_tx.send(server).await;
    }

    /// The stream of [`Context::wake`] requests (once; later calls: empty).
    pub fn wakes(&self) -> impl futures::Stream<Item = kube::runtime::reflector::ObjectRef<MinecraftServer>> + use<> {
        let rx = self.wake_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            rx.recv().await.map(|r| (r, Some(rx)))
        })
    }

    /// The newest Minecraft release and snapshot, fetched from Modrinth at
    /// most every 30 minutes (every 5 after a failure, keeping the last
    /// good answer); `None` when Modrinth is disabled or never answered.
    pub async fn latest_versions(&self) -> Option<crate::resources::version::LatestVersions> {
        let client = self.modrinth.as_ref()?;
        let mut cache = self.latest.lock().await;
        if let Some((at, v)) = cache.as_ref() {
            let ttl = Duration::from_secs(if v.is_some() { 1800 } else { 300 });
            if at.elapsed() < ttl {
                return v.clone();
            }
        }
        let fetched = match tokio::time::timeout(Duration::from_secs(5), client.game_versions()).await {
            Ok(Ok(tags)) => crate::plugins::modrinth::latest_versions(&tags),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot resolve LATEST/SNAPSHOT");
                None
            }
            Err(_) => {
                tracing::warn!("cannot resolve LATEST/SNAPSHOT: Modrinth did not answer in 5 s");
                None
            }
        };
        let previous = cache.as_ref().and_then(|(_, v)| v.clone());
        let value = fetched.or(previous);
        *cache = Some((std::time::Instant::now(), value.clone()));
        value
    }

    /// Records a failure of `uid`; returns the backoff before the next try
    /// (1 s doubling up to 5 min).
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }

    /// Clears the failure count of `uid` after a success.
    pub fn succeeded(&self, uid: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(uid);
    }

    /// Publishes an Event about `obj` (failures to publish are logged only).
    pub async fn event(
        &self,
        obj: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        use kube::runtime::events::{Event, EventType};
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            // Notes quote server answers: bounded, no escapes or controls.
            note: Some(crate::resources::text::clean(note, 1024, false)),
            action: action.into(),
            secondary: None,
        };
        // A Recorder per Event: kube's Recorder keeps every Event it
        // published for 6 minutes (to count repeats as a series), which at
        // 10,000 servers is tens of MiB; ours are phase changes that rarely
        // repeat.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, obj).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }

    /// Whether `command` may run on `server` as a console command (the
    /// rules of `resources::console`, with the server's SKU policy):
    /// ConsoleCommands and scheduled tasks' `command` actions alike.
    pub fn console_allowed(&self, server: &MinecraftServer, command: &str) -> Result<(), String> {
        let policy = self
            .skus
            .get(&kube::runtime::reflector::ObjectRef::new(&server.spec.sku))
            .and_then(|s| s.spec.console_commands.clone());
        crate::resources::console::check(command, &server.spec, policy.as_ref())
    }

    /// The last ping result of a server.
    pub fn ping(&self, key: &Key) -> Option<Result<slp::Status, String>> {
        self.pings.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }
}

/// Deletes `name`; `true` when it was there. Already gone is not an error.
pub async fn delete_if_present<K>(api: &kube::Api<K>, name: &str, dp: &kube::api::DeleteParams) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `name` only if an owner reference of it names `owner_uid`, and
/// only that object (a UID precondition: a successor created meanwhile is
/// kept); `true` when it deleted. Missing, not owned or replaced is not an
/// error.
pub async fn delete_owned<K>(api: &kube::Api<K>, name: &str, owner_uid: &str) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else { return Ok(false) };
    if owner_uid.is_empty() || !obj.meta().owner_references.iter().flatten().any(|o| o.uid == owner_uid) {
        return Ok(false);
    }
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: obj.meta().uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a reflector store has completed its first list, without waiting.
pub fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    use futures::FutureExt;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// What the pod cache keeps of a pod's status; the lean types of
/// `super::lean` keep the rest of what reconcilers read of each child. This
/// keeps memory per server small (see BENCHMARKS.md).
pub mod slim {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    /// Keeps what the status derivation reads of a pod's status: phase,
    /// message, conditions, and per container its name, waiting reason and
    /// termination (exit code, message). Addresses, images and timestamps
    /// are dropped.
    pub fn pod_status(st: &mut PodStatus) {
        *st = PodStatus {
            phase: st.phase.take(),
            message: st.message.take(),
            // The address RCON is reached at (`server::live`).
            pod_ip: st.pod_ip.take(),
            conditions: st.conditions.take().map(|cs| {
                cs.into_iter()
                    .map(|c| PodCondition {
                        type_: c.type_,
                        status: c.status,
                        message: c.message,
                        ..Default::default()
                    })
                    .collect()
            }),
            container_statuses: st.container_statuses.take().map(containers),
            init_container_statuses: st.init_container_statuses.take().map(containers),
            ..Default::default()
        };
    }

    fn containers(list: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
        let state = |s: ContainerState| ContainerState {
            waiting: s.waiting.map(|w| ContainerStateWaiting { reason: w.reason, message: w.message }),
            // When it started: a woken server's wake is split there.
            running: s.running.map(|r| ContainerStateRunning { started_at: r.started_at }),
            terminated: s.terminated.map(|t| ContainerStateTerminated {
                exit_code: t.exit_code,
                message: t.message,
                finished_at: t.finished_at,
                ..Default::default()
            }),
        };
        list.into_iter()
            .map(|c| ContainerStatus {
                name: c.name,
                state: c.state.map(state),
                last_state: c.last_state.map(state),
                ready: c.ready,
                restart_count: c.restart_count,
                ..Default::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::controller::lean::{self, Lean};
    use serde_json::json;

    /// A copy at the version written over is stale until the cache moves on;
    /// a write that changed nothing leaves nothing to wait for.
    #[test]
    fn own_writes_mark_the_copy_written_over_stale() {
        let w = super::OwnWrites::default();
        let k = ("ns".to_string(), "s".to_string());
        assert!(!w.stale(&k, Some("5")));
        w.wrote(k.clone(), Some("5"), Some("6"));
        assert!(w.stale(&k, Some("5")));
        assert!(w.stale(&k, Some("5")), "still stale until the cache moves");
        assert!(!w.stale(&k, Some("6")));
        assert!(!w.stale(&k, Some("5")), "forgotten once the write was seen");
        w.wrote(k.clone(), Some("6"), Some("6"));
        assert!(!w.stale(&k, Some("6")));
        w.wrote(k.clone(), Some("7"), Some("8"));
        assert!(!w.stale(&k, Some("9")), "a newer version by someone else is not stale");
        w.wrote(k.clone(), Some("9"), Some("10"));
        w.forget(&k);
        assert!(!w.stale(&k, Some("9")));
        // Two writes over the same copy (the sleep decision, then the full
        // status): the copy and the first write's version are stale.
        w.wrote(k.clone(), Some("20"), Some("21"));
        w.wrote(k.clone(), Some("20"), Some("23"));
        assert!(w.stale(&k, Some("20")));
        assert!(w.stale(&k, Some("21")), "the first write's version is superseded");
        assert!(!w.stale(&k, Some("23")));
        assert!(!w.stale(&k, Some("21")), "forgotten once the last write was seen");
        // A write over our own last write (read back fresh): both stale.
        w.wrote(k.clone(), Some("30"), Some("31"));
        w.wrote(k.clone(), Some("31"), Some("32"));
        assert!(w.stale(&k, Some("30")) && w.stale(&k, Some("31")));
        assert!(!w.stale(&k, Some("32")));
    }

    /// The cached pod keeps what reconcilers read (server label, hash
    /// annotations, owner, deletion, status) and drops the rest.
    #[test]
    fn a_slim_pod_keeps_what_reconcilers_read() {
        let mut lean: lean::Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "s-0", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "deletionTimestamp": "2026-11-29T00:00:00Z",
                "finalizers": ["example.com/hold"],
                "labels": {"craftplane.io/server": "s", "app.kubernetes.io/name": "minecraft-server",
                           "controller-revision-hash": "s-abc"},
                "annotations": {"craftplane.io/config-hash": "h1", "craftplane.io/applied-hash": "h2",
                                "kubectl.kubernetes.io/restartedAt": "now"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "s", "uid": "u0",
                                     "controller": true}]
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "server", "image": "itzg/minecraft-server"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-29T00:00:00Z"}],
                       "containerStatuses": [{"name": "server", "ready": true, "restartCount": 2, "image": "i",
                                              "imageID": "x", "state": {"running": {"startedAt": "2026-11-29T00:00:00Z"}}}]}
        }))
        .unwrap();
        lean.slim();
        assert_eq!(lean.server(), Some("s"));
        assert!(lean.metadata.labels.is_none() && lean.metadata.annotations.is_none());
        let pod = lean.into_full();
        let m = &pod.metadata;
        assert_eq!(m.labels.as_ref().unwrap().keys().collect::<Vec<_>>(), ["craftplane.io/server"]);
        assert_eq!(
            m.annotations.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["craftplane.io/applied-hash", "craftplane.io/config-hash"]
        );
        assert!(m.finalizers.is_none());
        assert!(m.deletion_timestamp.is_some());
        assert_eq!(m.owner_references.as_ref().unwrap()[0].name, "s");
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
            (Some("s-0"), Some("ns"), Some("u1"))
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert!(spec.containers.is_empty());
        let st = pod.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.1"), "RCON reaches the pod at its IP");
        let c = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!((c.name.as_str(), c.ready, c.restart_count), ("server", true, 2));
        assert!(c.state.as_ref().unwrap().running.is_some());
        assert!(c.image.is_empty());
    }

    /// A cached child holds no label or annotation map (the kept ones live
    /// outside `ObjectMeta`) and a Secret no data; the full type has them back.
    #[test]
    fn a_slim_child_holds_no_maps() {
        let mut secret: lean::Secret = serde_json::from_value(json!({
            "metadata": {"name": "s-rcon", "labels": {"app.kubernetes.io/name": "minecraft-server", "craftplane.io/server": "s"},
                         "annotations": {"other": "x", "craftplane.io/applied-hash": "h"}},
            "data": {"password": "c2VjcmV0"}
        }))
        .unwrap();
        secret.slim();
        assert!(secret.metadata.labels.is_none());
        assert!(secret.metadata.annotations.is_none());
        let full = secret.into_full();
        assert!(full.data.is_none());
        assert_eq!(
            full.metadata.labels.unwrap().into_iter().collect::<Vec<_>>(),
            [("craftplane.io/server".into(), "s".into())]
        );
        assert_eq!(
            full.metadata.annotations.unwrap().into_iter().collect::<Vec<_>>(),
            [("craftplane.io/applied-hash".into(), "h".into())]
        );
    }
}
