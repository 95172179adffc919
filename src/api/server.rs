//! `MinecraftServer`: one game server (namespaced).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Quantity, StoreRef, conditions_schema};

/// server.properties keys craftplane owns; a spec may not set them.
pub const RESERVED_PROPERTIES: &[&str] = &[
    "enable-rcon",
    "rcon.password",
    "rcon.port",
    "server-port",
    "query.port",
    "motd",
    "max-players",
    "white-list",
    "enforce-whitelist",
];

/// CEL rule on `spec.motd`: no C0/C1 control characters (line breaks,
/// tabs, escape sequences), the same set as Rust's `char::is_control`.
pub const MOTD_RULE: &str = r"!self.matches('[\\x00-\\x1f\\x7f-\\x9f]')";
/// Message of [`MOTD_RULE`].
pub const MOTD_MESSAGE: &str =
    r"motd must not contain line breaks or other control characters; write \n (a backslash and n) for a second line";

/// A game rule name as Minecraft writes them (`keepInventory`, or
/// namespaced snake case in newer versions). The schema cannot check map
/// keys cheaply; the reconciler does (InvalidSpec).
pub fn valid_game_rule(name: &str) -> bool {
    let bare = name.strip_prefix("minecraft:").unwrap_or(name);
    (1..=64).contains(&bare.len())
        && bare.starts_with(|c: char| c.is_ascii_alphabetic())
        && bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Schema of `spec.gameRules`: at most 64, values `true`, `false` or an
/// integer (a pattern: no CEL cost).
fn game_rules_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 11, "pattern": "^(true|false|-?[0-9]{1,10})$"},
    })
}

/// A Minecraft server. The operator runs it as a StatefulSet of the
/// itzg/minecraft-server image with a world volume, a game Service, a config
/// map and an RCON secret, and reports its phase, address and players.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "craftplane.io",
    version = "v1alpha1",
    kind = "MinecraftServer",
    plural = "minecraftservers",
    shortname = "mcs",
    category = "craftplane",
    label("app.kubernetes.io/part-of", "craftplane"),
    namespaced,
    status = "MinecraftServerStatus",
    derive = "PartialEq",
    doc = "A Minecraft server run by craftplane.",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("a server name must start with a letter, hold only lowercase letters, digits and '-', and have at most 52 characters: it names the StatefulSet, its Services and its pod"),
    printcolumn(name = "SKU", type_ = "string", json_path = ".spec.sku"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Players", type_ = "integer", json_path = ".status.players.online"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(oldSelf.storage) || !has(oldSelf.storage.storageClassName) || (has(self.storage) && has(self.storage.storageClassName) && self.storage.storageClassName == oldSelf.storage.storageClassName)").message("storage.storageClassName is immutable once set").field_path(".storage.storageClassName"))]
