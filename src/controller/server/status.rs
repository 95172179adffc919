//! Pure status derivation for MinecraftServer: phase, conditions and
//! config history from what the cluster reports.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::server::{ConfigRevision, ServerPhase, ServerState};
use crate::minecraft::slp;

/// Revisions kept in `status.configHistory`.
pub const HISTORY: usize = 10;

/// What the cluster shows of a server's workload.
#[derive(Default)]
pub struct Observed<'a> {
    pub statefulset: Option<&'a StatefulSet>,
    pub pod: Option<&'a Pod>,
    pub pvc: Option<&'a PersistentVolumeClaim>,
    /// Last Server List Ping: `Some(Ok)` answered, `Some(Err)` failed, `None` not pinged.
    pub ping: Option<&'a Result<slp::Status, String>>,
}

/// A phase with the reason and message for the conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseInfo {
    pub phase: ServerPhase,
    pub reason: String,
    pub message: String,
}

fn info(phase: ServerPhase, reason: &str, message: impl Into<String>) -> PhaseInfo {
    PhaseInfo { phase, reason: reason.into(), message: message.into() }
}

/// Container waiting reasons that will not fix themselves.
const FATAL_WAITING: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
    "CreateContainerError",
];

/// Derives the phase from the desired state and observations.
pub fn phase(desired: ServerState, o: &Observed) -> PhaseInfo {
    let pod = o.pod.filter(|p| p.metadata.deletion_timestamp.is_none());
    if desired == ServerState::Stopped {
        return match o.pod {
            Some(_) => info(ServerPhase::Stopping, "Stopping", "saving the world and stopping the server"),
            None => info(ServerPhase::Stopped, "Stopped", "the server is stopped; its world is kept"),
        };
    }
    if o.statefulset.is_none() {
        return info(ServerPhase::Provisioning, "Provisioning", "creating the server's workload");
    }
    if let Some(pvc) = o.pvc {
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            return info(ServerPhase::Provisioning, "VolumePending", "waiting for the world volume to be bound");
        }
    }
    let Some(pod) = pod else {
        return info(ServerPhase::Provisioning, "PodPending", "waiting for the server pod to be created");
    };
    let status = pod.status.as_ref();
    if let Some(f) = crate::controller::plugin::fetch_failure(pod) {
        return info(ServerPhase::Failed, "PluginFetchFailed", format!("plugins could not be installed: {f}"));
    }
    for cs in status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = w.reason.as_deref()
            && FATAL_WAITING.contains(&reason)
        {
            let msg = w.message.clone().unwrap_or_default();
            return info(
                ServerPhase::Failed,
                reason,
                format!("container {}: {reason} {msg}", cs.name).trim().to_string(),
            );
        }
    }
    if status.and_then(|s| s.phase.as_deref()) == Some("Failed") {
        return info(
            ServerPhase::Failed,
            "PodFailed",
            status.and_then(|s| s.message.clone()).unwrap_or_else(|| "the server pod failed".into()),
        );
    }
    let conditions = status.and_then(|s| s.conditions.as_ref());
    let cond = |t: &str| conditions.and_then(|cs| cs.iter().find(|c| c.type_ == t));
    if let Some(c) = cond("PodScheduled")
        && c.status == "False"
    {
        return info(
            ServerPhase::Provisioning,
            "Unschedulable",
            c.message.clone().unwrap_or_else(|| "the pod cannot be scheduled".into()),
        );
    }
    let ready = cond("Ready").is_some_and(|c| c.status == "True");
    if !ready {
        return info(ServerPhase::Starting, "Starting", "the server is starting");
    }
    match o.ping {
        Some(Ok(s)) if s.max == 0 => {
            info(ServerPhase::Starting, "Starting", "the server answers but is still loading (0 player slots)")
        }
        _ => info(ServerPhase::Running, "Running", "the server is running"),
    }
}

