//! The gateway's view of the cluster, kept by watches (never an API
//! request per connection): MinecraftServers (their granted
//! `status.hostnames`), Tenants (whose namespace is whose) and the game
//! Services' EndpointSlices (the ready pod addresses players are sent to).
//!
//! Why pod IPs from EndpointSlices rather than the game Service's address:
//! no DNS lookup or kube-proxy hop per connection; servers behind the
//! gateway need no ClusterIP of their own (a headless Service works the
//! same, without the serialized ClusterIP allocation); only *ready*
//! endpoints are used, so a starting or stopped server is answered with a
//! clear message instead of a connection that hangs (issue 33 builds on
//! this); and EndpointSlices hold addresses only, so the gateway needs no
//! read access to tenants' pods (their specs and env).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::routes::{Limits, RouteTable, ServerEntry, ServerKey, Sleeping};
use crate::api::{MinecraftServer, Sku, Tenant};
use crate::resources::{GAME_PORT, SERVER_LABEL};

/// Labels of the game Services, which the EndpointSlice controller copies
/// to their slices.
pub const GAME_SLICE_SELECTOR: &str = "app.kubernetes.io/managed-by=craftplane,app.kubernetes.io/component=game";
/// Name of the game port in the game Service (and so in its slices).
pub const GAME_PORT_NAME: &str = "minecraft";

/// What a connection looks up: routes and backends, replaced whole on
/// every change (readers hold an `Arc` of one consistent version).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub routes: RouteTable,
    /// Ready addresses of each server's game port.
    pub backends: HashMap<ServerKey, Vec<SocketAddr>>,
}

/// The shared cache: a snapshot and whether every watch has synced.
#[derive(Default)]
pub struct Cache {
    snapshot: RwLock<Arc<Snapshot>>,
    synced: AtomicBool,
    draining: AtomicBool,
    /// Woken on every new snapshot (held joins wait on it).
    changed: Notify,
}

impl Cache {
    /// The current snapshot.
    pub fn get(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the snapshot (tests and the watch loop).
    pub fn set(&self, s: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
        self.changed.notify_waiters();
    }

    /// Resolves at the next new snapshot.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Whether the first full list of every watch is in the snapshot.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Marks the process as stopping (/readyz fails from now on).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// The ready addresses of one EndpointSlice, with the server they serve.
pub fn slice_backends(slice: &EndpointSlice) -> Option<(ServerKey, Vec<SocketAddr>)> {
    let key = ServerKey { namespace: slice.namespace()?, name: slice.labels().get(SERVER_LABEL)?.clone() };
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(GAME_PORT_NAME))
        .or_else(|| ports.first())
        .and_then(|p| p.port)
        .unwrap_or(GAME_PORT);
    let port = u16::try_from(port).ok()?;
    let mut out = Vec::new();
    for e in slice.endpoints.iter().flatten() {
        // Ready unset means ready (EndpointSlice API); terminating ones are not.
        let c = e.conditions.as_ref();
        if c.and_then(|c| c.ready) == Some(false) || c.and_then(|c| c.terminating) == Some(true) {
            continue;
        }
        out.extend(e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()).map(|ip| SocketAddr::new(ip, port)));
    }
    Some((key, out))
}

/// The tenant owning `namespace`: the operator's rule (a namespace it
/// lists or was given in its status).
pub fn tenant_of<'a>(tenants: &'a [Arc<Tenant>], namespace: &str) -> Option<&'a Arc<Tenant>> {
    tenants.iter().find(|t| {
        t.desired_namespaces().iter().any(|n| n == namespace)
            || t.status.as_ref().is_some_and(|st| st.namespaces.iter().any(|n| n == namespace))
    })
}

/// Builds a snapshot from the stores.
pub fn snapshot(
    base_domain: Option<&str>,
    servers: &[Arc<MinecraftServer>],
    tenants: &[Arc<Tenant>],
    skus: &[Arc<Sku>],
    slices: &[Arc<EndpointSlice>],
) -> Snapshot {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut by_ns: HashMap<String, Option<Arc<Tenant>>> = HashMap::new();
    let skus: HashMap<String, &Arc<Sku>> = skus.iter().map(|s| (s.name_any(), s)).collect();
    let entries: Vec<ServerEntry> = servers
        .iter()
        .filter_map(|s| {
            let ns = s.namespace()?;
            let tenant = by_ns.entry(ns.clone()).or_insert_with(|| tenant_of(tenants, &ns).cloned()).clone();
            let sku = skus.get(&s.spec.sku).map(|s| s.as_ref());
            let limits = Limits::of(tenant.as_deref(), sku);
            let mut e = ServerEntry::from_server(s, tenant.map(|t| t.name_any()), limits)?;
            e.sleep = Sleeping::of(s, sku, now).map(Arc::new);
            Some(e)
        })
        .collect();
    let routes = RouteTable::build(base_domain, &entries);
    let mut backends: HashMap<ServerKey, Vec<SocketAddr>> = HashMap::new();
    for s in slices {
        if let Some((key, ready)) = slice_backends(s) {
            backends.entry(key).or_default().extend(ready);
        }
    }
    for v in backends.values_mut() {
        v.sort();
        v.dedup();
    }
    backends.retain(|_, v| !v.is_empty());
    Snapshot { routes, backends }
}

