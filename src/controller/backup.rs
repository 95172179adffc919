//! The BackupSnapshot reconciler: one Job per snapshot runs `craftplane
//! backup` next to the world volume; the snapshot is Completed only when the
//! store holds its manifest; deleting it deletes the stored objects unless
//! `retain`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use futures::future::BoxFuture;
use kube::runtime::Controller;

use super::conditions;
use super::context::{Context, cached_full, delete_if_present};
use super::error::{Error, Result};
use super::secrets;
use super::watches::{Events, Watches, run};
use crate::api::backup::{BackupPhase, BackupSnapshot, BackupSnapshotStatus};
use crate::api::server::ServerPhase;
use crate::api::{GROUP, VERSION};
use crate::backup::stores::{self, Grants, Refusal, SnapshotKey, StoreConfig};
use crate::backup::{BackupError, Location, archive};
use crate::resources::FIELD_MANAGER;
use crate::resources::backup_job::{self, JobInput, Task};

/// Finalizer that deletes the stored archive with the snapshot.
pub const FINALIZER: &str = "craftplane.io/backup-objects";

/// Reconciles one BackupSnapshot.
pub async fn reconcile(snap: Arc<BackupSnapshot>, ctx: Arc<Context>) -> Result<Action> {
    if !super::context::store_ready(&ctx.servers) || !super::context::store_ready(&ctx.tenants) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let ns = snap.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<BackupSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = snap.uid().unwrap_or_default();
    let r = finalizer(&api, FINALIZER, snap, |event| async {
        match event {
            Event::Apply(s) => apply(s, &ctx).await,
            Event::Cleanup(s) => cleanup(s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if r.is_ok() {
        ctx.succeeded(&uid);
    }
    r
}

/// Backoff on errors.
pub fn error_policy(snap: Arc<BackupSnapshot>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&snap.uid().unwrap_or_default());
    warn!(snapshot = %snap.name_any(), namespace = ?snap.namespace(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn owner(snap: &BackupSnapshot) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "BackupSnapshot".into(),
        name: snap.name_any(),
        uid: snap.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The store settings the operator itself uses: config plus the
/// credentials Secret's data.
async fn settings(ctx: &Context, store: &StoreConfig) -> Result<BTreeMap<String, String>, String> {
    let mut s = store.config.clone();
    if let Some(name) = &store.credentials_secret {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.operator_namespace);
        let secret = api.get_opt(name).await.map_err(|e| format!("reading Secret {name}: {e}"))?.ok_or_else(|| {
            format!(
                "credentials Secret {}/{name} of store {:?} does not exist",
                ctx.settings.operator_namespace, store.name
            )
        })?;
        for (k, v) in secret.data.unwrap_or_default() {
            s.insert(k, String::from_utf8_lossy(&v.0).into_owned());
        }
    }
    Ok(s)
}

/// The Tenant a namespace belongs to.
pub fn tenant_of(ctx: &Context, ns: &str) -> Option<Arc<crate::api::Tenant>> {
    let ns = ns.to_string();
    ctx.tenants.state().into_iter().find(|t| {
        t.desired_namespaces().contains(&ns) || t.status.as_ref().is_some_and(|st| st.namespaces.contains(&ns))
    })
}

/// The identity of a snapshot in its key.
fn key_of(snap: &BackupSnapshot) -> (String, String, String) {
    (snap.namespace().unwrap_or_default(), snap.name_any(), snap.uid().unwrap_or_default())
}

/// The store holding a snapshot's archive, found by name (the one its
/// status records; for a snapshot recorded by an earlier release, the one
/// it asks for), never by matching URLs; and its location, which must be
/// the snapshot's own key in that store.
pub fn stored_at<'a>(ctx: &'a Context, snap: &BackupSnapshot) -> Result<(&'a StoreConfig, String), Refusal> {
    let refuse = |reason: &'static str, message: String| Refusal { reason, message };
    let st = snap.status.as_ref();
    let Some(location) = st.and_then(|s| s.location.clone()) else {
        return Err(refuse("InvalidStatus", "no location recorded".into()));
    };
    let Some(stores) = ctx.stores.as_ref() else {
        return Err(refuse(stores::STORE_NOT_CONFIGURED, "this operator has no backup stores".into()));
    };
    let (ns, name, uid) = key_of(snap);
    let tenant = tenant_of(ctx, &ns);
    let grants = tenant.as_deref().map(Grants::of);
    let store_name = match st.and_then(|s| s.store.as_deref()) {
        Some(n) => Some(n),
        None => stores.requested_name(snap.spec.store.as_ref(), grants.as_ref()),
    };
    let store = store_name
        .ok_or_else(|| "no store recorded".to_string())
        .and_then(|n| stores.named(n))
        .map_err(|e| refuse(stores::STORE_NOT_CONFIGURED, format!("the snapshot's store: {e}")))?;
    let key = SnapshotKey { namespace: &ns, server: &snap.spec.server, snapshot: &name, uid: &uid };
    stores::check_location(store, &location, &key).map_err(|e| refuse(stores::INVALID_LOCATION, e))?;
    Ok((store, location))
}

struct Verdict {
    phase: BackupPhase,
    reason: String,
    message: String,
}

fn verdict(phase: BackupPhase, reason: &str, message: impl Into<String>) -> Verdict {
    Verdict { phase, reason: reason.into(), message: message.into() }
}

async fn apply(snap: Arc<BackupSnapshot>, ctx: &Context) -> Result<Action> {
    let ns = snap.namespace().unwrap_or_default();
    let name = snap.name_any();
    let old = snap.status.clone().unwrap_or_default();
    if matches!(old.phase, Some(BackupPhase::Completed | BackupPhase::Failed)) {
        return Ok(Action::await_change());
    }
    // The cache can trail this operator's own status writes (an event of
    // the Job may come first). Work from the live object: a stale status
    // applied again would drop fields (server-side apply removes what the
    // manager leaves out, e.g. the location) or start a second Job.
    let snaps: Api<BackupSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(live) = snaps.get_opt(&name).await? else { return Ok(Action::await_change()) };
    let snap = Arc::new(live);
    let old = snap.status.clone().unwrap_or_default();
    if matches!(old.phase, Some(BackupPhase::Completed | BackupPhase::Failed)) {
        return Ok(Action::await_change());
    }
    let mut status = old.clone();
    status.observed_generation = snap.metadata.generation;
    let job_name = backup_job::child_name(&name, "backup");
    let creds_name = backup_job::child_name(&name, "store");
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = jobs.get_opt(&job_name).await?;

    let v = match job {
        None => start(&snap, ctx, &mut status, &job_name, &creds_name).await?,
        Some(job) => follow(&snap, ctx, &mut status, &job).await?,
    };
    let now = Timestamp::now();
    status.phase = Some(v.phase);
    let done = matches!(v.phase, BackupPhase::Completed | BackupPhase::Failed);
    if done && status.completed_at.is_none() {
        status.completed_at = Some(Time(now));
    }
    let ready = v.phase == BackupPhase::Completed;
    let stalled = v.phase == BackupPhase::Failed;
    status.conditions = conditions::merge(
        &old.conditions,
        &conditions::kstatus(ready, stalled, &v.reason, &v.message),
        snap.metadata.generation,
        now,
    );
    if done {
        // The copied store credentials are needed only while the Job runs.
        let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        secrets::delete_owned(&secrets_api, &creds_name, &snap.uid().unwrap_or_default()).await?;
        if v.phase == BackupPhase::Completed {
            ctx.metrics.backup_bytes.inc_by(status.bytes.unwrap_or(0).max(0) as u64);
            if let (Some(s), Some(c)) = (&status.started_at, &status.completed_at) {
                ctx.metrics.backup_duration.observe((c.0.as_second() - s.0.as_second()).max(0) as f64);
            }
        } else {
            ctx.metrics.backup_failures.inc();
        }
    }
    if status != old {
        let api: Api<BackupSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
        let patch =
            serde_json::json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "BackupSnapshot", "status": status});
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        if old.phase != status.phase {
            info!(snapshot = %name, namespace = %ns, phase = ?v.phase, reason = %v.reason, "snapshot phase changed");
            ctx.event(&snap.object_ref(&()), stalled, &v.reason, &v.message, "Backup").await;
        }
    }
    if done {
        // The result is in the status now. A finished Job's pod still names
        // the world volume, and PVC protection counts every scheduled pod
        // that does: the PVC of a server deleted with `deletionPolicy:
        // Delete` would never go. The Job goes (its pod with it).
        delete_if_present(&jobs, &job_name, &DeleteParams::background()).await?;
    }
    Ok(if done { Action::await_change() } else { Action::requeue(Duration::from_secs(10)) })
}

/// Whether a server in `phase` can be backed up: Running (saved over RCON
/// first), Stopped, Hibernated or Failed (nothing writes the world) — not
/// while its world is being created, shut down or replaced.
fn settled(phase: Option<ServerPhase>) -> bool {
    matches!(phase, Some(ServerPhase::Running | ServerPhase::Stopped | ServerPhase::Hibernated | ServerPhase::Failed))
}

/// Creates the Job (and the credentials it needs).
async fn start(
    snap: &BackupSnapshot,
    ctx: &Context,
    status: &mut BackupSnapshotStatus,
    job_name: &str,
    creds_name: &str,
) -> Result<Verdict> {
    let ns = snap.namespace().unwrap_or_default();
    let name = snap.name_any();
    // Not (yet) there: GitOps may apply the snapshot before its server.
    let Some(server) = ctx.servers.get(&ObjectRef::new(&snap.spec.server).within(&ns)) else {
        return Ok(verdict(
            BackupPhase::Pending,
            "ServerNotFound",
            format!("MinecraftServer {:?} does not exist in namespace {ns}", snap.spec.server),
        ));
    };
    let tenant = tenant_of(ctx, &ns);
    let Some(stores) = ctx.stores.as_ref() else {
        return Ok(verdict(
            BackupPhase::Failed,
            "StoreNotConfigured",
            "this operator has no backup stores (--backup-stores)",
        ));
    };
    // Only the tenant's stores, keys only under its part of the store.
    let uid = snap.uid().unwrap_or_default();
    let key = SnapshotKey { namespace: &ns, server: &snap.spec.server, snapshot: &name, uid: &uid };
    let grants = tenant.as_deref().map(Grants::of);
    let (store, location) = match stores.place(snap.spec.store.as_ref(), grants.as_ref(), &key) {
        Ok(p) => (p.store, p.location),
        Err(r) => return Ok(verdict(BackupPhase::Failed, r.reason, r.message)),
    };
    let credentials = match super::server::backup::copy_credentials(ctx, store, &ns, creds_name, &owner(snap)).await {
        Ok(c) => c,
        Err(Error::Blocked(m)) => return Ok(verdict(BackupPhase::Failed, "StoreCredentialsMissing", m)),
        // Waits (Pending) until the Secret in the way is gone.
        Err(Error::SecretConflict(m)) => return Ok(verdict(BackupPhase::Pending, secrets::SECRET_CONFLICT, m)),
        Err(e) => return Err(e),
    };
    // Not while the world is being created, replaced or shut down: wait for
    // Running (saved over RCON) or Stopped/Failed (nothing writes).
    let phase = server.status.as_ref().and_then(|s| s.phase);
    if !settled(phase) {
        let now = phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "Pending".into());
        return Ok(verdict(
            BackupPhase::Pending,
            "ServerNotSettled",
            format!("waiting for server {} to be Running or Stopped (it is {now})", snap.spec.server),
        ));
    }
    let pod = cached_full(&ctx.children.pods, &ns, &format!("{}-0", snap.spec.server));
    let node = pod.as_ref().and_then(|p| p.spec.as_ref()?.node_name.clone());
    // A running server is asked to flush over RCON, at its pod's address
    // (fixed for the pod's life; a restart mid-backup fails the RCON step,
    // as it should: the world changed under the archive).
    let rcon = match (phase, pod.as_ref().and_then(|p| p.status.as_ref()?.pod_ip.as_deref())) {
        (Some(ServerPhase::Running), Some(ip)) => Some(crate::resources::rcon_address(ip)),
        (Some(ServerPhase::Running), None) => {
            return Ok(verdict(
                BackupPhase::Pending,
                "ServerNotSettled",
                format!("waiting for the pod of server {} to have an IP address", snap.spec.server),
            ));
        }
        _ => None,
    };
    let mut flags =
        vec!["--compression".to_string(), crate::backup::Compression::from(snap.spec.compression).as_str().into()];
    for p in &snap.spec.include {
        flags.extend(["--include".into(), p.clone()]);
    }
    for p in &snap.spec.exclude {
        flags.extend(["--exclude".into(), p.clone()]);
    }
    flags.extend([
        "--server".into(),
        format!("{ns}/{}/{}/{}", snap.spec.server, server.spec.server_type.as_str(), server.spec.version),
    ]);
    let job = backup_job::build(&JobInput {
        name: job_name.into(),
        namespace: ns.clone(),
        server: snap.spec.server.clone(),
        owner: owner(snap),
        snapshot: name.clone(),
        location: location.clone(),
        image: ctx.settings.helper_image.clone(),
        settings: store.config.clone(),
        credentials,
        node,
        placement: ctx.sku_placement(&server.spec.sku),
        task: Task::Backup { flags, rcon },
    });
    Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .patch(job_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job))
        .await?;
    status.location = Some(location);
    status.store = Some(store.name.clone());
    status.job_name = Some(job_name.into());
    status.started_at = Some(Time(Timestamp::now()));
    Ok(verdict(BackupPhase::Running, "JobCreated", format!("backup Job {job_name} created")))
}

