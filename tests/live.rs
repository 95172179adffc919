//! Live settings against the real API server, with a pod whose RCON port
//! accepts connections and never answers (the real-node e2e applies them to
//! a real server): the session runs beside the reconcile, so the server's
//! other changes go on meanwhile, and its failure is a condition naming the
//! address.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::Operator;
use craftplane::api::server::{MinecraftServer, ServerPhase};
use serde_json::json;

fn live_reason(s: &MinecraftServer) -> Option<String> {
    let st = s.status.as_ref()?;
    st.conditions.iter().find(|c| c.type_ == "LiveConfig").map(|c| c.reason.clone())
}

#[tokio::test]
async fn an_unanswering_rcon_does_not_hold_the_servers_reconcile() {
    let f = Fixture::new("live").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({"motd": "first"})).await;
    f.wait("mc", "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;

    // The pod's address: a loopback one of this test, whose RCON port takes
    // connections and says nothing (a server hung mid-tick).
    let ip = common::loopback_ip();
    let listener = tokio::net::TcpListener::bind((ip.as_str(), craftplane::resources::RCON_PORT as u16))
        .await
        .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let (a, h) = (accepted.clone(), held.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            h.lock().await.push(sock);
        }
    });
    f.set_pod_ip("mc-0", &ip).await;

    // A live setting: a session with the pod. While it waits for an
    // answer, the reconcile that started it finishes and so does the next
    // one (a task added).
    f.patch_spec("mc", json!({"difficulty": "hard"})).await;
    common::wait_until(Duration::from_secs(20), || async { accepted.load(Ordering::SeqCst) >= 1 })
        .await
        .unwrap_or_else(|()| panic!("no RCON connection to {ip}\n{}", tail(&op.log_text(), 30)));
    let task = json!([{"name": "nightly", "schedule": "0 4 * * *", "actions": [{"broadcast": "hi"}]}]);
    f.patch_spec("mc", json!({"tasks": task})).await;
    let generation = f.servers().get("mc").await.unwrap().metadata.generation;
    let s = f
        .wait("mc", "the task scheduled", &op, |s| {
            s.status.as_ref().is_some_and(|st| {
                st.observed_generation == generation && st.tasks.iter().any(|t| t.next_schedule_time.is_some())
            })
        })
        .await;
    assert_eq!(
        live_reason(&s),
        None,
        "the reconcile finished only after the RCON session gave up: the session held it"
    );

    // The session gives up (three attempts) and says why.
    let s =
        f.wait("mc", "LiveConfig RconUnreachable", &op, |s| live_reason(s).as_deref() == Some("RconUnreachable")).await;
    let c = s.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "LiveConfig").unwrap();
    assert_eq!(c.status, "False");
    assert!(c.message.contains(&ip), "{c:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "three connection attempts");
    assert_eq!(s.status.as_ref().unwrap().phase, Some(ServerPhase::Running), "still Running");

    op.stop();
    f.cleanup().await;
}
