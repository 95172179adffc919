//! The BackupSnapshot a backup schedule creates for one slot.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use super::SERVER_LABEL;
use crate::api::backup::{BackupReason, BackupSnapshot, BackupSnapshotSpec};
use crate::api::server::BackupPolicy;

/// Label on scheduled snapshots.
pub const SCHEDULED_LABEL: &str = "craftplane.io/scheduled";
/// Prefix of the labels craftplane owns; only these are copied from a server
/// to its scheduled snapshots.
pub const OWN_LABEL_PREFIX: &str = "craftplane.io/";

/// The labels of a scheduled snapshot: the server's `craftplane.io/` labels
/// (e.g. its tenant) and the schedule's own. Nothing else is copied: a GitOps
/// tool's tracking labels (Argo CD's `app.kubernetes.io/instance`, Flux's
/// `kustomize.toolkit.fluxcd.io/*`) on a snapshot it did not create would
/// make it prune the snapshot, and the finalizer would delete its archive.
pub fn scheduled_labels(server: &str, server_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = server_labels
        .iter()
        .filter(|(k, _)| k.starts_with(OWN_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(SCHEDULED_LABEL.into(), "true".into());
    labels.insert(SERVER_LABEL.into(), server.into());
    labels
}

/// Snapshot name for a slot: `<server>-<yyyymmddhhmm>`, with seconds
/// appended for schedules that use them (DNS-safe, sortable).
pub fn snapshot_name(server: &str, slot: Timestamp) -> String {
    let z = slot.to_zoned(TimeZone::UTC);
    let mut stamp = format!("{:04}{:02}{:02}{:02}{:02}", z.year(), z.month(), z.day(), z.hour(), z.minute());
    if z.second() != 0 {
        stamp.push_str(&format!("{:02}", z.second()));
    }
    super::backup_job::child_name(server, &stamp)
}

/// The snapshot for `slot` of `server`'s schedule.
pub fn scheduled(
    server: &str,
    namespace: &str,
    server_labels: &BTreeMap<String, String>,
    policy: &BackupPolicy,
    slot: Timestamp,
) -> BackupSnapshot {
    for_task(&snapshot_name(server, slot), server, namespace, server_labels, policy.store.clone())
}

/// Name of the snapshot a scheduled task takes at `slot`:
/// `<server>-<task>-<yyyymmddhhmm>` (shortened like every child name).
pub fn task_snapshot_name(server: &str, task: &str, slot: Timestamp) -> String {
    let stamp = snapshot_name("x", slot);
    let stamp = stamp.trim_start_matches("x-");
    crate::resources::backup_job::child_name(server, &format!("{task}-{stamp}"))
}

/// A scheduled snapshot named `name`: the backup schedule's, or a scheduled
/// task's `backup` action (reason Scheduled: `spec.backup.retention` prunes
/// both alike).
pub fn for_task(
    name: &str,
    server: &str,
    namespace: &str,
    server_labels: &BTreeMap<String, String>,
    store: Option<crate::api::StoreRef>,
) -> BackupSnapshot {
    BackupSnapshot {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(scheduled_labels(server, server_labels)),
            ..Default::default()
        },
        spec: BackupSnapshotSpec {
            server: server.into(),
            store,
            compression: Default::default(),
            include: vec![],
            exclude: vec![],
            retain: false,
            reason: BackupReason::Scheduled,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_snapshots_copy_only_craftplanes_labels() {
        let server_labels = BTreeMap::from([
            ("app.kubernetes.io/instance".to_string(), "argo-app".to_string()),
            ("kustomize.toolkit.fluxcd.io/name".into(), "apps".into()),
            ("kustomize.toolkit.fluxcd.io/namespace".into(), "flux-system".into()),
            ("team".into(), "blue".into()),
            ("craftplane.io/tenant".into(), "acme".into()),
        ]);
        let policy = BackupPolicy { schedule: "@daily".into(), retention: None, store: None };
        let slot: Timestamp = "2026-11-23T04:00:00Z".parse().unwrap();
        let snap = scheduled("survival", "tenant-acme", &server_labels, &policy, slot);
        let labels = snap.metadata.labels.unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([
                ("craftplane.io/scheduled".to_string(), "true".to_string()),
                ("craftplane.io/server".into(), "survival".into()),
                ("craftplane.io/tenant".into(), "acme".into()),
            ])
        );
        assert_eq!(snap.metadata.name.as_deref(), Some("survival-202611230400"));
        assert_eq!(snap.spec.reason, BackupReason::Scheduled);
        assert_eq!(snap.spec.server, "survival");
    }

    #[test]
    fn snapshot_names_are_sortable_stamps() {
        let ts = |s: &str| -> Timestamp { s.parse().unwrap() };
        assert_eq!(snapshot_name("survival", ts("2026-11-23T04:00:00Z")), "survival-202611230400");
        assert_eq!(snapshot_name("survival", ts("2026-11-23T04:00:05Z")), "survival-20261123040005");
    }
}
