//! `kubectl craftplane` against the real API server, as the admin and as an
//! impersonated tenant user who may only read: status (text and JSON),
//! start/stop/restart through the spec, backup --wait, backups, restore,
//! console (an answer or the reason), report without Secrets, and plain
//! words for what RBAC refused.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::Operator;
use craftplane::api::server::{ServerPhase, ServerState};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use serde_json::json;

fn plugin(ns: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-craftplane"))
        .args(["-n", ns])
        .args(args)
        .env("KUBECONFIG", common::kubeconfig_path())
        .output()
        .expect("run kubectl-craftplane")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(ns: &str, args: &[&str]) -> String {
    let o = plugin(ns, args);
    assert!(o.status.success(), "kubectl craftplane {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test]
async fn the_plugin_does_day_two_work_through_the_objects() {
    let f = Fixture::new("plugin").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({"whitelist": ["alice"]})).await;
    f.wait("mc", "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;
    let ns = f.ns.clone();

    // status: one screen, plain text when stdout is not a terminal.
    let screen = ok(&ns, &["status", "mc"]);
    for want in ["Server:", "Phase:", "Running", "SKU:", "Plugins:", "Last backup:", "Conditions:", "Ready"] {
        assert!(screen.contains(want), "status lacks {want:?}:\n{screen}");
    }
    assert!(!screen.contains('\x1b'), "no colour without a terminal");
    assert!(ok(&ns, &["status"]).lines().any(|l| l.starts_with("mc ")), "the namespace's table lists mc");
    let v: serde_json::Value = serde_json::from_str(&ok(&ns, &["status", "mc", "-o", "json"])).unwrap();
    assert_eq!(v["server"]["metadata"]["name"], "mc");

    // stop / start / restart: through the spec (and an annotation).
    ok(&ns, &["stop", "mc"]);
    assert_eq!(f.servers().get("mc").await.unwrap().spec.state, ServerState::Stopped);
    ok(&ns, &["start", "mc"]);
    assert_eq!(f.servers().get("mc").await.unwrap().spec.state, ServerState::Running);
    ok(&ns, &["restart", "mc"]);
    let sts = f.api::<StatefulSet>();
    common::wait_until(Duration::from_secs(30), || async {
        let s = sts.get("mc").await.unwrap();
        let a = s.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default();
        a.contains_key(craftplane::kubectl::RESTARTED_AT)
    })
    .await
    .unwrap_or_else(|()| panic!("restart did not reach the pod template\n{}", tail(&op.log_text(), 20)));

    // backup --wait: no store is configured here, so it fails, and says so.
    let o = plugin(&ns, &["backup", "mc", "--name", "b1", "--wait"]);
    assert!(!o.status.success(), "a failed backup exits non-zero: {}", text(&o));
    assert!(text(&o).contains("Failed") && text(&o).contains("StoreNotConfigured"), "{}", text(&o));
    let list = ok(&ns, &["backups", "mc"]);
    assert!(list.lines().any(|l| l.starts_with("b1 ") && l.contains("Failed") && l.contains("Manual")), "{list}");
    ok(&ns, &["restore", "mc", "b1"]);
    let s = f.servers().get("mc").await.unwrap();
    assert_eq!(s.spec.restore.map(|r| r.snapshot), Some("b1".to_string()));
    f.patch_spec("mc", json!({"restore": null})).await;

    // console: the refusal and its reason (kwok pods answer no RCON).
    let o = plugin(&ns, &["console", "mc", "--", "whitelist", "add", "mallory"]);
    assert!(!o.status.success() && text(&o).contains("CommandNotAllowed"), "{}", text(&o));

    // report: the objects, no Secret data, no credentials anywhere in them,
    // no terminal escapes from what a server (or anyone) wrote.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "sidecar-0"},
        "spec": {"containers": [{"name": "c", "image": "example/sidecar:1", "args": ["--api-key=leak-arg"], "env": [
            {"name": "RCON_PASSWORD", "value": "leak-env"},
            {"name": "PLUGIN_TOKEN", "value": "leak-token"},
            {"name": "STORE_URL", "value": "s3://user:leak-url@minio.local/worlds"},
            {"name": "MOTD", "value": "Welcome to acme"},
        ]}]}
    }))
    .unwrap();
    f.api::<Pod>().create(&PostParams::default(), &pod).await.unwrap();
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "mc.console"},
        "involvedObject": {"kind": "MinecraftServer", "name": "mc", "namespace": ns, "apiVersion": "craftplane.io/v1alpha1"},
        "reason": "Console", "type": "Normal",
        "message": "answer: \u{1b}]0;evil\u{7}\u{1b}[2J password=leak-event",
    }))
    .unwrap();
    f.api::<Event>().create(&PostParams::default(), &event).await.unwrap();
    let report = ok(&ns, &["report", "--operator-namespace", &ns]);
    assert!(report.contains("kind: MinecraftServer") && report.contains("kind: BackupSnapshot"), "{report}");
    assert!(!report.contains("kind: Secret"), "a report never holds Secrets");
    assert!(!report.contains("leak-"), "a credential is in the report:\n{report}");
    assert!(!report.contains('\x1b') && !report.contains('\x07'), "raw terminal escapes in the report:\n{report}");
    assert!(report.contains("Welcome to acme") && report.contains("minio.local/worlds"), "{report}");
    assert!(report.contains("evil"), "the event is in the report:\n{report}");

    // A tenant user who may only read: status works, stop is refused in words.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "read-servers"},
        "rules": [{"apiGroups": ["craftplane.io"], "resources": ["minecraftservers", "plugininstallations"], "verbs": ["get", "list"]}]
    }))
    .unwrap();
    f.api::<Role>().create(&PostParams::default(), &role).await.unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "vera-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-servers"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "vera"}]
    }))
    .unwrap();
    f.api::<RoleBinding>().create(&PostParams::default(), &rb).await.unwrap();
    let screen = ok(&ns, &["--as", "vera", "status", "mc"]);
    assert!(screen.contains("Running"), "{screen}");
    let o = plugin(&ns, &["--as", "vera", "stop", "mc"]);
    assert!(!o.status.success(), "vera may not stop mc");
    assert!(text(&o).contains("refused: you may not set spec.state of MinecraftServer mc"), "{}", text(&o));
    let o = plugin(&ns, &["--as", "vera", "backup", "mc"]);
    assert!(text(&o).contains("refused: you may not create BackupSnapshot"), "{}", text(&o));
    assert_eq!(f.servers().get("mc").await.unwrap().spec.state, ServerState::Running, "nothing changed");

    op.stop();
    f.cleanup().await;
}