#[x_kube(validation = kube::core::Rule::new("!has(oldSelf.storage) || !has(oldSelf.storage.size) || (has(self.storage) && has(self.storage.size) && quantity(string(self.storage.size)).compareTo(quantity(string(oldSelf.storage.size))) >= 0)").message("storage.size cannot shrink (volumes can only be expanded)").field_path(".storage.size"))]
pub struct MinecraftServerSpec {
    /// Name of the Sku (resource tier) this server runs on.
    #[schemars(length(min = 1, max = 253))]
    pub sku: String,
    /// You must accept the Minecraft EULA (https://aka.ms/MinecraftEULA) by
    /// setting this to true.
    #[x_kube(validation = kube::core::Rule::new("self == true").message("eula must be true: you must accept the Minecraft EULA (https://aka.ms/MinecraftEULA)"))]
    pub eula: bool,
    /// Server software, the image's TYPE: VANILLA, PAPER, PURPUR, FOLIA,
    /// SPIGOT, BUKKIT, FABRIC, QUILT, FORGE or NEOFORGE.
    #[serde(default, rename = "type")]
    pub server_type: ServerType,
    /// Minecraft version such as `1.21.4`, `1.21.5-rc1`, `24w14a`, `26.1`,
    /// `26.1-snapshot-1`, `26.1-pre-1`, `26.1-rc-1`, or `LATEST` /
    /// `SNAPSHOT` (resolved once, see `status.resolvedVersion`).
    #[serde(default = "default_version")]
    #[schemars(
        length(min = 1, max = 32),
        regex(
            pattern = r"^(LATEST|SNAPSHOT|[0-9]+\.[0-9]+(\.[0-9]+)?(-(pre|rc)[0-9]+|-(snapshot|pre|rc)-[0-9]+)?|[0-9]{2}w[0-9]{2}[a-z])$"
        )
    )]
    pub version: String,
    /// Running starts the server; Stopped scales it to zero and keeps the world.
    #[serde(default)]
    pub state: ServerState,
    /// server.properties overrides on top of the SKU's defaults. Keys that
    /// craftplane manages (rcon, ports, motd, max-players, whitelist) are
    /// rejected: use the typed fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 200), inner(length(max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, k.size() <= 128 && k.matches('^[a-z0-9][a-z0-9.-]*$'))").message("property names must be lowercase server.properties keys such as view-distance"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, !(k in ['enable-rcon', 'rcon.password', 'rcon.port', 'server-port', 'query.port', 'motd', 'max-players', 'white-list', 'enforce-whitelist']))").message("this property is managed by craftplane; use spec.motd, spec.maxPlayers, spec.whitelist or spec.service instead"))]
    pub properties: BTreeMap<String, String>,
    /// Message of the day shown in the server list. Line breaks and other
    /// control characters are refused (the server would mangle them); for
    /// a second line write the two characters `\n`, which the image turns
    /// into a line break. Formatting codes (`§l`, `§c`, …) are fine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = kube::core::Rule::new(MOTD_RULE).message(MOTD_MESSAGE))]
    pub motd: Option<String>,
    /// Maximum players; at most the SKU's maxPlayers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_players: Option<i32>,
    /// Players allowed to join. Empty turns the whitelist off. A change is
    /// applied to the running server over RCON (`whitelist add/remove/on/off`,
    /// no restart; see `status.live`) and kept for its next start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(regex(
            pattern = r"^([A-Za-z0-9_]{3,16}|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$"
        ))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub whitelist: Vec<String>,
    /// Server operators (player names or UUIDs). A change is applied to the
    /// running server over RCON (`op`/`deop`, no restart) and kept for its
    /// next start; craftplane only deops players it made operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(regex(
            pattern = r"^([A-Za-z0-9_]{3,16}|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})$"
        ))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub ops: Vec<String>,
    /// Difficulty, applied to the running server over RCON (no restart) and
    /// kept for its next start. Wins over `properties.difficulty` (which
    /// still works, but a change to it restarts the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<Difficulty>,
    /// Game rules (`/gamerule <name> <value>`), applied to the running
    /// server over RCON (no restart) and again after every start. Values are
    /// `true`, `false` or an integer. Removing a rule leaves the world's
    /// current value: set it explicitly to change it back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "game_rules_schema")]
    pub game_rules: BTreeMap<String, String>,
    /// Extra JVM options, e.g. `-XX:+UseG1GC`. Heap flags come from the SKU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256), regex(pattern = r"^-")))]
    pub jvm_args: Vec<String>,
    /// Container image override. Default: itzg/minecraft-server at a tag
    /// chosen from the Minecraft version (the right Java for it). Must match
    /// the SKU's or the tenant's `allowedImages` (refused at admission and
    /// reported as ImageNotAllowed otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// How players reach the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// World volume; size and class within the SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Scheduled backups and retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupPolicy>,
    /// Scheduled tasks: restarts with a countdown, broadcasts, console
    /// commands and backups at cron slots in a time zone (see
    /// `status.tasks`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub tasks: Vec<ScheduledTask>,
    /// Restore the world from a BackupSnapshot (stops the server, verifies,
    /// swaps the world in, starts it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
    /// How the server is stopped so the world is saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_stop: Option<GracefulStop>,
    /// What happens to the world volume when the server is deleted: Retain
    /// (default) keeps it, Delete removes it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Custom hostnames players connect with through the craftplane
    /// gateway (besides the default `<server>.<namespace>.<base domain>`
    /// when the admin set a base domain): lowercase DNS names (RFC 1123),
    /// each within the tenant's `hostnameDomains` and held by one server
    /// cluster-wide (the first that claimed it). A refused one gets no
    /// traffic and is named in condition Hostname; the others still route.
    /// Servers outside a tenant get none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_HOSTNAMES), inner(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub hostnames: Vec<String>,
    /// Deprecated: use `hostnames`. One custom hostname, added to
    /// `hostnames`; kept for one release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME_PATTERN))]
    pub hostname: Option<String>,
    /// Sleep while nobody plays, wake when a player joins through the
    /// gateway. Absent: the SKU's default (none: never sleep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<crate::api::sleep::SleepPolicy>,
}