/// What the watches select.
#[derive(Clone, Debug, Default)]
pub struct WatchConfig {
    /// The admin's base domain (tie-break for default names).
    pub base_domain: Option<String>,
    /// Only MinecraftServers with these labels (sharding, tests).
    pub server_selector: Option<String>,
}

/// Keeps `cache` up to date until `stop`. Marks it synced once every watch
/// listed its objects and the first snapshot is built; a watch error is
/// logged and retried with backoff (the last snapshot keeps serving).
pub async fn run(client: Client, cfg: WatchConfig, cache: Arc<Cache>, mut stop: watch::Receiver<bool>) {
    let changed = Arc::new(Notify::new());
    let mut servers_cfg = watcher::Config::default().page_size(500);
    if let Some(sel) = &cfg.server_selector {
        servers_cfg = servers_cfg.labels(sel);
    }
    let (servers, w1) = reflector::store::<MinecraftServer>();
    let (tenants, w2) = reflector::store::<Tenant>();
    let (slices, w3) = reflector::store::<EndpointSlice>();
    let (skus, w4) = reflector::store::<Sku>();
    let s1 = reflect(w1, Api::all(client.clone()), servers_cfg, "MinecraftServer", slim_server, changed.clone());
    let s2 = reflect(w2, Api::all(client.clone()), watcher::Config::default(), "Tenant", slim_meta, changed.clone());
    let client_skus = client.clone();
    let s3 = reflect(
        w3,
        Api::all(client),
        watcher::Config::default().page_size(500).labels(GAME_SLICE_SELECTOR),
        "EndpointSlice",
        slim_slice,
        changed.clone(),
    );
    let s4 = reflect(w4, Api::all(client_skus), watcher::Config::default(), "Sku", slim_meta, changed.clone());
    let rebuild = async {
        for_ready(&servers).await;
        for_ready(&tenants).await;
        for_ready(&slices).await;
        for_ready(&skus).await;
        loop {
            let snap = snapshot(
                cfg.base_domain.as_deref(),
                &servers.state(),
                &tenants.state(),
                &skus.state(),
                &slices.state(),
            );
            for c in snap.routes.conflicts() {
                warn!(host = %c.host, holder = %c.holder, refused = %c.loser, "two servers' status name one hostname; routing it to the first");
            }
            let (routes, backends) = (snap.routes.len(), snap.backends.len());
            cache.set(snap);
            if !cache.synced.swap(true, Ordering::AcqRel) {
                info!(routes, backends, "route cache synced");
            }
            changed.notified().await;
            // Coalesce bursts of events into one rebuild.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = s1 => {}
        _ = s2 => {}
        _ = s3 => {}
        _ = s4 => {}
        _ = rebuild => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn for_ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    let _ = store.wait_until_ready().await;
}

async fn reflect<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    cfg: watcher::Config,
    kind: &'static str,
    slim: fn(&mut K),
    changed: Arc<Notify>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
{
    let mut events = std::pin::pin!(reflector::reflector(writer, watcher(api, cfg).modify(slim)).default_backoff());
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
            Ok(_) => changed.notify_one(),
            Err(e) => warn!(kind, error = %e, "watch failed; retrying"),
        }
    }
}

/// What no snapshot reads, dropped before an object enters a store (at
/// 10,000 servers the gateway's memory is its caches, and the field
/// managers' records alone outweigh what routing needs).
fn slim_meta<K: kube::Resource>(o: &mut K) {
    let m = o.meta_mut();
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
}

/// A server as [`snapshot`] reads it: name, namespace, creation, deletion;
/// its SKU, state, sleep policy and whitelist; its phase, granted
/// hostnames and sleep status.
fn slim_server(s: &mut MinecraftServer) {
    slim_meta(s);
    s.metadata.labels = None;
    let spec = &mut s.spec;
    spec.properties.clear();
    spec.game_rules.clear();
    spec.ops.clear();
    spec.jvm_args.clear();
    spec.tasks.clear();
    (spec.motd, spec.image, spec.service, spec.storage) = (None, None, None, None);
    (spec.backup, spec.restore, spec.graceful_stop) = (None, None, None);
    if let Some(st) = s.status.take() {
        s.status = Some(crate::api::server::MinecraftServerStatus {
            phase: st.phase,
            hostnames: st.hostnames,
            sleep: st.sleep,
            ..Default::default()
        });
    }
}