/// The phase of a sleeping server: Stopping while its pod saves the world
/// and goes, then Hibernated (Ready: asleep is as it should be).
pub fn asleep(pod: bool, policy: &crate::api::sleep::EffectiveSleep) -> PhaseInfo {
    if pod {
        return info(
            ServerPhase::Stopping,
            "FallingAsleep",
            "no player for its idle time: saving the world and stopping",
        );
    }
    let wake = if policy.wake_on_join {
        "a player joining through the gateway wakes it"
    } else {
        "joining does not wake it (wakeOnJoin false): wake it with kubectl craftplane wake"
    };
    info(ServerPhase::Hibernated, "Asleep", format!("asleep, its world kept; {wake}"))
}

/// Whether the phase satisfies the desired state (the Ready condition).
/// While a restore holds the server stopped: phase Restoring (never
/// Ready), whatever the scaled-down workload looks like; the message says
/// how far the restore is.
pub fn restoring(restore: Option<&crate::api::server::RestoreStatus>) -> PhaseInfo {
    let message = restore.and_then(|r| r.message.clone()).unwrap_or_else(|| "restoring a snapshot".into());
    info(ServerPhase::Restoring, "Restoring", message)
}

pub fn is_ready(desired: ServerState, phase: ServerPhase) -> bool {
    matches!(
        (desired, phase),
        (ServerState::Running, ServerPhase::Running | ServerPhase::Hibernated)
            | (ServerState::Stopped, ServerPhase::Stopped)
    )
}

/// Adds `revision` to the front of `history` when it is new; keeps at most
/// [`HISTORY`] entries. Returns the history unchanged otherwise.
pub fn record_revision(
    history: &[ConfigRevision],
    revision: &str,
    generation: i64,
    now: Timestamp,
) -> Vec<ConfigRevision> {
    if history.first().is_some_and(|h| h.revision == revision) {
        return history.to_vec();
    }
    let mut out = vec![ConfigRevision { revision: revision.into(), generation, applied_at: Time(now) }];
    out.extend(history.iter().filter(|h| h.revision != revision).cloned());
    out.truncate(HISTORY);
    out
}