/// At most this many `spec.hostnames`.
pub const MAX_HOSTNAMES: usize = 8;

/// A lowercase DNS name (RFC 1123 labels of 1–63 characters, no trailing dot).
pub const HOSTNAME_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

impl MinecraftServerSpec {
    /// The custom hostnames asked for: `hostnames`, then the deprecated
    /// `hostname`, lowercase, each once.
    pub fn wanted_hostnames(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for h in self.hostnames.iter().chain(self.hostname.as_ref()) {
            let h = crate::resources::hostname::normalize(h);
            if !h.is_empty() && !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }
}

fn default_version() -> String {
    "LATEST".into()
}

/// Server software, as the itzg image's `TYPE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerType {
    /// Mojang's server.
    #[default]
    Vanilla,
    /// Paper (Bukkit/Spigot plugins).
    Paper,
    /// Purpur, a Paper fork.
    Purpur,
    /// Folia, Paper with regionised threading.
    Folia,
    /// Spigot.
    Spigot,
    /// CraftBukkit.
    Bukkit,
    /// Fabric mod loader.
    Fabric,
    /// Quilt mod loader.
    Quilt,
    /// Forge mod loader.
    Forge,
    /// NeoForge mod loader.
    #[serde(rename = "NEOFORGE")]
    NeoForge,
}

impl ServerType {
    /// The image's `TYPE` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerType::Vanilla => "VANILLA",
            ServerType::Paper => "PAPER",
            ServerType::Purpur => "PURPUR",
            ServerType::Folia => "FOLIA",
            ServerType::Spigot => "SPIGOT",
            ServerType::Bukkit => "BUKKIT",
            ServerType::Fabric => "FABRIC",
            ServerType::Quilt => "QUILT",
            ServerType::Forge => "FORGE",
            ServerType::NeoForge => "NEOFORGE",
        }
    }
}

/// Whether the server should run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServerState {
    /// One replica.
    #[default]
    Running,
    /// Zero replicas; the world volume is kept.
    Stopped,
}

/// Game difficulty, as in server.properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// No hostile mobs, health regenerates.
    Peaceful,
    /// Easy.
    Easy,
    /// Normal.
    Normal,
    /// Hard.
    Hard,
}

impl Difficulty {
    /// The server.properties / `/difficulty` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Difficulty::Peaceful => "peaceful",
            Difficulty::Easy => "easy",
            Difficulty::Normal => "normal",
            Difficulty::Hard => "hard",
        }
    }
}

/// What to do with the world volume on deletion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the PVC (unowned, labelled with the server's name).
    #[default]
    Retain,
    /// Delete the PVC and the world with it.
    Delete,
}

/// The game Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.nodePort) || self.type == 'NodePort' || self.type == 'LoadBalancer'").message("nodePort needs type NodePort or LoadBalancer"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.loadBalancerClass) || self.type == 'LoadBalancer'").message("loadBalancerClass needs type LoadBalancer"))]
pub struct ServiceSpec {
    /// Service type: Headless (default: players come through the gateway),
    /// ClusterIP, NodePort or LoadBalancer. Switching between Headless and
    /// the others re-creates the Service (a cluster IP cannot be added or
    /// removed in place).
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// Port players connect to.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Fixed node port (30000–32767) for NodePort/LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Annotations for the Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,
    /// Load balancer implementation to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,
}

