//! Pure builders: a validated server model → the Kubernetes objects it needs.
//!
//! Nothing here does I/O. [`validate`] turns a `MinecraftServer` and its `Sku`
//! into a [`ServerModel`] or a typed [`InvalidSpec`]; one file per object kind
//! turns the model into desired objects.

pub mod backup_job;
pub mod config_map;
pub mod console;
pub mod hostname;
pub mod image;
pub mod live;
pub mod properties;
pub mod pvc;
pub mod secret;
pub mod service;
pub mod snapshot;
pub mod statefulset;
pub mod tenant;
pub mod text;
pub mod version;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::api::server::{DeletionPolicy, MinecraftServer, ServerState, ServerType, ServiceSpec};
use crate::api::sku::Sku;
use crate::api::tenant::Tenant;
use crate::api::{GROUP, VERSION, contract};

/// Field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "craftplane";
/// Annotation on each child: hash of the desired object last applied.
pub const APPLIED_HASH: &str = "craftplane.io/applied-hash";
/// Pod template annotation: hash of the rendered configuration.
pub const CONFIG_HASH: &str = "craftplane.io/config-hash";
/// Label naming the server a child belongs to.
pub const SERVER_LABEL: &str = "craftplane.io/server";
/// Game port inside the container.
pub const GAME_PORT: i32 = 25565;
/// RCON port inside the container.
pub const RCON_PORT: i32 = 25575;
/// Default heap share of the container memory.
pub const DEFAULT_HEAP_PERCENT: i32 = 75;
/// Default graceful stop budget.
pub const DEFAULT_STOP_SECONDS: i32 = 120;

/// Why a spec cannot be turned into a workload. Each variant is a condition
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error("SKU {0:?} does not exist")]
    SkuNotFound(String),
    #[error("SKU {0:?} is not available for new servers")]
    SkuUnavailable(String),
    #[error("SKU {sku:?} is not allowed for tenant {tenant:?}; allowed: {allowed}")]
    SkuNotAllowed { sku: String, tenant: String, allowed: String },
    #[error("SKU {sku:?} does not allow server type {server_type}; allowed: {allowed}")]
    ServerTypeNotAllowed { sku: String, server_type: String, allowed: String },
    #[error("maxPlayers {requested} exceeds the SKU's limit of {limit}")]
    MaxPlayersExceedsSku { requested: i32, limit: i32 },
    #[error("storage.size {requested} exceeds the SKU's storage {limit}")]
    StorageExceedsSku { requested: String, limit: String },
    #[error("storageClassName {class:?} is not allowed on SKU {sku:?}; allowed: {allowed}")]
    StorageClassNotAllowed { class: String, sku: String, allowed: String },
    #[error("image {image:?} is not allowed here; allowed: {allowed}")]
    ImageNotAllowed { image: String, allowed: String },
    #[error("SKU {sku:?} is invalid: {reason}")]
    InvalidSku { sku: String, reason: String },
    #[error("{0}")]
    InvalidField(String),
}

impl InvalidSpec {
    /// The condition reason (CamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidSpec::SkuNotFound(_) => "SkuNotFound",
            InvalidSpec::SkuUnavailable(_) => "SkuUnavailable",
            InvalidSpec::SkuNotAllowed { .. } => "SkuNotAllowed",
            InvalidSpec::ServerTypeNotAllowed { .. } => "ServerTypeNotAllowed",
            InvalidSpec::MaxPlayersExceedsSku { .. } => "MaxPlayersExceedsSku",
            InvalidSpec::StorageExceedsSku { .. } => "StorageExceedsSku",
            InvalidSpec::InvalidSku { .. } => "InvalidSku",
            InvalidSpec::ImageNotAllowed { .. } => "ImageNotAllowed",
            InvalidSpec::StorageClassNotAllowed { .. } => "StorageClassNotAllowed",
            InvalidSpec::InvalidField(_) => "InvalidSpec",
        }
    }
}

