//! Flux/kstatus readiness of craftplane's objects, computed by kstatus
//! itself (sigs.k8s.io/cli-utils `pkg/kstatus/status`, built by the xtask as
//! tests/tools/kstatus-check) on real objects from the control plane: Current
//! only when Ready, InProgress while reconciling, Failed when Stalled.

mod common;

use common::fixture::{Fixture, tail};
use common::get_json as get;
use common::operator::{Operator, SHARD_LABEL};
use craftplane::api::server::ServerPhase;
use craftplane::api::{BackupSnapshot, ConsoleCommand, MinecraftServer, Sku};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// kstatus' verdict on each object: (kind/name, status, message).
fn kstatus(objects: &[Value]) -> Vec<common::Verdict> {
    common::verdicts("CRAFTPLANE_KSTATUS_CHECK", &[], objects)
}

#[tokio::test]
async fn kstatus_reads_every_phase_as_a_person_would() {
    let f = Fixture::new("kstatus").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("up", json!({})).await;
    f.create_server("down", json!({"state": "Stopped"})).await;
    f.create_server("nosku", json!({"sku": "does-not-exist"})).await;
    let phase = |p| move |s: &MinecraftServer| s.status.as_ref().and_then(|st| st.phase) == Some(p);
    f.wait("up", "Running", &op, phase(ServerPhase::Running)).await;
    f.wait("down", "Stopped", &op, phase(ServerPhase::Stopped)).await;
    // A SKU that does not exist: Pending, and Stalled (a spec change is needed).
    f.wait("nosku", "Stalled", &op, |s| {
        s.status.as_ref().is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True"))
    })
    .await;
    let commands = f.api::<ConsoleCommand>();
    for (name, server, command) in [("waits", "later", "list"), ("refused", "up", "stop")] {
        let c: ConsoleCommand = serde_json::from_value(json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "ConsoleCommand",
            "metadata": {"name": name, "labels": {SHARD_LABEL: f.shard}},
            "spec": {"server": server, "command": command},
        }))
        .unwrap();
        commands.create(&PostParams::default(), &c).await.unwrap();
    }
    let snap: BackupSnapshot = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot",
        "metadata": {"name": "nostore", "labels": {SHARD_LABEL: f.shard}},
        "spec": {"server": "up"},
    }))
    .unwrap();
    f.api::<BackupSnapshot>().create(&PostParams::default(), &snap).await.unwrap();

    let want = [
        ("MinecraftServer/up", "Current"),
        ("MinecraftServer/down", "Current"),
        ("MinecraftServer/nosku", "Failed"),
        ("ConsoleCommand/waits", "InProgress"),
        ("ConsoleCommand/refused", "Failed"),
        ("BackupSnapshot/nostore", "Failed"),
        ("Sku/", "Current"),
    ];
    let servers = f.servers();
    let skus: Api<Sku> = Api::all(f.client.clone());
    let snapshots = f.api::<BackupSnapshot>();
    let fetch = || async {
        vec![
            get(&servers, "up").await,
            get(&servers, "down").await,
            get(&servers, "nosku").await,
            get(&commands, "waits").await,
            get(&commands, "refused").await,
            get(&snapshots, "nostore").await,
            get(&skus, &f.sku).await,
        ]
    };
    let last = common::until_verdicts("kstatus", &want, || tail(&op.log_text(), 20), fetch, kstatus).await;
    for (k, s, m) in &last {
        println!("kstatus {k}: {s} ({m})");
    }
    op.stop();
    f.cleanup().await;
}
