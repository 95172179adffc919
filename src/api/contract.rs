//! Contracts that are not CRD fields: annotations, ConfigMap keys, mount
//! paths and file formats that the operator, its helper containers and the
//! CLI must agree on. Pure builders (`resources/`) take them from here, not
//! from the programs that read them.

use serde::{Deserialize, Serialize};

use crate::api::server::ServerType;

/// Annotation `restart` sets on a MinecraftServer; the operator copies it
/// into the pod template, so the StatefulSet rolls the pod (a clean stop
/// with the grace period, like `kubectl rollout restart`).
pub const RESTARTED_AT: &str = "craftplane.io/restartedAt";

/// Label key naming a craftplane pod's role (the chart sets it).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label key naming the application (`craftplane` on the chart's pods).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/name` of the operator's and the gateway's pods.
pub const APP_NAME: &str = "craftplane";
/// `app.kubernetes.io/component` of the operator's pods: tenant
/// NetworkPolicies let them reach the game and RCON ports.
pub const CONTROLLER_COMPONENT: &str = "controller";
/// `app.kubernetes.io/component` of the gateway's pods (in the operator's
/// namespace): tenant NetworkPolicies let them reach the game port only.
pub const GATEWAY_COMPONENT: &str = "gateway";

/// The game server's container in a server's pod (logs, start time).
pub const SERVER_CONTAINER: &str = "minecraft";

/// ConfigMap key holding the manifest.
pub const MANIFEST_KEY: &str = "plugins.json";
/// Where the init-container finds each plugin's `configFiles` ConfigMap:
/// `<CONFIG_ROOT>/<entry name>/`.
pub const CONFIG_ROOT: &str = "/etc/craftplane/plugin-config";
/// Where the init-container finds the manifest.
pub const MANIFEST_DIR: &str = "/etc/craftplane/manifest";

/// The plugins a server should have, in the order they are installed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// Folder under the data directory the files go to (`plugins` or `mods`).
    pub directory: String,
    /// One entry per file.
    pub plugins: Vec<ManifestEntry>,
}

/// One file of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    /// The PluginInstallation this entry comes from (a dependency:
    /// `<installation>/<project id>`).
    pub name: String,
    /// File name inside the directory.
    pub file_name: String,
    /// Download URL.
    pub url: String,
    /// Hex SHA-256, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Hex SHA-512, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
    /// Configuration files to copy, when the installation has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigFiles>,
}

/// A plugin's `configFiles`: mounted from a ConfigMap, copied into its
/// data folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigFiles {
    /// ConfigMap name (in the server's namespace).
    pub config_map: String,
    /// Target folder, relative to the data directory, e.g. `plugins/LuckPerms`.
    pub target: String,
    /// Hash of the ConfigMap's data: a change restarts the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Manifest {
    /// Canonical JSON (stable across runs for the same content).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Folder plugins (or mods) of a server type live in, relative to /data.
pub fn plugin_directory(t: ServerType) -> &'static str {
    match t {
        ServerType::Fabric | ServerType::Quilt | ServerType::Forge | ServerType::NeoForge => "mods",
        _ => "plugins",
    }
}