/// Everything the builders need, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerModel {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: i64,
    pub sku: String,
    pub server_type: ServerType,
    pub version: String,
    pub state: ServerState,
    pub image: String,
    pub cpu: String,
    pub memory: String,
    pub heap_mb: u64,
    pub storage_size: String,
    pub storage_class: Option<String>,
    /// Node selection from the SKU (pods and the server's Jobs).
    pub placement: Option<crate::api::sku::Placement>,
    pub max_players: i32,
    pub motd: Option<String>,
    /// server.properties from SKU defaults ⊕ spec overrides.
    pub properties: BTreeMap<String, String>,
    pub whitelist: Vec<String>,
    pub ops: Vec<String>,
    pub difficulty: Option<crate::api::server::Difficulty>,
    pub game_rules: BTreeMap<String, String>,
    /// Whether the container gets the `WHITELIST` / `OPS` variables. Set
    /// from the spec for a new StatefulSet and kept as the existing one has
    /// them ([`ServerModel::keep_list_env`]): the lists change live, never
    /// through the pod template.
    pub whitelist_env: bool,
    pub ops_env: bool,
    pub jvm_args: Vec<String>,
    /// The game Service; its annotations only the keys the SKU allows.
    pub service: ServiceSpec,
    /// `spec.service.annotations` keys the SKU does not allow (not applied).
    pub refused_annotations: Vec<String>,
    pub stop_seconds: i32,
    pub stop_warning: Option<String>,
    pub deletion_policy: DeletionPolicy,
    pub hostname: Option<String>,
    /// Plugins the init-container installs (the manifest: [`crate::api::contract::Manifest`]).
    pub plugins: contract::Manifest,
    /// Image of the init-container (`craftplane fetch-plugins`): the
    /// operator's own.
    pub helper_image: String,
    /// The server's `craftplane.io/restartedAt` annotation (`kubectl
    /// craftplane restart`), copied into the pod template: a new value rolls
    /// the pod.
    pub restarted_at: Option<String>,
}

