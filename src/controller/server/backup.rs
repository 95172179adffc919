//! The backup side of a MinecraftServer: its schedule (creating scheduled
//! BackupSnapshots, pruning old ones) and `spec.restore` (stop, restore
//! Job, start again).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use crate::api::backup::{BackupPhase, BackupReason, BackupSnapshot};
use crate::api::server::{
    BackupPolicy, BackupScheduleStatus, LastBackup, MinecraftServer, RestorePhase, RestoreStatus,
};
use crate::backup::schedule::{self, Candidate, Schedule};
use crate::backup::stores::StoreConfig;
use crate::controller::conditions::Cond;
use crate::controller::context::{Context, delete_if_present};
use crate::controller::error::Result;
use crate::controller::secrets;
use crate::resources::backup_job::{self, JobInput, Task};
use crate::resources::{FIELD_MANAGER, short_hash};

pub use crate::resources::snapshot::SCHEDULED_LABEL;

fn snapshots_of(ctx: &Context, server: &MinecraftServer) -> Vec<std::sync::Arc<BackupSnapshot>> {
    let ns = server.namespace();
    let name = server.name_any();
    ctx.snapshots.state().into_iter().filter(|s| s.namespace() == ns && s.spec.server == name).collect()
}

/// The newest Completed snapshot of the server.
pub fn last_backup(ctx: &Context, server: &MinecraftServer) -> Option<LastBackup> {
    snapshots_of(ctx, server)
        .into_iter()
        .filter(|s| s.status.as_ref().and_then(|st| st.phase) == Some(BackupPhase::Completed))
        .filter_map(|s| Some((s.status.as_ref()?.completed_at.clone()?, s.name_any())))
        .max_by_key(|(t, _)| t.0)
        .map(|(t, name)| LastBackup { name, completed_at: Some(t) })
}

/// Condition type on servers with `spec.backup`: True while the schedule
/// runs, False with a reason when it cannot.
pub const BACKUP_SCHEDULE: &str = "BackupSchedule";

/// A failed scheduled create or prune is tried again this soon (or at the
/// next slot, if sooner).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The API server's message for an API error, the error itself otherwise.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Outcome of the schedule step.
#[derive(Debug, Default)]
pub struct ScheduleStep {
    pub status: Option<BackupScheduleStatus>,
    /// When to look again.
    pub wait: Option<Duration>,
    /// The [`BACKUP_SCHEDULE`] condition (None without a schedule).
    pub condition: Option<Cond>,
}

/// Parses a policy's schedule; what admission let through but the parser
/// refuses becomes a False [`BACKUP_SCHEDULE`] condition, reason
/// `InvalidSchedule`, and a schedule whose slots come closer than `min`
/// (the operator's `--min-backup-interval-seconds`) one with reason
/// `ScheduleTooFrequent`.
pub fn parse_schedule(policy: &BackupPolicy, min: Duration) -> std::result::Result<Schedule, Cond> {
    let refused = |reason: &str, e: String| {
        let msg = format!("{e}; no scheduled snapshots are taken until spec.backup.schedule is fixed");
        Cond::new(BACKUP_SCHEDULE, false, reason, msg)
    };
    let sched = Schedule::parse(&policy.schedule).map_err(|e| refused("InvalidSchedule", e))?;
    match sched.too_frequent(&policy.schedule, min) {
        Some(e) => Err(refused("ScheduleTooFrequent", e)),
        None => Ok(sched),
    }
}

/// A scheduled snapshot of the server that has not finished (neither
/// Completed nor Failed): the next one waits for it.
fn unfinished_scheduled(ctx: &Context, server: &MinecraftServer) -> Option<String> {
    snapshots_of(ctx, server)
        .into_iter()
        .filter(|s| s.spec.reason == BackupReason::Scheduled && s.metadata.deletion_timestamp.is_none())
        .find(|s| {
            !matches!(s.status.as_ref().and_then(|st| st.phase), Some(BackupPhase::Completed | BackupPhase::Failed))
        })
        .map(|s| s.name_any())
}

