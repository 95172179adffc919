//! Two operator replicas with leader election: one reconciles, the other
//! makes no writes and takes over when the leader dies; a leader that loses
//! its Lease stops at once.

mod common;

use std::time::{Duration, Instant};

use common::operator::{Operator, SHARD_LABEL, operator2_kubeconfig, writes_by};
use craftplane::api::{MinecraftServer, Sku};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

async fn wait_metric(op: &Operator, name: &str, value: f64, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if op.metric(name) == Some(value) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn server_phase(api: &Api<MinecraftServer>, name: &str) -> Option<String> {
    api.get(name).await.ok()?.status?.phase.map(|p| format!("{p:?}"))
}

#[tokio::test]
async fn follower_makes_no_writes_and_takes_over_when_the_leader_dies() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let ns = common::namespace(&client, "leader").await;
    let shard = format!("leader-{}", common::unique_suffix());
    let flags = [
        "--leader-elect",
        "--operator-namespace",
        ns.as_str(),
        "--lease-name",
        "craftplane-leader",
        "--lease-duration",
        "15",
    ];

    let mut first = Operator::start(&shard, &flags).await;
    assert!(
        wait_metric(&first, "craftplane_leader", 1.0, Duration::from_secs(20)).await.is_some(),
        "first replica leads"
    );
    let second_started = Timestamp::now();
    let second = Operator::start_as(&shard, &flags, operator2_kubeconfig()).await;
    assert_eq!(second.metric("craftplane_leader"), Some(0.0), "second replica is a follower");

    let sku_name = format!("{shard}-small");
    let sku: Sku = serde_json::from_value(json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Sku",
        "metadata": {"name": sku_name, "labels": {SHARD_LABEL: shard}},
        "spec": {"resources": {"cpu": "1", "memory": "1Gi", "storage": "1Gi"}}}))
    .unwrap();
    Api::<Sku>::all(client.clone()).create(&PostParams::default(), &sku).await.unwrap();
    let servers: Api<MinecraftServer> = Api::namespaced(client.clone(), &ns);
    let s: MinecraftServer =
        serde_json::from_value(json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer",
        "metadata": {"name": "ha", "labels": {SHARD_LABEL: shard}}, "spec": {"sku": sku_name, "eula": true}}))
        .unwrap();
    servers.create(&PostParams::default(), &s).await.unwrap();
    let running = common::wait_until(Duration::from_secs(60), || async {
        server_phase(&servers, "ha").await.as_deref() == Some("Running")
    })
    .await;
    assert!(running.is_ok(), "the leader runs the server");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let follower_writes = writes_by("craftplane-operator-2", second_started, |_| true);
    let leader_writes =
        writes_by("craftplane-operator", second_started, |e| e["objectRef"]["namespace"] == ns.as_str());
    println!("while following: leader {} writes, follower {} writes", leader_writes.len(), follower_writes.len());
    assert!(!leader_writes.is_empty(), "sanity: the leader wrote");
    assert!(follower_writes.is_empty(), "the follower wrote: {follower_writes:#?}");

    // The leader dies without releasing the Lease.
    first.kill9();
    let took = wait_metric(&second, "craftplane_leader", 1.0, Duration::from_secs(40)).await;
    let took = took.expect("the follower never took over");
    println!("takeover after the leader was killed: {:.1}s (lease duration 15s)", took.as_secs_f64());
    assert!(took < Duration::from_secs(25), "takeover took {took:?}");
    // The new leader reconciles.
    servers.patch("ha", &PatchParams::default(), &Patch::Merge(json!({"spec": {"state": "Stopped"}}))).await.unwrap();
    let stopped = common::wait_until(Duration::from_secs(60), || async {
        server_phase(&servers, "ha").await.as_deref() == Some("Stopped")
    })
    .await;
    assert!(stopped.is_ok(), "the new leader reconciles");

    // A leader that loses its Lease stops at once: steal it.
    let mut second = second;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let stolen_at = Instant::now();
    leases
        .patch(
            "craftplane-leader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "intruder", "renewTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(), "leaseDurationSeconds": 3600}})),
        )
        .await
        .unwrap();
    let mut exit = None;
    while stolen_at.elapsed() < Duration::from_secs(30) {
        if let Some(status) = second.try_exit() {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = exit.expect("the leader kept running after losing its Lease");
    println!("leader exited {:.1}s after its Lease was taken, with {exit}", stolen_at.elapsed().as_secs_f64());
    assert!(!exit.success(), "losing the Lease is an error exit");
    assert!(second.log_text().contains("lost the leader Lease"));
    let _ = Api::<Sku>::all(client.clone()).delete(&sku_name, &Default::default()).await;
    common::delete_namespace(&client, &ns).await;
}
