//! Sleep and wake (`spec.sleep`) against the real API server: the operator
//! (under its chart RBAC) and the gateway as host processes, real npm
//! clients and an npm server standing in for the game server.
//!
//! kwok pods have fake IPs: the operator pings the npm server
//! (`--slp-address`), and once the operator has woken the server the test
//! writes what the EndpointSlice controller would for a real pod: a ready
//! address of the game Service, the npm server on this host (the woken
//! kwok pod is kept unscheduled, so its fake address never competes).

mod common;

use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::gateway::{Gateway, host_address};
use common::operator::{Operator, SHARD_LABEL};
use common::peers::SlpPeer;
use craftplane::api::MinecraftServer;
use craftplane::api::server::ServerPhase;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn phase(s: &MinecraftServer) -> Option<ServerPhase> {
    s.status.as_ref()?.phase
}

fn ready(s: &MinecraftServer) -> bool {
    s.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn replicas(f: &Fixture, name: &str) -> Option<i32> {
    f.api::<StatefulSet>().get(name).await.ok()?.spec?.replicas
}

async fn wake_leases(sys: &Api<Lease>) -> usize {
    sys.list(&ListParams::default().labels(craftplane::api::sleep::WAKE_LEASE_LABEL)).await.unwrap().items.len()
}

/// An operator for the fixture's servers whose Server List Pings all go to
/// the npm server at `ping` (kwok pods have fake addresses) and whose wake
/// Leases live in `sys_ns`; `extra` flags after those.
async fn operator_pinging(f: &Fixture, sys_ns: &str, ping: std::net::SocketAddr, extra: &[&str]) -> Operator {
    let base =
        ["--slp-interval=1".to_string(), format!("--slp-address={ping}"), format!("--operator-namespace={sys_ns}")];
    let args: Vec<&str> = base.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    Operator::start(&f.shard, &args).await
}

#[tokio::test]
async fn an_idle_server_sleeps_and_a_whitelisted_join_wakes_it_on_the_same_connection() {
    let f = Fixture::new("sleep").await;
    let sys_ns = common::namespace(&f.client, "sleep-sys").await;
    let sys: Api<Lease> = Api::namespaced(f.client.clone(), &sys_ns);
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 0, 20, "1.20.4");
    let base = format!("{}.play.test", f.shard);
    let gw = Gateway::start(
        common::kubeconfig_path(),
        &[
            &format!("--server-selector={SHARD_LABEL}={}", f.shard),
            &format!("--base-domain={base}"),
            &format!("--wake-namespace={sys_ns}"),
            "--connect-timeout-ms=300",
            "--wake-hold-seconds=50",
        ],
    );
    gw.wait_ready().await;
    let op = operator_pinging(
        &f,
        &sys_ns,
        (ip, peer.port).into(),
        &[&format!("--gateway-http=127.0.0.1:{}", gw.http), &format!("--base-domain={base}")],
    )
    .await;
    f.create_server("idle", json!({"whitelist": ["Steve"], "sleep": {"afterIdle": "10s"}})).await;
    let host = format!("idle.{}.{base}", f.ns);

    // Running and empty: the idle clock starts; 10 s later it sleeps.
    let s = f
        .wait("idle", "Running with an idle clock", &op, |s| {
            phase(s) == Some(ServerPhase::Running)
                && s.status.as_ref().and_then(|st| st.sleep.as_ref()).is_some_and(|sl| sl.idle_since.is_some())
        })
        .await;
    let idle_since = s.status.unwrap().sleep.unwrap().idle_since.unwrap().0;
    let s =
        f.wait("idle", "Hibernated and Ready", &op, |s| phase(s) == Some(ServerPhase::Hibernated) && ready(s)).await;
    let sleep = s.status.as_ref().unwrap().sleep.clone().unwrap();
    let asleep_since = sleep.asleep_since.clone().expect("asleepSince").0;
    let slept_after = asleep_since.duration_since(idle_since).as_secs_f64();
    assert!(slept_after >= 10.0, "slept {slept_after} s after the idle clock started (afterIdle 10s)");
    assert_eq!(replicas(&f, "idle").await, Some(0), "a sleeping server has no replica");
    assert!(
        f.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>()
            .get(&craftplane::resources::pvc_name("idle"))
            .await
            .is_ok(),
        "volume kept"
    );
    let seen = sleep.last_seen.clone().expect("lastSeen recorded before the sleep");
    assert_eq!(seen.max_players, 20);
    let events = f.api::<Event>().list(&ListParams::default()).await.unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Asleep") && e.involved_object.name.as_deref() == Some("idle")),
        "no Asleep Event"
    );

    // A status ping through the gateway: the gateway answers for it.
    let p = gw.client("ping", &host).await;
    let motd = p["ping"]["description"].to_string();
    assert!(motd.contains("asleep"), "{p}");
    assert_eq!(p["ping"]["version"]["name"], seen.version.as_str(), "{p}");
    assert_eq!(p["ping"]["players"]["max"], 20, "{p}");

    // A player the whitelist refuses: told so, and nothing wakes.
    let k = gw.client_as("join", &host, "Mallory", Duration::from_secs(10)).await;
    assert!(k["kicked"].as_str().is_some_and(|r| r.contains("not whitelisted")), "{k}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wake_leases(&sys).await, 0, "a refused player asked for a wake");
    assert!(gw.metric("craftplane_gateway_refusals_total{reason=\"NotWhitelisted\"}") >= 1.0);
    assert_eq!(phase(&f.servers().get("idle").await.unwrap()), Some(ServerPhase::Hibernated));

    // kwok would start the woken pod at once with a fake address (which
    // the sandbox's network may even answer): keep the woken pod on no node
    // (its SKU's nodeSelector names none), so the only ready address is the
    // test's, written once the operator has woken the server.
    Api::<craftplane::api::Sku>::all(f.client.clone())
        .patch(
            &f.sku,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"placement": {"nodeSelector": {"craftplane.io/test-no-such-node": "x"}}}}),
            ),
        )
        .await
        .expect("patch the SKU");
    common::wait_until(Duration::from_secs(30), || async {
        f.api::<StatefulSet>().get("idle").await.ok().and_then(|s| s.spec?.template.spec?.node_selector).is_some()
    })
    .await
    .expect("the SKU's placement reaches the StatefulSet");

    // A whitelisted player: the join wakes it and lands in the game on the
    // same connection.
    let started = Instant::now();
    let client = gw.client_as("join", &host, "Steve", Duration::from_secs(60));
    let endpoints = async {
        // The operator wakes it: one replica again.
        common::wait_until(Duration::from_secs(30), || async { replicas(&f, "idle").await == Some(1) })
            .await
            .unwrap_or_else(|()| panic!("not woken; operator log:\n{}", op.log_text()));
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "idle-test", "labels": {
                "kubernetes.io/service-name": "idle",
                "app.kubernetes.io/managed-by": "craftplane",
                "app.kubernetes.io/component": "game",
                "craftplane.io/server": "idle",
            }},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "minecraft", "port": peer.port, "protocol": "TCP"}],
        }))
        .unwrap();
        f.api::<EndpointSlice>().create(&PostParams::default(), &slice).await.expect("create EndpointSlice");
    };
    let (joined, ()) = tokio::join!(client, endpoints);
    assert_eq!(joined["joined"], true, "{joined}\ngateway log:\n{}", gw.log_text());
    let waited = started.elapsed();
    let s = f
        .wait("idle", "awake", &op, |s| {
            s.status.as_ref().and_then(|st| st.sleep.as_ref()).is_some_and(|sl| sl.wake_count == 1)
        })
        .await;
    let sleep = s.status.unwrap().sleep.unwrap();
    assert!(sleep.asleep_since.is_none());
    assert!(sleep.last_wake_by.as_deref().is_some_and(|b| b.contains("join of Steve")), "{sleep:?}");
    assert!(gw.metric("craftplane_gateway_wakes_total") >= 1.0);
    assert_eq!(op.metric("craftplane_server_sleeps_total"), Some(1.0), "operator's sleeps counted");
    assert_eq!(op.metric("craftplane_server_wakes_total"), Some(1.0), "operator's wakes counted");
    assert!(gw.metric("craftplane_gateway_wake_duration_seconds_count") >= 1.0);
    let operator_part = "craftplane_server_wake_part_seconds_count{part=\"operator\"}";
    assert_eq!(op.metric(operator_part), Some(1.0), "the operator's share of the wake observed once");
    common::wait_until(Duration::from_secs(10), || async { wake_leases(&sys).await == 0 })
        .await
        .expect("the operator deletes the wake request it handled");
    eprintln!("join of a sleeping server to the player in the game: {waited:?}");

    // A hard stop: nothing wakes it.
    f.patch_spec("idle", json!({"state": "Stopped"})).await;
    f.wait("idle", "Stopped", &op, |s| phase(s) == Some(ServerPhase::Stopped)).await;
    f.api::<EndpointSlice>().delete("idle-test", &Default::default()).await.unwrap();
    common::wait_until(Duration::from_secs(10), || async {
        gw.client("login", &host).await["kicked"].as_str().is_some_and(|r| r.contains("not running"))
    })
    .await
    .expect("a Stopped server's join is refused as not running");
    assert_eq!(wake_leases(&sys).await, 0, "a join of a Stopped server asked for a wake");
    assert_eq!(replicas(&f, "idle").await, Some(0));
    op.stop();
    drop(gw);
    common::delete_namespace(&f.client, &sys_ns).await;
    f.cleanup().await;
}

