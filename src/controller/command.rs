//! The ConsoleCommand reconciler: runs each command once over RCON on its
//! server, writes the answer into status, records an Event on the server,
//! and deletes the object `ttlSecondsAfterFinished` after it finished.
//!
//! The RCON exchange runs on its own task, not in the reconcile (the
//! reconcile workers are shared by every tenant's commands): the reconcile
//! records `Running` and starts it; the task writes the outcome. The
//! session takes a slot of the server's tenant (`server::live::Slots`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::conditions;
use super::context::{Context, cached_full, delete_if_present};
use super::error::{Error, Result};
use super::watches::{Events, Watches, run};
use crate::api::command::{CommandPhase, ConsoleCommand, ConsoleCommandStatus, MAX_OUTPUT};
use crate::api::server::{MinecraftServer, ServerPhase};
use crate::resources::{self, FIELD_MANAGER, console, text};

/// How often a command being sent is looked at (its task writes the result;
/// this catches a write that failed).
const RECHECK: Duration = Duration::from_secs(30);

/// Reconciles one ConsoleCommand.
pub async fn reconcile(cmd: Arc<ConsoleCommand>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cmd.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ConsoleCommand> = Api::namespaced(ctx.client.clone(), &ns);
    // The live object, not the cache: a cached copy older than our own
    // status write would send the command a second time.
    let Some(cmd) = api.get_opt(&cmd.name_any()).await?.map(Arc::new) else {
        return Ok(Action::await_change());
    };
    let status = cmd.status.clone().unwrap_or_default();
    match status.phase {
        Some(CommandPhase::Succeeded | CommandPhase::Failed) => return expire(&cmd, &api, &ctx, &status).await,
        Some(CommandPhase::Running) => {
            let uid = cmd.uid().unwrap_or_default();
            return match ctx.commands.get(&uid) {
                // Being sent on its own task, which writes the result.
                Some(Run::Sending) => Ok(Action::requeue(RECHECK)),
                // Written; this read came before the write.
                Some(Run::Done { written: true, .. }) => Ok(Action::requeue(Duration::from_secs(1))),
                // Its task could not write the result: write it now.
                Some(Run::Done { outcome, written: false }) => record(&cmd, &api, &ctx, outcome).await,
                // Sent before, result never recorded (the operator stopped
                // mid-command): never sent twice.
                None => {
                    let msg = "the operator restarted while the command was being sent; it may or may not have run (see the server's log)";
                    finish(&cmd, &api, &ctx, CommandPhase::Failed, "Interrupted", msg, None).await
                }
            };
        }
        _ => {}
    }
    // The wait counts from when the operator first saw the command waiting
    // (an operator that was down, or a queue, does not eat into it).
    let waited = status
        .waiting_since
        .as_ref()
        .map(|t| Duration::try_from(Timestamp::now().duration_since(t.0)).unwrap_or_default())
        .unwrap_or_default();
    let allowance = resources::statefulset::start_allowance();
    let Some(server) = ctx.servers.get(&ObjectRef::new(&cmd.spec.server).within(&ns)) else {
        return wait_or_fail(&cmd, &api, &ctx, console::server_wait(None, None, waited, allowance)).await;
    };
    adopt(&cmd, &api, &server).await?;
    if let Err(why) = ctx.console_allowed(&server, &cmd.spec.command) {
        return finish(&cmd, &api, &ctx, CommandPhase::Failed, "CommandNotAllowed", &why, None).await;
    }
    let phase = server.status.as_ref().and_then(|s| s.phase);
    let pod = cached_full(&ctx.children.pods, &ns, &format!("{}-0", server.name_any()));
    let (Some(ServerPhase::Running), Some(pod)) = (phase, pod) else {
        // Running without its pod in the cache yet: still starting.
        let phase = phase.filter(|p| *p != ServerPhase::Running).or(Some(ServerPhase::Starting));
        let verdict = console::server_wait(Some(&server.name_any()), phase, waited, allowance);
        return wait_or_fail(&cmd, &api, &ctx, verdict).await;
    };

    // At most once: Running is recorded before the command is sent.
    let started = ConsoleCommandStatus {
        phase: Some(CommandPhase::Running),
        waiting_since: status.waiting_since.clone(),
        started_at: Some(Time(Timestamp::now())),
        conditions: conditions::merge(
            &status.conditions,
            &conditions::kstatus(false, false, "Running", "sending the command"),
            cmd.metadata.generation,
            Timestamp::now(),
        ),
        ..Default::default()
    };
    write_status(&api, &cmd.name_any(), &started).await?;
    // The exchange runs on its own task (a server that never answers must
    // not hold one of the reconcile workers all tenants share); the task
    // writes the result.
    let cmd = Arc::new(ConsoleCommand { status: Some(started), ..(*cmd).clone() });
    start(ctx, cmd, api, server.name_any(), pod);
    Ok(Action::requeue(RECHECK))
}