/// When the server container (`minecraft`) of `pod` last started running.
pub fn server_started_at(pod: &Pod) -> Option<Timestamp> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let cs = statuses.iter().find(|c| c.name == crate::api::contract::SERVER_CONTAINER)?;
    Some(cs.state.as_ref()?.running.as_ref()?.started_at.as_ref()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn sts() -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap()
    }

    /// A restore shows as Restoring, never Ready (the held-stopped workload
    /// alone reads Stopped, which is Ready for a stopped server).
    #[test]
    fn a_running_restore_is_restoring_and_not_ready() {
        use crate::api::server::{RestorePhase, RestoreStatus};
        let r = RestoreStatus {
            snapshot: "snap".into(),
            phase: RestorePhase::Restoring,
            message: Some("the restore Job is running".into()),
            completed_at: None,
            request_generation: Some(2),
            job: Some("mc-restore-x".into()),
            reason: None,
        };
        let p = restoring(Some(&r));
        assert_eq!(
            (p.phase, p.reason.as_str(), p.message.as_str()),
            (ServerPhase::Restoring, "Restoring", "the restore Job is running")
        );
        assert!(!is_ready(ServerState::Stopped, p.phase));
        assert!(!is_ready(ServerState::Running, p.phase));
        assert_eq!(restoring(None).phase, ServerPhase::Restoring);
    }

    #[test]
    fn the_server_container_start_survives_the_cache_slimming() {
        let mut p = pod(json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "fetch", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-12-04T10:00:00Z"}}},
            {"name": "minecraft", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-12-04T10:00:05Z"}}}]}}));
        crate::controller::context::slim::pod_status(p.status.as_mut().unwrap());
        assert_eq!(server_started_at(&p), Some("2026-12-04T10:00:05Z".parse().unwrap()));
        assert_eq!(server_started_at(&pod(json!({"status": {"phase": "Pending"}}))), None);
    }

    #[test]
    fn phases_follow_the_workload() {
        let s = sts();
        let bound: PersistentVolumeClaim = serde_json::from_value(json!({"status": {"phase": "Bound"}})).unwrap();
        let pending_pvc: PersistentVolumeClaim =
            serde_json::from_value(json!({"status": {"phase": "Pending"}})).unwrap();
        let ready = pod(json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
        let not_ready =
            pod(json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}));
        let crash = pod(
            json!({"status": {"phase": "Running", "containerStatuses": [{"name": "minecraft", "image": "x", "imageID": "", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}}),
        );
        let unsched = pod(
            json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes"}]}}),
        );
        let fetch_failed = pod(
            json!({"status": {"phase": "Pending", "initContainerStatuses": [{"name": "fetch-plugins", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
            "state": {"terminated": {"exitCode": 1, "message": "ChecksumMismatch: plugin lp: LP.jar has sha256 aa, expected bb"}}}]}}),
        );
        let r = ServerState::Running;
        let p = |o: Observed| phase(r, &o).phase;
        let f = phase(r, &Observed { statefulset: Some(&s), pod: Some(&fetch_failed), pvc: Some(&bound), ping: None });
        assert_eq!((f.phase, f.reason.as_str()), (ServerPhase::Failed, "PluginFetchFailed"));
        assert!(f.message.contains("ChecksumMismatch: plugin lp"), "{}", f.message);
        assert_eq!(p(Observed::default()), ServerPhase::Provisioning);
        assert_eq!(
            p(Observed { statefulset: Some(&s), pvc: Some(&pending_pvc), ..Default::default() }),
            ServerPhase::Provisioning
        );
        assert_eq!(
            p(Observed { statefulset: Some(&s), pvc: Some(&bound), ..Default::default() }),
            ServerPhase::Provisioning
        );
        assert_eq!(
            p(Observed { statefulset: Some(&s), pvc: Some(&bound), pod: Some(&not_ready), ..Default::default() }),
            ServerPhase::Starting
        );
        assert_eq!(
            p(Observed { statefulset: Some(&s), pvc: Some(&bound), pod: Some(&ready), ..Default::default() }),
            ServerPhase::Running
        );
        let crashed =
            phase(r, &Observed { statefulset: Some(&s), pvc: Some(&bound), pod: Some(&crash), ..Default::default() });
        assert_eq!((crashed.phase, crashed.reason.as_str()), (ServerPhase::Failed, "CrashLoopBackOff"));
        let u = phase(r, &Observed { statefulset: Some(&s), pod: Some(&unsched), ..Default::default() });
        assert_eq!((u.phase, u.message.as_str()), (ServerPhase::Provisioning, "0/3 nodes"));
        let loading: Result<slp::Status, String> = Ok(slp::Status {
            version: "1.21".into(),
            protocol: 1,
            online: 0,
            max: 0,
            names: vec![],
            motd: String::new(),
        });
        assert_eq!(
            p(Observed { statefulset: Some(&s), pod: Some(&ready), ping: Some(&loading), ..Default::default() }),
            ServerPhase::Starting
        );
        // Stopped.
        assert_eq!(
            phase(ServerState::Stopped, &Observed { statefulset: Some(&s), pod: Some(&ready), ..Default::default() })
                .phase,
            ServerPhase::Stopping
        );
        assert_eq!(
            phase(ServerState::Stopped, &Observed { statefulset: Some(&s), ..Default::default() }).phase,
            ServerPhase::Stopped
        );
        assert!(is_ready(ServerState::Stopped, ServerPhase::Stopped));
        assert!(!is_ready(ServerState::Running, ServerPhase::Starting));
    }

    #[test]
    fn history_is_bounded_newest_first_and_idempotent() {
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut h = Vec::new();
        for i in 0..15 {
            h = record_revision(&h, &format!("r{i}"), i, t);
        }
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].revision, "r14");
        assert_eq!(h[9].revision, "r5");
        assert_eq!(record_revision(&h, "r14", 99, t), h, "same revision: unchanged");
        let back = record_revision(&h, "r10", 20, t);
        assert_eq!(back[0].revision, "r10");
        assert_eq!(back.iter().filter(|r| r.revision == "r10").count(), 1, "a rollback moves the entry to the front");
    }
}