/// Many servers idle at once, as a host's quiet hour looks: each falls
/// asleep once and stays asleep. The operator must plan every reconcile
/// from its own last sleep, even when its cache of the server has not yet
/// seen that status write (the StatefulSet's scale-down and the pod's
/// deletion trigger reconciles at once): planned from the stale copy, the
/// server looks awake and is scaled up again — a wake nobody asked for,
/// seen at 1,000 servers as ~10 start/sleep cycles per server.
#[tokio::test]
async fn many_idle_servers_each_sleep_once_and_stay_asleep() {
    const N: usize = 40;
    let f = Fixture::new("sleep-many").await;
    let sys_ns = common::namespace(&f.client, "sleep-many-sys").await;
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 0, 20, "1.20.4");
    let op = operator_pinging(
        &f,
        &sys_ns,
        (ip, peer.port).into(),
        &[
            // No debounce: the next reconcile starts the moment the last
            // ends, the window a loaded API server's watch lag opens at
            // 1,000 servers (5 of 40 servers started again without the fix).
            "--debounce-ms=0",
        ],
    )
    .await;
    let since = k8s_openapi::jiff::Timestamp::now();
    let names: Vec<String> = (0..N).map(|i| format!("quiet-{i}")).collect();
    futures::future::join_all(names.iter().map(|n| f.create_server(n, json!({"sleep": {"afterIdle": "10s"}})))).await;

    let asleep = || async {
        let list = f.servers().list(&ListParams::default()).await.unwrap().items;
        list.iter().filter(|s| phase(s) == Some(ServerPhase::Hibernated)).count()
    };
    common::wait_until(Duration::from_secs(180), || async { asleep().await == N })
        .await
        .unwrap_or_else(|()| panic!("not all {N} asleep after 180 s\n{}", common::fixture::tail(&op.log_text(), 30)));
    // Longer than the idle time again: a server woken by mistake would have
    // a pod by now.
    tokio::time::sleep(Duration::from_secs(15)).await;

    let list = f.servers().list(&ListParams::default()).await.unwrap().items;
    let awake: Vec<_> =
        list.iter().filter(|s| phase(s) != Some(ServerPhase::Hibernated)).map(|s| s.name_any()).collect();
    assert!(awake.is_empty(), "asleep servers woke with nobody asking: {awake:?}");
    for s in &list {
        let sl = s.status.as_ref().and_then(|st| st.sleep.as_ref()).expect("status.sleep");
        assert_eq!(sl.wake_count, 0, "{}: woken {} times", s.name_any(), sl.wake_count);
    }
    // Every pod ever created here (the audit log has every write, by the
    // StatefulSet controller too): one per server, the first start.
    let mut creates: std::collections::BTreeMap<String, usize> = Default::default();
    for e in common::operator::writes(since, |e| {
        e["objectRef"]["resource"] == "pods"
            && e["objectRef"]["namespace"] == f.ns.as_str()
            && e["objectRef"]["subresource"].is_null()
            && e["verb"] == "create"
            && e["responseStatus"]["code"] == 201
    }) {
        *creates.entry(e["objectRef"]["name"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    let again: Vec<_> = creates.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(creates.len(), N, "pods created: {creates:?}");
    assert!(again.is_empty(), "pods started again after their server slept (name, creates): {again:?}");
    let sleeps = op.metric("craftplane_server_sleeps_total").unwrap_or(0.0);
    assert_eq!(sleeps, N as f64, "sleeps counted by the operator");
    eprintln!("{N} servers: each slept once, {} pods created in all, none again", creates.values().sum::<usize>());
    op.stop();
    common::delete_namespace(&f.client, &sys_ns).await;
    f.cleanup().await;
}

/// A server that fails to start after a wake says so (phase Failed with the
/// kubelet's reason, an Event) and is left as it is: no second wake, no
/// sleep-and-wake loop; the idle clock does not run while it fails.
#[tokio::test]
async fn a_server_failing_after_its_wake_says_so_and_is_not_woken_again() {
    let f = Fixture::new("sleep-fail").await;
    let sys_ns = common::namespace(&f.client, "sleep-fail-sys").await;
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 0, 20, "1.20.4");
    let op = operator_pinging(&f, &sys_ns, (ip, peer.port).into(), &[]).await;
    f.create_server("flaky", json!({"sleep": {"afterIdle": "10s"}})).await;
    f.wait("flaky", "Hibernated", &op, |s| phase(s) == Some(ServerPhase::Hibernated)).await;

    // The owner wakes it; the new pod's server crashes at start.
    f.servers()
        .patch(
            "flaky",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {craftplane::api::sleep::WAKE_ANNOTATION: "1"}}}),
            ),
        )
        .await
        .unwrap();
    common::wait_until(Duration::from_secs(60), || async {
        f.api::<k8s_openapi::api::core::v1::Pod>().get_opt("flaky-0").await.ok().flatten().is_some_and(|p| {
            p.metadata.deletion_timestamp.is_none() && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
        })
    })
    .await
    .expect("the woken server's pod running");
    let crash = json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "minecraft", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}});
    f.api::<k8s_openapi::api::core::v1::Pod>()
        .patch_status("flaky-0", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&crash))
        .await
        .unwrap();
    let s = f.wait("flaky", "Failed", &op, |s| phase(s) == Some(ServerPhase::Failed)).await;
    let st = s.status.unwrap();
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CrashLoopBackOff"), "{ready:?}");
    assert_eq!(st.sleep.as_ref().map(|s| s.wake_count), Some(1));
    common::wait_until(Duration::from_secs(30), || async {
        f.api::<Event>().list(&ListParams::default()).await.unwrap().items.iter().any(|e| {
            e.reason.as_deref() == Some("Failed")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some("flaky")
        })
    })
    .await
    .expect("a Warning Event Failed on the server");

    // Longer than the idle time: still failed, still the one pod, not put
    // to sleep, not woken again.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let s = f.servers().get("flaky").await.unwrap();
    let st = s.status.unwrap();
    assert_eq!(st.phase, Some(ServerPhase::Failed));
    let sl = st.sleep.unwrap();
    assert_eq!((sl.wake_count, sl.asleep_since.is_some(), sl.idle_since.is_some()), (1, false, false), "{sl:?}");
    assert_eq!(replicas(&f, "flaky").await, Some(1));
    assert_eq!(op.metric("craftplane_server_sleeps_total"), Some(1.0), "one sleep, before the wake");
    assert_eq!(op.metric("craftplane_server_wakes_total"), Some(1.0), "one wake");
    op.stop();
    common::delete_namespace(&f.client, &sys_ns).await;
    f.cleanup().await;
}

