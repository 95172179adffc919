//! Reliability: crash consistency under kill -9, and every pod template the
//! operator generates admitted by Pod Security "restricted".

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::Operator;
use craftplane::api::server::ServerPhase;
use craftplane::api::{MinecraftServer, Sku};
use craftplane::resources::backup_job::{self, JobInput, Task};
use craftplane::resources::{self, statefulset};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, PodSpec, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Creates a Pod from `spec` with a server-side dry run; Err is the API's refusal.
async fn dry_run_pod(client: &Client, ns: &str, name: &str, spec: PodSpec) -> Result<(), String> {
    let pod = Pod {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: Some(spec),
        status: None,
    };
    let pp = PostParams { dry_run: true, ..Default::default() };
    Api::<Pod>::namespaced(client.clone(), ns).create(&pp, &pod).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_pod_template_passes_pod_security_restricted() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = format!("psa-{}", common::unique_suffix());
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}}))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &n).await.unwrap();

    // The control: a pod that breaks "restricted" is refused here.
    let bad: PodSpec = serde_json::from_value(json!({"containers": [{"name": "x", "image": "busybox"}]})).unwrap();
    let refused = dry_run_pod(&client, &ns, "control", bad).await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("restricted")), "PodSecurity is not enforcing: {refused:?}");

    let sku: Sku = serde_json::from_value(
        json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Sku", "metadata": {"name": "s"},
        "spec": {"resources": {"cpu": "1", "memory": "2Gi", "storage": "5Gi"}}}),
    )
    .unwrap();
    let mut checked = 0;
    for (i, spec) in [
        json!({"sku": "s", "eula": true, "type": "PAPER", "version": "1.21.4"}),
        json!({"sku": "s", "eula": true, "type": "FABRIC", "version": "1.20.1", "whitelist": ["a"], "ops": ["b"],
               "gracefulStop": {"timeoutSeconds": 60, "warning": "bye"}, "jvmArgs": ["-XX:+UseG1GC"]}),
    ]
    .into_iter()
    .enumerate()
    {
        let server: MinecraftServer =
            serde_json::from_value(json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
            "metadata": {"name": format!("s{i}"), "namespace": ns, "uid": "u"}, "spec": spec}))
            .unwrap();
        let mut m = resources::validate(&server, Some(&sku), None, None).unwrap();
        // With plugins and their config volumes.
        m.plugins.plugins.push(craftplane::plugins::ManifestEntry {
            name: "lp".into(),
            file_name: "LP.jar".into(),
            url: "https://x.example/LP.jar".into(),
            sha256: Some("0".repeat(64)),
            sha512: None,
            config: Some(craftplane::plugins::ConfigFiles {
                config_map: "lp".into(),
                target: "plugins/LP".into(),
                hash: None,
            }),
        });
        let sts = statefulset::build(&m);
        let spec = sts.spec.unwrap().template.spec.unwrap();
        dry_run_pod(&client, &ns, &format!("server-{i}"), spec)
            .await
            .unwrap_or_else(|e| panic!("server pod refused: {e}"));
        checked += 1;
    }
    for (i, task) in
        [Task::Backup { flags: vec![], rcon: Some("10.244.0.9:25575".into()) }, Task::Restore].into_iter().enumerate()
    {
        let job = backup_job::build(&JobInput {
            name: format!("j{i}"),
            namespace: ns.clone(),
            server: "s0".into(),
            owner: Default::default(),
            snapshot: "snap".into(),
            location: "s3://b/x".into(),
            image: "craftplane:test".into(),
            settings: BTreeMap::from([("AWS_REGION".into(), "x".into())]),
            credentials: Some("creds".into()),
            node: Some("kwok-node-0".into()),
            placement: None,
            task,
        });
        let spec = job.spec.unwrap().template.spec.unwrap();
        dry_run_pod(&client, &ns, &format!("job-{i}"), spec).await.unwrap_or_else(|e| panic!("Job pod refused: {e}"));
        checked += 1;
    }
    println!("pod templates admitted under Pod Security restricted: {checked} (and the control refused)");
    common::delete_namespace(&client, &ns).await;
}

