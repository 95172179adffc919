//! The StatefulSet running the itzg/minecraft-server image.
//!
//! The environment follows the image's documented contract: EULA, TYPE,
//! VERSION, MEMORY (heap), JVM_OPTS, RCON (ENABLE_RCON, RCON_PORT,
//! RCON_PASSWORD_FILE), MOTD, MAX_PLAYERS, WHITELIST/OPS with
//! EXISTING_*_FILE=SYNCHRONIZE, CUSTOM_SERVER_PROPERTIES for everything else,
//! and STOP_DURATION inside the pod's termination grace period.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapKeySelector, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, KeyToPath, Lifecycle, LifecycleHandler, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{CONFIG_HASH, GAME_PORT, RCON_PORT, ServerModel, config_map, properties, secret, short_hash};
use crate::api::server::ServerState;

/// Non-root user and group of the server process.
pub const RUN_AS: i64 = 1000;
/// Seconds of margin between the image's STOP_DURATION and the kill (at most).
const STOP_MARGIN: i32 = 15;
/// Seconds players are warned before the stop, when a warning is set (at most).
const ANNOUNCE_SECONDS: i32 = 10;

/// Hash of everything that needs a restart to take effect (not the live
/// settings: whitelist, ops, difficulty and game rules are applied over RCON,
/// and the image reads them from the ConfigMap at its next start). Goes on the pod template and into
/// `status.configRevision`.
pub fn config_hash(m: &ServerModel) -> String {
    let env: Vec<(String, String)> = static_env(m).into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect();
    let material = serde_json::json!({
        "properties": properties::render(&m.properties),
        "env": env,
        "image": m.image,
        // The whitelist variables' presence (named so since before they
        // stopped following the list: the hash of an unchanged server stays).
        "whitelistEnabled": m.whitelist_env,
        "plugins": m.plugins,
        "helperImage": m.helper_image,
    });
    short_hash(material.to_string().as_bytes())
}

/// (STOP_DURATION, announce delay) that fit the grace period.
/// Their sum always stays below the grace period, so the image finishes its
/// `stop` before the kubelet kills it.
pub fn stop_budget(m: &ServerModel) -> (i32, i32) {
    let total = m.stop_seconds.max(4);
    let margin = (total / 5).clamp(2, STOP_MARGIN);
    let announce = if m.stop_warning.is_some() { ANNOUNCE_SECONDS.min((total - margin) / 3) } else { 0 };
    ((total - margin - announce).max(1), announce)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

fn env_from_config(name: &str, cm: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector { name: cm.into(), key: key.into(), optional: Some(false) }),
            ..Default::default()
        }),
    }
}

/// Environment with literal values.
fn static_env(m: &ServerModel) -> Vec<EnvVar> {
    let (stop_duration, announce) = stop_budget(m);
    let mut e = vec![
        env("EULA", "TRUE"),
        env("TYPE", m.server_type.as_str()),
        env("VERSION", m.version.clone()),
        env("MEMORY", format!("{}M", m.heap_mb)),
        env("SERVER_PORT", GAME_PORT.to_string()),
        env("ENABLE_RCON", "true"),
        env("RCON_PORT", RCON_PORT.to_string()),
        env("RCON_PASSWORD_FILE", format!("{}/{}", secret::MOUNT_PATH, secret::PASSWORD_KEY)),
        env("MAX_PLAYERS", m.max_players.to_string()),
        env("STOP_DURATION", stop_duration.to_string()),
        env("EXISTING_WHITELIST_FILE", "SYNCHRONIZE"),
        env("EXISTING_OPS_FILE", "SYNCHRONIZE"),
    ];
    if let Some(motd) = &m.motd {
        e.push(env("MOTD", motd.clone()));
    }
    if !m.jvm_args.is_empty() {
        e.push(env("JVM_OPTS", m.jvm_args.join(" ")));
    }
    if announce > 0 {
        e.push(env("STOP_SERVER_ANNOUNCE_DELAY", announce.to_string()));
    }
    if m.whitelist_env {
        e.push(env("ENABLE_WHITELIST", "true"));
        e.push(env("ENFORCE_WHITELIST", "true"));
    }
    e
}

/// The startup probe: every 10 s, 180 failures allowed after a first 10 s
/// (modpacks can take many minutes on a first start: up to 30 min).
const STARTUP: (i32, i32, i32) = (10, 180, 10);

/// How long a server's start may take before the kubelet gives up on it:
/// the startup probe's allowance, plus two minutes for scheduling, the
/// volume and the init-container's plugin downloads.
pub fn start_allowance() -> std::time::Duration {
    let (period, failures, initial) = STARTUP;
    std::time::Duration::from_secs((initial + period * failures) as u64 + 120)
}