/// A slice as [`slice_backends`] reads it: its server label, ports and
/// the endpoints' addresses and conditions.
fn slim_slice(s: &mut EndpointSlice) {
    slim_meta(s);
    for e in s.endpoints.iter_mut().flatten() {
        (e.target_ref, e.node_name, e.zone, e.hints, e.hostname) = (None, None, None, None, None);
        e.deprecated_topology = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_ready_endpoints_of_the_game_port_are_backends() {
        let s = slice(serde_json::json!({
            "metadata": {"name": "survival-abc", "namespace": "tenant-a", "labels": {"craftplane.io/server": "survival"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                // Ready unset: ready.
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": true, "terminating": true}},
                {"addresses": ["not-an-ip"]},
            ],
            "ports": [{"name": "other", "port": 1}, {"name": "minecraft", "port": 30000}],
        }));
        let (key, addrs) = slice_backends(&s).unwrap();
        assert_eq!(key, ServerKey { namespace: "tenant-a".into(), name: "survival".into() });
        assert_eq!(addrs, ["10.0.0.1:30000".parse().unwrap(), "10.0.0.2:30000".parse::<SocketAddr>().unwrap()]);
        // Not a server's slice: nothing.
        let mut other = s.clone();
        other.metadata.labels = None;
        assert!(slice_backends(&other).is_none());
        // A snapshot drops servers without a ready address.
        let mut down = s.clone();
        down.metadata.name = Some("survival-def".into());
        down.endpoints = Some(vec![]);
        let snap = snapshot(None, &[], &[], &[], &[Arc::new(down)]);
        assert!(snap.backends.is_empty());
        let snap = snapshot(None, &[], &[], &[], &[Arc::new(s.clone()), Arc::new(s)]);
        assert_eq!(snap.backends.values().next().unwrap().len(), 2, "duplicates merged");
    }

    /// Slimming keeps every route, sleep state and backend as they were.
    #[test]
    fn slim_objects_route_as_the_full_ones() {
        let server: MinecraftServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
            "metadata": {"name": "survival", "namespace": "tenant-a", "uid": "u1",
                "creationTimestamp": "2026-12-01T00:00:00Z",
                "labels": {"x": "y"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "craftplane", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:phase": {}}}}]},
            "spec": {"sku": "small", "eula": true, "type": "PAPER", "version": "1.21.4",
                "whitelist": ["Steve"], "ops": ["Steve"], "properties": {"pvp": "false"},
                "motd": "hi", "sleep": {"afterIdle": "15m", "wakeOnJoin": true}},
            "status": {"phase": "Hibernated", "hostnames": ["play.example.com", "survival.tenant-a.mc.example"],
                "configRevision": "abc",
                "configHistory": [{"revision": "abc", "generation": 1, "appliedAt": "2026-12-01T00:00:00Z"}],
                "sleep": {"asleepSince": "2026-12-02T00:00:00Z",
                    "lastSeen": {"version": "1.21.4", "protocol": 769, "maxPlayers": 20}},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Asleep", "message": "asleep",
                    "lastTransitionTime": "2026-12-02T00:00:00Z"}]},
        }))
        .unwrap();
        let s = slice(serde_json::json!({
            "metadata": {"name": "survival-abc", "namespace": "tenant-a", "labels": {"craftplane.io/server": "survival"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "survival", "uid": "u2"}]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1",
                "targetRef": {"kind": "Pod", "name": "survival-0", "namespace": "tenant-a"}}],
            "ports": [{"name": "minecraft", "port": 25565}],
        }));
        let (mut slim, mut slim_s) = (server.clone(), s.clone());
        slim_server(&mut slim);
        slim_slice(&mut slim_s);
        let json = |v: &MinecraftServer| serde_json::to_vec(v).unwrap().len();
        assert!(json(&slim) * 10 < json(&server) * 6, "{} of {} bytes", json(&slim), json(&server));
        assert!(slim.metadata.managed_fields.is_none() && slim.metadata.annotations.is_none());
        let st = slim.status.as_ref().unwrap();
        assert!(st.conditions.is_empty() && st.config_history.is_empty() && slim.spec.properties.is_empty());
        assert!(slim_s.endpoints.as_ref().unwrap()[0].target_ref.is_none());
        let full = snapshot(Some("mc.example"), &[Arc::new(server)], &[], &[], &[Arc::new(s)]);
        let lean = snapshot(Some("mc.example"), &[Arc::new(slim)], &[], &[], &[Arc::new(slim_s)]);
        for host in ["play.example.com", "survival.tenant-a.mc.example"] {
            let route = full.routes.lookup(host).unwrap_or_else(|| panic!("{host}"));
            assert!(route.sleep.is_some());
            assert_eq!(lean.routes.lookup(host), Some(route), "{host}");
        }
        assert_eq!(lean.backends, full.backends);
    }
}
