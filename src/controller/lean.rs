//! Lean copies of the children the caches hold, decoded straight from the
//! watch stream. A `k8s_openapi` Pod or StatefulSet is ~2.5 KB before any of
//! its fields is set (every optional struct is inline), a Service or PVC
//! ~1 KB, and each label or annotation map a ~500-byte B-tree node; these
//! keep only what the reconcilers read (the kept labels and annotations in
//! `Marks`), so at 10,000 servers the caches hold tens of MiB less. Readers
//! get the full type back with `Lean::into_full`, with just those fields set.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet as FullStatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap as FullConfigMap, PersistentVolumeClaim as FullPersistentVolumeClaim, PersistentVolumeClaimStatus,
    Pod as FullPod, PodSpec, PodStatus, PodTemplateSpec, Secret as FullSecret, Service as FullService, ServicePort,
    ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::resources::{APPLIED_HASH, CONFIG_HASH, SERVER_LABEL};

/// A lean cached type and the full `k8s_openapi` type it stands for.
pub trait Lean {
    /// The full type.
    type Full;
    /// The full type with the cached fields set.
    fn into_full(self) -> Self::Full;
}

/// The labels and annotations of a child that reconcilers read, held
/// outside `ObjectMeta`: a `BTreeMap` allocates a ~500-byte node even for
/// one entry, and every cached child had two.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marks {
    server: Option<Box<str>>,
    applied_hash: Option<Box<str>>,
    config_hash: Option<Box<str>>,
    owned: super::drift::Owned,
}

impl Marks {
    /// Slims a child's metadata to what reconcilers read — name, namespace,
    /// identity, owner references, deletion timestamp — and moves the kept
    /// labels and annotations and the operator's field sets out of it;
    /// other managed fields, finalizers and all other labels and
    /// annotations are dropped.
    fn take(m: &mut ObjectMeta) -> Marks {
        let owned = super::drift::Owned::take(m.managed_fields.take());
        m.finalizers = None;
        m.generate_name = None;
        let mut labels = m.labels.take().unwrap_or_default();
        let mut annotations = m.annotations.take().unwrap_or_default();
        Marks {
            server: labels.remove(SERVER_LABEL).map(Into::into),
            applied_hash: annotations.remove(APPLIED_HASH).map(Into::into),
            config_hash: annotations.remove(CONFIG_HASH).map(Into::into),
            owned,
        }
    }

    /// The metadata with the kept labels and annotations put back.
    fn restore(self, mut m: ObjectMeta) -> ObjectMeta {
        m.managed_fields = self.owned.restore();
        if let Some(v) = self.server {
            m.labels.get_or_insert_with(Default::default).insert(SERVER_LABEL.into(), v.into());
        }
        for (k, v) in [(APPLIED_HASH, self.applied_hash), (CONFIG_HASH, self.config_hash)] {
            if let Some(v) = v {
                m.annotations.get_or_insert_with(Default::default).insert(k.into(), v.into());
            }
        }
        m
    }
}

