//! Shared harness for integration tests: a client for the control plane that
//! `cargo xtask test` starts for the run (CRAFTPLANE_TEST_KUBECONFIG).
//! Without it the tests fail loudly; they never skip.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use tokio::sync::OnceCell;

pub mod files;
pub mod fixture;
pub mod gateway;
pub mod modrinth;
pub mod operator;
pub mod peers;
pub mod s3;

/// Path of the test control plane's admin kubeconfig.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("CRAFTPLANE_TEST_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "CRAFTPLANE_TEST_KUBECONFIG is not set: integration tests need the local control plane. \
             Run them with `cargo xtask test` (it starts and stops one), or start one with \
             `cargo xtask cluster up` and set CRAFTPLANE_TEST_KUBECONFIG=$(cargo xtask cluster kubeconfig)."
        ),
    }
}

/// kubectl built for the control plane (falls back to `kubectl` on PATH).
pub fn kubectl() -> PathBuf {
    std::env::var_os("CRAFTPLANE_KUBECTL").map(PathBuf::from).unwrap_or_else(|| "kubectl".into())
}

/// A client for the admin user.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// Installs (server-side applies) the CRDs once per test binary and waits
/// until they are Established.
pub async fn ensure_crds(client: &Client) {
    CRDS.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let pp = PatchParams::apply("craftplane-tests").force();
        for crd in craftplane::api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            api.patch(&name, &pp, &Patch::Apply(&crd)).await.unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
        }
        for crd in craftplane::api::crds() {
            let name = crd.metadata.name.clone().unwrap();
            wait_until(Duration::from_secs(30), || async {
                api.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            })
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not Established"));
        }
    })
    .await;
}

/// Creates a fresh namespace with a unique name; returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let name = format!("{prefix}-{}", unique_suffix());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"craftplane.io/test": "true"}}})).unwrap();
    api.create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

/// Deletes a namespace (best effort, does not wait).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Short random suffix for object names.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}{:x}", nanos & 0xfffff, N.fetch_add(1, Ordering::Relaxed))
}

/// A loopback address for this test (127.100–199.x.y), different per call:
/// a pod IP the test's fake endpoints bind (`Fixture::set_pod_ip`).
pub fn loopback_ip() -> String {
    let n = unique_suffix().bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("127.{}.{}.{}", 100 + n % 100, (n >> 8) % 250 + 1, (n >> 16) % 250 + 1)
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Touches an object (a test annotation with a new value), so that its
/// controller reconciles it: see `Operator::reconciled_after`.
pub async fn poke<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {"test.craftplane.io/poke": unique_suffix()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap_or_else(|e| panic!("poke {name}: {e}"));
}

/// A client acting as `user` (and `groups`) through impersonation: the API
/// server authorizes every request as that user.
pub async fn client_as(user: &str, groups: &[&str]) -> Client {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).expect("kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).expect("client")
}

static POLICIES: OnceCell<()> = OnceCell::const_new();

/// Applies the chart's admission policies (what the Helm chart installs).
pub async fn ensure_admission_policies(client: &Client) {
    POLICIES
        .get_or_init(|| async {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/craftplane/files/allowed-skus-policy.yaml");
            apply_yaml_file(client, path).await;
        })
        .await;
}

/// Server-side applies every document of a YAML file (cluster-scoped or
/// namespaced, any kind the API server knows).
pub async fn apply_yaml_file(client: &Client, path: &str) {
    use kube::api::DynamicObject;
    use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let obj: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if obj.is_null() {
            continue;
        }
        let api_version = obj["apiVersion"].as_str().unwrap();
        let kind = obj["kind"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (ar, caps): (ApiResource, ApiCapabilities) = discovery.resolve_gvk(&gvk).expect("known kind");
        let name = obj["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            Api::namespaced_with(client.clone(), obj["metadata"]["namespace"].as_str().unwrap_or("default"), &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(name, &PatchParams::apply("craftplane-tests").force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {kind}/{name} from {path}: {e}"));
    }
}

/// Runs a Go test tool the xtask built (its path in `env`) on objects (a
/// JSON list on stdin); its lines "<kind>/<name> <verdict> <message>".
pub fn verdicts(env: &str, args: &[&str], objects: &[serde_json::Value]) -> Vec<Verdict> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let bin = std::env::var_os(env)
        .unwrap_or_else(|| panic!("{env} is not set: run the tests with `cargo xtask test` (it builds the tool)"));
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    child.stdin.take().unwrap().write_all(serde_json::to_string(objects).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.splitn(3, ' ');
            (p.next().unwrap_or("").into(), p.next().unwrap_or("").into(), p.next().unwrap_or("").into())
        })
        .collect()
}

/// A checking tool's verdict on one object: (kind/name, verdict, message).
pub type Verdict = (String, String, String);

/// Runs `check` on the objects `fetch` reads, every 500 ms for up to 60 s,
/// until the verdicts are `want` in order (a kind/name prefix and the
/// verdict each); panics with the last verdicts and `log` otherwise.
pub async fn until_verdicts<F, Fut>(
    tool: &str,
    want: &[(&str, &str)],
    log: impl Fn() -> String,
    mut fetch: F,
    check: impl Fn(&[serde_json::Value]) -> Vec<Verdict>,
) -> Vec<Verdict>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<serde_json::Value>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = check(&fetch().await);
        if got.len() == want.len() && want.iter().zip(&got).all(|((k, s), (gk, gs, _))| gk.starts_with(k) && gs == s) {
            return got;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{tool}: want {want:?}\ngot {got:#?}\noperator log:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An object as JSON, read from the API server (for the checking tools).
pub async fn get_json<K>(api: &Api<K>, name: &str) -> serde_json::Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}