/// Follows a Job; on success confirms the manifest in the store.
async fn follow(snap: &BackupSnapshot, ctx: &Context, status: &mut BackupSnapshotStatus, job: &Job) -> Result<Verdict> {
    let ns = snap.namespace().unwrap_or_default();
    let js = job.status.clone().unwrap_or_default();
    if let Some(t) = &js.start_time
        && status.started_at.is_none()
    {
        status.started_at = Some(t.clone());
    }
    let failed = js.conditions.iter().flatten().find(|c| c.type_ == "Failed" && c.status == "True");
    if let Some(c) = failed {
        let (reason, message) = match job_failure(ctx, &ns, &job.name_any()).await? {
            Some(x) => x,
            None => ("BackupJobFailed".into(), c.message.clone().unwrap_or_else(|| "the backup Job failed".into())),
        };
        return Ok(Verdict { phase: BackupPhase::Failed, reason, message });
    }
    if js.succeeded.unwrap_or(0) < 1 {
        return Ok(verdict(BackupPhase::Running, "JobRunning", format!("backup Job {} is running", job.name_any())));
    }
    // Success is what the store holds, not what the Job says.
    let recorded = BackupSnapshot { status: Some(status.clone()), ..snap.clone() };
    let (store, location) = match stored_at(ctx, &recorded) {
        Ok(x) => x,
        Err(r) => return Ok(verdict(BackupPhase::Failed, r.reason, r.message)),
    };
    let settings = match settings(ctx, store).await {
        Ok(s) => s,
        Err(e) => return Ok(verdict(BackupPhase::Failed, "StoreCredentialsMissing", e)),
    };
    let loc = match Location::open_with(&location, &settings) {
        Ok(l) => l,
        Err(e) => return Ok(verdict(BackupPhase::Failed, e.reason(), e.to_string())),
    };
    match archive::read_manifest(&loc).await {
        Ok((m, sha)) => {
            status.bytes = Some(m.archive.bytes as i64);
            status.files = Some(m.totals.files as i64);
            status.manifest_sha256 = Some(sha);
            Ok(verdict(
                BackupPhase::Completed,
                "Completed",
                format!("{} files, {} bytes stored at {location}", m.totals.files, m.archive.bytes),
            ))
        }
        Err(BackupError::SnapshotNotFound(_)) => Ok(verdict(
            BackupPhase::Failed,
            "ManifestMissing",
            format!("the backup Job succeeded but {location} holds no manifest; the snapshot is incomplete"),
        )),
        // The store may be briefly unreachable: try again.
        Err(e) => Err(Error::Blocked(format!("checking {location}: {e}"))),
    }
}

