//! `Sku`: a resource tier tenants choose from (cluster-scoped).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Quantity, conditions_schema};
use super::server::ServerType;

/// A resource tier: the CPU, memory, storage and JVM heap a server gets, its
/// player limit, default server.properties and price. Tenants pick SKUs; admins
/// define them.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "craftplane.io",
    version = "v1alpha1",
    kind = "Sku",
    plural = "skus",
    shortname = "sku",
    category = "craftplane",
    label("app.kubernetes.io/part-of", "craftplane"),
    status = "SkuStatus",
    derive = "PartialEq",
    doc = "A resource tier (CPU, memory, storage, JVM heap, players, price) that MinecraftServers name in spec.sku.",
    printcolumn(name = "Display", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "CPU", type_ = "string", json_path = ".spec.resources.cpu"),
    printcolumn(name = "Memory", type_ = "string", json_path = ".spec.resources.memory"),
    printcolumn(name = "Storage", type_ = "string", json_path = ".spec.resources.storage"),
    printcolumn(name = "Players", type_ = "integer", json_path = ".spec.maxPlayers"),
    printcolumn(name = "Available", type_ = "boolean", json_path = ".spec.available"),
    printcolumn(name = "Servers", type_ = "integer", json_path = ".status.servers"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SkuSpec {
    /// Human-readable name shown to tenants, e.g. "Medium (4 GiB)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub display_name: Option<String>,
    /// Container resources every server of this SKU gets.
    pub resources: SkuResources,
    /// JVM heap settings. Default: 75% of `resources.memory`, leaving room for
    /// off-heap memory so the container is not OOM-killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jvm: Option<JvmSpec>,
    /// Maximum players a server of this SKU may allow (server.properties
    /// `max-players`). A server's `spec.maxPlayers` may not exceed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_players: Option<i32>,
    /// Default server.properties for servers of this SKU; a server's
    /// `spec.properties` override them key by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 200))]
    pub default_properties: BTreeMap<String, String>,
    /// Server types this SKU may run. Empty allows every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_server_types: Vec<ServerType>,
    /// Image repositories servers of this SKU may name in `spec.image`, as
    /// prefixes of the reference as written (`registry.example.com/mc/`
    /// allows everything below it; `ghcr.io/acme/paper` that repository at
    /// any tag or digest). Together with the tenant's `allowedImages`. Empty
    /// (and no tenant list): only the image craftplane chooses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_images: Vec<String>,
    /// Which console commands tenants may run on this SKU's servers through
    /// ConsoleCommand objects. Absent: every command except those always
    /// refused (`stop`, and commands changing what the server's spec manages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_commands: Option<ConsolePolicy>,
    /// Limits the player gateway applies to servers of this SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SkuGateway>,
    /// Sleep default of this SKU's servers (`MinecraftServer.spec.sleep`),
    /// optionally forced on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<crate::api::sleep::SkuSleep>,
    /// StorageClass for world volumes of this SKU. Empty uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// Further StorageClasses a server of this SKU may name in
    /// `spec.storage.storageClassName`, besides `storageClassName`. Any other
    /// class is refused (condition StorageClassNotAllowed, no volume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_storage_classes: Vec<String>,
    /// Service annotation keys a server of this SKU may set in
    /// `spec.service.annotations`: exact keys, or `prefix/*` for every key
    /// under that prefix (`service.beta.kubernetes.io/*`). Empty: none.
    /// Other keys are not applied (condition ServiceAnnotations names them);
    /// mc-router's `externalServerName` never is (use `spec.hostnames`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 317)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_service_annotations: Vec<String>,
    /// Price shown to tenants; informational, craftplane does not bill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Nodes the servers of this SKU run on (a node pool the admin reserves
    /// for game servers). Their backup and restore Jobs get the same.
    /// Tenants cannot choose nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Whether new servers may use this SKU. Setting it to false stops new
    /// servers from choosing it; existing servers keep running.
    #[serde(default = "default_true")]
    pub available: bool,
}

fn default_true() -> bool {
    true
}

/// Limits the player gateway applies to servers of a SKU (per gateway
/// replica).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkuGateway {
    /// Players' connections open at once to one server of this SKU (the
    /// lower of this and its tenant's applies). Absent: the chart's
    /// `gateway.maxConnectionsPerServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections_per_server: Option<u32>,
}

/// Node selection for a SKU's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods require (their `nodeSelector`), e.g.
    /// `{node-pool: games}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate, e.g. those of a node pool reserved for game
    /// servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
}

/// CPU, memory and storage of a SKU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkuResources {
    /// CPU request and limit for the server container, e.g. `2` or `1500m`.
    #[x_kube(validation = kube::core::Rule::new("!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))").message("cpu must be greater than zero"))]
    pub cpu: Quantity,
    /// Memory request and limit for the server container, e.g. `4Gi`.
    #[x_kube(validation = kube::core::Rule::new("!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('512Mi')) >= 0").message("memory must be at least 512Mi"))]
    pub memory: Quantity,
    /// Size of the world volume, e.g. `10Gi`.
    #[x_kube(validation = kube::core::Rule::new("!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('1Gi')) >= 0").message("storage must be at least 1Gi"))]
    pub storage: Quantity,
}

/// JVM heap of a SKU: either an absolute `heap` or `heapPercent` of memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.heap) && has(self.heapPercent))").message("set either heap or heapPercent, not both"))]
pub struct JvmSpec {
    /// Absolute heap size (`-Xmx`), e.g. `3G`. Keep it about 25% below memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap: Option<Quantity>,
    /// Heap as a percentage of the container memory (10–90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 90))]
    pub heap_percent: Option<i32>,
}

/// A price tag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Decimal amount, e.g. `4.99`.
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,4})?$"))]
    pub amount: String,
    /// ISO 4217 currency code, e.g. `EUR`.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Billing period.
    #[serde(default)]
    pub period: PricePeriod,
}

/// Billing period of a price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PricePeriod {
    /// Per hour.
    Hour,
    /// Per day.
    Day,
    /// Per month.
    #[default]
    Month,
}

/// Observed state of a SKU.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkuStatus {
    /// Number of MinecraftServers that name this SKU.
    #[serde(default)]
    pub servers: i32,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state (Ready, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Console commands allowed on a SKU. An entry is a command with optional
/// leading arguments, matched word by word without case (`time` matches
/// `time set day`; `whitelist list` matches only that sub-command), with
/// namespaces and aliases resolved (`reload` matches `rl` and
/// `bukkit:reload`). Every command a line runs is checked, those run by
/// `execute … run` included.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsolePolicy {
    /// Only these commands may run (empty: every command not denied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allow: Vec<String>,
    /// These commands never run, whatever `allow` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub deny: Vec<String>,
}
