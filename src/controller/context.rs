//! State shared by all reconcilers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use super::metrics::Metrics;
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
}

/// Caches of the objects the operator creates for servers (label
/// `app.kubernetes.io/managed-by=craftplane`, managedFields stripped), so a
/// reconcile reads them without API requests.
#[derive(Clone)]
pub struct Children {
    pub statefulsets: Store<StatefulSet>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub services: Store<Service>,
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub pods: Store<Pod>,
}

impl Children {
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

/// Key of a namespaced object.
pub type Key = (String, String);

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
    pub settings: Settings,
    /// Modrinth API client; `None` when disabled.
    pub modrinth: Option<crate::plugins::modrinth::Client>,
    /// Backup stores the admin configured; `None`: backups are off.
    pub stores: Option<crate::backup::stores::Stores>,
    /// Last Server List Ping result per server.
    pub pings: Mutex<HashMap<Key, Result<slp::Status, String>>>,
    /// Consecutive failures per object UID, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
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
        settings: Settings,
        modrinth: Option<crate::plugins::modrinth::Client>,
        stores: Option<crate::backup::stores::Stores>,
    ) -> Context {
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
            settings,
            modrinth,
            stores,
            pings: Mutex::default(),
            failures: Mutex::default(),
        }
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
            note: Some(note.chars().take(1000).collect()),
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

    /// The last ping result of a server.
    pub fn ping(&self, key: &Key) -> Option<Result<slp::Status, String>> {
        self.pings.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
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

/// What the caches keep of each child: only the fields reconcilers read
/// (hash annotations, status, a few spec fields). Pod templates, pod specs,
/// rendered configuration and secret data are dropped, which keeps memory
/// per server small (see BENCHMARKS.md).
pub mod slim {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, Pod,
        PodCondition, PodSpec, PodStatus, Secret, Service, ServicePort, ServiceSpec,
    };

    /// Keeps replicas, selector and the template's metadata (config hash).
    pub fn statefulset(s: &mut StatefulSet) {
        if let Some(spec) = s.spec.as_mut() {
            spec.template.spec = None;
            spec.volume_claim_templates = None;
        }
    }

    /// Keeps the node name and what the status derivation reads: phase,
    /// message, conditions, and per container its name, waiting reason and
    /// termination (exit code, message). Addresses, images, resources and
    /// timestamps are dropped.
    pub fn pod(p: &mut Pod) {
        if let Some(spec) = p.spec.as_mut() {
            *spec = PodSpec { node_name: spec.node_name.take(), ..Default::default() };
        }
        if let Some(st) = p.status.as_mut() {
            *st = PodStatus {
                phase: st.phase.take(),
                message: st.message.take(),
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
    }

    fn containers(list: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
        let state = |s: ContainerState| ContainerState {
            waiting: s.waiting.map(|w| ContainerStateWaiting { reason: w.reason, message: w.message }),
            running: s.running.map(|_| ContainerStateRunning::default()),
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

    /// Keeps type and ports (for the address) and the load balancer status.
    pub fn service(s: &mut Service) {
        if let Some(spec) = s.spec.as_mut() {
            *spec = ServiceSpec {
                type_: spec.type_.take(),
                ports: spec.ports.take().map(|ps| {
                    ps.into_iter()
                        .map(|p| ServicePort {
                            name: p.name,
                            port: p.port,
                            node_port: p.node_port,
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            };
        }
    }

    /// Keeps the status phase and the requested size.
    pub fn pvc(c: &mut PersistentVolumeClaim) {
        if let Some(spec) = c.spec.as_mut() {
            *spec = PersistentVolumeClaimSpec {
                resources: spec.resources.take(),
                storage_class_name: spec.storage_class_name.take(),
                ..Default::default()
            };
        }
        if let Some(st) = c.status.as_mut() {
            *st = PersistentVolumeClaimStatus {
                phase: st.phase.take(),
                capacity: st.capacity.take(),
                ..Default::default()
            };
        }
    }

    /// Keeps only the plugin manifest of the data.
    pub fn config_map(c: &mut ConfigMap) {
        if let Some(data) = c.data.as_mut() {
            data.retain(|k, _| k == crate::plugins::MANIFEST_KEY);
        }
        c.binary_data = None;
    }

    /// Existence is all that is read: no secret material in memory.
    pub fn secret(s: &mut Secret) {
        s.data = None;
        s.string_data = None;
    }
}
