//! `Tenant`: owners, namespaces, quota and allowed SKUs (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Quantity, StoreRef, conditions_schema};

/// A tenant: who owns it, which namespaces it gets, how much it may use and
/// which SKUs it may choose. The operator turns it into namespaces, RBAC,
/// NetworkPolicies and quotas.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "craftplane.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tenant",
    category = "craftplane",
    label("app.kubernetes.io/part-of", "craftplane"),
    status = "TenantStatus",
    derive = "PartialEq",
    doc = "A tenant of the platform: owners, namespaces, quota and allowed SKUs.",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 56").message("a tenant name may have at most 56 characters: its namespace is tenant-<name>"),
    printcolumn(name = "Servers", type_ = "integer", json_path = ".status.usage.servers"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.quota.maxServers"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Who may manage this tenant's servers, plugins and backups (the
    /// `admin` role).
    #[schemars(length(min = 1, max = 64))]
    pub owners: Vec<Subject>,
    /// Further people and automation with a role in this tenant's
    /// namespaces: `viewer` reads, `operator` runs servers, `admin` is an
    /// owner. Each subject at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.all(m, self.exists_one(n, n.kind == m.kind && n.name == m.name && (has(n.__namespace__) ? n.__namespace__ : '') == (has(m.__namespace__) ? m.__namespace__ : '')))").message("each subject may be listed once in members: give it the one role it needs"))]
    pub members: Vec<Member>,
    /// Extra namespaces for this tenant, besides the default `tenant-<name>`.
    /// A namespace is taken only if it does not exist yet (craftplane
    /// creates it), already belongs to this tenant, or a cluster admin
    /// labelled it `craftplane.io/adoptable-by=<tenant>`; never `default`,
    /// `kube-*` or the operator's namespace, never another tenant's.
    /// Anything else is left alone and reported in the Ready condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    #[x_kube(validation = kube::core::Rule::new("self.all(n, n != 'default' && !n.startsWith('kube-'))").message("default and kube-* namespaces are the cluster's: a tenant never takes them"))]
    pub namespaces: Vec<String>,
    /// Limits on what this tenant may use. Absent means no craftplane quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<TenantQuota>,
    /// SKU names this tenant may use. Empty allows every available SKU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_skus: Vec<String>,
    /// Image repositories this tenant's servers may name in `spec.image`
    /// (prefixes, as in `Sku.spec.allowedImages`), on any SKU. Empty: only
    /// what the SKU allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_images: Vec<String>,
    /// Network access to this tenant's servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TenantNetwork>,
    /// Limits the player gateway applies to this tenant's servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<TenantGateway>,
    /// Where this tenant's backups go when a snapshot names no store
    /// (default: the operator's default store). Its prefix is the tenant's
    /// part of the store: every key of the tenant's snapshots lies under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_store: Option<StoreRef>,
    /// DNS domains this tenant's servers may use in `spec.hostnames`: a
    /// server's hostname must be one of these domains or a subdomain of one
    /// (`play.example.com` allows `play.example.com` and
    /// `eu.play.example.com`). Empty: no custom hostnames. A hostname
    /// belongs to one server cluster-wide, the first that claimed it; names
    /// under the admin's base domain are the default hostnames, never
    /// custom ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\.?$"
            )
        )
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub hostname_domains: Vec<String>,
    /// Further stores this tenant's snapshots may name (besides
    /// `backupStore`), each with the tenant's prefix in it. Any other store
    /// is refused (snapshot condition reason `StoreNotAllowed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("each store may be listed once"))]
    pub allowed_backup_stores: Vec<StoreRef>,
    /// Whether a deleted snapshot with `retain: true` keeps its archive in
    /// the store. Default false: in this tenant's namespaces deleting a
    /// snapshot deletes its archive (`retain` still pins it against
    /// retention), so the store never holds more than `maxBackups`
    /// archives. Kept archives are outside the quota.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_retained_archives: bool,
}

/// An RBAC subject: a user, a group or a ServiceAccount.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)").message("namespace is required for a ServiceAccount and not allowed otherwise"))]
#[x_kube(validation = kube::core::Rule::new("self.kind != 'ServiceAccount' || (self.name.size() <= 253 && self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))").message("a ServiceAccount name must be a lowercase DNS subdomain such as game-bot"))]
pub struct Subject {
    /// Kind of subject: User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// Name of the user, group or service account.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

/// A tenant member: an RBAC subject and its role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    #[serde(flatten)]
    pub subject: Subject,
    /// What the member may do in the tenant's namespaces: `viewer` (read
    /// servers, plugins, backups, pods, logs, events; no Secrets),
    /// `operator` (viewer, plus start/stop, console commands, backups,
    /// restores, scheduled tasks and live settings; no creating or deleting
    /// servers, no other spec change) or `admin` (what owners may do).
    pub role: Role,
}