/// The failure reason the Job's last pod wrote to its termination message.
async fn job_failure(ctx: &Context, ns: &str, job: &str) -> Result<Option<(String, String)>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await?;
    let mut messages: Vec<(Option<Timestamp>, String)> = list
        .items
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|cs| {
            let t = cs.state.as_ref()?.terminated.as_ref()?;
            Some((t.finished_at.as_ref().map(|f| f.0), t.message.clone()?))
        })
        .collect();
    messages.sort_by_key(|(t, _)| *t);
    Ok(messages.last().and_then(|(_, m)| BackupError::parse(m)))
}

/// Whether deleting `snap` keeps its archive: `retain` outside tenant
/// namespaces; in a tenant's only where the Tenant allows it
/// (`keepRetainedArchives`), so a tenant cannot fill the store past its
/// `maxBackups` by creating and deleting retained snapshots.
pub fn keeps_archive(snap: &BackupSnapshot, tenant: Option<&crate::api::Tenant>) -> bool {
    snap.spec.retain && tenant.is_none_or(|t| t.spec.keep_retained_archives)
}

/// Deletes the stored objects unless the snapshot keeps them.
async fn cleanup(snap: Arc<BackupSnapshot>, ctx: &Context) -> Result<Action> {
    let Some(location) = snap.status.as_ref().and_then(|s| s.location.clone()) else {
        return Ok(Action::await_change());
    };
    let tenant = tenant_of(ctx, &snap.namespace().unwrap_or_default());
    if keeps_archive(&snap, tenant.as_deref()) {
        info!(snapshot = %snap.name_any(), %location, "retained: stored objects kept");
        return Ok(Action::await_change());
    }
    let store = match stored_at(ctx, &snap) {
        Ok((store, _)) => store,
        Err(r) => {
            warn!(snapshot = %snap.name_any(), %location, reason = r.reason, error = %r.message, "stored objects are left in place");
            return Ok(Action::await_change());
        }
    };
    let settings = settings(ctx, store).await.map_err(Error::Blocked)?;
    let loc = Location::open_with(&location, &settings).map_err(|e| Error::Blocked(e.to_string()))?;
    archive::delete(&loc).await.map_err(|e| Error::Blocked(format!("deleting {location}: {e}")))?;
    info!(snapshot = %snap.name_any(), %location, "stored objects deleted");
    Ok(Action::await_change())
}

