//! ConsoleCommands against the real API server (kwok pods, so no RCON
//! answers here unless a test points a pod at a fake RCON endpoint of its
//! own; the real-node e2e runs commands on a real server): what is refused
//! and why, waiting for a server, the Event on the server, deletion after
//! the TTL, the owner reference, and a hostile server's RCON not holding
//! other servers' commands.

mod common;

use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::{Operator, SHARD_LABEL};
use common::peers::{RconMode, fake_rcon};
use craftplane::api::ConsoleCommand;
use craftplane::api::command::CommandPhase;
use craftplane::api::server::ServerPhase;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

async fn create(f: &Fixture, name: &str, server: &str, command: &str, ttl: i32) {
    let c: ConsoleCommand = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "ConsoleCommand",
        "metadata": {"name": name, "namespace": f.ns, "labels": {SHARD_LABEL: f.shard}},
        "spec": {"server": server, "command": command, "ttlSecondsAfterFinished": ttl},
    }))
    .unwrap();
    f.api::<ConsoleCommand>().create(&PostParams::default(), &c).await.expect("create console command");
}

async fn wait_for(
    f: &Fixture,
    op: &Operator,
    name: &str,
    what: &str,
    secs: u64,
    pred: impl Fn(&ConsoleCommand) -> bool,
) -> ConsoleCommand {
    let api = f.api::<ConsoleCommand>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(c) = api.get(name).await {
            if pred(&c) {
                return c;
            }
            last = Some(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "ConsoleCommand {name}: {what} not reached; status {:?}\noperator log:\n{}",
        last.and_then(|c| c.status),
        tail(&op.log_text(), 30)
    )
}

fn phase(c: &ConsoleCommand) -> Option<CommandPhase> {
    c.status.as_ref().and_then(|s| s.phase)
}

fn reason(c: &ConsoleCommand) -> String {
    c.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_default()
}

#[tokio::test]
async fn commands_are_refused_waited_for_recorded_and_expire() {
    let f = Fixture::new("console").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({"whitelist": ["alice"], "difficulty": "hard"})).await;
    let server =
        f.wait("mc", "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;

    // Always refused, whatever the SKU says: stop, and what the spec manages.
    for (name, cmd) in [("stop", "/minecraft:stop"), ("wl", "whitelist add mallory"), ("diff", "difficulty peaceful")] {
        create(&f, name, "mc", cmd, 3600).await;
        let c = wait_for(&f, &op, name, "Failed", 30, |c| phase(c) == Some(CommandPhase::Failed)).await;
        assert_eq!(reason(&c), "CommandNotAllowed", "{cmd}");
        let owner = c.metadata.owner_references.unwrap_or_default();
        assert!(owner.iter().any(|o| o.uid == server.metadata.uid.clone().unwrap()), "owned by its server: {owner:?}");
    }

    // A command for a server that does not exist (yet) waits.
    create(&f, "early", "later", "list", 3600).await;
    let c = wait_for(&f, &op, "early", "Pending", 30, |c| phase(c) == Some(CommandPhase::Pending)).await;
    assert_eq!(reason(&c), "ServerNotFound");
    let st = c.status.clone().unwrap_or_default();
    assert!(st.waiting_since.is_some(), "the wait counts from when the operator first saw it: {st:?}");

    // A stopped server: no start is coming, so no wait; said in words.
    f.create_server("off", json!({"state": "Stopped"})).await;
    create(&f, "to-off", "off", "list", 3600).await;
    let c = wait_for(&f, &op, "to-off", "Failed", 30, |c| phase(c) == Some(CommandPhase::Failed)).await;
    assert_eq!(reason(&c), "ServerNotRunning");
    let msg = c.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("is Stopped") && !msg.contains("None") && !msg.contains("Some("), "{msg}");

    // Allowed, but the kwok pod has no RCON: a clear failure, not a hang.
    create(&f, "say", "mc", "say hello", 10).await;
    let c = wait_for(&f, &op, "say", "Failed", 60, |c| phase(c) == Some(CommandPhase::Failed)).await;
    assert_eq!(reason(&c), "RconUnreachable", "{:?}", c.status);

    // Every command is an Event on the server.
    let events: Api<Event> = Api::namespaced(f.client.clone(), &f.ns);
    let count = || async {
        let list = events.list(&ListParams::default().fields("involvedObject.name=mc")).await.unwrap();
        list.items.iter().filter(|e| e.reason.as_deref() == Some("CommandRefused")).count()
    };
    if common::wait_until(Duration::from_secs(20), || async { count().await >= 4 }).await.is_err() {
        panic!("expected 4 CommandRefused Events on mc, saw {}", count().await);
    }

    // Deleted after its TTL (10 s).
    common::wait_until(Duration::from_secs(60), || async {
        f.api::<ConsoleCommand>().get_opt("say").await.unwrap().is_none()
    })
    .await
    .unwrap_or_else(|()| panic!("ConsoleCommand say not deleted after its TTL\n{}", tail(&op.log_text(), 20)));
    assert!(f.api::<ConsoleCommand>().get_opt("stop").await.unwrap().is_some(), "a 1 h TTL keeps its object");

    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn the_sku_decides_which_commands_run() {
    let f = Fixture::new("console-sku").await;
    let sku: Api<craftplane::api::Sku> = Api::all(f.client.clone());
    sku.patch(
        &f.sku,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"spec": {"consoleCommands": {"allow": ["say", "time"], "deny": ["time set"]}}}),
        ),
    )
    .await
    .unwrap();
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({})).await;
    f.wait("mc", "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;
    for (name, cmd, why) in [("give", "give bob diamond", "allow"), ("timeset", "time set day", "deny")] {
        create(&f, name, "mc", cmd, 3600).await;
        let c = wait_for(&f, &op, name, "Failed", 30, |c| phase(c) == Some(CommandPhase::Failed)).await;
        assert_eq!(reason(&c), "CommandNotAllowed");
        let msg = c.status.and_then(|s| s.message).unwrap_or_default();
        assert!(msg.contains(why), "{cmd}: {msg}");
    }
    // Allowed by the SKU: sent (and, on a kwok pod, not answered).
    create(&f, "say", "mc", "say hi", 3600).await;
    let c = wait_for(&f, &op, "say", "Failed", 60, |c| phase(c) == Some(CommandPhase::Failed)).await;
    assert_eq!(reason(&c), "RconUnreachable");
    op.stop();
    f.cleanup().await;
}