/// ConsoleCommands being sent by this process, by UID.
#[derive(Default)]
pub struct Runs {
    state: Mutex<HashMap<String, Run>>,
}

#[derive(Clone)]
enum Run {
    /// The exchange goes on.
    Sending,
    /// It ended; `written` once the status has the outcome.
    Done { outcome: Outcome, written: bool },
}

/// How a sent command ended.
#[derive(Clone)]
struct Outcome {
    phase: CommandPhase,
    reason: &'static str,
    message: String,
    output: Option<String>,
}

impl Runs {
    fn get(&self, uid: &str) -> Option<Run> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).get(uid).cloned()
    }

    fn set(&self, uid: &str, run: Run) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), run);
    }

    fn forget(&self, uid: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// Sends the command on its own task and records the outcome.
fn start(ctx: Arc<Context>, cmd: Arc<ConsoleCommand>, api: Api<ConsoleCommand>, server: String, pod: Pod) {
    let uid = cmd.uid().unwrap_or_default();
    ctx.commands.set(&uid, Run::Sending);
    tokio::spawn(async move {
        let ns = cmd.namespace().unwrap_or_default();
        let outcome = send(&ctx, &ns, &server, &pod, &cmd.spec.command).await;
        // `Sending` until written: a reconcile meanwhile does not write it too.
        match record(&cmd, &api, &ctx, outcome.clone()).await {
            Ok(_) => ctx.commands.set(&uid, Run::Done { outcome, written: true }),
            // Deleted meanwhile.
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => ctx.commands.forget(&uid),
            // The reconcile writes it (it looks again every RECHECK).
            Err(e) => {
                warn!(command = %cmd.name_any(), namespace = %ns, error = %e, "cannot record a command's result");
                ctx.commands.set(&uid, Run::Done { outcome, written: false });
            }
        }
    });
}

/// One RCON session: connect, run the command.
async fn send(ctx: &Context, ns: &str, server: &str, pod: &Pod, command: &str) -> Outcome {
    let failed = |reason, message| Outcome { phase: CommandPhase::Failed, reason, message, output: None };
    let mut rcon = match super::server::live::connect(ctx, ns, server, pod).await {
        Ok(r) => r,
        Err(e) => return failed("RconUnreachable", e),
    };
    match rcon.command(command.trim().trim_start_matches('/')).await {
        Ok(out) if crate::resources::live::failed(&out) => Outcome {
            phase: CommandPhase::Failed,
            reason: "CommandFailed",
            message: format!("the server refused the command: {}", first_line(&out)),
            output: Some(out),
        },
        Ok(out) => Outcome {
            phase: CommandPhase::Succeeded,
            reason: "Succeeded",
            message: "the server ran the command".into(),
            output: Some(out),
        },
        Err(e) => failed("RconNoAnswer", format!("the command was sent but not answered: {e}")),
    }
}

async fn record(cmd: &ConsoleCommand, api: &Api<ConsoleCommand>, ctx: &Context, o: Outcome) -> Result<Action> {
    finish(cmd, api, ctx, o.phase, o.reason, &o.message, o.output).await
}

fn first_line(s: &str) -> String {
    text::first_line(s, 200)
}

/// The server owns its commands: deleting it deletes them.
async fn adopt(cmd: &ConsoleCommand, api: &Api<ConsoleCommand>, server: &MinecraftServer) -> Result<()> {
    let uid = server.uid().unwrap_or_default();
    if cmd.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    let owner = OwnerReference {
        api_version: MinecraftServer::api_version(&()).into(),
        kind: MinecraftServer::kind(&()).into(),
        name: server.name_any(),
        uid,
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
    api.patch(&cmd.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn write_status(api: &Api<ConsoleCommand>, name: &str, status: &ConsoleCommandStatus) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": ConsoleCommand::api_version(&()),
        "kind": ConsoleCommand::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Waits for the server (Pending, with the reason).
/// Waits (Pending) or gives up (Failed) on the server, as `verdict` says.
async fn wait_or_fail(
    cmd: &ConsoleCommand,
    api: &Api<ConsoleCommand>,
    ctx: &Context,
    verdict: console::ServerWait,
) -> Result<Action> {
    match verdict {
        console::ServerWait::Wait(reason, msg) => pending(cmd, api, reason, &msg).await,
        console::ServerWait::Fail(reason, msg) => finish(cmd, api, ctx, CommandPhase::Failed, reason, &msg, None).await,
    }
}

async fn pending(cmd: &ConsoleCommand, api: &Api<ConsoleCommand>, reason: &str, msg: &str) -> Result<Action> {
    let old = cmd.status.clone().unwrap_or_default();
    let status = ConsoleCommandStatus {
        phase: Some(CommandPhase::Pending),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        waiting_since: old.waiting_since.clone().or_else(|| Some(Time(Timestamp::now()))),
        conditions: conditions::merge(
            &old.conditions,
            &conditions::kstatus(false, false, reason, msg),
            cmd.metadata.generation,
            Timestamp::now(),
        ),
        ..Default::default()
    };
    if status != old {
        write_status(api, &cmd.name_any(), &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(5)))
}

/// Records the result, and an Event on the server (the audit trail of
/// commands run).
async fn finish(
    cmd: &ConsoleCommand,
    api: &Api<ConsoleCommand>,
    ctx: &Context,
    phase: CommandPhase,
    reason: &str,
    msg: &str,
    output: Option<String>,
) -> Result<Action> {
    let old = cmd.status.clone().unwrap_or_default();
    let ok = phase == CommandPhase::Succeeded;
    let now = Timestamp::now();
    let status = ConsoleCommandStatus {
        phase: Some(phase),
        output: output.map(|o| text::clean(&o, MAX_OUTPUT, true)),
        reason: Some(reason.into()),
        message: Some(text::clean(msg, text::MAX_MESSAGE, false)),
        waiting_since: old.waiting_since.clone(),
        started_at: old.started_at.clone(),
        completed_at: Some(Time(now)),
        conditions: conditions::merge(
            &old.conditions,
            &conditions::kstatus(ok, !ok, reason, msg),
            cmd.metadata.generation,
            now,
        ),
    };
    write_status(api, &cmd.name_any(), &status).await?;
    let ns = cmd.namespace().unwrap_or_default();
    info!(command = %cmd.name_any(), namespace = %ns, server = %cmd.spec.server, reason, "console command finished");
    if reason != "ServerNotFound" {
        let server = ObjectRef::<MinecraftServer>::new(&cmd.spec.server).within(&ns);
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(MinecraftServer::api_version(&()).into()),
            kind: Some(MinecraftServer::kind(&()).into()),
            name: Some(server.name.clone()),
            namespace: Some(ns.clone()),
            uid: ctx.servers.get(&server).and_then(|s| s.uid()),
            ..Default::default()
        };
        let note = match &status.output {
            Some(out) if ok => {
                format!("`{}` (ConsoleCommand {}): {}", cmd.spec.command, cmd.name_any(), first_line(out))
            }
            _ => format!("`{}` (ConsoleCommand {}) not run: {reason}: {msg}", cmd.spec.command, cmd.name_any()),
        };
        ctx.event(&reference, !ok, if ok { "CommandRun" } else { "CommandRefused" }, &note, "ConsoleCommand").await;
    }
    Ok(Action::requeue(Duration::from_secs(cmd.spec.ttl_seconds_after_finished.max(10) as u64)))
}

/// Deletes a finished command once its TTL is over.
async fn expire(
    cmd: &ConsoleCommand,
    api: &Api<ConsoleCommand>,
    ctx: &Context,
    status: &ConsoleCommandStatus,
) -> Result<Action> {
    ctx.commands.forget(&cmd.uid().unwrap_or_default());
    let done = status.completed_at.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
    let ttl = Duration::from_secs(cmd.spec.ttl_seconds_after_finished.max(10) as u64);
    let elapsed = Duration::try_from(Timestamp::now().duration_since(done)).unwrap_or_default();
    if elapsed < ttl {
        return Ok(Action::requeue(ttl - elapsed));
    }
    delete_if_present(api, &cmd.name_any(), &DeleteParams::default()).await?;
    Ok(Action::await_change())
}

/// Retries with backoff.
pub fn error_policy(cmd: Arc<ConsoleCommand>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&cmd.uid().unwrap_or_default());
    tracing::warn!(command = %cmd.name_any(), namespace = ?cmd.namespace(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The ConsoleCommand controller: its own kind, and server changes (a
/// Pending command runs as soon as its server is Running).
pub fn controller(
    w: &Watches,
    ctx: Arc<Context>,
    store: Store<ConsoleCommand>,
    own: Events<ConsoleCommand>,
) -> BoxFuture<'static, ()> {
    let waiting = store.clone();
    let c = Controller::for_stream(own, store).watches_stream(
        w.trigger::<MinecraftServer>(&w.selected, "MinecraftServer"),
        move |s| {
            let (ns, name) = (s.namespace(), s.name_any());
            super::watches::refs(&waiting, |c| {
                c.namespace() == ns
                    && c.spec.server == name
                    && c.status.as_ref().and_then(|st| st.phase).is_none_or(|p| p == CommandPhase::Pending)
            })
        },
    );
    run(c, w, w.config(false), "ConsoleCommand", reconcile, error_policy, ctx)
}