/// A cluster admin's ValidatingAdmissionPolicy named `name` that refuses
/// `resource` UPDATEs in the fixture's namespace unless `expression` holds
/// (the fault this test injects between two writes of one sleep); removed
/// with [`allow`].
async fn refuse(f: &Fixture, name: &str, group: &str, resource: &str, expression: &str) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [group], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": [resource]}]},
            "validations": [{"expression": expression, "message": "refused by the test's fault policy"}],
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f.ns}}}}
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<ValidatingAdmissionPolicy>::all(f.client.clone()).create(&pp, &policy).await.unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(f.client.clone()).create(&pp, &binding).await.unwrap();
}

async fn allow(f: &Fixture, name: &str) {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let dp = kube::api::DeleteParams::default();
    Api::<ValidatingAdmissionPolicyBinding>::all(f.client.clone()).delete(name, &dp).await.unwrap();
    Api::<ValidatingAdmissionPolicy>::all(f.client.clone()).delete(name, &dp).await.unwrap();
}

/// Whether a dry-run merge `patch` of `api`'s object `name` is refused
/// (polled until the admission policy is enforced).
async fn refused<K>(api: &Api<K>, name: &str, status: bool, patch: serde_json::Value) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = kube::api::PatchParams { dry_run: true, ..Default::default() };
    let p = kube::api::Patch::Merge(&patch);
    let r = if status { api.patch_status(name, &pp, &p).await } else { api.patch(name, &pp, &p).await };
    matches!(r, Err(kube::Error::Api(e)) if e.message.contains("refused by the test's fault policy"))
}

