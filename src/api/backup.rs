//! `BackupSnapshot`: one world backup in object storage (namespaced).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{StoreRef, conditions_schema};

/// A world backup: a Job streams the server's world as a compressed tar with
/// a sha256 manifest to object storage. Deleting the object deletes the
/// archive unless `retain` is set.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "craftplane.io",
    version = "v1alpha1",
    kind = "BackupSnapshot",
    plural = "backupsnapshots",
    shortname = "backup",
    category = "craftplane",
    label("app.kubernetes.io/part-of", "craftplane"),
    namespaced,
    status = "BackupSnapshotStatus",
    derive = "PartialEq",
    doc = "A backup of a MinecraftServer's world in object storage.",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(name = "Retain", type_ = "boolean", json_path = ".spec.retain"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.store) == has(oldSelf.store)").message("store is immutable").field_path(".store"))]
pub struct BackupSnapshotSpec {
    /// Name of the MinecraftServer to back up, in this namespace. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("server is immutable"))]
    pub server: String,
    /// Store to write to; default: the tenant's backupStore, then the
    /// operator's default store. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("store is immutable"))]
    pub store: Option<StoreRef>,
    /// Archive compression: zstd (default), gzip or none. Immutable.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("compression is immutable"))]
    pub compression: Compression,
    /// Paths under the world volume to include (default: everything).
    /// Relative, no `..`. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, !p.startsWith('/') && !p.split('/').exists(s, s == '..'))").message("paths must be relative and must not contain '..'"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("include is immutable"))]
    pub include: Vec<String>,
    /// Paths to leave out (e.g. `logs`, `cache`). Relative, no `..`. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, !p.startsWith('/') && !p.split('/').exists(s, s == '..'))").message("paths must be relative and must not contain '..'"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("exclude is immutable"))]
    pub exclude: Vec<String>,
    /// Pinned: survives retention. Keeps the archive when deleted only
    /// outside tenant namespaces, or where the Tenant sets
    /// `keepRetainedArchives`.
    #[serde(default)]
    pub retain: bool,
    /// Why the snapshot was taken. Immutable.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("reason is immutable"))]
    pub reason: BackupReason,
}

/// Archive compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (fast, good ratio).
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// Plain tar.
    None,
}

/// Why a snapshot exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupReason {
    /// Asked for by a person.
    #[default]
    Manual,
    /// Created by spec.backup.schedule.
    Scheduled,
    /// Taken before a version upgrade.
    PreUpgrade,
    /// Taken before the server was deleted.
    PreDelete,
}

/// Lifecycle phase of a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Waiting to start.
    #[default]
    Pending,
    /// The backup Job is running.
    Running,
    /// Archive and manifest are stored and verified.
    Completed,
    /// The backup failed; see conditions.
    Failed,
}

/// Observed state of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSnapshotStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// When the backup Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the archive was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Size of the stored archive in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Number of files in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// URL of the archive in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Name of the store holding it (its credentials are that store's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// SHA-256 of the manifest, for verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Name of the backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state (Ready, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
