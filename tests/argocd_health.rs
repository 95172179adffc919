//! The Argo CD health checks the chart ships
//! (charts/craftplane/files/argocd-cm.yaml), run by Argo CD's own code
//! (argo-cd v3 settings manager + util/lua + gitops-engine health, built by
//! the xtask as tests/tools/argocd-health) on real objects from the control
//! plane in each state: Healthy, Progressing, Degraded, Suspended.

mod common;

use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::get_json as get;
use common::operator::{Operator, SHARD_LABEL};
use craftplane::api::server::ServerPhase;
use craftplane::api::{BackupSnapshot, ConsoleCommand, MinecraftServer, PluginInstallation, Sku, Tenant};
use kube::api::{Api, DeleteParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const ARGOCD_CM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/craftplane/files/argocd-cm.yaml");

fn argocd(objects: &[Value]) -> Vec<common::Verdict> {
    common::verdicts("CRAFTPLANE_ARGOCD_HEALTH", &[ARGOCD_CM], objects)
}

async fn create<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let o: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &o).await.expect("create");
}

#[tokio::test]
async fn argo_cd_reads_every_state_as_a_person_would() {
    let f = Fixture::new("argocd").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("up", json!({})).await;
    f.create_server("down", json!({"state": "Stopped"})).await;
    f.create_server("nosku", json!({"sku": "does-not-exist"})).await;
    // Not this test operator's shard: no operator ever looks at it.
    let servers = f.servers();
    create(
        &servers,
        json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "MinecraftServer", "metadata": {"name": "unseen"},
               "spec": {"sku": f.sku, "eula": true, "type": "PAPER", "version": "1.21.4"}}),
    )
    .await;
    let phase = |p| move |s: &MinecraftServer| s.status.as_ref().and_then(|st| st.phase) == Some(p);
    f.wait("up", "Running", &op, phase(ServerPhase::Running)).await;
    f.wait("down", "Stopped", &op, phase(ServerPhase::Stopped)).await;
    let commands = f.api::<ConsoleCommand>();
    for (name, server, command) in [("waits", "later", "list"), ("refused", "up", "stop")] {
        create(
            &commands,
            json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "ConsoleCommand",
                   "metadata": {"name": name, "labels": {SHARD_LABEL: f.shard}},
                   "spec": {"server": server, "command": command}}),
        )
        .await;
    }
    let snapshots = f.api::<BackupSnapshot>();
    create(
        &snapshots,
        json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot",
               "metadata": {"name": "nostore", "labels": {SHARD_LABEL: f.shard}}, "spec": {"server": "up"}}),
    )
    .await;
    let plugins = f.api::<PluginInstallation>();
    let source = json!({"url": {"url": "https://plugins.example/Hello-1.0.jar",
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}});
    for (name, server) in [("on-up", "up"), ("on-later", "later")] {
        create(
            &plugins,
            json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "PluginInstallation",
                   "metadata": {"name": name, "labels": {SHARD_LABEL: f.shard}},
                   "spec": {"server": server, "source": source}}),
        )
        .await;
    }
    let tenants: Api<Tenant> = Api::all(f.client.clone());
    let tenant = format!("argo-{}", common::unique_suffix());
    create(
        &tenants,
        json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant",
               "metadata": {"name": tenant, "labels": {SHARD_LABEL: f.shard}},
               "spec": {"owners": [{"kind": "User", "name": "o"}]}}),
    )
    .await;

    let want = [
        ("MinecraftServer/up", "Healthy"),
        ("MinecraftServer/down", "Suspended"),
        ("MinecraftServer/nosku", "Degraded"),
        ("MinecraftServer/unseen", "Progressing"),
        ("ConsoleCommand/waits", "Progressing"),
        ("ConsoleCommand/refused", "Degraded"),
        ("BackupSnapshot/nostore", "Degraded"),
        ("PluginInstallation/on-up", "Healthy"),
        ("PluginInstallation/on-later", "Progressing"),
        ("Sku/", "Healthy"),
        ("Tenant/", "Healthy"),
    ];
    let skus: Api<Sku> = Api::all(f.client.clone());
    let fetch = || async {
        vec![
            get(&servers, "up").await,
            get(&servers, "down").await,
            get(&servers, "nosku").await,
            get(&servers, "unseen").await,
            get(&commands, "waits").await,
            get(&commands, "refused").await,
            get(&snapshots, "nostore").await,
            get(&plugins, "on-up").await,
            get(&plugins, "on-later").await,
            get(&skus, &f.sku).await,
            get(&tenants, &tenant).await,
        ]
    };
    let last = common::until_verdicts("Argo CD health", &want, || tail(&op.log_text(), 20), fetch, argocd).await;
    // The messages say why, in words.
    let message = |k: &str| last.iter().find(|(gk, _, _)| gk == k).map(|(_, _, m)| m.clone()).unwrap_or_default();
    assert!(message("MinecraftServer/up").starts_with("phase Running"), "{last:#?}");
    assert!(message("MinecraftServer/nosku").contains("does-not-exist"), "{last:#?}");
    assert!(message("ConsoleCommand/refused").contains("CommandNotAllowed"), "{last:#?}");
    assert_eq!(message("MinecraftServer/unseen"), "Waiting for the operator");
    for (k, s, m) in &last {
        println!("argocd {k}: {s} ({m})");
    }

    tenants.delete(&tenant, &DeleteParams::default()).await.unwrap();
    let _ = common::wait_until(Duration::from_secs(60), || async { tenants.get_opt(&tenant).await.unwrap().is_none() })
        .await;
    common::delete_namespace(&f.client, &format!("tenant-{tenant}")).await;
    op.stop();
    f.cleanup().await;
}
