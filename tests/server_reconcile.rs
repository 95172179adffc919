//! The MinecraftServer and Sku reconcilers against the real API server:
//! kube-controller-manager runs the StatefulSets and garbage collection,
//! kwok makes pods Running and Ready.

mod common;

use std::time::Duration;

use common::operator::{Operator, operator_writes};
use craftplane::api::server::ServerPhase;
use craftplane::api::{MinecraftServer, Sku};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use common::fixture::{Fixture, tail};

fn phase(s: &MinecraftServer) -> Option<ServerPhase> {
    s.status.as_ref().and_then(|st| st.phase)
}

fn condition<'a>(
    s: &'a MinecraftServer,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

fn is_running_and_ready(s: &MinecraftServer) -> bool {
    phase(s) == Some(ServerPhase::Running)
        && condition(s, "Ready").is_some_and(|c| c.status == "True")
        && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
}

#[tokio::test]
async fn server_reaches_running_with_every_child() {
    let f = Fixture::new("running").await;
    let op = Operator::start(&f.shard, &[]).await;
    let created = f.create_server("alpha", json!({"properties": {"difficulty": "hard"}, "whitelist": ["Notch"]})).await;
    let s = f.wait(&created.name_any(), "Running + Ready", &op, is_running_and_ready).await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.address.as_deref(), Some(format!("alpha.{}.svc:25565", f.ns).as_str()));
    assert_eq!(condition(&s, "Reconciling").unwrap().status, "False");
    assert_eq!(condition(&s, "Stalled").unwrap().status, "False");
    assert_eq!(st.config_history.len(), 1);
    assert_eq!(st.config_history[0].revision, st.config_revision.clone().unwrap());

    let uid = s.uid().unwrap();
    let owned_by_server = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references.as_ref().is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
    };
    let sts = f.api::<StatefulSet>().get("alpha").await.expect("statefulset");
    assert!(owned_by_server(&sts.metadata));
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(1));
    let pvc = f.api::<PersistentVolumeClaim>().get("alpha-data").await.expect("pvc");
    assert!(owned_by_server(&pvc.metadata));
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    let game = f.api::<Service>().get("alpha").await.expect("game service");
    assert!(owned_by_server(&game.metadata));
    // Players' Service is headless by default (players come through the
    // gateway, which connects to the pod; no cluster IP to allocate); RCON
    // has no Service (the operator and backup Jobs use the pod's address).
    let game_ip = game.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert_eq!(game_ip, "None", "the default game Service is headless");
    let services = f.api::<Service>().list(&Default::default()).await.unwrap();
    let names: Vec<String> = services.items.iter().map(|s| s.name_any()).collect();
    assert_eq!(names, ["alpha"], "one Service per server");
    let cm = f.api::<ConfigMap>().get("alpha-config").await.expect("configmap");
    assert!(owned_by_server(&cm.metadata));
    let props = &cm.data.unwrap()["server.properties"];
    assert!(props.contains("difficulty=hard\n") && props.contains("view-distance=8\n"), "{props}");
    let secret = f.api::<Secret>().get("alpha-rcon").await.expect("rcon secret");
    assert!(owned_by_server(&secret.metadata));
    assert_eq!(secret.data.unwrap()["password"].0.len(), 32);
    let pod = f.api::<Pod>().get("alpha-0").await.expect("pod");
    let template_hash = pod.annotations().get("craftplane.io/config-hash").cloned();
    assert_eq!(template_hash, st.config_revision);
    // The pod passes the API server's Pod Security admission at "restricted"
    // (checked for real in the namespace test); here: its security context.
    let spec = pod.spec.unwrap();
    assert_eq!(spec.security_context.unwrap().run_as_non_root, Some(true));

    // The SKU counts its server.
    let sku_api = Api::<Sku>::all(f.client.clone());
    let counted = common::wait_until(Duration::from_secs(30), || async {
        sku_api.get(&f.sku).await.ok().and_then(|s| s.status).is_some_and(|st| st.servers == 1)
    })
    .await;
    assert!(counted.is_ok(), "Sku status.servers never became 1");
    // Events tell the story.
    let events: Api<k8s_openapi::api::core::v1::Event> = f.api();
    let list = events.list(&Default::default()).await.unwrap();
    let reasons: Vec<String> = list
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("alpha"))
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(reasons.contains(&"Running".to_string()), "events: {reasons:?}");
    op.stop();
    f.cleanup().await;
}