/// Children of each server, by kind, counted by the server label.
async fn children(f: &Fixture) -> BTreeMap<String, BTreeMap<&'static str, usize>> {
    let mut out: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=craftplane");
    macro_rules! count {
        ($kind:ty, $label:expr) => {
            for o in f.api::<$kind>().list(&lp).await.unwrap().items {
                if let Some(s) = o.labels().get("craftplane.io/server") {
                    *out.entry(s.clone()).or_default().entry($label).or_default() += 1;
                }
            }
        };
    }
    count!(StatefulSet, "statefulset");
    count!(PersistentVolumeClaim, "pvc");
    count!(Service, "service");
    count!(ConfigMap, "configmap");
    count!(Secret, "secret");
    out
}

/// Names (resource/name) of every child, as the API names its resource.
async fn child_names(f: &Fixture) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=craftplane");
    macro_rules! collect {
        ($kind:ty, $resource:expr) => {
            for o in f.api::<$kind>().list(&lp).await.unwrap().items {
                out.insert(format!("{}/{}", $resource, o.name_any()));
            }
        };
    }
    collect!(StatefulSet, "statefulsets");
    collect!(PersistentVolumeClaim, "persistentvolumeclaims");
    collect!(Service, "services");
    collect!(ConfigMap, "configmaps");
    collect!(Secret, "secrets");
    out
}

/// What the audit log says was written to one child.
#[derive(Default, Debug)]
struct ChildWrites {
    /// Writes answered 201: the object was created.
    created: usize,
    /// Writes whose client was killed mid-request (answered 5xx, "context
    /// canceled"): the API server may have stored them all the same.
    unknown: usize,
    /// Deletes that succeeded or may have (2xx or 5xx).
    deleted: usize,
}

/// Every write to a child kind in `ns`, by anyone, from the API server's
/// audit log (it records every write), by resource/name. A server-side
/// apply that creates its object is audited as a patch answered 201; a
/// write refused (4xx, e.g. 409 for an existing name) changed nothing.
fn child_writes(ns: &str) -> BTreeMap<String, ChildWrites> {
    const KINDS: [&str; 5] = ["statefulsets", "persistentvolumeclaims", "services", "configmaps", "secrets"];
    let text = std::fs::read_to_string(common::operator::audit_log()).expect("read audit log");
    let mut out: BTreeMap<String, ChildWrites> = BTreeMap::new();
    for e in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let o = &e["objectRef"];
        let resource = o["resource"].as_str().unwrap_or("");
        if o["namespace"] != ns || !KINDS.contains(&resource) || o["subresource"].is_string() {
            continue;
        }
        let key = format!("{resource}/{}", o["name"].as_str().unwrap_or("*"));
        let code = e["responseStatus"]["code"].as_u64().unwrap_or(0);
        let w = out.entry(key).or_default();
        match (e["verb"].as_str().unwrap_or(""), code) {
            ("create" | "patch" | "update", 201) => w.created += 1,
            ("create" | "patch" | "update", 0 | 500..) => w.unknown += 1,
            ("delete" | "deletecollection", 0 | 200..=299 | 500..) => w.deleted += 1,
            _ => {}
        }
    }
    out
}