/// The operator stopped in the middle of a sleep: the decision
/// (`status.sleep.asleepSince`) is written before the StatefulSet is
/// scaled down, so a sleep is never half done in the way that undoes it.
/// Faults are injected with admission policies: (1) the status write is
/// refused — the server must keep running, its pod untouched; (2) the
/// status write passes and the scale-down is refused, the operator is
/// killed, a new one starts — it must finish the sleep, not start the
/// server again.
#[tokio::test]
async fn an_operator_stopped_mid_sleep_leaves_it_to_be_finished_not_undone() {
    let f = Fixture::new("sleep-half").await;
    let sys_ns = common::namespace(&f.client, "sleep-half-sys").await;
    let ip = host_address();
    let peer = SlpPeer::start_on(&ip.to_string(), 0, 20, "1.20.4");
    let mut op = operator_pinging(&f, &sys_ns, (ip, peer.port).into(), &[]).await;
    f.create_server("half", json!({})).await;
    f.wait("half", "Running", &op, |s| phase(s) == Some(ServerPhase::Running)).await;
    let since = k8s_openapi::jiff::Timestamp::now();
    let no_status = format!("{}-status", f.shard);
    refuse(
        &f,
        &no_status,
        "craftplane.io",
        "minecraftservers/status",
        "!has(object.status) || !has(object.status.sleep) || !has(object.status.sleep.asleepSince)",
    )
    .await;
    let asleep_patch = json!({"status": {"sleep": {"asleepSince": "2026-01-01T00:00:00Z"}}});
    common::wait_until(Duration::from_secs(30), || async {
        refused(&f.servers(), "half", true, asleep_patch.clone()).await
    })
    .await
    .expect("the status fault policy is not enforced");

    // (1) Idle for 10 s: the operator decides to sleep; its status write is
    // refused. The workload must not have changed.
    f.patch_spec("half", json!({"sleep": {"afterIdle": "10s"}})).await;
    let refused_writes = || {
        common::operator::operator_writes(since, |e| {
            e["objectRef"]["resource"] == "minecraftservers"
                && e["objectRef"]["subresource"] == "status"
                && e["objectRef"]["namespace"] == f.ns.as_str()
                && e["responseStatus"]["code"].as_i64().is_some_and(|c| c >= 400)
        })
        .len()
    };
    common::wait_until(Duration::from_secs(60), || async { refused_writes() >= 2 })
        .await
        .unwrap_or_else(|()| panic!("no refused sleep write\n{}", common::fixture::tail(&op.log_text(), 30)));
    let pod_deletes = |from| {
        common::operator::writes(from, |e| {
            e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["namespace"] == f.ns.as_str()
                && e["objectRef"]["subresource"].is_null()
                && e["verb"] == "delete"
        })
        .len()
    };
    assert_eq!(pod_deletes(since), 0, "the pod was stopped although the sleep was not recorded");
    assert_eq!(replicas(&f, "half").await, Some(1));
    let s = f.servers().get("half").await.unwrap();
    assert!(s.status.unwrap().sleep.and_then(|s| s.asleep_since).is_none());

    // (2) The decision may be written, the scale-down may not: the
    // operator records the sleep, then fails, and is killed.
    let no_scale = format!("{}-scale", f.shard);
    refuse(
        &f,
        &no_scale,
        "apps",
        "statefulsets",
        "object.metadata.name != 'half' || !has(object.spec.replicas) || object.spec.replicas != 0",
    )
    .await;
    common::wait_until(Duration::from_secs(30), || async {
        refused(&f.api::<StatefulSet>(), "half", false, json!({"spec": {"replicas": 0}})).await
    })
    .await
    .expect("the scale fault policy is not enforced");
    allow(&f, &no_status).await;
    common::wait_until(Duration::from_secs(30), || async {
        !refused(&f.servers(), "half", true, asleep_patch.clone()).await
    })
    .await
    .expect("the status fault policy still enforced");
    // The refusal stalled the server until its next change or resync: a
    // change (any annotation) makes it try again.
    let nudge = json!({"metadata": {"annotations": {"test.craftplane.io/nudge": "1"}}});
    f.servers().patch("half", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&nudge)).await.unwrap();
    let s = f
        .wait("half", "asleepSince recorded", &op, |s| {
            s.status.as_ref().and_then(|st| st.sleep.as_ref()).is_some_and(|sl| sl.asleep_since.is_some())
        })
        .await;
    let asleep_since = s.status.unwrap().sleep.unwrap().asleep_since;
    let scale_refused = || {
        common::operator::operator_writes(since, |e| {
            e["objectRef"]["resource"] == "statefulsets"
                && e["objectRef"]["namespace"] == f.ns.as_str()
                && e["responseStatus"]["code"].as_i64().is_some_and(|c| c >= 400)
        })
        .len()
    };
    common::wait_until(Duration::from_secs(30), || async { scale_refused() >= 1 })
        .await
        .expect("the operator's scale-down was not tried");
    op.kill9();
    assert_eq!(replicas(&f, "half").await, Some(1), "the fault held the scale-down");
    allow(&f, &no_scale).await;
    common::wait_until(Duration::from_secs(30), || async {
        !refused(&f.api::<StatefulSet>(), "half", false, json!({"spec": {"replicas": 0}})).await
    })
    .await
    .expect("the scale fault policy still enforced");

    // A new operator finishes the sleep: scaled down once, never up again.
    let restarted = k8s_openapi::jiff::Timestamp::now();
    let op = operator_pinging(&f, &sys_ns, (ip, peer.port).into(), &[]).await;
    let s = f.wait("half", "Hibernated", &op, |s| phase(s) == Some(ServerPhase::Hibernated)).await;
    let sl = s.status.unwrap().sleep.unwrap();
    assert_eq!(sl.asleep_since, asleep_since, "the recorded sleep is the one finished");
    assert_eq!(sl.wake_count, 0);
    // Longer than the idle time: a server started again would have a pod.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(replicas(&f, "half").await, Some(0));
    let creates = common::operator::writes(restarted, |e| {
        e["objectRef"]["resource"] == "pods"
            && e["objectRef"]["namespace"] == f.ns.as_str()
            && e["objectRef"]["subresource"].is_null()
            && e["verb"] == "create"
    });
    assert!(creates.is_empty(), "the server was started again: {} pod creates", creates.len());
    assert!(pod_deletes(restarted) > 0, "the finished sleep stopped the pod");
    assert!(f.api::<k8s_openapi::api::core::v1::Pod>().get_opt("half-0").await.unwrap().is_none(), "pod gone");
    assert_eq!(phase(&f.servers().get("half").await.unwrap()), Some(ServerPhase::Hibernated));
    op.stop();
    common::delete_namespace(&f.client, &sys_ns).await;
    f.cleanup().await;
}
