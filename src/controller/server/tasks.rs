//! Scheduled tasks of a MinecraftServer (`spec.tasks`): the server's
//! reconcile decides when a slot is due and records it; the actions run on
//! their own task (a restart countdown must not hold the reconcile), and the
//! result comes back through [`Runs`] and a wake-up of the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::info;

use crate::api::BackupSnapshot;
use crate::api::backup::BackupPhase;
use crate::api::server::{MinecraftServer, ScheduledTask, ServerPhase, TaskResult, TaskStatus};
use crate::backup::schedule::Schedule;
use crate::controller::conditions::Cond;
use crate::controller::context::{Context, cached_full};
use crate::resources::FIELD_MANAGER;

/// Condition type of the task schedules.
pub const TASK_SCHEDULE: &str = "TaskSchedule";
/// Longest wait for a restarted server to run again, beyond its grace period.
const RESTART_WAIT: Duration = Duration::from_secs(300);
/// Longest wait for a task's backup.
const BACKUP_WAIT: Duration = Duration::from_secs(3600);

/// Task runs in this process: the ones going on, and finished results not
/// yet in a status.
#[derive(Default)]
pub struct Runs {
    active: Mutex<HashMap<String, Timestamp>>,
    done: Mutex<HashMap<String, Finished>>,
}

#[derive(Clone)]
struct Finished {
    slot: Timestamp,
    result: TaskResult,
    message: String,
    at: Timestamp,
}

fn key(ns: &str, server: &str, task: &str) -> String {
    format!("{ns}/{server}/{task}")
}

/// What the reconcile writes: the tasks' status, a condition when a
/// schedule is unusable, when to look again.
#[derive(Default)]
pub struct Step {
    pub status: Vec<TaskStatus>,
    pub condition: Option<Cond>,
    pub wait: Option<Duration>,
}

/// Parses a task's schedule in its time zone.
pub fn parse(task: &ScheduledTask) -> Result<Schedule, String> {
    let tz = task.time_zone.as_deref().unwrap_or("UTC");
    Schedule::parse_in(&task.schedule, tz).map_err(|e| format!("task {}: {e}", task.name))
}

/// Takes the due slots and reports every task's state.
pub fn step(server: &MinecraftServer, ctx: &Arc<Context>, phase: ServerPhase) -> Step {
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let old = server.status.as_ref().map(|s| s.tasks.clone()).unwrap_or_default();
    let now = Timestamp::now();
    let created = server.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut out = Step::default();
    let mut problems = Vec::new();
    for task in &server.spec.tasks {
        let k = key(&ns, &name, &task.name);
        let prev = old.iter().find(|t| t.name == task.name);
        let mut st = prev.cloned().unwrap_or(TaskStatus {
            name: task.name.clone(),
            last_schedule_time: None,
            result: None,
            message: None,
            completed_at: None,
            next_schedule_time: None,
        });
        // A finished run of the recorded slot: its result.
        let finished = ctx.tasks.done.lock().unwrap_or_else(|p| p.into_inner()).get(&k).cloned();
        let running = ctx.tasks.active.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&k);
        if let Some(f) = finished.filter(|f| st.last_schedule_time.as_ref().map(|t| t.0) == Some(f.slot)) {
            st.result = Some(f.result);
            st.message = Some(f.message);
            st.completed_at = Some(Time(f.at));
        } else if st.result == Some(TaskResult::Running) && !running {
            st.result = Some(TaskResult::Failed);
            st.message = Some("interrupted: the operator restarted while the task ran".into());
            st.completed_at = Some(Time(now));
        }
        let min = ctx.settings.min_task_interval;
        let sched = match parse(task) {
            Ok(s) => match s.too_frequent(&task.schedule, min) {
                Some(e) => Err(("ScheduleTooFrequent", format!("task {}: {e}", task.name))),
                None => Ok(s),
            },
            Err(e) => Err(("InvalidSchedule", e)),
        };
        let sched = match sched {
            Ok(s) => s,
            Err(e) => {
                problems.push(e);
                st.next_schedule_time = None;
                out.status.push(st);
                continue;
            }
        };
        let since = st.last_schedule_time.as_ref().map(|t| t.0).unwrap_or(created);
        let (due, next) = sched.due(since, now);
        st.next_schedule_time = next.map(Time);
        if let Some(w) = next.and_then(|n| Duration::try_from(n.duration_since(now)).ok()) {
            out.wait = Some(out.wait.map_or(w, |o: Duration| o.min(w)));
        }
        if let Some(slot) = due.filter(|_| !running) {
            st.last_schedule_time = Some(Time(slot));
            st.completed_at = None;
            if task.suspend {
                st.result = Some(TaskResult::Skipped);
                st.message = Some("suspended".into());
                st.completed_at = Some(Time(now));
            } else if phase != ServerPhase::Running {
                st.result = Some(TaskResult::Skipped);
                st.message = Some(format!("the server was {phase:?} at {slot}, not Running"));
                st.completed_at = Some(Time(now));
            } else {
                st.result = Some(TaskResult::Running);
                st.message = Some(format!("running the actions of the {slot} slot"));
                ctx.tasks.active.lock().unwrap_or_else(|p| p.into_inner()).insert(k.clone(), slot);
                info!(server = %name, namespace = %ns, task = %task.name, %slot, "scheduled task started");
                tokio::spawn(run(ctx.clone(), ns.clone(), name.clone(), task.clone(), slot));
            }
        }
        out.status.push(st);
    }
    if let Some((reason, _)) = problems.first() {
        let msg = problems.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ");
        out.condition = Some(Cond::new(TASK_SCHEDULE, false, *reason, msg));
    } else if !server.spec.tasks.is_empty() {
        out.condition = Some(Cond::new(TASK_SCHEDULE, true, "Scheduled", "every task's schedule is valid"));
    }
    out
}

