//! A test namespace with a SKU and servers of one operator shard.

use std::time::Duration;

use craftplane::api::{MinecraftServer, Sku};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::operator::{Operator, SHARD_LABEL};

pub struct Fixture {
    pub client: Client,
    pub ns: String,
    pub shard: String,
    pub sku: String,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Fixture {
        let client = super::client().await;
        super::ensure_crds(&client).await;
        let ns = super::namespace(&client, prefix).await;
        let shard = format!("{prefix}-{}", super::unique_suffix());
        let sku = format!("{shard}-small");
        let f = Fixture { client, ns, shard, sku };
        f.create_sku(&f.sku, true).await;
        f
    }

    pub async fn create_sku(&self, name: &str, available: bool) {
        let sku: Sku = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "Sku",
            "metadata": {"name": name, "labels": {SHARD_LABEL: self.shard}},
            "spec": {"resources": {"cpu": "1", "memory": "2Gi", "storage": "5Gi"}, "maxPlayers": 20,
                     "defaultProperties": {"view-distance": "8"}, "available": available}
        }))
        .unwrap();
        Api::<Sku>::all(self.client.clone()).create(&PostParams::default(), &sku).await.expect("create sku");
    }

    pub async fn create_server(&self, name: &str, spec: Value) -> MinecraftServer {
        let mut full = json!({"sku": self.sku, "eula": true, "type": "PAPER", "version": "1.21.4"});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        let s: MinecraftServer = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
            "metadata": {"name": name, "namespace": self.ns, "labels": {SHARD_LABEL: self.shard}},
            "spec": full,
        }))
        .unwrap();
        self.servers().create(&PostParams::default(), &s).await.expect("create server")
    }

    pub fn servers(&self) -> Api<MinecraftServer> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.servers()
            .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
            .await
            .expect("patch server");
    }

    /// Polls the server until `pred` holds; panics with its status and the operator log.
    pub async fn wait(
        &self,
        name: &str,
        what: &str,
        op: &Operator,
        pred: impl Fn(&MinecraftServer) -> bool,
    ) -> MinecraftServer {
        let api = self.servers();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            if let Ok(s) = api.get(name).await {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            if tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{name}: {what} not reached in 60s; status: {}\noperator log tail:\n{}",
            serde_json::to_string_pretty(&last.and_then(|s| s.status)).unwrap(),
            tail(&op.log_text(), 40)
        )
    }

    /// Gives pod `pod` the IP `ip` (the operator reaches RCON at the pod's
    /// IP: a fake endpoint of the test) and waits until it stays.
    pub async fn set_pod_ip(&self, pod: &str, ip: &str) {
        let pods = self.api::<Pod>();
        let status = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
        pods.patch_status(pod, &PatchParams::default(), &Patch::Merge(&status)).await.expect("patch the pod's IP");
        super::wait_until(Duration::from_secs(10), || async {
            pods.get(pod).await.ok().and_then(|p| p.status?.pod_ip).as_deref() == Some(ip)
        })
        .await
        .unwrap_or_else(|()| panic!("the IP of pod {pod} did not stay {ip}"));
    }

    pub async fn cleanup(self) {
        let _ = Api::<Sku>::all(self.client.clone()).delete(&self.sku, &DeleteParams::default()).await;
        super::delete_namespace(&self.client, &self.ns).await;
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