fn default_port() -> i32 {
    25565
}

/// Kubernetes Service type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// No cluster IP (default): players come through the craftplane
    /// gateway, which connects to the server's pod; the Service's DNS name
    /// resolves to the pod. Costs the API server no IP allocation.
    #[default]
    Headless,
    /// A virtual cluster IP, for in-cluster proxies that need one.
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

/// The world volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.size) || !isQuantity(string(self.size)) || quantity(string(self.size)).isGreaterThan(quantity('0'))").message("storage.size must be greater than zero").field_path(".size"))]
pub struct StorageSpec {
    /// Volume size; at most the SKU's storage. Can grow, never shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass; defaults to the SKU's, then the cluster default.
    /// Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// Scheduled backups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    /// Cron schedule in UTC: five fields (e.g. `0 4 * * *`), six with
    /// seconds first, or `@daily`-style. Missed slots while the operator was
    /// down give one catch-up snapshot, not one per slot.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(schedule_rule()).message(SCHEDULE_MESSAGE))]
    pub schedule: String,
    /// Which scheduled snapshots to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Store for scheduled snapshots; default: the tenant's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreRef>,
}

/// Message of the CEL rule on `backup.schedule`.
pub const SCHEDULE_MESSAGE: &str = "schedule must be a cron expression in UTC: five fields (minute hour day-of-month month day-of-week, e.g. '0 4 * * *'), six with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly; each value within its field's range";

/// CEL rule on `backup.schedule`: [`schedule_pattern`] must match.
pub fn schedule_rule() -> String {
    format!("self.matches('{}')", schedule_pattern())
}

/// The shape of a cron schedule as admission checks it (RE2 syntax, no
/// backslashes or quotes so it embeds in a CEL string as is): five fields,
/// six with seconds first, each a list of `*`, values or ranges within the
/// field's bounds with an optional `/step`, plus the extensions croner
/// accepts (`?`, `L`, `W` in day-of-month; `?`, `L`, `#n` in day-of-week;
/// three-letter month and weekday names), or an `@daily`-style alias.
/// The reconciler parses the schedule again (croner) and reports what
/// slips through as the `BackupSchedule` condition.
pub fn schedule_pattern() -> String {
    fn field(value: &str, extra: &str) -> String {
        let item = format!("([*]|{value}(-{value})?)(/[0-9]{{1,2}})?");
        let item = if extra.is_empty() { format!("({item})") } else { format!("({item}|{extra})") };
        format!("{item}(,{item})*")
    }
    let sixty = field("[0-5]?[0-9]", "");
    let hour = field("(2[0-3]|[01]?[0-9])", "");
    let dom_value = "(3[01]|[12][0-9]|0?[1-9])";
    let dom = field(dom_value, &format!("[?]|L|LW|{dom_value}W"));
    let month = field("(1[0-2]|0?[1-9]|[A-Za-z]{3})", "");
    let dow_value = "([0-7]|[A-Za-z]{3})";
    let dow = field(dow_value, &format!("[?]|L|{dow_value}(L|#[1-5])"));
    let sp = "[ ]+";
    format!(
        "^((?i:@(yearly|annually|monthly|weekly|daily|hourly))|({sixty}{sp})?{sixty}{sp}{hour}{sp}{dom}{sp}{month}{sp}{dow})$"
    )
}

