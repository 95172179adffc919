//! The Job that runs `craftplane backup` (or `craftplane restore`) next to a
//! server's world volume.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements, SecretEnvSource,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::statefulset::{pod_security, restricted};
use super::tenant::BACKUP_POD_NAME;
use super::{SERVER_LABEL, pvc_name, secret, secret_name, short_hash};

/// Label naming the snapshot a Job belongs to.
pub const SNAPSHOT_LABEL: &str = "craftplane.io/snapshot";
/// Attempts of a backup pod before the Job fails (bounded retries).
pub const BACKOFF_LIMIT: i32 = 2;
/// A backup may run this long before it is stopped.
pub const DEADLINE_SECONDS: i64 = 6 * 3600;
/// A finished backup or restore Job is deleted by the operator once its
/// result is in the status; the TTL controller removes it after this long
/// if the operator never got to it.
pub const JOB_TTL_SECONDS: i32 = 24 * 3600;

/// What the Job does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// `craftplane backup` with these extra flags (compression, include, …),
    /// and the RCON address of the running server's pod (`save-off` and
    /// `save-all flush` first) or none (a stopped server).
    Backup { flags: Vec<String>, rcon: Option<String> },
    /// `craftplane restore`.
    Restore,
}

/// Everything the Job needs, resolved by the reconciler.
#[derive(Clone, Debug, PartialEq)]
pub struct JobInput {
    pub name: String,
    pub namespace: String,
    pub server: String,
    /// The snapshot (backup) or server (restore) the Job belongs to.
    pub owner: OwnerReference,
    pub snapshot: String,
    pub location: String,
    pub image: String,
    /// Store settings (environment variable names → values).
    pub settings: BTreeMap<String, String>,
    /// Secret in the Job's namespace with secret settings.
    pub credentials: Option<String>,
    /// Node of the server's pod: the world volume is ReadWriteOnce.
    pub node: Option<String>,
    /// The server's SKU placement (node selector, tolerations).
    pub placement: Option<crate::api::sku::Placement>,
    pub task: Task,
}

/// A DNS-1123 name of at most 63 characters: `base-suffix`, shortened with
/// a hash when too long.
pub fn child_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = &short_hash(base.as_bytes())[..8];
    let keep = 63 - suffix.len() - hash.len() - 2;
    format!("{}-{hash}-{suffix}", base[..keep].trim_end_matches('-'))
}

/// The desired Job.
pub fn build(i: &JobInput) -> Job {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), BACKUP_POD_NAME.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "craftplane".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            match i.task {
                Task::Backup { .. } => "backup".to_string(),
                Task::Restore => "restore".to_string(),
            },
        ),
        (SERVER_LABEL.to_string(), i.server.clone()),
        (SNAPSHOT_LABEL.to_string(), i.snapshot.clone()),
    ]);
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        read_only: Some(matches!(i.task, Task::Backup { .. })),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: pvc_name(&i.server),
            read_only: Some(matches!(i.task, Task::Backup { .. })),
        }),
        ..Default::default()
    }];
    let args = match &i.task {
        Task::Backup { flags, rcon } => {
            let mut a =
                vec!["backup".to_string(), "--to".into(), i.location.clone(), "--data-dir".into(), "/data".into()];
            a.extend(flags.iter().cloned());
            if let Some(addr) = rcon {
                a.extend([
                    "--rcon-address".into(),
                    addr.clone(),
                    "--rcon-password-file".into(),
                    format!("{}/{}", secret::MOUNT_PATH, secret::PASSWORD_KEY),
                ]);
                mounts.push(VolumeMount {
                    name: "rcon".into(),
                    mount_path: secret::MOUNT_PATH.into(),
                    read_only: Some(true),
                    ..Default::default()
                });
                volumes.push(Volume {
                    name: "rcon".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name(&i.server)),
                        default_mode: Some(0o400),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            a
        }
        Task::Restore => {
            vec!["restore".into(), "--from".into(), i.location.clone(), "--data-dir".into(), "/data".into()]
        }
    };
    let env: Vec<EnvVar> =
        i.settings.iter().map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), value_from: None }).collect();
    let resources = ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("250m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("2".into())),
            ("memory".to_string(), Quantity("512Mi".into())),
        ])),
        ..Default::default()
    };
    let container = Container {
        name: "backup".into(),
        image: Some(i.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        env_from: i.credentials.as_ref().map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: s.clone(), optional: Some(false) }),
                ..Default::default()
            }]
        }),
        resources: Some(resources),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let affinity = i.node.as_ref().map(|node| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![node.clone()]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    Job {
        metadata: ObjectMeta {
            name: Some(i.name.clone()),
            namespace: Some(i.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![i.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            // Backups: the operator deletes the Job once its result is recorded;
            // the TTL is the safety net for when it cannot.
            ttl_seconds_after_finished: Some(JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    affinity,
                    security_context: Some(pod_security()),
                    volumes: Some(volumes),
                    node_selector: i.placement.as_ref().map(|p| p.node_selector.clone()).filter(|s| !s.is_empty()),
                    tolerations: i.placement.as_ref().map(|p| p.tolerations.clone()).filter(|t| !t.is_empty()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_in_63_characters() {
        assert_eq!(child_name("nightly", "backup"), "nightly-backup");
        let long = "a".repeat(70);
        let n = child_name(&long, "backup");
        assert!(n.len() <= 63 && n.ends_with("-backup"), "{n}");
        assert_ne!(child_name(&format!("{long}x"), "backup"), n);
    }

    #[test]
    fn backup_jobs_mount_the_world_read_only_next_to_the_server() {
        let i = JobInput {
            name: "nightly-backup".into(),
            namespace: "games".into(),
            server: "survival".into(),
            owner: OwnerReference::default(),
            snapshot: "nightly".into(),
            location: "s3://b/games/survival/nightly-0a1b2c3d".into(),
            image: "craftplane:test".into(),
            settings: BTreeMap::from([("AWS_REGION".into(), "eu-west-1".into())]),
            credentials: Some("nightly-store".into()),
            node: Some("node-2".into()),
            placement: None,
            task: Task::Backup {
                flags: vec!["--compression".into(), "zstd".into()],
                rcon: Some("10.244.0.7:25575".into()),
            },
        };
        let job = serde_json::to_value(build(&i)).unwrap();
        let pod = &job["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["args"][0], "backup");
        assert!(c["args"].as_array().unwrap().iter().any(|a| a == "10.244.0.7:25575"));
        assert_eq!(c["volumeMounts"][0]["readOnly"], true);
        assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "survival-data");
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
                [0]["values"][0],
            "node-2"
        );
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "nightly-store");
        assert_eq!(job["spec"]["backoffLimit"], 2);
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(job["metadata"]["labels"]["app.kubernetes.io/name"], "craftplane-backup");
    }
}