/// Checks a server against its SKU and its tenant (when its namespace
/// belongs to one). `current_sku` is the SKU the server's existing workload
/// was built from (none: no workload yet): a SKU that became unavailable or
/// disallowed keeps a server already on it running, but a server is never
/// moved to such a SKU.
pub fn validate(
    server: &MinecraftServer,
    sku: Option<&Sku>,
    tenant: Option<&Tenant>,
    current_sku: Option<&str>,
) -> Result<ServerModel, InvalidSpec> {
    let spec = &server.spec;
    let staying = current_sku == Some(spec.sku.as_str());
    if let Some(t) = tenant
        && !staying
        && !t.allows_sku(&spec.sku)
    {
        return Err(InvalidSpec::SkuNotAllowed {
            sku: spec.sku.clone(),
            tenant: kube::ResourceExt::name_any(t),
            allowed: t.spec.allowed_skus.join(", "),
        });
    }
    let sku = sku.ok_or_else(|| InvalidSpec::SkuNotFound(spec.sku.clone()))?;
    let sku_name = sku.metadata.name.clone().unwrap_or_default();
    if !sku.spec.available && !staying {
        return Err(InvalidSpec::SkuUnavailable(sku_name));
    }
    if let Some(image) = spec.image.as_deref() {
        let tenant_list = tenant.map(|t| t.spec.allowed_images.as_slice()).unwrap_or_default();
        if !image::allowed(image, &sku.spec.allowed_images) && !image::allowed(image, tenant_list) {
            let all: Vec<&str> = sku.spec.allowed_images.iter().chain(tenant_list).map(String::as_str).collect();
            return Err(InvalidSpec::ImageNotAllowed {
                image: image.into(),
                allowed: if all.is_empty() {
                    "only the image craftplane chooses (leave spec.image unset)".into()
                } else {
                    all.join(", ")
                },
            });
        }
    }
    if !sku.spec.allowed_server_types.is_empty() && !sku.spec.allowed_server_types.contains(&spec.server_type) {
        return Err(InvalidSpec::ServerTypeNotAllowed {
            sku: sku_name,
            server_type: spec.server_type.as_str().into(),
            allowed: sku.spec.allowed_server_types.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "),
        });
    }
    let sku_max = sku.spec.max_players;
    let max_players = match (spec.max_players, sku_max) {
        (Some(req), Some(limit)) if req > limit => {
            return Err(InvalidSpec::MaxPlayersExceedsSku { requested: req, limit });
        }
        (Some(req), _) => req,
        (None, Some(limit)) => limit,
        (None, None) => 20,
    };
    let res = &sku.spec.resources;
    let invalid_sku = |reason: String| InvalidSpec::InvalidSku { sku: sku_name.clone(), reason };
    let memory_bytes = res
        .memory
        .to_f64()
        .ok_or_else(|| invalid_sku(format!("memory {:?} is not a quantity", res.memory.as_str())))?;
    res.cpu
        .to_f64()
        .filter(|c| *c > 0.0)
        .ok_or_else(|| invalid_sku(format!("cpu {:?} is not a positive quantity", res.cpu.as_str())))?;
    let sku_storage = res
        .storage
        .to_f64()
        .ok_or_else(|| invalid_sku(format!("storage {:?} is not a quantity", res.storage.as_str())))?;
    let storage_size = match spec.storage.as_ref().and_then(|s| s.size.as_ref()) {
        Some(size) => {
            let bytes = size.to_f64().ok_or_else(|| {
                InvalidSpec::InvalidField(format!("storage.size {:?} is not a quantity", size.as_str()))
            })?;
            if bytes > sku_storage {
                return Err(InvalidSpec::StorageExceedsSku {
                    requested: size.to_string(),
                    limit: res.storage.to_string(),
                });
            }
            size.to_string()
        }
        None => res.storage.to_string(),
    };
    let mib = 1024.0 * 1024.0;
    let heap_bytes = match sku.spec.jvm.as_ref() {
        Some(j) if j.heap.is_some() => {
            let h = j.heap.as_ref().unwrap();
            h.to_f64().ok_or_else(|| invalid_sku(format!("jvm.heap {:?} is not a quantity", h.as_str())))?
        }
        Some(j) => memory_bytes * f64::from(j.heap_percent.unwrap_or(DEFAULT_HEAP_PERCENT)) / 100.0,
        None => memory_bytes * f64::from(DEFAULT_HEAP_PERCENT) / 100.0,
    };
    let heap_mb = (heap_bytes / mib).floor() as u64;
    if heap_mb < 256 {
        return Err(invalid_sku(format!("JVM heap of {heap_mb} MiB is below the 256 MiB a server needs")));
    }
    if heap_bytes > memory_bytes * 0.9 {
        return Err(invalid_sku(format!(
            "JVM heap ({heap_mb} MiB) leaves less than 10% of memory ({}) for the JVM itself; the container would be OOM-killed",
            res.memory
        )));
    }
    let mut properties = sku.spec.default_properties.clone();
    for (k, v) in &spec.properties {
        properties.insert(k.clone(), v.clone());
    }
    // SKU defaults may not smuggle in keys craftplane manages either.
    for key in crate::api::server::RESERVED_PROPERTIES {
        properties.remove(*key);
    }
    properties::check_values(&properties).map_err(InvalidSpec::InvalidField)?;
    if let Some(bad) = spec.game_rules.keys().find(|k| !crate::api::server::valid_game_rule(k)) {
        return Err(InvalidSpec::InvalidField(format!(
            "gameRules name {bad:?} is not a game rule name: letters, digits and '_', at most 64, starting with a letter (optionally prefixed by 'minecraft:')"
        )));
    }
    // Admission refuses these (CEL on spec.motd); an object stored before
    // that rule existed still must not reach server.properties.
    if let Some(motd) = &spec.motd
        && motd.chars().any(char::is_control)
    {
        return Err(InvalidSpec::InvalidField(
            "motd contains a line break or another control character; write \\n (a backslash and n) for a second line"
                .into(),
        ));
    }
    let requested_class = spec.storage.as_ref().and_then(|s| s.storage_class_name.clone());
    if let Some(class) = &requested_class
        && sku.spec.storage_class_name.as_ref() != Some(class)
        && !sku.spec.allowed_storage_classes.contains(class)
    {
        let allowed: Vec<&str> =
            sku.spec.storage_class_name.iter().chain(&sku.spec.allowed_storage_classes).map(String::as_str).collect();
        return Err(InvalidSpec::StorageClassNotAllowed {
            class: class.clone(),
            sku: sku_name,
            allowed: if allowed.is_empty() {
                "only the SKU's (leave storage.storageClassName unset)".into()
            } else {
                allowed.join(", ")
            },
        });
    }
    let storage_class = requested_class.or_else(|| sku.spec.storage_class_name.clone());
    let mut service = spec.service.clone().unwrap_or_else(default_service);
    let refused_annotations =
        service::keep_allowed_annotations(&mut service.annotations, &sku.spec.allowed_service_annotations);
    let stop = spec.graceful_stop.as_ref();
    Ok(ServerModel {
        name: server.metadata.name.clone().unwrap_or_default(),
        namespace: server.metadata.namespace.clone().unwrap_or_default(),
        uid: server.metadata.uid.clone().unwrap_or_default(),
        generation: server.metadata.generation.unwrap_or(0),
        sku: sku_name,
        server_type: spec.server_type,
        version: spec.version.clone(),
        state: spec.state,
        image: spec.image.clone().unwrap_or_else(|| image::default_image(&spec.version)),
        cpu: res.cpu.to_string(),
        memory: res.memory.to_string(),
        heap_mb,
        storage_size,
        storage_class,
        placement: sku.spec.placement.clone(),
        max_players,
        motd: spec.motd.clone(),
        properties,
        whitelist: spec.whitelist.clone(),
        ops: spec.ops.clone(),
        difficulty: spec.difficulty,
        game_rules: spec.game_rules.clone(),
        whitelist_env: !spec.whitelist.is_empty(),
        ops_env: !spec.ops.is_empty(),
        jvm_args: spec.jvm_args.clone(),
        service,
        refused_annotations,
        stop_seconds: stop.map(|s| s.timeout_seconds).unwrap_or(DEFAULT_STOP_SECONDS),
        stop_warning: stop.and_then(|s| s.warning.clone()),
        deletion_policy: spec.deletion_policy,
        hostname: spec.wanted_hostnames().into_iter().next(),
        plugins: contract::Manifest {
            version: 1,
            directory: contract::plugin_directory(spec.server_type).into(),
            plugins: vec![],
        },
        helper_image: image::OPERATOR_IMAGE.into(),
        restarted_at: server.metadata.annotations.as_ref().and_then(|a| a.get(contract::RESTARTED_AT)).cloned(),
    })
}