/// The BackupSnapshot controller: its own kind and the Job each runs.
pub fn controller(w: &Watches, ctx: Arc<Context>, own: Events<BackupSnapshot>) -> BoxFuture<'static, ()> {
    let c = Controller::for_stream(own, ctx.snapshots.clone()).owns_stream(w.trigger::<Job>(&w.children, "Job"));
    run(c, w, w.config(false), "BackupSnapshot", reconcile, error_policy, ctx)
}

#[cfg(test)]
mod tests {
    use super::{keeps_archive, settled};
    use crate::api::server::ServerPhase::*;

    #[test]
    fn snapshots_wait_while_the_world_is_created_stopped_or_replaced() {
        for p in [Running, Stopped, Hibernated, Failed] {
            assert!(settled(Some(p)), "{p:?}");
        }
        for p in [Pending, Provisioning, Starting, Stopping, Restoring] {
            assert!(!settled(Some(p)), "{p:?}");
        }
        assert!(!settled(None), "a server without a status has not started");
    }

    /// `retain` keeps an archive of a deleted snapshot outside tenant
    /// namespaces, and in a tenant's only when its admin allows it.
    #[test]
    fn retained_archives_are_kept_only_where_the_admin_allows() {
        let snap = |retain: bool| -> crate::api::BackupSnapshot {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "s", "namespace": "n"}, "spec": {"server": "mc", "retain": retain}}))
                .unwrap()
        };
        let tenant = |keep: bool| -> crate::api::Tenant {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "t"}, "spec": {"owners": [{"kind": "User", "name": "a"}], "keepRetainedArchives": keep}}))
                .unwrap()
        };
        assert!(keeps_archive(&snap(true), None));
        assert!(!keeps_archive(&snap(false), None));
        assert!(!keeps_archive(&snap(true), Some(&tenant(false))));
        assert!(keeps_archive(&snap(true), Some(&tenant(true))));
        assert!(!keeps_archive(&snap(false), Some(&tenant(true))));
    }
}
