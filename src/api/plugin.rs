//! `PluginInstallation`: one plugin or mod on a server (namespaced).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{LocalObjectRef, conditions_schema};

/// A plugin (or mod) installed on a MinecraftServer. The operator resolves it
/// to an exact file and checksum; the server's init-container downloads and
/// verifies it before the server starts.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "craftplane.io",
    version = "v1alpha1",
    kind = "PluginInstallation",
    plural = "plugininstallations",
    shortname = "plugin",
    category = "craftplane",
    label("app.kubernetes.io/part-of", "craftplane"),
    namespaced,
    status = "PluginInstallationStatus",
    derive = "PartialEq",
    doc = "A plugin or mod on a MinecraftServer, pinned by checksum.",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.resolved.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.configFiles) || !has(self.files) || size(self.files) == 0").message("use either configFiles or files, not both"))]
pub struct PluginInstallationSpec {
    /// Name of the MinecraftServer in this namespace. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("server is immutable; create a new PluginInstallation instead"))]
    pub server: String,
    /// Where the plugin comes from: exactly one of `url` or `modrinth`.
    pub source: PluginSource,
    /// A ConfigMap in this namespace whose keys become files in the
    /// plugin's data folder (`configDirectory`), copied before every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_files: Option<LocalObjectRef>,
    /// Configuration files written inline (instead of `configFiles`): each
    /// becomes a file in the plugin's data folder, copied before every
    /// start. At most 16 files of 32 KiB; a change restarts the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub files: Vec<InlineFile>,
    /// The plugin's data folder under `plugins/` (mods: `config/`), e.g.
    /// `LuckPerms`; default: the name of this PluginInstallation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    #[x_kube(validation = kube::core::Rule::new("self != '.' && self != '..'").message("configDirectory must name a folder"))]
    pub config_directory: Option<String>,
    /// False keeps the plugin off the server without deleting this object.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Required dependencies: Install adds them automatically (default);
    /// Require only reports missing ones (phase Failed, DependencyMissing).
    #[serde(default)]
    pub dependency_policy: DependencyPolicy,
}

fn default_true() -> bool {
    true
}

/// Source of a plugin. Exactly one member is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.url), has(self.modrinth)].filter(x, x).size() == 1").message("set exactly one plugin source: url or modrinth"))]
pub struct PluginSource {
    /// A direct download with a pinned checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSource>,
    /// A Modrinth project, resolved against the server's type and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modrinth: Option<ModrinthSource>,
}

/// A plugin downloaded from a URL and verified by checksum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.sha256), has(self.sha512)].filter(x, x).size() == 1").message("set exactly one checksum: sha256 or sha512"))]
pub struct UrlSource {
    /// https (or http) URL of the jar.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && url(self).getScheme() in ['https', 'http'] && url(self).getHostname() != ''").message("url must be an absolute http(s) URL"))]
    pub url: String,
    /// Hex SHA-256 of the file (64 lowercase hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
    /// Hex SHA-512 of the file (128 lowercase hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{128}$"))]
    pub sha512: Option<String>,
}

/// A Modrinth project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModrinthSource {
    /// Project slug or id, e.g. `luckperms`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    pub project: String,
    /// Version number or id; default: the newest compatible release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,
}

/// How required dependencies are handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DependencyPolicy {
    /// Install required dependencies automatically.
    #[default]
    Install,
    /// Report missing dependencies; install nothing extra.
    Require,
}

/// Lifecycle phase of a plugin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PluginPhase {
    /// Not resolved yet.
    #[default]
    Pending,
    /// Resolved to an exact file; in the server's manifest.
    Resolved,
    /// Installed on the running server.
    Installed,
    /// No version fits the server's type and Minecraft version.
    Incompatible,
    /// Resolution failed; see conditions.
    Failed,
}

/// Observed state of a plugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginInstallationStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PluginPhase>,
    /// The exact artifact the source resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedArtifact>,
    /// Required dependencies and how they were satisfied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ResolvedDependency>,
    /// Server type and Minecraft version the resolution was made for; a
    /// change of either resolves again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_for: Option<String>,
    /// Hash of the `configFiles` ConfigMap's data last seen (a change
    /// restarts the server with the new files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_files_hash: Option<String>,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state (Ready, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// One inline configuration file of a plugin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineFile {
    /// File name in the plugin's data folder, e.g. `config.yml` (no folders).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$"))]
    pub name: String,
    /// The file's text.
    #[schemars(length(max = 32768))]
    pub content: String,
}

/// An exact downloadable artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedArtifact {
    /// Download URL.
    pub url: String,
    /// Version label of the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Modrinth project id, when resolved through Modrinth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Modrinth version id, when resolved through Modrinth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// File name on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Hex SHA-256, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Hex SHA-512, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

/// A required dependency of a plugin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedDependency {
    /// Modrinth project id.
    pub project: String,
    /// Why it is unsatisfied, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Resolved artifact, when satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ResolvedArtifact>,
    /// Whether the dependency is satisfied.
    pub satisfied: bool,
}