macro_rules! resource {
    ($t:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A StatefulSet as cached: its metadata (applied hash, owner) and the pod
/// template's annotations (config hash of the running configuration).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StatefulSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    marks: Marks,
    #[serde(default)]
    spec: Option<StatefulSetSpecLean>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct StatefulSetSpecLean {
    #[serde(default)]
    replicas: Option<i32>,
    #[serde(default)]
    template: TemplateLean,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct TemplateLean {
    #[serde(default)]
    metadata: TemplateMetaLean,
    /// Decoded, then emptied by `slim` into `list_env`.
    #[serde(default)]
    spec: Option<PodSpecEnvLean>,
    #[serde(skip)]
    list_env: ListEnv,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct PodSpecEnvLean {
    #[serde(default)]
    containers: Vec<ContainerEnvLean>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ContainerEnvLean {
    #[serde(default)]
    name: String,
    #[serde(default)]
    env: Vec<EnvNameLean>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct EnvNameLean {
    #[serde(default)]
    name: String,
}

/// Whether the server container's environment names the whitelist and the
/// ops (`WHITELIST`, `OPS`): the StatefulSet keeps them as they are, so a
/// live change of those lists never changes the pod template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListEnv {
    pub whitelist: bool,
    pub ops: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct TemplateMetaLean {
    /// Decoded, then emptied by `slim` into `config_hash`.
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(skip)]
    config_hash: Option<Box<str>>,
}

resource!(StatefulSet, "StatefulSet", "apps", "v1", "statefulsets");

impl StatefulSet {
    /// Keeps the child metadata the reconcilers read and only the config
    /// hash of the template's annotations.
    pub fn slim(&mut self) {
        self.marks = Marks::take(&mut self.metadata);
        if let Some(t) = self.spec.as_mut().map(|s| &mut s.template) {
            let m = &mut t.metadata;
            m.config_hash = m.annotations.take().and_then(|mut a| a.remove(CONFIG_HASH)).map(Into::into);
            let env = t.spec.take().unwrap_or_default();
            let names: Vec<&str> = env
                .containers
                .iter()
                .filter(|c| c.name == "minecraft")
                .flat_map(|c| c.env.iter().map(|e| e.name.as_str()))
                .collect();
            t.list_env = ListEnv { whitelist: names.contains(&"WHITELIST"), ops: names.contains(&"OPS") };
        }
    }

    /// Which list variables the server container has, once slimmed.
    pub fn list_env(&self) -> ListEnv {
        self.spec.as_ref().map(|s| s.template.list_env).unwrap_or_default()
    }

    /// Whether it asks for no pod (`spec.replicas: 0`): asleep or stopped.
    pub fn scaled_to_zero(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    }

    /// The config hash on the pod template (the configuration pods start
    /// with), once slimmed.
    pub fn config_hash(&self) -> Option<&str> {
        self.spec.as_ref()?.template.metadata.config_hash.as_deref()
    }
}

impl Lean for StatefulSet {
    type Full = FullStatefulSet;
    fn into_full(self) -> FullStatefulSet {
        let metadata = self.marks.restore(self.metadata);
        FullStatefulSet {
            metadata,
            spec: self.spec.map(|s| {
                let TemplateMetaLean { mut annotations, config_hash } = s.template.metadata;
                if let Some(h) = config_hash {
                    annotations.get_or_insert_with(Default::default).insert(CONFIG_HASH.into(), h.into());
                }
                StatefulSetSpec {
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta { annotations, ..Default::default() }),
                        spec: None,
                    },
                    ..Default::default()
                }
            }),
            status: None,
        }
    }
}

/// A Pod as cached: metadata, the node it runs on and its status.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    marks: Marks,
    #[serde(default)]
    spec: Option<PodSpecLean>,
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct PodSpecLean {
    #[serde(default, rename = "nodeName")]
    node_name: Option<String>,
}

resource!(Pod, "Pod", "", "v1", "pods");

impl Pod {
    /// Keeps the child metadata and what the status derivation reads of
    /// the status (see `slim::pod_status`).
    pub fn slim(&mut self) {
        self.marks = Marks::take(&mut self.metadata);
        if let Some(st) = self.status.as_mut() {
            super::context::slim::pod_status(st);
        }
    }

    /// The server the pod belongs to (its server label), once slimmed.
    pub fn server(&self) -> Option<&str> {
        self.marks.server.as_deref()
    }
}

impl Lean for Pod {
    type Full = FullPod;
    fn into_full(self) -> FullPod {
        let metadata = self.marks.restore(self.metadata);
        FullPod {
            metadata,
            spec: self.spec.map(|s| PodSpec { node_name: s.node_name, ..Default::default() }),
            status: self.status,
        }
    }
}

/// A Service as cached: type, ports (number, node port) and the load
/// balancer status — what the server's address is made of — and whether it
/// is headless (not which cluster IP it has).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    marks: Marks,
    #[serde(default)]
    spec: Option<ServiceSpecLean>,
    #[serde(default)]
    status: Option<ServiceStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ServiceSpecLean {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    /// Kept only when `None` (headless): which IP a Service has is not needed.
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Option<Vec<ServicePort>>,
}

resource!(Service, "Service", "", "v1", "services");

impl Service {
    /// Keeps the child metadata, and of the ports their name and numbers.
    pub fn slim(&mut self) {
        self.marks = Marks::take(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut()
            && spec.cluster_ip.as_deref() != Some("None")
        {
            spec.cluster_ip = None;
        }
        if let Some(ports) = self.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            for p in ports {
                *p = ServicePort { name: p.name.take(), port: p.port, node_port: p.node_port, ..Default::default() };
            }
        }
        if let Some(st) = self.status.as_mut() {
            st.conditions = None;
        }
    }
}

impl Lean for Service {
    type Full = FullService;
    fn into_full(self) -> FullService {
        let metadata = self.marks.restore(self.metadata);
        FullService {
            metadata,
            spec: self.spec.map(|s| ServiceSpec {
                type_: s.type_,
                cluster_ip: s.cluster_ip,
                ports: s.ports,
                ..Default::default()
            }),
            status: self.status,
        }
    }
}

/// A PersistentVolumeClaim as cached: its phase (Bound or not).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PersistentVolumeClaim {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    marks: Marks,
    #[serde(default)]
    status: Option<PvcStatusLean>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct PvcStatusLean {
    #[serde(default)]
    phase: Option<String>,
}

resource!(PersistentVolumeClaim, "PersistentVolumeClaim", "", "v1", "persistentvolumeclaims");

impl PersistentVolumeClaim {
    /// Keeps the child metadata.
    pub fn slim(&mut self) {
        self.marks = Marks::take(&mut self.metadata);
    }
}

impl Lean for PersistentVolumeClaim {
    type Full = FullPersistentVolumeClaim;
    fn into_full(self) -> FullPersistentVolumeClaim {
        let metadata = self.marks.restore(self.metadata);
        FullPersistentVolumeClaim {
            metadata,
            spec: None,
            status: self.status.map(|s| PersistentVolumeClaimStatus { phase: s.phase, ..Default::default() }),
        }
    }
}

/// A ConfigMap as cached: the plugin manifest of its data.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    marks: Marks,
    /// Decoded, then emptied by `slim` into `manifest`.
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
    #[serde(skip)]
    manifest: Option<String>,
}

resource!(ConfigMap, "ConfigMap", "", "v1", "configmaps");

impl ConfigMap {
    /// Keeps the child metadata and the plugin manifest.
    pub fn slim(&mut self) {
        self.marks = Marks::take(&mut self.metadata);
        self.manifest = self.data.take().and_then(|mut d| d.remove(crate::api::contract::MANIFEST_KEY));
    }

    /// The plugin manifest (JSON), once slimmed.
    pub fn manifest(&self) -> Option<&str> {
        self.manifest.as_deref()
    }
}

impl Lean for ConfigMap {
    type Full = FullConfigMap;
    fn into_full(self) -> FullConfigMap {
        let metadata = self.marks.restore(self.metadata);
        let mut data = self.data;
        if let Some(m) = self.manifest {
            data.get_or_insert_with(Default::default).insert(crate::api::contract::MANIFEST_KEY.into(), m);
        }
        FullConfigMap { metadata, data, ..Default::default() }
    }
}

/// A Secret as cached: its metadata only; existence is all that is read,
/// so no secret material is kept in memory.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Secret {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    marks: Marks,
}

resource!(Secret, "Secret", "", "v1", "secrets");

impl Secret {
    /// Keeps the child metadata.
    pub fn slim(&mut self) {
        self.marks = Marks::take(&mut self.metadata);
    }
}

impl Lean for Secret {
    type Full = FullSecret;
    fn into_full(self) -> FullSecret {
        let metadata = self.marks.restore(self.metadata);
        FullSecret { metadata, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn lean_types_address_the_same_api_as_the_full_ones() {
        assert_eq!(StatefulSet::url_path(&(), Some("ns")), FullStatefulSet::url_path(&(), Some("ns")));
        assert_eq!(Pod::url_path(&(), None), FullPod::url_path(&(), None));
        assert_eq!(StatefulSet::api_version(&()), FullStatefulSet::api_version(&()));
        assert_eq!(Pod::kind(&()), FullPod::kind(&()));
        assert_eq!(Service::url_path(&(), Some("ns")), FullService::url_path(&(), Some("ns")));
        assert_eq!(
            PersistentVolumeClaim::url_path(&(), Some("ns")),
            FullPersistentVolumeClaim::url_path(&(), Some("ns"))
        );
    }

    #[test]
    fn a_lean_service_keeps_what_the_address_is_made_of() {
        let mut lean: Service = serde_json::from_value(json!({
            "metadata": {"name": "s-game", "namespace": "ns"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "selector": {"a": "b"},
                     "ports": [{"name": "minecraft", "port": 25565, "nodePort": 31000, "targetPort": 25565,
                                "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}
        }))
        .unwrap();
        lean.slim();
        let svc = lean.into_full();
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert!(spec.cluster_ip.is_none());
        let mut headless: Service = serde_json::from_value(
            json!({"metadata": {"name": "h"}, "spec": {"type": "ClusterIP", "clusterIP": "None"}}),
        )
        .unwrap();
        headless.slim();
        assert_eq!(headless.into_full().spec.unwrap().cluster_ip.as_deref(), Some("None"));
        let p = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(
            (p.name.as_deref(), p.port, p.node_port, p.protocol.as_deref()),
            (Some("minecraft"), 25565, Some(31000), None)
        );
        let ingress = &svc.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0];
        assert_eq!(ingress.ip.as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn a_lean_pvc_keeps_its_phase() {
        let mut lean: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "s-data", "namespace": "ns", "finalizers": ["kubernetes.io/pvc-protection"]},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}
        }))
        .unwrap();
        lean.slim();
        let pvc = lean.into_full();
        assert!(pvc.metadata.finalizers.is_none());
        assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    }

    #[test]
    fn a_lean_statefulset_round_trips_what_reconcilers_read() {
        let full = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "namespace": "ns",
                         "annotations": {"craftplane.io/applied-hash": "a1", "deprecated.daemonset.template.generation": "1"},
                         "ownerReferences": [{"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
                                              "name": "s", "uid": "u", "controller": true}]},
            "spec": {"replicas": 1, "serviceName": "s", "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"annotations": {"craftplane.io/config-hash": "c1", "other": "x"}},
                                  "spec": {"containers": [{"name": "server", "image": "i"}]}}},
            "status": {"replicas": 1, "readyReplicas": 1}
        });
        let mut lean: StatefulSet = serde_json::from_value(full).unwrap();
        lean.slim();
        assert_eq!(lean.config_hash(), Some("c1"));
        assert!(!lean.scaled_to_zero());
        let back = lean.into_full();
        let a = back.metadata.annotations.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a["craftplane.io/applied-hash"], "a1");
        assert_eq!(back.metadata.owner_references.unwrap()[0].name, "s");
        let t = back.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
        assert_eq!(t.into_iter().collect::<Vec<_>>(), [("craftplane.io/config-hash".into(), "c1".into())]);
    }

    #[test]
    fn a_lean_pod_keeps_node_and_status() {
        let mut lean: Pod = serde_json::from_value(json!({
            "metadata": {"name": "s-0", "namespace": "ns", "labels": {"craftplane.io/server": "s", "x": "y"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "server", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        lean.slim();
        let pod = lean.into_full();
        assert_eq!(pod.metadata.labels.unwrap().len(), 1);
        assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("n1"));
        let st = pod.status.unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.conditions.unwrap()[0].status, "True");
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.1"), "RCON reaches the pod at its IP");
    }

    /// Objects without spec or status (as in watch events of deletions)
    /// decode too.
    #[test]
    fn bare_objects_decode() {
        let s: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
        assert_eq!(s.config_hash(), None);
        assert!(!s.scaled_to_zero(), "no replicas field: the API's default, one");
        let asleep: StatefulSet =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"replicas": 0}})).unwrap();
        assert!(asleep.scaled_to_zero());
        assert!(s.into_full().spec.is_none());
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {}})).unwrap();
        assert!(p.into_full().spec.unwrap().node_name.is_none());
    }
}