/// Runs the schedule: creates the snapshot of a due slot (one, however
/// many were missed), prunes by retention. Returns the schedule status,
/// when to look again and the schedule's condition.
pub async fn schedule(
    server: &MinecraftServer,
    ctx: &Context,
    old: Option<&BackupScheduleStatus>,
) -> Result<ScheduleStep> {
    let Some(policy) = &server.spec.backup else { return Ok(ScheduleStep::default()) };
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let sched = match parse_schedule(policy, ctx.settings.min_backup_interval) {
        Ok(s) => s,
        Err(cond) => {
            warn!(server = %name, namespace = %ns, error = %cond.message, "backup schedule invalid");
            let status = BackupScheduleStatus {
                last_scheduled_time: old.and_then(|o| o.last_scheduled_time.clone()),
                next_scheduled_time: None,
            };
            return Ok(ScheduleStep { status: Some(status), wait: None, condition: Some(cond) });
        }
    };
    let now = Timestamp::now();
    let created = server.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let since = old.and_then(|o| o.last_scheduled_time.as_ref()).map(|t| t.0).unwrap_or(created);
    let (due, next) = sched.due(since, now);
    let mut last = old.and_then(|o| o.last_scheduled_time.clone());
    // A failed create or prune is reported, never fails the server's
    // reconcile (its status would stop updating); the slot stays due.
    let mut problem: Option<Cond> = None;
    // One scheduled snapshot at a time: a due slot waits (and stays due)
    // while the previous one runs.
    let busy = due.and_then(|_| unfinished_scheduled(ctx, server));
    if let Some(slot) = due.filter(|_| busy.is_none()) {
        let snap = crate::resources::snapshot::scheduled(&name, &ns, server.labels(), policy, slot);
        let snap_name = snap.name_any();
        let api: Api<BackupSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
        match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &snap).await {
            Ok(_) => {
                info!(server = %name, namespace = %ns, snapshot = %snap_name, slot = %slot, "scheduled backup created");
                last = Some(Time(slot));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => last = Some(Time(slot)),
            Err(e) => {
                let why = api_message(&e);
                warn!(server = %name, namespace = %ns, snapshot = %snap_name, error = %why, "scheduled backup not created");
                problem = Some(Cond::new(
                    BACKUP_SCHEDULE,
                    false,
                    "SnapshotCreateFailed",
                    format!("the scheduled snapshot {snap_name} of {slot} could not be created: {why}; retried"),
                ));
            }
        }
    }
    // Retention of scheduled, unpinned snapshots.
    if let Some(r) = &policy.retention {
        let candidates: Vec<Candidate> = snapshots_of(ctx, server)
            .iter()
            .filter(|s| s.spec.reason == BackupReason::Scheduled && !s.spec.retain)
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .filter_map(|s| {
                let st = s.status.as_ref()?;
                let completed = match st.phase? {
                    BackupPhase::Completed => true,
                    BackupPhase::Failed => false,
                    _ => return None,
                };
                let time = st.completed_at.as_ref().or(s.metadata.creation_timestamp.as_ref())?.0;
                Some(Candidate { name: s.name_any(), time, completed })
            })
            .collect();
        let api: Api<BackupSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
        for victim in schedule::prune(&candidates, r, now) {
            match delete_if_present(&api, &victim, &DeleteParams::default()).await {
                Ok(true) => info!(server = %name, namespace = %ns, snapshot = %victim, "pruned by retention"),
                Ok(false) => {}
                Err(e) => {
                    let why = api_message(&e);
                    warn!(server = %name, namespace = %ns, snapshot = %victim, error = %why, "prune failed");
                    problem.get_or_insert_with(|| {
                        Cond::new(
                            BACKUP_SCHEDULE,
                            false,
                            "PruneFailed",
                            format!("snapshot {victim} could not be deleted by retention: {why}; retried"),
                        )
                    });
                }
            }
        }
    }
    let mut wait = next.map(|n| Duration::from_secs_f64(n.duration_since(now).as_secs_f64().max(1.0)));
    if problem.is_some() || busy.is_some() {
        wait = Some(wait.map_or(RETRY_AFTER_FAILURE, |w| w.min(RETRY_AFTER_FAILURE)));
    }
    let condition = match (problem, next) {
        (Some(p), _) => p,
        (None, _) if busy.is_some() => Cond::new(
            BACKUP_SCHEDULE,
            true,
            "WaitingForPrevious",
            format!(
                "a slot is due; the next scheduled snapshot is taken once {} has finished",
                busy.as_deref().unwrap_or_default()
            ),
        ),
        (None, Some(n)) => Cond::new(BACKUP_SCHEDULE, true, "Scheduled", format!("next scheduled snapshot at {n}")),
        (None, None) => Cond::new(
            BACKUP_SCHEDULE,
            false,
            "InvalidSchedule",
            format!("schedule {:?} has no future slot; no scheduled snapshots are taken", policy.schedule),
        ),
    };
    Ok(ScheduleStep {
        status: Some(BackupScheduleStatus { last_scheduled_time: last, next_scheduled_time: next.map(Time) }),
        wait,
        condition: Some(condition),
    })
}