async fn passwords(f: &Fixture) -> BTreeMap<String, Vec<u8>> {
    let lp = ListParams::default().labels("app.kubernetes.io/component=rcon");
    f.api::<Secret>()
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| Some((s.name_any(), s.data?.get("password")?.0.clone())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_creation_loses_and_replaces_nothing() {
    const N: usize = 100;
    let f = Fixture::new("crash").await;
    let mut op = Operator::start(&f.shard, &[]).await;
    // Five kill -9 moments while the servers are being created (ms after start; creating 100 takes ~7 s).
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut x = seed | 1;
    let mut moments: Vec<u64> = (0..5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            300 + x % 7_000
        })
        .collect();
    moments.sort();
    println!("kill -9 at ms {moments:?} (seed {seed})");
    let names: Vec<String> = (0..N).map(|i| format!("s{i:03}")).collect();
    let create = {
        let names = names.clone();
        let api = f.servers();
        let (sku, shard) = (f.sku.clone(), f.shard.clone());
        tokio::spawn(async move {
            for n in names {
                let s: MinecraftServer =
                    serde_json::from_value(json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
                    "metadata": {"name": n, "labels": {common::operator::SHARD_LABEL: shard}},
                    "spec": {"sku": sku, "eula": true, "type": "PAPER", "version": "1.21.4"}}))
                    .unwrap();
                api.create(&PostParams::default(), &s).await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    let t0 = std::time::Instant::now();
    let mut seen_passwords: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for at in &moments {
        while t0.elapsed() < Duration::from_millis(*at) {
            for (k, v) in passwords(&f).await {
                if seen_passwords.get(&k).is_some_and(|old| old != &v) {
                    changed.insert(k.clone());
                }
                seen_passwords.entry(k).or_insert(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        op.kill9();
        op = Operator::start(&f.shard, &[]).await;
    }
    create.await.unwrap();
    // Converge: every server Running and Ready.
    let api = f.servers();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let ready =
            list.iter().filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).count();
        if list.len() == N && ready == N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ready}/{} Running after the kills\n{}",
            list.len(),
            tail(&op.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "all {N} servers Running {:.1}s after the first kill",
        t0.elapsed().as_secs_f64() - moments[0] as f64 / 1000.0
    );
    // Exactly the expected children: no orphans, nothing missing (names are
    // fixed, so a second copy cannot exist; a replaced one can, see below).
    let kids = children(&f).await;
    let want: BTreeMap<&str, usize> =
        BTreeMap::from([("configmap", 1), ("pvc", 1), ("secret", 1), ("service", 1), ("statefulset", 1)]);
    let names_set: BTreeSet<String> = names.iter().cloned().collect();
    let orphans: Vec<&String> = kids.keys().filter(|k| !names_set.contains(*k)).collect();
    assert!(orphans.is_empty(), "children of servers that do not exist: {orphans:?}");
    for n in &names {
        assert_eq!(kids.get(n), Some(&want), "children of {n}");
    }
    // RCON passwords never changed.
    for (k, v) in passwords(&f).await {
        if seen_passwords.get(&k).is_some_and(|old| old != &v) {
            changed.insert(k.clone());
        }
    }
    assert!(changed.is_empty(), "RCON passwords changed: {changed:?}");
    // No child was ever deleted, nor created twice (a replaced PVC is a
    // lost world), over the whole run: the audit log has every write,
    // including those after the last kill. Every child now present has its
    // one create there (the log is complete and this reads it).
    let present = child_names(&f).await;
    assert_eq!(present.len(), 5 * N, "children present");
    let stored = |w: Option<&ChildWrites>| w.is_some_and(|w| w.created + w.unknown > 0);
    let mut writes = child_writes(&f.ns);
    let logged = common::wait_until(Duration::from_secs(10), || {
        writes = child_writes(&f.ns);
        let all = present.iter().all(|k| stored(writes.get(k)));
        async move { all }
    })
    .await;
    let missing: Vec<&String> = present.iter().filter(|k| !stored(writes.get(*k))).collect();
    assert!(logged.is_ok(), "children with no create in the audit log: {missing:?}");
    let replaced: Vec<String> =
        writes.iter().filter(|(_, w)| w.created > 1 || w.deleted > 0).map(|(k, w)| format!("{k}: {w:?}")).collect();
    assert!(replaced.is_empty(), "children deleted or created again during the kills: {replaced:?}");
    let cut = writes.values().filter(|w| w.created == 0 && w.unknown > 0).count();
    println!(
        "children exact for {N} servers; {} passwords watched, none changed; {} children created once each and never deleted (audit log; {cut} created by a request cut by a kill)",
        seen_passwords.len(),
        present.len(),
    );
    op.stop();
    f.cleanup().await;
}