/// An upgrade from a release that gave each server an RCON Service: the
/// new operator deletes that Service (only the one its server owns, not a
/// same-named Service of someone else) and leaves the running server alone:
/// the StatefulSet is not rewritten and the pod is not replaced.
#[tokio::test]
async fn an_upgrade_deletes_the_old_rcon_service_and_keeps_the_pod() {
    let f = Fixture::new("rcon-legacy").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("delta", json!({})).await;
    f.create_server("echo", json!({})).await;
    f.wait("delta", "Running", &op, is_running_and_ready).await;
    f.wait("echo", "Running", &op, is_running_and_ready).await;
    op.stop();

    // The earlier release's RCON Service of "delta" (headless, owned by
    // the server), and one named like "echo"'s that "echo" does not own.
    let svcs = f.api::<Service>();
    let game = svcs.get("delta").await.unwrap();
    let legacy = |name: &str, owners| Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: game.metadata.labels.clone().map(|mut l| {
                l.insert("app.kubernetes.io/component".into(), "rcon".into());
                l
            }),
            owner_references: owners,
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: game.spec.as_ref().and_then(|s| s.selector.clone()),
            ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                name: Some("rcon".into()),
                port: 25575,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    svcs.create(&PostParams::default(), &legacy("delta-rcon", game.metadata.owner_references.clone())).await.unwrap();
    let foreign = svcs.create(&PostParams::default(), &legacy("echo-rcon", None)).await.unwrap();
    let sts_api = f.api::<StatefulSet>();
    let before_sts = sts_api.get("delta").await.unwrap();
    let before_pod = f.api::<Pod>().get("delta-0").await.unwrap();

    let op = Operator::start(&f.shard, &[]).await;
    let deleted =
        common::wait_until(Duration::from_secs(60), || async { svcs.get_opt("delta-rcon").await.unwrap().is_none() })
            .await;
    assert!(deleted.is_ok(), "the old RCON Service was not deleted\n{}", tail(&op.log_text(), 20));
    // "echo" reconciled by the new operator: a spec change observed.
    f.patch_spec("echo", json!({"motd": "after the upgrade"})).await;
    f.wait("echo", "the new generation observed", &op, |s| {
        s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    })
    .await;
    let kept = svcs.get("echo-rcon").await.expect("a Service the server does not own is kept");
    assert_eq!(kept.uid(), foreign.uid());
    let after_sts = sts_api.get("delta").await.unwrap();
    assert_eq!(after_sts.metadata.generation, before_sts.metadata.generation, "StatefulSet rewritten on upgrade");
    assert_eq!(after_sts.spec.unwrap().template, before_sts.spec.unwrap().template);
    let after_pod = f.api::<Pod>().get("delta-0").await.unwrap();
    assert_eq!(after_pod.uid(), before_pod.uid(), "the running server's pod was replaced");
    let s2 = f.wait("delta", "Running", &op, is_running_and_ready).await;
    assert!(s2.status.unwrap().conditions.iter().all(|c| c.type_ != "Stalled" || c.status == "False"));
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn the_game_service_moves_between_headless_and_a_cluster_ip() {
    let f = Fixture::new("svc-type").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("foxtrot", json!({})).await;
    f.wait("foxtrot", "Running + Ready", &op, is_running_and_ready).await;
    let svcs = f.api::<Service>();
    let ip_of = |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()).unwrap_or_default();
    let headless = svcs.get("foxtrot").await.unwrap();
    assert_eq!(ip_of(&headless), "None");
    // ClusterIP asked for: the Service is re-created with an IP (it cannot
    // gain one in place), and the server stays Running.
    f.patch_spec("foxtrot", json!({"service": {"type": "ClusterIP"}})).await;
    common::wait_until(Duration::from_secs(60), || async {
        svcs.get_opt("foxtrot").await.unwrap().is_some_and(|s| ip_of(&s).parse::<std::net::IpAddr>().is_ok())
    })
    .await
    .unwrap_or_else(|_| panic!("no cluster IP after asking for one\n{}", tail(&op.log_text(), 20)));
    let with_ip = svcs.get("foxtrot").await.unwrap();
    assert_ne!(with_ip.uid(), headless.uid(), "re-created, not patched");
    f.wait("foxtrot", "Running + Ready with a cluster IP", &op, is_running_and_ready).await;
    // And back to Headless.
    f.patch_spec("foxtrot", json!({"service": {"type": "Headless"}})).await;
    common::wait_until(Duration::from_secs(60), || async {
        svcs.get_opt("foxtrot").await.unwrap().is_some_and(|s| ip_of(&s) == "None")
    })
    .await
    .unwrap_or_else(|_| panic!("still a cluster IP after Headless\n{}", tail(&op.log_text(), 20)));
    assert!(!op.log_text().contains("immutable"), "{}", tail(&op.log_text(), 20));
}