/// Outcome of the restore step.
pub struct RestoreStep {
    pub status: Option<RestoreStatus>,
    /// Keep the server stopped while this is true.
    pub hold_stopped: bool,
}

/// Condition type on servers whose current restore request was refused
/// with a reason (False, the reason and message of `status.restore`).
pub const RESTORE: &str = "Restore";

impl RestoreStep {
    /// The [`RESTORE`] condition: while `spec.restore` asks for a request
    /// that was refused with a reason.
    pub fn condition(&self, requested: bool) -> Option<Cond> {
        let s = self.status.as_ref().filter(|s| requested && s.phase == RestorePhase::Failed)?;
        Some(Cond::new(RESTORE, false, s.reason.clone()?, s.message.clone().unwrap_or_default()))
    }
}

/// One restore request: its snapshot, the generation it was accepted at and
/// its Job.
struct Request<'a> {
    snapshot: &'a str,
    generation: i64,
    job: String,
}

impl Request<'_> {
    fn status(&self, phase: RestorePhase, message: impl Into<String>) -> Option<RestoreStatus> {
        let done = matches!(phase, RestorePhase::Completed | RestorePhase::Failed);
        Some(RestoreStatus {
            snapshot: self.snapshot.into(),
            phase,
            message: Some(message.into()),
            completed_at: done.then(|| Time(Timestamp::now())),
            request_generation: Some(self.generation),
            job: Some(self.job.clone()),
            reason: None,
        })
    }

    /// Refused with a reason; nothing was changed.
    fn refused(&self, reason: &str, message: impl std::fmt::Display) -> RestoreStep {
        let mut status = self.status(RestorePhase::Failed, format!("{message}; the world is unchanged"));
        if let Some(s) = status.as_mut() {
            s.reason = Some(reason.into());
        }
        RestoreStep { status, hold_stopped: false }
    }
}

/// The Job name of a restore request: per snapshot and request, so a
/// retried restore never finds the Job of an earlier one.
pub fn restore_job_name(server: &str, snapshot: &str, request_generation: i64) -> String {
    let key = format!("{snapshot}/{request_generation}");
    backup_job::child_name(server, &format!("restore-{}", &short_hash(key.as_bytes())[..8]))
}

/// Whether `old` is the status of the request `spec.restore` still makes
/// (same snapshot, not cleared since). A status written before requests
/// were tracked (no job recorded) counts as current, so an upgrade never
/// runs a finished restore again.
pub fn is_current_request(old: &RestoreStatus, snapshot: &str) -> bool {
    old.snapshot == snapshot && (old.request_generation.is_some() || old.job.is_none())
}