/// A scheduled task: at each slot of `schedule` (in `timeZone`) its actions
/// run in order. Missed slots while the operator was down give one
/// catch-up run, never one per slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledTask {
    /// Name, unique among the server's tasks (in status, Events and the
    /// names of the snapshots it takes).
    #[schemars(length(min = 1, max = 24), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Cron schedule: five fields (e.g. `0 5 * * *`), six with seconds
    /// first, or `@daily`-style.
    #[schemars(schema_with = "task_schedule_schema")]
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin`
    /// (daylight saving followed). Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$"))]
    pub time_zone: Option<String>,
    /// What to do, in order (at most 8).
    #[schemars(length(min = 1, max = 8))]
    pub actions: Vec<TaskAction>,
    /// Go on with the next action after one failed (default: stop there).
    #[serde(default)]
    pub continue_on_failure: bool,
    /// Skip slots while true (no catch-up when set back to false).
    #[serde(default)]
    pub suspend: bool,
}

fn task_schedule_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "maxLength": 128, "pattern": schedule_pattern()})
}

/// One action of a task: exactly one of restart, broadcast, command, backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.restart), has(self.broadcast), has(self.command), has(self.backup)].exists_one(x, x)").message("an action is exactly one of restart, broadcast, command or backup"))]
pub struct TaskAction {
    /// Announce a countdown to the players, then restart the server
    /// cleanly (saved, stopped within `gracefulStop`, started again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartAction>,
    /// A chat message to every player (`say`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub broadcast: Option<String>,
    /// A console command, as in a ConsoleCommand (the same commands are
    /// refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub command: Option<String>,
    /// Take a BackupSnapshot (reason Scheduled: `spec.backup.retention`
    /// prunes it) and wait until it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupAction>,
}

/// A restart with a countdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartAction {
    /// Seconds of countdown announced in chat before the restart (default 60).
    #[serde(default = "default_countdown")]
    #[schemars(range(min = 0, max = 900))]
    pub countdown_seconds: i32,
    /// The announcement; " in N seconds" is appended. Default "Server restarting".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub message: Option<String>,
}

fn default_countdown() -> i32 {
    60
}

/// A backup taken by a task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupAction {
    /// Store to write to; default as for scheduled backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreRef>,
}

/// Result of a task's last run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaskResult {
    /// Its actions are running.
    Running,
    /// Every action succeeded.
    Succeeded,
    /// An action failed (see the message).
    Failed,
    /// The slot came while the server was not Running; nothing ran.
    Skipped,
}

/// State of one scheduled task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The task's name.
    pub name: String,
    /// The newest slot it ran (or skipped) for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// Result of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// What happened (server answers in it are cleaned of control
    /// characters and cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::resources::text::MAX_MESSAGE))]
    pub message: Option<String>,
    /// When that run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
}

/// Retention of scheduled, unpinned snapshots. A snapshot is kept if any rule
/// keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub keep_last: Option<i32>,
    /// Keep the newest snapshot of each of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub keep_daily: Option<i32>,
    /// Keep the newest snapshot of each of the last N weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub keep_weekly: Option<i32>,
    /// Delete snapshots older than this (e.g. `720h`), whatever else applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub max_age: Option<String>,
}

/// A restore request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Name of a Completed BackupSnapshot of this server, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub snapshot: String,
}

/// Graceful stop settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GracefulStop {
    /// Seconds the server gets to save and stop before it is killed
    /// (pod terminationGracePeriodSeconds). Default 120.
    #[serde(default = "default_stop_timeout")]
    #[schemars(range(min = 10, max = 3600))]
    pub timeout_seconds: i32,
    /// Message announced to players before stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub warning: Option<String>,
}

fn default_stop_timeout() -> i32 {
    120
}

/// Lifecycle phase of a server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServerPhase {
    /// Accepted, nothing created yet.
    #[default]
    Pending,
    /// Volume and workload being created.
    Provisioning,
    /// Pod running, server not answering yet.
    Starting,
    /// Serving players.
    Running,
    /// Shutting down.
    Stopping,
    /// Scaled to zero.
    Stopped,
    /// Restoring a snapshot.
    Restoring,
    /// Asleep: scaled to zero after its idle time (`spec.sleep`), volume
    /// and configuration kept; a player joining through the gateway wakes
    /// it. Ready (an asleep server is as it should be).
    Hibernated,
    /// Cannot run; see conditions.
    Failed,
}

/// Observed state of a server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinecraftServerStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ServerPhase>,
    /// What players type to connect: the first custom hostname held, else
    /// the default hostname (`:port` when the gateway's port is not 25565);
    /// without either, the game Service's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Players online and allowed, from Server List Ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub players: Option<Players>,
    /// Version the server reports over Server List Ping (control
    /// characters removed, cut at 128 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::resources::text::MAX_VERSION))]
    pub version: Option<String>,
    /// What `spec.version: LATEST` or `SNAPSHOT` was resolved to, once: the
    /// Minecraft version the image runs and plugins are resolved for. It
    /// does not move when a newer Minecraft comes out; set `spec.version`
    /// to upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_version: Option<ResolvedVersion>,
    /// Hash of the rendered configuration currently applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<String>,
    /// Recently applied configuration revisions, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub config_history: Vec<ConfigRevision>,
    /// The live settings (whitelist, ops, difficulty, gameRules) applied to
    /// the running server over RCON. A change of them shows here without a
    /// restart; `configRevision` is what needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveStatus>,
    /// The most recent completed backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// Scheduled backups: the last slot taken and the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_schedule: Option<BackupScheduleStatus>,
    /// The scheduled tasks: last slot, its result, the next slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub tasks: Vec<TaskStatus>,
    /// The last restore requested through `spec.restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// The SKU the running workload was last built from. A change of
    /// `spec.sku` to a SKU the tenant may not use (or one not available)
    /// leaves the server on this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub applied_sku: Option<String>,
    /// Every hostname this server holds, which the gateway routes to it:
    /// the custom hostnames granted, then the default one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9), inner(length(max = 253)))]
    pub hostnames: Vec<String>,
    /// Sleep and wake: idle since, asleep since, last wake, wake count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<crate::api::sleep::SleepStatus>,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state (Ready, Reconciling, Stalled, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A moving version alias resolved to a concrete Minecraft version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVersion {
    /// The alias: LATEST or SNAPSHOT.
    pub from: String,
    /// The Minecraft version it meant when resolved, e.g. `26.1`.
    pub version: String,
}

