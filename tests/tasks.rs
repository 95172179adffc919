//! Scheduled tasks against the real API server (kwok pods: no RCON here, so
//! broadcasts fail; the real-node e2e runs a scheduled restart on a real
//! server): slots read in a time zone, actions in order, continueOnFailure,
//! the backup action's snapshot, a result for every run, a bad time zone as
//! a condition, a stopped server's slot skipped.

mod common;

use common::fixture::{Fixture, tail};
use common::operator::Operator;
use craftplane::api::BackupSnapshot;
use craftplane::api::server::{MinecraftServer, ServerPhase, TaskResult, TaskStatus};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use serde_json::json;

/// A six-field cron for one second `ahead` from now, as read in `zone`.
fn once_in(zone: &str, ahead: i64) -> String {
    let z = (Timestamp::now() + SignedDuration::from_secs(ahead)).to_zoned(TimeZone::get(zone).unwrap());
    format!("{} {} {} {} {} *", z.second(), z.minute(), z.hour(), z.day(), z.month())
}

fn task<'a>(s: &'a MinecraftServer, name: &str) -> Option<&'a TaskStatus> {
    s.status.as_ref()?.tasks.iter().find(|t| t.name == name)
}

fn done(s: &MinecraftServer, name: &str) -> bool {
    task(s, name).and_then(|t| t.result).is_some_and(|r| r != TaskResult::Running)
}

#[tokio::test]
async fn tasks_run_their_actions_in_order_at_their_slot() {
    let f = Fixture::new("tasks").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("mc", json!({})).await;
    f.wait("mc", "Running", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)).await;
    let when = once_in("Etc/GMT-2", 8);
    let actions = json!([{"broadcast": "backup now"}, {"backup": {}}]);
    f.patch_spec(
        "mc",
        json!({"tasks": [
            {"name": "stop-early", "schedule": when, "timeZone": "Etc/GMT-2", "actions": actions},
            {"name": "go-on", "schedule": when, "timeZone": "Etc/GMT-2", "actions": actions, "continueOnFailure": true},
            {"name": "bad-zone", "schedule": "0 5 * * *", "timeZone": "Mars/Olympus", "actions": [{"broadcast": "x"}]},
        ]}),
    )
    .await;
    let s = f.wait("mc", "both tasks finished", &op, |s| done(s, "stop-early") && done(s, "go-on")).await;
    let early = task(&s, "stop-early").unwrap();
    let on = task(&s, "go-on").unwrap();
    assert_eq!(early.result, Some(TaskResult::Failed));
    assert!(early.message.as_deref().unwrap_or_default().contains("action 1 failed"), "{early:?}");
    assert_eq!(on.result, Some(TaskResult::Failed), "the backup fails too here (no store): {on:?}");
    assert!(on.message.as_deref().unwrap_or_default().contains("action 2 failed"), "{on:?}");
    assert!(on.last_schedule_time.is_some() && on.next_schedule_time.is_some(), "{on:?}");
    // Only the task that goes on took its snapshot.
    let snaps = f.api::<BackupSnapshot>().list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = snaps.items.iter().filter_map(|b| b.metadata.name.clone()).collect();
    assert!(names.iter().any(|n| n.starts_with("mc-go-on-")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("mc-stop-early-")), "{names:?}");
    let cond = s.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "TaskSchedule").cloned();
    let cond = cond.expect("TaskSchedule condition");
    assert!(cond.status == "False" && cond.message.contains("Mars/Olympus"), "{cond:?}");

    // A stopped server's slot is skipped, not run later.
    f.patch_spec("mc", json!({"state": "Stopped"})).await;
    f.wait("mc", "Stopped", &op, |s| s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Stopped)).await;
    let when = once_in("UTC", 5);
    f.patch_spec("mc", json!({"tasks": [{"name": "go-on", "schedule": when, "actions": actions}]})).await;
    let s = f
        .wait("mc", "the slot skipped", &op, |s| task(s, "go-on").and_then(|t| t.result) == Some(TaskResult::Skipped))
        .await;
    assert!(task(&s, "go-on").unwrap().message.as_deref().unwrap_or_default().contains("Stopped"));
    op.reconciled_after("MinecraftServer", 1, || async { common::poke(&f.servers(), "mc").await }).await;
    let snaps = f.api::<BackupSnapshot>().list(&ListParams::default()).await.unwrap();
    assert_eq!(snaps.items.len(), 1, "no snapshot for a skipped slot\n{}", tail(&op.log_text(), 20));
    op.stop();
    f.cleanup().await;
}