#[tokio::test]
async fn stopped_scales_to_zero_and_back() {
    let f = Fixture::new("stopped").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("beta", json!({})).await;
    f.wait("beta", "Running", &op, is_running_and_ready).await;
    // A whitelist and ops given as it stops (one patch, as a sleep and a
    // whitelist can come together): not through the running pod's
    // template (they go live), but into the stopped one's, so its next
    // start begins with them in force.
    f.patch_spec("beta", json!({"state": "Stopped", "whitelist": ["Steve"], "ops": ["Alex"]})).await;
    let s = f
        .wait("beta", "Stopped + Ready", &op, |s| {
            phase(s) == Some(ServerPhase::Stopped) && condition(s, "Ready").is_some_and(|c| c.status == "True")
        })
        .await;
    assert_eq!(condition(&s, "Ready").unwrap().reason, "Stopped");
    let sts = f.api::<StatefulSet>().get("beta").await.unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(0));
    assert!(f.api::<Pod>().get_opt("beta-0").await.unwrap().is_none(), "pod gone");
    assert!(f.api::<PersistentVolumeClaim>().get_opt("beta-data").await.unwrap().is_some(), "world kept");
    let env_names = || async {
        let sts = f.api::<StatefulSet>().get("beta").await.unwrap();
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let c = pod.containers.into_iter().find(|c| c.name == "minecraft").unwrap();
        c.env.unwrap_or_default().into_iter().map(|e| e.name).collect::<Vec<_>>()
    };
    let has_lists =
        |names: &[String]| ["WHITELIST", "OPS", "ENABLE_WHITELIST"].iter().all(|n| names.contains(&n.to_string()));
    // (Waited for, then asserted on what is there.)
    let _ = common::wait_until(Duration::from_secs(20), || async { has_lists(&env_names().await) }).await;
    let names = env_names().await;
    assert!(has_lists(&names), "the stopped server's template lacks its lists: {names:?}");
    f.patch_spec("beta", json!({"state": "Running"})).await;
    f.wait("beta", "Running again", &op, is_running_and_ready).await;
    let names = env_names().await;
    assert!(has_lists(&names), "started without its lists: {names:?}");
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn a_property_change_rolls_the_pod_and_records_history() {
    let f = Fixture::new("rollout").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("gamma", json!({"whitelist": ["Notch"]})).await;
    let before = f.wait("gamma", "Running", &op, is_running_and_ready).await;
    let rev0 = before.status.unwrap().config_revision.unwrap();
    let pod_uid0 = f.api::<Pod>().get("gamma-0").await.unwrap().uid();

    // A whitelist member is applied live: same revision, same pod.
    f.patch_spec("gamma", json!({"whitelist": ["Notch", "jeb_"]})).await;
    let s = f
        .wait("gamma", "observed generation 2", &op, |s| {
            s.status.as_ref().and_then(|st| st.observed_generation) == Some(2)
        })
        .await;
    assert_eq!(s.status.unwrap().config_revision.as_deref(), Some(rev0.as_str()));
    let cm = f.api::<ConfigMap>().get("gamma-config").await.unwrap();
    assert_eq!(cm.data.unwrap()["whitelist"], "Notch\njeb_\n");

    // A property needs a restart: new revision on the template, new pod.
    f.patch_spec("gamma", json!({"properties": {"pvp": "false"}})).await;
    let s = f
        .wait("gamma", "new revision Running", &op, |s| {
            is_running_and_ready(s) && s.status.as_ref().and_then(|st| st.config_revision.clone()) != Some(rev0.clone())
        })
        .await;
    let st = s.status.unwrap();
    let rev1 = st.config_revision.unwrap();
    assert_eq!(st.config_history.len(), 2);
    assert_eq!(
        (st.config_history[0].revision.as_str(), st.config_history[1].revision.as_str()),
        (rev1.as_str(), rev0.as_str())
    );
    assert_eq!(st.config_history[0].generation, 3);
    let sts = f.api::<StatefulSet>().get("gamma").await.unwrap();
    let tmpl = sts.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(tmpl["craftplane.io/config-hash"], rev1);
    // The StatefulSet controller replaced the pod with one of the new revision.
    let pods = f.api::<Pod>();
    let rolled = common::wait_until(Duration::from_secs(60), || async {
        pods.get("gamma-0")
            .await
            .ok()
            .is_some_and(|p| p.uid() != pod_uid0 && p.annotations().get("craftplane.io/config-hash") == Some(&rev1))
    })
    .await;
    assert!(rolled.is_ok(), "pod was not replaced with the new config revision");
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn unknown_or_unavailable_sku_gives_a_condition_and_no_workload() {
    let f = Fixture::new("badsku").await;
    let op = Operator::start(&f.shard, &[]).await;
    let missing = format!("{}-missing", f.shard);
    f.create_server("delta", json!({"sku": missing})).await;
    let s =
        f.wait("delta", "SkuNotFound", &op, |s| condition(s, "Ready").is_some_and(|c| c.reason == "SkuNotFound")).await;
    assert_eq!(condition(&s, "Ready").unwrap().status, "False");
    assert_eq!(condition(&s, "Stalled").unwrap().status, "True");
    assert_eq!(phase(&s), Some(ServerPhase::Pending));
    assert!(condition(&s, "Ready").unwrap().message.contains(&missing));

    let unavailable = format!("{}-retired", f.shard);
    f.create_sku(&unavailable, false).await;
    f.create_server("epsilon", json!({"sku": unavailable})).await;
    f.wait("epsilon", "SkuUnavailable", &op, |s| condition(s, "Ready").is_some_and(|c| c.reason == "SkuUnavailable"))
        .await;

    // A reconcile of each after the refusal was reported: it created nothing.
    op.reconciled_after("MinecraftServer", 2, || async {
        common::poke(&f.servers(), "delta").await;
        common::poke(&f.servers(), "epsilon").await;
    })
    .await;
    for name in ["delta", "epsilon"] {
        assert!(f.api::<StatefulSet>().get_opt(name).await.unwrap().is_none(), "{name} got a StatefulSet");
        assert!(f.api::<PersistentVolumeClaim>().get_opt(&format!("{name}-data")).await.unwrap().is_none());
    }

    // The missing SKU appears: the server proceeds without a spec change.
    f.create_sku(&missing, true).await;
    f.wait("delta", "Running once the SKU exists", &op, is_running_and_ready).await;

    // A running server whose SKU becomes unavailable keeps running.
    Api::<Sku>::all(f.client.clone())
        .patch(&missing, &PatchParams::default(), &Patch::Merge(json!({"spec": {"available": false}})))
        .await
        .unwrap();
    op.reconciled_after("MinecraftServer", 1, || async { common::poke(&f.servers(), "delta").await }).await;
    let s = f.wait("delta", "still Running", &op, is_running_and_ready).await;
    assert_eq!(phase(&s), Some(ServerPhase::Running));
    assert_eq!(f.api::<StatefulSet>().get("delta").await.unwrap().spec.unwrap().replicas, Some(1));
    op.stop();
    for sku in [&missing, &unavailable] {
        let _ = Api::<Sku>::all(f.client.clone()).delete(sku, &DeleteParams::default()).await;
    }
    f.cleanup().await;
}

#[tokio::test]
async fn deletion_policy_retain_keeps_the_world_and_delete_removes_it() {
    let f = Fixture::new("deletion").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("keep", json!({})).await;
    f.create_server("drop", json!({"deletionPolicy": "Delete"})).await;
    f.wait("keep", "Running", &op, is_running_and_ready).await;
    f.wait("drop", "Running", &op, is_running_and_ready).await;
    for name in ["keep", "drop"] {
        f.servers().delete(name, &DeleteParams::default()).await.unwrap();
    }
    let servers = f.servers();
    let gone = common::wait_until(Duration::from_secs(60), || async {
        servers.get_opt("keep").await.unwrap().is_none() && servers.get_opt("drop").await.unwrap().is_none()
    })
    .await;
    assert!(gone.is_ok(), "servers not deleted (finalizer stuck?)\n{}", tail(&op.log_text(), 30));
    // Garbage collection (kube-controller-manager) removes the owned children.
    let pvcs = f.api::<PersistentVolumeClaim>();
    let stss = f.api::<StatefulSet>();
    let collected = common::wait_until(Duration::from_secs(60), || async {
        pvcs.get_opt("drop-data").await.unwrap().is_none()
            && stss.get_opt("keep").await.unwrap().is_none()
            && stss.get_opt("drop").await.unwrap().is_none()
    })
    .await;
    assert!(collected.is_ok(), "garbage collector did not remove the children");
    let kept = pvcs.get("keep-data").await.expect("Retain keeps the world volume");
    assert!(kept.metadata.owner_references.clone().unwrap_or_default().is_empty(), "retained PVC has no owner");
    assert_eq!(kept.labels().get("craftplane.io/retained").map(String::as_str), Some("true"));
    assert!(kept.metadata.deletion_timestamp.is_none());
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing_when_nothing_changed() {
    let f = Fixture::new("idle").await;
    let started = Timestamp::now();
    let op = Operator::start(&f.shard, &[]).await;
    for name in ["one", "two", "three"] {
        f.create_server(name, json!({"whitelist": ["Notch"]})).await;
    }
    for name in ["one", "two", "three"] {
        f.wait(name, "Running", &op, is_running_and_ready).await;
    }
    let sku_api = Api::<Sku>::all(f.client.clone());
    let counted = common::wait_until(Duration::from_secs(30), || async {
        sku_api.get(&f.sku).await.ok().and_then(|s| s.status).is_some_and(|st| st.servers == 3)
    })
    .await;
    assert!(counted.is_ok());
    let passwords = rcon_passwords(&f).await;
    // Let trailing events settle, then restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.stop();

    let ours = |e: &Value| e["objectRef"]["namespace"] == f.ns.as_str() || e["objectRef"]["name"] == f.sku.as_str();
    let first_run = operator_writes(started, ours);
    assert!(first_run.len() >= 3 * 6, "the first run must have written (sanity): {} writes", first_run.len());

    let restarted = Timestamp::now();
    let op = Operator::start(&f.shard, &[]).await;
    // Every object is reconciled at start-up: wait until the three have been.
    let reconciled = common::wait_until(Duration::from_secs(60), || async {
        op.reconciles("MinecraftServer").is_some_and(|(done, running)| done >= 3.0 && running == 0.0)
    })
    .await;
    assert!(
        reconciled.is_ok(),
        "the restarted operator did not reconcile the servers: {:?}",
        op.reconciles("MinecraftServer")
    );
    for name in ["one", "two", "three"] {
        f.wait(name, "Running", &op, is_running_and_ready).await;
    }
    let (code, metrics) = op.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let reconciles: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("craftplane_reconciles_total{") && l.contains("kind=\"MinecraftServer\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(reconciles >= 3.0, "the restarted operator reconciled the servers ({reconciles})");
    op.stop();
    let after = operator_writes(restarted, ours);
    println!(
        "writes: first run {}, after restart {} (reconciles after restart: {reconciles})",
        first_run.len(),
        after.len()
    );
    assert!(
        after.is_empty(),
        "the restarted operator wrote:\n{}",
        after
            .iter()
            .map(|e| format!("{} {} {}", e["verb"], e["requestURI"], e["responseStatus"]["code"]))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(rcon_passwords(&f).await, passwords, "RCON passwords never change");
    f.cleanup().await;
}

async fn rcon_passwords(f: &Fixture) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for name in ["one", "two", "three"] {
        let s = f.api::<Secret>().get(&format!("{name}-rcon")).await.unwrap();
        out.push(s.data.unwrap()["password"].0.clone());
    }
    out
}

/// A lying server (a plugin rewriting the ping answer): a version of
/// 50,000 characters with terminal escapes, 1000 sample entries. What ends
/// in status is bounded and clean.
#[tokio::test]
async fn a_lying_server_list_ping_answer_is_bounded_and_clean_in_status() {
    let sample: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"name": format!("p{i}"), "id": "1"}))
        .chain([json!({"name": "\u{1b}[2Jx", "id": "2"}), json!({"name": "y".repeat(300), "id": "3"})])
        .collect();
    let status = json!({
        "version": {"name": format!("\u{1b}]0;owned\u{7}\u{1b}[5mPaper {}\u{9b}0m", "9".repeat(50_000)), "protocol": 767},
        "players": {"max": 20, "online": 1000, "sample": sample},
        "description": {"text": "\u{1b}[31mhi"},
    });
    let port = common::peers::fake_slp(status.to_string()).await;
    let f = Fixture::new("slp-lying").await;
    let addr = format!("127.0.0.1:{port}");
    let op = Operator::start(&f.shard, &["--slp-interval", "1", "--slp-address", &addr]).await;
    f.create_server("liar", json!({})).await;
    let s = f
        .wait("liar", "players from Server List Ping", &op, |s| {
            s.status.as_ref().and_then(|st| st.players.as_ref()).is_some_and(|p| p.online == 1000)
        })
        .await;
    let st = s.status.unwrap();
    let version = st.version.unwrap_or_default();
    assert!(version.len() <= craftplane::resources::text::MAX_VERSION, "status.version of {} bytes", version.len());
    assert!(version.starts_with("Paper 999") && version.ends_with('…'), "{version:?}");
    assert!(!version.chars().any(char::is_control), "{version:?}");
    let names = st.players.unwrap().names;
    assert!(names.len() <= 20 && names.iter().all(|n| n.len() <= 16 && n.starts_with('p')), "{names:?}");
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn server_list_ping_fills_players_and_version() {
    let peer = common::peers::SlpPeer::start(3, 25, "1.20.4");
    let f = Fixture::new("slp").await;
    let addr = format!("127.0.0.1:{}", peer.port);
    let op = Operator::start(&f.shard, &["--slp-interval", "1", "--slp-address", &addr]).await;
    f.create_server("zeta", json!({})).await;
    let s = f
        .wait("zeta", "players from Server List Ping", &op, |s| {
            s.status.as_ref().and_then(|st| st.players.as_ref()).is_some_and(|p| p.online == 3 && p.max == 25)
        })
        .await;
    let st = s.status.unwrap();
    assert_eq!(st.version.as_deref(), Some("1.20.4"));
    assert_eq!(st.phase, Some(ServerPhase::Running));
    drop(peer);
    op.stop();
    f.cleanup().await;
}

/// Issue 30 item 10: a StorageClass the SKU does not name gets no volume.
#[tokio::test]
async fn a_storage_class_the_sku_does_not_name_gets_no_volume() {
    let f = Fixture::new("class").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("premium", json!({"storage": {"storageClassName": "premium-ssd"}})).await;
    let s = f
        .wait("premium", "StorageClassNotAllowed", &op, |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "StorageClassNotAllowed")
        })
        .await;
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("premium-ssd"), "{}", ready.message);
    // A reconcile after the refusal was reported: it created nothing.
    op.reconciled_after("MinecraftServer", 1, || async { common::poke(&f.servers(), "premium").await }).await;
    assert!(f.api::<PersistentVolumeClaim>().get_opt("premium-data").await.unwrap().is_none(), "no claim");
    assert!(f.api::<StatefulSet>().get_opt("premium").await.unwrap().is_none(), "no workload");
    op.stop();
    f.cleanup().await;
}