/// Player counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Players {
    /// Players online.
    pub online: i32,
    /// Player limit.
    pub max: i32,
    /// Names of players online, as the server shows them in its list
    /// (Server List Ping sample: vanilla shows up to 12, chosen at random
    /// when more are online; none when `hide-online-players` is set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::minecraft::slp::MAX_NAMES), inner(length(max = crate::resources::text::MAX_PLAYER_NAME)))]
    pub names: Vec<String>,
}

/// Live settings applied to the running server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveStatus {
    /// Hash of the live settings last applied in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// UID of the pod they were applied to (a new pod gets them again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// When they were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
    /// Operators craftplane made (the ones it may deop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub ops: Vec<String>,
}

/// One applied configuration revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRevision {
    /// Hash of the rendered configuration.
    pub revision: String,
    /// Server generation that produced it.
    pub generation: i64,
    /// When it was first applied.
    pub applied_at: Time,
}

/// State of the backup schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// The newest schedule slot a snapshot was created for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_time: Option<Time>,
    /// The next slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_time: Option<Time>,
}

/// Progress of a restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The snapshot restored from.
    pub snapshot: String,
    /// Stopping, Restoring, Completed or Failed.
    pub phase: RestorePhase,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The server's generation when this request was accepted, while
    /// `spec.restore` asks for it. Removed (the result stays) when
    /// `spec.restore` is cleared: setting it again is a new request that
    /// runs its own Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_generation: Option<i64>,
    /// The restore Job of this request (deleted once its result is here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Why a Failed request was refused, when it was (`SecretConflict`,
    /// `StoreNotAllowed`, `InvalidPrefix`, …); also the reason of the
    /// server's `Restore` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Phase of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestorePhase {
    /// Waiting for the server to stop.
    Stopping,
    /// The restore Job runs.
    Restoring,
    /// The world was replaced; the server runs again.
    Completed,
    /// Nothing was changed; see the message.
    Failed,
}

/// A reference to the latest completed backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// BackupSnapshot name.
    pub name: String,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}