/// A tenant member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything of the tenant's servers, changes nothing.
    Viewer,
    /// Runs the servers: start/stop, commands, backups, restores, tasks.
    Operator,
    /// Everything an owner may do.
    Admin,
}

/// The kind of an RBAC subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SubjectKind {
    /// A user name as authenticated by the API server.
    User,
    /// A group of users.
    Group,
    /// A Kubernetes ServiceAccount (needs `namespace`).
    ServiceAccount,
}

/// Limits on a tenant's usage, enforced by ResourceQuota in its namespaces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuota {
    /// Maximum number of MinecraftServers across the tenant's namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_servers: Option<i32>,
    /// Total CPU limit, e.g. `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Total memory limit, e.g. `32Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Total requested storage, e.g. `200Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// Maximum number of BackupSnapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_backups: Option<i32>,
    /// Maximum number of ConsoleCommands in each of the tenant's namespaces
    /// (finished ones count until their TTL deletes them). Default 100 when
    /// a quota is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_console_commands: Option<i32>,
    /// Maximum number of PluginInstallations in each of the tenant's
    /// namespaces. Default 200 when a quota is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_plugins: Option<i32>,
}

/// ConsoleCommands a namespace may hold when the tenant's quota does not say.
pub const DEFAULT_MAX_CONSOLE_COMMANDS: i32 = 100;
/// PluginInstallations a namespace may hold when the tenant's quota does not say.
pub const DEFAULT_MAX_PLUGINS: i32 = 200;

/// Limits the player gateway applies to a tenant (per gateway replica,
/// like the chart's defaults they replace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantGateway {
    /// Players' connections open at once to all of this tenant's servers.
    /// Absent: the chart's `gateway.maxConnectionsPerTenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections: Option<u32>,
    /// Players' connections open at once to any one of this tenant's
    /// servers (the lower of this and the SKU's
    /// `gateway.maxConnectionsPerServer` applies). Absent: the SKU's, else
    /// the chart's `gateway.maxConnectionsPerServer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_connections_per_server: Option<u32>,
}

/// Network access to a tenant's servers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantNetwork {
    /// CIDRs allowed to reach the game port. Empty allows no one; use
    /// `0.0.0.0/0` (and `::/0`) for a public server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR such as 203.0.113.0/24"))]
    pub allowed_ingress_cidrs: Vec<String>,
    /// Further destinations every pod of the tenant may reach, besides
    /// cluster DNS and public HTTP(S): e.g. a backup store or plugin mirror
    /// on a private address. Private ranges (other tenants, the nodes, the
    /// API server, cloud metadata) stay closed unless listed here. Set by
    /// the cluster admin; empty by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_egress: Vec<EgressRule>,
}

/// A destination tenant pods may open connections to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// The destination addresses, e.g. `10.20.0.5/32`.
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("isCIDR(self)").message("must be a CIDR such as 10.20.0.5/32"))]
    pub cidr: String,
    /// TCP ports allowed there. Empty: every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

/// Observed state of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Namespaces that belong to this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Current usage against the quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TenantUsage>,
    /// SKUs the tenant may use right now: allowed and available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effective_skus: Vec<String>,
    /// The generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state (Ready, Reconciling, Stalled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// A tenant's usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantUsage {
    /// MinecraftServers in the tenant's namespaces.
    #[serde(default)]
    pub servers: i32,
    /// CPU limits in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory limits in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Storage requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
    /// BackupSnapshots stored.
    #[serde(default)]
    pub backups: i32,
}

/// Label on every namespace (and object) that belongs to a tenant.
pub const TENANT_LABEL: &str = "craftplane.io/tenant";

/// Label a cluster admin puts on an existing namespace so that the tenant
/// it names may take it (list it in `spec.namespaces`). Without it a
/// tenant takes only namespaces that do not exist yet or are already its.
pub const ADOPTABLE_LABEL: &str = "craftplane.io/adoptable-by";

/// Namespaces no tenant ever takes (besides every `kube-*` one and the
/// operator's own namespace).
pub const RESERVED_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

impl Tenant {
    /// The namespace every tenant gets: `tenant-<name>`.
    pub fn default_namespace(&self) -> String {
        format!("tenant-{}", kube::ResourceExt::name_any(self))
    }

    /// Every namespace the spec asks for, default first, without duplicates.
    pub fn desired_namespaces(&self) -> Vec<String> {
        let mut out = vec![self.default_namespace()];
        for n in &self.spec.namespaces {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        out
    }

    /// Whether the spec allows a SKU by name (an empty list allows all).
    pub fn allows_sku(&self, sku: &str) -> bool {
        self.spec.allowed_skus.is_empty() || self.spec.allowed_skus.iter().any(|s| s == sku)
    }
}
