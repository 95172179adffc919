//! `ConsoleCommand`: one console command for a running server (namespaced).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::conditions_schema;

/// Longest answer kept in `status.output` (bytes); longer ones are cut.
pub const MAX_OUTPUT: usize = 16 * 1024;

/// A console command: the operator runs it once over RCON on the named
/// server and writes the answer into status. The object is deleted
/// `ttlSecondsAfterFinished` after it finished; every command run is also
/// an Event on the server.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "craftplane.io",
    version = "v1alpha1",
    kind = "ConsoleCommand",
    plural = "consolecommands",
    shortname = "mccmd",
    category = "craftplane",
    label("app.kubernetes.io/part-of", "craftplane"),
    namespaced,
    status = "ConsoleCommandStatus",
    derive = "PartialEq",
    doc = "A console command run once on a MinecraftServer.",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(name = "Command", type_ = "string", json_path = ".spec.command"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("a ConsoleCommand runs once: its spec cannot change (create a new one)"))]
pub struct ConsoleCommandSpec {
    /// Name of the MinecraftServer in this namespace to run it on.
    #[schemars(length(min = 1, max = 63))]
    pub server: String,
    /// The command as typed in the server console, without the leading `/`
    /// (e.g. `list`, `say hello`, `time set day`). One line. The SKU may
    /// allow or deny commands (`Sku.spec.consoleCommands`); `stop` and
    /// commands that change what the spec manages (whitelist, ops,
    /// difficulty, game rules it sets) are always refused, also through
    /// `execute … run`, a namespace (`bukkit:stop`) or an alias (`rl`);
    /// so are commands that run commands craftplane cannot check
    /// (`function`, `sudo`).
    #[schemars(length(min = 1, max = 1000))]
    #[x_kube(validation = kube::core::Rule::new(r"!self.matches('[\\x00-\\x1f\\x7f]')").message("command must be one line without control characters"))]
    pub command: String,
    /// Seconds after the command finished until the object is deleted
    /// (default 3600, at most 7 days).
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 10, max = 604800))]
    pub ttl_seconds_after_finished: i32,
}

fn default_ttl() -> i32 {
    3600
}

/// Phase of a console command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CommandPhase {
    /// Waiting for the server to run (up to two minutes).
    Pending,
    /// Being sent.
    Running,
    /// The server ran it; its answer is in `output`.
    Succeeded,
    /// Refused or not run; see `reason` and `message` (`output` holds the
    /// server's answer when it refused the command itself).
    Failed,
}

/// Result of a console command.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleCommandStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CommandPhase>,
    /// The server's answer (at most 16 KiB, longer answers are cut; escape
    /// sequences and control characters other than line breaks and tabs
    /// removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_OUTPUT))]
    pub output: Option<String>,
    /// Why it failed or waits: CommandNotAllowed, ServerNotFound,
    /// ServerNotRunning, RconUnreachable, RconNoAnswer, CommandFailed,
    /// Interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::resources::text::MAX_MESSAGE))]
    pub message: Option<String>,
    /// When the operator first saw it waiting for its server (found and
    /// Running); the wait is counted from here, not from its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// When it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Ready (Succeeded), Reconciling (Pending, Running), Stalled (Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}