fn default_service() -> ServiceSpec {
    ServiceSpec { port: GAME_PORT, ..Default::default() }
}

impl ServerModel {
    /// The settings applied to the running server over RCON.
    pub fn live(&self) -> live::LiveSettings {
        live::LiveSettings {
            whitelist: self.whitelist.clone(),
            ops: self.ops.clone(),
            difficulty: self.difficulty,
            game_rules: self.game_rules.clone(),
        }
    }

    /// Keeps the list variables an existing StatefulSet's container has
    /// (`whitelist`, `ops`: whether it names `WHITELIST` / `OPS`).
    pub fn keep_list_env(&mut self, whitelist: bool, ops: bool) {
        self.whitelist_env = whitelist;
        self.ops_env = ops;
    }

    /// Runs `version` (what LATEST/SNAPSHOT resolved to); the default image
    /// (`default_image`: no `spec.image`) follows it.
    pub fn set_version(&mut self, version: String, default_image: bool) {
        if default_image {
            self.image = image::default_image(&version);
        }
        self.version = version;
    }

    /// Labels every child carries; the selector uses a subset.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = self.selector_labels();
        l.insert("app.kubernetes.io/managed-by".into(), "craftplane".into());
        l.insert("app.kubernetes.io/component".into(), component.into());
        l
    }

    /// Labels that select the server's pod.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "minecraft-server".into()),
            ("app.kubernetes.io/instance".into(), self.name.clone()),
            (SERVER_LABEL.into(), self.name.clone()),
        ])
    }

    /// Owner reference to the MinecraftServer (controller, blocks deletion
    /// in foreground GC).
    pub fn owner_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: format!("{GROUP}/{VERSION}"),
            kind: MinecraftServer::kind(&()).into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn pvc_name(&self) -> String {
        pvc_name(&self.name)
    }
    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name)
    }
    pub fn secret_name(&self) -> String {
        secret_name(&self.name)
    }
    pub fn game_service_name(&self) -> String {
        self.name.clone()
    }
    /// The RCON Service earlier releases gave every server (replaced by
    /// the pod's own address); deleted on upgrade.
    pub fn legacy_rcon_service_name(&self) -> String {
        format!("{}-rcon", self.name)
    }
    pub fn statefulset_name(&self) -> String {
        self.name.clone()
    }
}

/// Name of a server's world volume (PVC).
pub fn pvc_name(server: &str) -> String {
    format!("{server}-data")
}

/// Name of a server's RCON Secret.
pub fn secret_name(server: &str) -> String {
    format!("{server}-rcon")
}

/// The RCON address of a pod at `ip` (an IPv6 address in brackets).
pub fn rcon_address(ip: &str) -> String {
    if ip.contains(':') { format!("[{ip}]:{RCON_PORT}") } else { format!("{ip}:{RCON_PORT}") }
}

/// Short, stable hex digest of some bytes.
pub fn short_hash(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Hash of a desired object (its canonical JSON), stored as [`APPLIED_HASH`].
pub fn object_hash<T: serde::Serialize>(obj: &T) -> String {
    short_hash(&serde_json::to_vec(obj).unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod testdata;

#[cfg(test)]
mod tests;