/// Drives `spec.restore`: validate → stop → restore Job → start. Each
/// request (`spec.restore` set, or set again after being cleared) runs its
/// own Job; the finished Job is deleted once its result is in the status,
/// and the result stays there after `spec.restore` is cleared.
pub async fn restore(server: &MinecraftServer, ctx: &Context, old: Option<&RestoreStatus>) -> Result<RestoreStep> {
    let Some(req) = &server.spec.restore else {
        // The request is over; its result stays.
        let status = old.map(|o| RestoreStatus { request_generation: None, ..o.clone() });
        return Ok(RestoreStep { status, hold_stopped: false });
    };
    let ns = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let snap_name = &req.snapshot;
    let current = old.filter(|o| is_current_request(o, snap_name));
    // A finished request stays finished.
    if let Some(o) = current
        && matches!(o.phase, RestorePhase::Completed | RestorePhase::Failed)
    {
        return Ok(RestoreStep { status: Some(o.clone()), hold_stopped: false });
    }
    let generation =
        current.and_then(|o| o.request_generation).unwrap_or_else(|| server.metadata.generation.unwrap_or(0));
    let job_name =
        current.and_then(|o| o.job.clone()).unwrap_or_else(|| restore_job_name(&name, snap_name, generation));
    let request = Request { snapshot: snap_name, generation, job: job_name.clone() };
    let creds_name = backup_job::child_name(&name, "restore-store");
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = jobs.get_opt(&job_name).await?;
    if job.is_none() {
        // Check the request before stopping anything.
        let snap = ctx.snapshots.get(&ObjectRef::new(snap_name).within(&ns));
        let problem = match snap.as_deref() {
            None => Some(format!("BackupSnapshot {snap_name:?} does not exist in namespace {ns}")),
            Some(s) if s.spec.server != name => {
                Some(format!("BackupSnapshot {snap_name:?} is of server {:?}", s.spec.server))
            }
            Some(s) if s.status.as_ref().and_then(|st| st.phase) != Some(BackupPhase::Completed) => {
                Some(format!("BackupSnapshot {snap_name:?} is not Completed"))
            }
            _ => None,
        };
        if let Some(p) = problem {
            return Ok(RestoreStep {
                status: request.status(RestorePhase::Failed, format!("{p}; the world is unchanged")),
                hold_stopped: false,
            });
        }
        let snap = snap.expect("checked");
        // The store by the name the snapshot recorded, and a location that
        // is the snapshot's own key in it.
        let (store, location) = match crate::controller::backup::stored_at(ctx, &snap) {
            Ok(x) => x,
            Err(r) => return Ok(request.refused(r.reason, r.message)),
        };
        let server_uid = server.uid().unwrap_or_default();
        // A Secret of the copy's name that is not this server's: refused
        // before anything stops (checked again when copying).
        if store.credentials_secret.is_some() {
            let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            if let Some(s) = secrets_api.get_opt(&creds_name).await?
                && !secrets::owned_by(&s, &server_uid)
            {
                let e = secrets::conflict(&ns, &creds_name, &format!("MinecraftServer {name}"));
                return Ok(request.refused(secrets::SECRET_CONFLICT, e));
            }
        }
        // Stop first: the world must not change under the restore.
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        if pods.get_opt(&format!("{name}-0")).await?.is_some() {
            return Ok(RestoreStep {
                status: request.status(RestorePhase::Stopping, "stopping the server before the restore"),
                hold_stopped: true,
            });
        }
        let owner = OwnerReference {
            api_version: "craftplane.io/v1alpha1".into(),
            kind: "MinecraftServer".into(),
            name: name.clone(),
            uid: server_uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let credentials = match copy_credentials(ctx, store, &ns, &creds_name, &owner).await {
            Ok(c) => c,
            Err(e @ crate::controller::error::Error::SecretConflict(_)) => {
                return Ok(request.refused(secrets::SECRET_CONFLICT, e));
            }
            Err(e) => return Err(e),
        };
        let job = backup_job::build(&JobInput {
            name: job_name.clone(),
            namespace: ns.clone(),
            server: name.clone(),
            owner,
            snapshot: snap_name.clone(),
            location: location.clone(),
            image: ctx.settings.helper_image.clone(),
            settings: store.config.clone(),
            credentials,
            node: None,
            placement: ctx.sku_placement(&server.spec.sku),
            task: Task::Restore,
        });
        jobs.patch(&job_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job)).await?;
        info!(server = %name, namespace = %ns, snapshot = %snap_name, "restore Job created");
        return Ok(RestoreStep {
            status: request.status(RestorePhase::Restoring, format!("restoring from {location}")),
            hold_stopped: true,
        });
    }
    let job = job.expect("checked");
    let js = job.status.clone().unwrap_or_default();
    let failed = js.conditions.iter().flatten().any(|c| c.type_ == "Failed" && c.status == "True");
    let succeeded = js.succeeded.unwrap_or(0) > 0;
    if !failed && !succeeded {
        return Ok(RestoreStep {
            status: request.status(RestorePhase::Restoring, "the restore Job is running"),
            hold_stopped: true,
        });
    }
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    secrets::delete_owned(&secrets_api, &creds_name, &server.uid().unwrap_or_default()).await?;
    let status = if succeeded {
        request.status(RestorePhase::Completed, format!("world restored from {snap_name}"))
    } else {
        let why = failure_message(ctx, &ns, &job_name).await?.unwrap_or_else(|| "the restore Job failed".into());
        request.status(RestorePhase::Failed, format!("{why}; the world is unchanged"))
    };
    // The result is in the status now: the finished Job (and its pod) can go.
    let dp = DeleteParams { propagation_policy: Some(kube::api::PropagationPolicy::Background), ..Default::default() };
    if delete_if_present(&jobs, &job_name, &dp).await? {
        info!(server = %name, namespace = %ns, job = %job_name, "finished restore Job deleted");
    }
    Ok(RestoreStep { status, hold_stopped: false })
}

async fn failure_message(ctx: &Context, ns: &str, job: &str) -> Result<Option<String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await?;
    Ok(list
        .items
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.message.clone())
        .next_back())
}