/// A hostile server whose RCON logs in and then streams packets with a
/// wrong request id does not hold the ConsoleCommand workers (two here,
/// `--concurrency 2`): while two commands are wedged on it, a command on
/// another server runs; the wedged ones end Failed with a reason. The
/// answer's terminal escapes do not reach the status.
#[tokio::test]
async fn a_wedged_rcon_does_not_hold_other_servers_commands() {
    let f = Fixture::new("console-wedge").await;
    let op = Operator::start(&f.shard, &["--concurrency", "2"]).await;
    for name in ["bad", "good"] {
        f.create_server(name, json!({})).await;
    }
    for name in ["bad", "good"] {
        f.wait(name, "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;
    }
    let (bad_ip, good_ip) = (common::loopback_ip(), common::loopback_ip());
    let wedged = fake_rcon(&bad_ip, RconMode::WrongIds).await;
    let answered = fake_rcon(&good_ip, RconMode::Answer).await;
    f.set_pod_ip("bad-0", &bad_ip).await;
    f.set_pod_ip("good-0", &good_ip).await;

    create(&f, "w1", "bad", "say one", 3600).await;
    create(&f, "w2", "bad", "say two", 3600).await;
    common::wait_until(Duration::from_secs(30), || async { wedged.lock().unwrap().len() >= 2 })
        .await
        .unwrap_or_else(|()| panic!("the wedged commands were not sent\n{}", tail(&op.log_text(), 30)));

    create(&f, "ok", "good", "list", 3600).await;
    let c = wait_for(&f, &op, "ok", "Succeeded", 30, |c| phase(c) == Some(CommandPhase::Succeeded)).await;
    assert_eq!(c.status.and_then(|s| s.output).as_deref(), Some("ran list"), "escapes removed");
    assert_eq!(*answered.lock().unwrap(), ["list"]);

    for name in ["w1", "w2"] {
        let c = wait_for(&f, &op, name, "Failed", 30, |c| phase(c) == Some(CommandPhase::Failed)).await;
        assert_eq!(reason(&c), "RconNoAnswer", "{:?}", c.status);
        let msg = c.status.and_then(|s| s.message).unwrap_or_default();
        assert!(msg.contains(&bad_ip) && msg.contains("do not answer"), "{msg}");
    }
    op.stop();
    f.cleanup().await;
}

/// Issue 30 item 7: what a command really runs is checked, not its first
/// words: `execute … run`, namespaced names, aliases.
#[tokio::test]
async fn execute_chains_and_namespaced_aliases_are_refused() {
    let f = Fixture::new("console-bypass").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({"ops": ["alice"]})).await;
    f.wait("mc", "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;
    for (name, cmd, says) in [
        ("exec-stop", "execute run stop", "`stop` (run by `execute`)"),
        ("bukkit-stop", "bukkit:stop", "`stop` is not run"),
        ("spigot-restart", "spigot:restart", "`restart` is not run"),
        ("exec-op", "execute as @a run op mallory", "operators are managed by spec.ops"),
        ("function", "function evil:stop", "cannot be checked"),
    ] {
        create(&f, name, "mc", cmd, 3600).await;
        let c = wait_for(&f, &op, name, "Failed", 30, |c| phase(c) == Some(CommandPhase::Failed)).await;
        assert_eq!(reason(&c), "CommandNotAllowed", "{cmd}: {:?}", c.status);
        let msg = c.status.and_then(|s| s.message).unwrap_or_default();
        assert!(msg.contains(says), "{cmd}: {msg}");
    }
    // A harmless execute is sent (and fails only because kwok has no RCON).
    create(&f, "exec-say", "mc", "execute as @a[name=\"x run stop\"] run say hello", 10).await;
    let c = wait_for(&f, &op, "exec-say", "Failed", 60, |c| phase(c) == Some(CommandPhase::Failed)).await;
    assert_eq!(reason(&c), "RconUnreachable", "{:?}", c.status);
    op.stop();
    f.cleanup().await;
}