fn probe(period: i32, failures: i32, initial: i32) -> Probe {
    Probe {
        exec: Some(ExecAction { command: Some(vec!["mc-health".into()]) }),
        initial_delay_seconds: (initial > 0).then_some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Desired StatefulSet.
pub fn build(m: &ServerModel) -> StatefulSet {
    let cm = m.config_map_name();
    let mut env = static_env(m);
    env.push(env_from_config("CUSTOM_SERVER_PROPERTIES", &cm, config_map::PROPERTIES_KEY));
    if m.whitelist_env {
        env.push(env_from_config("WHITELIST", &cm, config_map::WHITELIST_KEY));
    }
    if m.ops_env {
        env.push(env_from_config("OPS", &cm, config_map::OPS_KEY));
    }
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(m.cpu.clone())),
        ("memory".to_string(), Quantity(m.memory.clone())),
    ]);
    let lifecycle = m.stop_warning.as_ref().map(|warning| Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction { command: Some(vec!["rcon-cli".into(), "say".into(), warning.clone()]) }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let container = Container {
        name: crate::api::contract::SERVER_CONTAINER.into(),
        image: Some(m.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("minecraft".into()),
                container_port: GAME_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("rcon".into()),
                container_port: RCON_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        startup_probe: Some(probe(STARTUP.0, STARTUP.1, STARTUP.2)),
        readiness_probe: Some(probe(10, 3, 0)),
        liveness_probe: Some(probe(30, 5, 0)),
        lifecycle,
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() },
            VolumeMount {
                name: "rcon".into(),
                mount_path: secret::MOUNT_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let (init, plugin_volumes) = fetch_plugins(m);
    let mut volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: m.pvc_name(),
                read_only: Some(false),
            }),
            ..Default::default()
        },
        Volume {
            name: "rcon".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(m.secret_name()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    volumes.extend(plugin_volumes);
    let mut pod_labels = m.labels("server");
    pod_labels.extend(m.selector_labels());
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(m.statefulset_name()),
            namespace: Some(m.namespace.clone()),
            labels: Some(m.labels("server")),
            owner_references: Some(vec![m.owner_ref()]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(if m.state == ServerState::Running { 1 } else { 0 }),
            service_name: Some(m.game_service_name()),
            selector: LabelSelector { match_labels: Some(m.selector_labels()), ..Default::default() },
            pod_management_policy: Some("Parallel".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some({
                        let mut a = BTreeMap::from([(CONFIG_HASH.to_string(), config_hash(m))]);
                        if let Some(t) = &m.restarted_at {
                            a.insert(crate::api::contract::RESTARTED_AT.to_string(), t.clone());
                        }
                        a
                    }),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(i64::from(m.stop_seconds)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    init_containers: Some(vec![init]),
                    volumes: Some(volumes),
                    node_selector: m.placement.as_ref().map(|p| p.node_selector.clone()).filter(|s| !s.is_empty()),
                    tolerations: m.placement.as_ref().map(|p| p.tolerations.clone()).filter(|t| !t.is_empty()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod security context of server and Job pods: non-root, the world
/// volume's group, RuntimeDefault seccomp.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Container security context for craftplane's own containers (Pod
/// Security "restricted", read-only root filesystem).
pub fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The init-container that installs the manifest's plugins, and the
/// volumes it reads (the manifest, each plugin's configFiles).
fn fetch_plugins(m: &ServerModel) -> (Container, Vec<Volume>) {
    let mut volumes = vec![Volume {
        name: "plugin-manifest".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: m.config_map_name(),
            items: Some(vec![KeyToPath {
                key: crate::api::contract::MANIFEST_KEY.into(),
                path: crate::api::contract::MANIFEST_KEY.into(),
                mode: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![
        VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() },
        VolumeMount {
            name: "plugin-manifest".into(),
            mount_path: crate::api::contract::MANIFEST_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    for (i, entry) in m.plugins.plugins.iter().enumerate() {
        let Some(cfg) = &entry.config else { continue };
        let name = format!("plugin-config-{i}");
        volumes.push(Volume {
            name: name.clone(),
            config_map: Some(ConfigMapVolumeSource { name: cfg.config_map.clone(), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: format!("{}/{}", crate::api::contract::CONFIG_ROOT, entry.name),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let small = BTreeMap::from([
        ("cpu".to_string(), Quantity("100m".into())),
        ("memory".to_string(), Quantity("128Mi".into())),
    ]);
    let container = Container {
        name: "fetch-plugins".into(),
        image: Some(m.helper_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "fetch-plugins".into(),
            "--manifest".into(),
            format!("{}/{}", crate::api::contract::MANIFEST_DIR, crate::api::contract::MANIFEST_KEY),
            "--data-dir".into(),
            "/data".into(),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(small.clone()),
            limits: Some(small),
            ..Default::default()
        }),
        security_context: Some(restricted()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    (container, volumes)
}