/// Copies a store's credentials Secret into `ns` as `name` (for a Job
/// there), owned by `owner`. A Secret of that name that `owner` does not
/// own is left untouched: [`Error::SecretConflict`](crate::controller::error::Error).
pub async fn copy_credentials(
    ctx: &Context,
    store: &StoreConfig,
    ns: &str,
    name: &str,
    owner: &OwnerReference,
) -> Result<Option<String>> {
    let Some(source_name) = &store.credentials_secret else { return Ok(None) };
    let src: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.operator_namespace);
    let Some(source) = src.get_opt(source_name).await? else {
        return Err(crate::controller::error::Error::Blocked(format!(
            "credentials Secret {}/{source_name} of store {:?} does not exist",
            ctx.settings.operator_namespace, store.name
        )));
    };
    let mut copy = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            owner_references: Some(vec![owner.clone()]),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "craftplane".into())])),
            ..Default::default()
        },
        data: source.data,
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let foreign = || secrets::conflict(ns, name, &format!("{} {}", owner.kind, owner.name));
    let existing = match api.get_opt(name).await? {
        Some(s) => s,
        None => {
            let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match api.create(&pp, &copy).await {
                Ok(_) => return Ok(Some(name.into())),
                // Created meanwhile: check whose it is.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get_opt(name).await?.ok_or_else(foreign)?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !secrets::owned_by(&existing, &owner.uid) {
        return Err(foreign());
    }
    // Ours (an earlier attempt's): refreshed, only if it is still that
    // object (resourceVersion precondition).
    copy.metadata.resource_version = existing.metadata.resource_version;
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&copy)).await?;
    Ok(Some(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schedule: &str) -> BackupPolicy {
        BackupPolicy { schedule: schedule.into(), retention: None, store: None }
    }

    /// Each restore request gets its own Job; a cleared request is over,
    /// while a status from before requests were tracked stays current (an
    /// upgrade must not run a finished restore again).
    #[test]
    fn each_restore_request_has_its_own_job() {
        let first = restore_job_name("mc", "snap", 3);
        assert_ne!(first, restore_job_name("mc", "snap", 5), "set again later: another Job");
        assert_ne!(first, restore_job_name("mc", "other", 3));
        assert_eq!(first, restore_job_name("mc", "snap", 3), "stable within a request");
        assert!(first.len() <= 63 && restore_job_name(&"m".repeat(52), "snap", 3).len() <= 63);
        let status = |generation: Option<i64>, job: Option<&str>| RestoreStatus {
            snapshot: "snap".into(),
            phase: RestorePhase::Completed,
            message: None,
            completed_at: None,
            request_generation: generation,
            job: job.map(str::to_string),
            reason: None,
        };
        assert!(is_current_request(&status(Some(3), Some(&first)), "snap"));
        assert!(!is_current_request(&status(Some(3), Some(&first)), "other"));
        assert!(!is_current_request(&status(None, Some(&first)), "snap"), "cleared: a new request");
        assert!(is_current_request(&status(None, None), "snap"), "written by an older release");
    }

    #[test]
    fn a_schedule_the_parser_refuses_is_a_condition() {
        // Three letters pass the admission shape check, but name no weekday.
        let min = Duration::from_secs(300);
        let c = parse_schedule(&policy("0 4 * * MOO"), min).unwrap_err();
        assert_eq!((c.type_, c.status, c.reason.as_str()), (BACKUP_SCHEDULE, false, "InvalidSchedule"));
        assert!(c.message.contains("MOO"), "{}", c.message);
        assert!(parse_schedule(&policy("0 4 * * MON"), min).is_ok());
    }

    /// Issue 30 item 8(c): a schedule closer than the minimum is refused.
    #[test]
    fn a_schedule_below_the_minimum_interval_is_a_condition() {
        let min = Duration::from_secs(300);
        for s in ["* * * * * *", "*/10 * * * * *", "0 */1 * * * *", "* * * * *", "*/4 * * * *"] {
            let c = parse_schedule(&policy(s), min).unwrap_err();
            assert_eq!((c.status, c.reason.as_str()), (false, "ScheduleTooFrequent"), "{s}");
            assert!(c.message.contains("300s"), "{}", c.message);
        }
        for s in ["*/5 * * * *", "0 4 * * *", "@hourly"] {
            assert!(parse_schedule(&policy(s), min).is_ok(), "{s}");
        }
        assert!(parse_schedule(&policy("* * * * * *"), Duration::ZERO).is_ok(), "0 allows any");
    }
}