/// Runs a task's actions and hands the result back.
async fn run(ctx: Arc<Context>, ns: String, server: String, task: ScheduledTask, slot: Timestamp) {
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for (i, action) in task.actions.iter().enumerate() {
        let r = act(&ctx, &ns, &server, &task, action, slot).await;
        match r {
            Ok(what) => done.push(what),
            Err(e) => {
                failures.push(format!("action {} failed: {e}", i + 1));
                if !task.continue_on_failure {
                    break;
                }
            }
        }
    }
    let (result, message) = if failures.is_empty() {
        (TaskResult::Succeeded, done.join("; "))
    } else {
        (TaskResult::Failed, failures.join("; "))
    };
    // Server answers are part of it: bounded, no escapes or controls.
    let message = crate::resources::text::clean(&message, crate::resources::text::MAX_MESSAGE, false);
    info!(server = %server, namespace = %ns, task = %task.name, ?result, message, "scheduled task finished");
    let k = key(&ns, &server, &task.name);
    ctx.tasks
        .done
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(k.clone(), Finished { slot, result, message: message.clone(), at: Timestamp::now() });
    ctx.tasks.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
    let r = ObjectRef::<MinecraftServer>::new(&server).within(&ns);
    if let Some(s) = ctx.servers.get(&r) {
        let ok = result == TaskResult::Succeeded;
        let note = format!("task {} ({slot}): {message}", task.name);
        ctx.event(&s.object_ref(&()), !ok, if ok { "TaskSucceeded" } else { "TaskFailed" }, &note, "ScheduledTask")
            .await;
    }
    ctx.wake(r).await;
}

/// The server as cached now.
fn current(ctx: &Context, ns: &str, server: &str) -> Result<Arc<MinecraftServer>, String> {
    ctx.servers.get(&ObjectRef::new(server).within(ns)).ok_or_else(|| "the server is gone".to_string())
}

/// An RCON session with the server: a slot of its tenant, every exchange
/// within its deadline (`live::connect`).
async fn rcon(ctx: &Context, ns: &str, server: &str) -> Result<super::live::RconSession, String> {
    let pod = cached_full(&ctx.children.pods, ns, &format!("{server}-0")).ok_or("the server has no pod")?;
    super::live::connect(ctx, ns, server, &pod).await
}

async fn act(
    ctx: &Arc<Context>,
    ns: &str,
    server: &str,
    task: &ScheduledTask,
    action: &crate::api::server::TaskAction,
    slot: Timestamp,
) -> Result<String, String> {
    if let Some(msg) = &action.broadcast {
        let mut r = rcon(ctx, ns, server).await?;
        r.command(&format!("say {msg}")).await?;
        return Ok(format!("broadcast {msg:?}"));
    }
    if let Some(cmd) = &action.command {
        let s = current(ctx, ns, server)?;
        ctx.console_allowed(&s, cmd)?;
        let mut r = rcon(ctx, ns, server).await?;
        let answer = r.command(cmd.trim().trim_start_matches('/')).await?;
        if crate::resources::live::failed(&answer) {
            return Err(format!("`{cmd}`: the server refused it: {}", answer.trim()));
        }
        return Ok(format!("`{cmd}`: {}", answer.lines().next().unwrap_or_default()));
    }
    if let Some(restart) = &action.restart {
        return restart_server(ctx, ns, server, restart).await;
    }
    if let Some(b) = &action.backup {
        return backup(ctx, ns, server, task, b, slot).await;
    }
    Err("the action names nothing to do".into())
}

/// Countdown marks: the full countdown, then 30, 10, 5, 3, 2, 1 s left.
fn marks(countdown: i32) -> Vec<i32> {
    let mut m: Vec<i32> =
        std::iter::once(countdown).chain([30, 10, 5, 3, 2, 1].into_iter().filter(|&s| s < countdown)).collect();
    m.dedup();
    m.retain(|&s| s > 0);
    m
}

async fn restart_server(
    ctx: &Context,
    ns: &str,
    server: &str,
    r: &crate::api::server::RestartAction,
) -> Result<String, String> {
    let text = r.message.clone().unwrap_or_else(|| "Server restarting".into());
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pod_name = format!("{server}-0");
    let pod = cached_full(&ctx.children.pods, ns, &pod_name).ok_or("the server has no pod")?;
    let uid = pod.metadata.uid.clone().ok_or("the pod has no UID")?;
    let marks = marks(r.countdown_seconds);
    // A session per announcement: no RCON slot is held while counting down.
    for (i, left) in marks.iter().enumerate() {
        rcon(ctx, ns, server).await?.command(&format!("say {text} in {left} seconds")).await?;
        let next = marks.get(i + 1).copied().unwrap_or(0);
        tokio::time::sleep(Duration::from_secs((left - next) as u64)).await;
    }
    // A clean restart: the pod is deleted with its grace period (the image
    // saves and stops), the StatefulSet starts it again.
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
        ..Default::default()
    };
    pods.delete(&pod_name, &dp).await.map_err(|e| format!("cannot delete pod {pod_name}: {e}"))?;
    let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(120);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace.max(0) as u64) + RESTART_WAIT;
    let t0 = tokio::time::Instant::now();
    loop {
        let new = cached_full(&ctx.children.pods, ns, &pod_name).and_then(|p| p.metadata.uid);
        let phase = current(ctx, ns, server)?.status.as_ref().and_then(|s| s.phase);
        if new.as_deref().is_some_and(|u| u != uid) && phase == Some(ServerPhase::Running) {
            return Ok(format!(
                "restarted after a {}s countdown; Running again in {:.0?}",
                r.countdown_seconds,
                t0.elapsed()
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the server is not Running again {:.0?} after the restart", t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn backup(
    ctx: &Context,
    ns: &str,
    server: &str,
    task: &ScheduledTask,
    b: &crate::api::server::BackupAction,
    slot: Timestamp,
) -> Result<String, String> {
    let s = current(ctx, ns, server)?;
    let name = crate::resources::snapshot::task_snapshot_name(server, &task.name, slot);
    let snap = crate::resources::snapshot::for_task(&name, server, ns, s.labels(), b.store.clone());
    let api: Api<BackupSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &snap).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("cannot create BackupSnapshot {name}: {e}")),
    }
    let deadline = tokio::time::Instant::now() + BACKUP_WAIT;
    loop {
        let phase = ctx.snapshots.get(&ObjectRef::new(&name).within(ns)).and_then(|s| {
            let st = s.status.as_ref()?;
            let why = st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone());
            st.phase.map(|p| (p, why))
        });
        match phase {
            Some((BackupPhase::Completed, _)) => return Ok(format!("BackupSnapshot {name} Completed")),
            Some((BackupPhase::Failed, msg)) => {
                return Err(format!("BackupSnapshot {name} Failed: {}", msg.unwrap_or_default()));
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("BackupSnapshot {name} not done within {BACKUP_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn countdown_marks() {
        assert_eq!(super::marks(60), vec![60, 30, 10, 5, 3, 2, 1]);
        assert_eq!(super::marks(10), vec![10, 5, 3, 2, 1]);
        assert_eq!(super::marks(0), Vec::<i32>::new());
        assert_eq!(super::marks(4), vec![4, 3, 2, 1]);
    }
}
