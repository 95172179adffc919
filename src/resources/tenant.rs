//! Pure builders for a tenant: namespaces, RBAC, NetworkPolicies, quota,
//! limits and the admission policy's per-namespace parameter.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::{GAME_PORT, RCON_PORT};
use crate::api::common::parse_quantity;
use crate::api::contract::{CONTROLLER_COMPONENT, GATEWAY_COMPONENT};
use crate::api::tenant::{
    ADOPTABLE_LABEL, DEFAULT_MAX_CONSOLE_COMMANDS, DEFAULT_MAX_PLUGINS, RESERVED_NAMESPACES, Role, SubjectKind,
    TENANT_LABEL, Tenant,
};
use crate::api::{GROUP, VERSION};

/// ClusterRole of tenant owners and `admin` members.
pub const OWNER_CLUSTER_ROLE: &str = "craftplane-tenant-owner";
/// ClusterRole of `operator` members.
pub const OPERATOR_CLUSTER_ROLE: &str = "craftplane-tenant-operator";
/// ClusterRole of `viewer` members.
pub const VIEWER_CLUSTER_ROLE: &str = "craftplane-tenant-viewer";
/// RoleBinding of owners and `admin` members in each tenant namespace.
pub const OWNER_BINDING: &str = "craftplane-tenant-owners";
/// RoleBinding of `operator` members in each tenant namespace.
pub const OPERATOR_BINDING: &str = "craftplane-tenant-operators";
/// RoleBinding of `viewer` members in each tenant namespace.
pub const VIEWER_BINDING: &str = "craftplane-tenant-viewers";
/// Custom RBAC verb on `minecraftservers`: may change any field. The
/// admission policy `craftplane-operator-fields` lets whoever lacks it
/// (operator members) change only the fields operators run.
pub const ADMINISTER: &str = "administer";
/// ConfigMap in each tenant namespace read by the allowed-SKU admission policy.
pub const POLICY_CONFIG_MAP: &str = "craftplane-tenant-policy";
/// ResourceQuota name.
pub const QUOTA: &str = "craftplane-quota";
/// LimitRange name.
pub const LIMITS: &str = "craftplane-limits";
/// Private and link-local ranges: pod, service and node networks live here,
/// so egress "to the internet" excludes them (and with them other tenants).
pub const PRIVATE_V4: [&str; 5] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"];
/// IPv6 unique-local and link-local ranges.
pub const PRIVATE_V6: [&str; 2] = ["fc00::/7", "fe80::/10"];

fn owner(t: &Tenant) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: Tenant::kind(&()).into(),
        name: t.name_any(),
        uid: t.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn labels(t: &Tenant, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "craftplane".into()),
        ("app.kubernetes.io/component".into(), component.into()),
        (TENANT_LABEL.into(), t.name_any()),
    ])
}

fn meta(t: &Tenant, name: &str, ns: Option<&str>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(str::to_owned),
        labels: Some(labels(t, component)),
        owner_references: Some(vec![owner(t)]),
        ..Default::default()
    }
}

/// A tenant namespace: labelled, Pod Security `restricted` enforced. Not
/// owned by the Tenant, so deleting the Tenant never deletes worlds.
pub fn namespace(t: &Tenant, ns: &str) -> Namespace {
    let mut l = labels(t, "namespace");
    for mode in ["enforce", "audit", "warn"] {
        l.insert(format!("pod-security.kubernetes.io/{mode}"), "restricted".into());
        l.insert(format!("pod-security.kubernetes.io/{mode}-version"), "latest".into());
    }
    Namespace {
        metadata: ObjectMeta { name: Some(ns.into()), labels: Some(l), ..Default::default() },
        ..Default::default()
    }
}

/// What a tenant may do with a namespace it lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceClaim {
    /// It does not exist and no tenant before this one lists it: create it.
    Create,
    /// It carries this tenant's label already (created or taken earlier).
    Owned,
    /// It exists without a tenant label and an admin labelled it
    /// [`ADOPTABLE_LABEL`]`=<this tenant>`.
    Adopt,
    /// Not this tenant's: left alone, reported with a reason.
    Refused { reason: &'static str, message: String },
}

impl NamespaceClaim {
    /// Whether the tenant takes (creates, keeps or adopts) the namespace.
    pub fn taken(&self) -> bool {
        !matches!(self, NamespaceClaim::Refused { .. })
    }
}

/// Whether a namespace belongs to the cluster: `default`, `kube-*` and the
/// operator's own namespace. No tenant ever takes one.
pub fn is_reserved_namespace(ns: &str, operator_namespace: &str) -> bool {
    RESERVED_NAMESPACES.contains(&ns) || ns.starts_with("kube-") || ns == operator_namespace
}

/// Order of tenants listing the same namespace that does not exist yet:
/// the tenant whose default namespace it is, then the oldest, then by name.
fn claim_order(t: &Tenant, ns: &str) -> (bool, Option<k8s_openapi::jiff::Timestamp>, String) {
    (t.default_namespace() != ns, t.creation_timestamp().map(|c| c.0), t.name_any())
}

/// Whether tenant `t` may take namespace `ns`, given the namespace as it is
/// (`None`: it does not exist) and the other tenants (`rivals`, for a
/// namespace two tenants list). In order: a reserved namespace is never
/// taken; a namespace labelled for a tenant is that tenant's; one that does
/// not exist is created by the first tenant listing it; an existing,
/// unlabelled one is taken only if it is the tenant's default namespace or
/// an admin marked it adoptable by this tenant.
pub fn claim_namespace<'a>(
    t: &Tenant,
    ns: &str,
    existing: Option<&Namespace>,
    rivals: impl IntoIterator<Item = &'a Tenant>,
    operator_namespace: &str,
) -> NamespaceClaim {
    let name = t.name_any();
    if is_reserved_namespace(ns, operator_namespace) {
        return NamespaceClaim::Refused {
            reason: "NamespaceReserved",
            message: format!("namespace {ns} is reserved for the cluster (default, kube-*, the operator's own)"),
        };
    }
    let Some(existing) = existing else {
        let first = rivals
            .into_iter()
            .filter(|r| r.uid() != t.uid() && r.name_any() != name && r.metadata.deletion_timestamp.is_none())
            .filter(|r| r.desired_namespaces().iter().any(|n| n == ns) && claim_order(r, ns) < claim_order(t, ns))
            .min_by_key(|r| claim_order(r, ns));
        return match first {
            Some(r) => NamespaceClaim::Refused {
                reason: "NamespaceClaimed",
                message: format!(
                    "namespace {ns} is claimed by tenant {}, which lists it too and came first",
                    r.name_any()
                ),
            },
            None => NamespaceClaim::Create,
        };
    };
    let labels = existing.labels();
    match labels.get(TENANT_LABEL) {
        Some(owner) if *owner == name => NamespaceClaim::Owned,
        Some(owner) => NamespaceClaim::Refused {
            reason: "NamespaceClaimed",
            message: format!("namespace {ns} belongs to tenant {owner}"),
        },
        // Its default namespace `tenant-<name>` says whose it is: an admin
        // may create it first (with labels of their own).
        None if ns == t.default_namespace() || labels.get(ADOPTABLE_LABEL) == Some(&name) => NamespaceClaim::Adopt,
        None => NamespaceClaim::Refused {
            reason: "NamespaceNotAdoptable",
            message: format!(
                "namespace {ns} exists and is not craftplane's: a cluster admin may label it {ADOPTABLE_LABEL}={name} to hand it to this tenant"
            ),
        },
    }
}

fn rbac_subject(s: &crate::api::tenant::Subject) -> Subject {
    let (kind, api_group) = match s.kind {
        SubjectKind::User => ("User", "rbac.authorization.k8s.io"),
        SubjectKind::Group => ("Group", "rbac.authorization.k8s.io"),
        SubjectKind::ServiceAccount => ("ServiceAccount", ""),
    };
    Subject {
        kind: kind.into(),
        name: s.name.clone(),
        api_group: Some(api_group.into()),
        namespace: (s.kind == SubjectKind::ServiceAccount).then(|| s.namespace.clone()).flatten(),
    }
}

/// The subjects with `role` in the tenant: owners are admins.
fn subjects_with(t: &Tenant, role: Role) -> Vec<Subject> {
    let owners = t.spec.owners.iter().filter(|_| role == Role::Admin);
    let members = t.spec.members.iter().filter(|m| m.role == role).map(|m| &m.subject);
    dedup(owners.chain(members).map(rbac_subject))
}

/// Every owner and member, once.
fn all_subjects(t: &Tenant) -> Vec<Subject> {
    dedup(t.spec.owners.iter().chain(t.spec.members.iter().map(|m| &m.subject)).map(rbac_subject))
}

fn dedup(subjects: impl Iterator<Item = Subject>) -> Vec<Subject> {
    let mut out: Vec<Subject> = Vec::new();
    for s in subjects {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
/// The tenant-facing craftplane kinds.
const KINDS: &[&str] = &["minecraftservers", "plugininstallations", "backupsnapshots", "consolecommands"];

/// What every role reads: craftplane kinds and their status, pods, logs,
/// events and the servers' objects. No Secrets (RCON passwords, store
/// credentials).
fn read_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[GROUP], KINDS, READ),
        rule(
            &[GROUP],
            &[
                "minecraftservers/status",
                "plugininstallations/status",
                "backupsnapshots/status",
                "consolecommands/status",
            ],
            &["get"],
        ),
        rule(
            &[""],
            &[
                "pods",
                "pods/log",
                "events",
                "services",
                "persistentvolumeclaims",
                "configmaps",
                "resourcequotas",
                "limitranges",
            ],
            READ,
        ),
        rule(&["events.k8s.io"], &["events"], READ),
        rule(&["apps"], &["statefulsets"], READ),
        rule(&["batch"], &["jobs"], READ),
    ]
}

fn shared_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "craftplane".into())])),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    }
}

/// The namespaced permissions of owners and `admin` members: craftplane
/// kinds in full, [`ADMINISTER`] on servers (any spec change), the rest
/// read-only; nothing that isolates them (RBAC, NetworkPolicies, quotas,
/// limits) and no Secrets.
pub fn owner_cluster_role() -> ClusterRole {
    let mut rules = vec![
        rule(&[GROUP], KINDS, &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]),
        rule(&[GROUP], &["minecraftservers"], &[ADMINISTER]),
    ];
    rules.extend(read_rules());
    shared_role(OWNER_CLUSTER_ROLE, rules)
}

/// `operator` members: read, plus update/patch servers (the admission
/// policy `craftplane-operator-fields` limits which fields), create and
/// delete BackupSnapshots and ConsoleCommands. No create or delete of
/// servers, no plugins.
pub fn operator_cluster_role() -> ClusterRole {
    let mut rules = read_rules();
    rules.extend([
        rule(&[GROUP], &["minecraftservers"], &["update", "patch"]),
        rule(&[GROUP], &["backupsnapshots", "consolecommands"], &["create", "delete"]),
    ]);
    shared_role(OPERATOR_CLUSTER_ROLE, rules)
}

/// `viewer` members: read only.
pub fn viewer_cluster_role() -> ClusterRole {
    shared_role(VIEWER_CLUSTER_ROLE, read_rules())
}

/// The ClusterRoles all tenants bind, one per role.
pub fn shared_cluster_roles() -> Vec<ClusterRole> {
    vec![owner_cluster_role(), operator_cluster_role(), viewer_cluster_role()]
}

/// Whether `name` is one of the ClusterRoles all tenants share: no
/// per-tenant object may ever be applied or deleted under such a name.
pub fn is_shared_role_name(name: &str) -> bool {
    [OWNER_CLUSTER_ROLE, OPERATOR_CLUSTER_ROLE, VIEWER_CLUSTER_ROLE].contains(&name)
}

/// Name of a tenant's own ClusterRole and ClusterRoleBinding:
/// `craftplane:tenant:<name>`. A Tenant name is a DNS subdomain (no `:`),
/// so this can never be a shared role's name (`craftplane-tenant-owner`
/// and the like), whatever the tenant is called.
pub fn tenant_cluster_role_name(t: &Tenant) -> String {
    format!("craftplane:tenant:{}", t.name_any())
}

/// The name earlier releases gave [`tenant_cluster_role_name`]
/// (`craftplane-tenant-<name>`): what the reconciler deletes on upgrade,
/// only if the Tenant owns it and it is no shared role.
pub fn legacy_tenant_cluster_role_name(t: &Tenant) -> String {
    format!("craftplane-tenant-{}", t.name_any())
}

/// Per-tenant cluster-wide read access: its own Tenant and the SKU catalog.
pub fn tenant_cluster_role(t: &Tenant) -> ClusterRole {
    ClusterRole {
        metadata: meta(t, &tenant_cluster_role_name(t), None, "rbac"),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![GROUP.into()]),
                resources: Some(vec!["tenants".into()]),
                resource_names: Some(vec![t.name_any()]),
                verbs: vec!["get".into(), "watch".into()],
                ..Default::default()
            },
            rule(&[GROUP], &["skus"], READ),
        ]),
        ..Default::default()
    }
}

/// Binds [`tenant_cluster_role`] to the owners and every member.
pub fn tenant_cluster_role_binding(t: &Tenant) -> ClusterRoleBinding {
    let name = tenant_cluster_role_name(t);
    ClusterRoleBinding {
        metadata: meta(t, &name, None, "rbac"),
        role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "ClusterRole".into(), name },
        subjects: Some(all_subjects(t)),
    }
}

fn binding(t: &Tenant, ns: &str, name: &str, role: &str, subjects: Vec<Subject>) -> RoleBinding {
    RoleBinding {
        metadata: meta(t, name, Some(ns), "rbac"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        // None rather than []: nothing for drift detection to miss.
        subjects: (!subjects.is_empty()).then_some(subjects),
    }
}

/// Binds [`OWNER_CLUSTER_ROLE`] to the owners and `admin` members in one
/// namespace.
pub fn owner_role_binding(t: &Tenant, ns: &str) -> RoleBinding {
    binding(t, ns, OWNER_BINDING, OWNER_CLUSTER_ROLE, subjects_with(t, Role::Admin))
}

/// The RoleBindings of one namespace, one per role (a role without members
/// has a binding without subjects).
pub fn role_bindings(t: &Tenant, ns: &str) -> Vec<RoleBinding> {
    vec![
        owner_role_binding(t, ns),
        binding(t, ns, OPERATOR_BINDING, OPERATOR_CLUSTER_ROLE, subjects_with(t, Role::Operator)),
        binding(t, ns, VIEWER_BINDING, VIEWER_CLUSTER_ROLE, subjects_with(t, Role::Viewer)),
    ]
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some("TCP".into()), port: Some(IntOrString::Int(port)), ..Default::default() }
}

fn udp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some("UDP".into()), port: Some(IntOrString::Int(port)), ..Default::default() }
}

fn ns_peer(ns: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".into(), ns.into())])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pods of `component` (operator or gateway) in the operator's namespace.
fn craftplane_pods(operator_namespace: &str, component: &str) -> NetworkPolicyPeer {
    use crate::api::contract::{APP_NAME, COMPONENT_LABEL, NAME_LABEL};
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                (NAME_LABEL.into(), APP_NAME.into()),
                (COMPONENT_LABEL.into(), component.into()),
            ])),
            ..Default::default()
        }),
        ..ns_peer(operator_namespace)
    }
}

fn server_pods() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app.kubernetes.io/name".into(), "minecraft-server".into())])),
        ..Default::default()
    }
}

/// Pods of backup and restore Jobs.
pub fn backup_pods() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app.kubernetes.io/name".into(), BACKUP_POD_NAME.into())])),
        ..Default::default()
    }
}

/// `app.kubernetes.io/name` of backup and restore Job pods.
pub const BACKUP_POD_NAME: &str = "craftplane-backup";

fn policy(t: &Tenant, ns: &str, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy { metadata: meta(t, name, Some(ns), "network"), spec: Some(spec) }
}

/// The NetworkPolicies of a tenant namespace:
/// - `craftplane-default-deny`: no ingress, no egress for any pod;
/// - `craftplane-game`: the game port from `network.allowedIngressCidrs`;
/// - `craftplane-operator`: game and RCON ports from the operator's pods
///   (in its namespace, `app.kubernetes.io/component: controller`);
/// - `craftplane-gateway`: the game port from the gateway's pods (in the
///   operator's namespace, `app.kubernetes.io/component: gateway`);
/// - `craftplane-backup-rcon` / `craftplane-backup-egress`: backup Jobs
///   reach their server's RCON port (save-off, save-all, save-on);
/// - `craftplane-dns`: DNS to kube-system;
/// - `craftplane-internet-egress`: HTTP(S) to public addresses (plugin
///   downloads, authentication), never to private ranges, so never to other
///   tenants' pods;
/// - `craftplane-egress`: `network.allowedEgress` (the admin's exceptions,
///   e.g. a private backup store; none by default).
pub fn network_policies(t: &Tenant, ns: &str, operator_namespace: &str) -> Vec<NetworkPolicy> {
    let all_pods = LabelSelector::default();
    let cidrs = t.spec.network.as_ref().map(|n| n.allowed_ingress_cidrs.clone()).unwrap_or_default();
    let egress_rules: Vec<NetworkPolicyEgressRule> = t
        .spec
        .network
        .iter()
        .flat_map(|n| &n.allowed_egress)
        .map(|r| NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr: r.cidr.clone(), except: None }),
                ..Default::default()
            }]),
            ports: (!r.ports.is_empty()).then(|| r.ports.iter().map(|p| tcp(*p)).collect()),
        })
        .collect();
    let game_from: Vec<NetworkPolicyPeer> = cidrs
        .iter()
        .map(|c| NetworkPolicyPeer { ip_block: Some(IPBlock { cidr: c.clone(), except: None }), ..Default::default() })
        .collect();
    let public = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: cidr.into(), except: Some(except.iter().map(|s| s.to_string()).collect()) }),
        ..Default::default()
    };
    vec![
        policy(
            t,
            ns,
            "craftplane-default-deny",
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-game",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Ingress".into()]),
                // No CIDRs: no rule, so the default deny keeps players out.
                ingress: (!game_from.is_empty()).then(|| {
                    vec![NetworkPolicyIngressRule { from: Some(game_from), ports: Some(vec![tcp(GAME_PORT)]) }]
                }),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-operator",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![craftplane_pods(operator_namespace, CONTROLLER_COMPONENT)]),
                    ports: Some(vec![tcp(GAME_PORT), tcp(RCON_PORT)]),
                }]),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-gateway",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![craftplane_pods(operator_namespace, GATEWAY_COMPONENT)]),
                    ports: Some(vec![tcp(GAME_PORT)]),
                }]),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-backup-rcon",
            NetworkPolicySpec {
                pod_selector: Some(server_pods()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer { pod_selector: Some(backup_pods()), ..Default::default() }]),
                    ports: Some(vec![tcp(RCON_PORT)]),
                }]),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-backup-egress",
            NetworkPolicySpec {
                pod_selector: Some(backup_pods()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer { pod_selector: Some(server_pods()), ..Default::default() }]),
                    ports: Some(vec![tcp(RCON_PORT)]),
                }]),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-dns",
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([("k8s-app".into(), "kube-dns".into())])),
                            ..Default::default()
                        }),
                        ..ns_peer("kube-system")
                    }]),
                    ports: Some(vec![udp(53), tcp(53)]),
                }]),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-egress",
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: Some(vec!["Egress".into()]),
                // No entries: no rule, so private ranges stay closed.
                egress: (!egress_rules.is_empty()).then_some(egress_rules),
                ..Default::default()
            },
        ),
        policy(
            t,
            ns,
            "craftplane-internet-egress",
            NetworkPolicySpec {
                pod_selector: Some(all_pods),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![public("0.0.0.0/0", &PRIVATE_V4), public("::/0", &PRIVATE_V6)]),
                    ports: Some(vec![tcp(443), tcp(80)]),
                }]),
                ..Default::default()
            },
        ),
    ]
}

/// The ResourceQuota from the tenant's quota (`None` without one). A quota
/// always caps ConsoleCommands and PluginInstallations (object counts; by
/// default [`DEFAULT_MAX_CONSOLE_COMMANDS`] and [`DEFAULT_MAX_PLUGINS`]).
pub fn resource_quota(t: &Tenant, ns: &str) -> Option<ResourceQuota> {
    let q = t.spec.quota.as_ref()?;
    let mut hard = BTreeMap::new();
    let commands = q.max_console_commands.unwrap_or(DEFAULT_MAX_CONSOLE_COMMANDS);
    hard.insert(format!("count/consolecommands.{GROUP}"), Quantity(commands.to_string()));
    let plugins = q.max_plugins.unwrap_or(DEFAULT_MAX_PLUGINS);
    hard.insert(format!("count/plugininstallations.{GROUP}"), Quantity(plugins.to_string()));
    if let Some(n) = q.max_servers {
        hard.insert(format!("count/minecraftservers.{GROUP}"), Quantity(n.to_string()));
    }
    if let Some(n) = q.max_backups {
        hard.insert(format!("count/backupsnapshots.{GROUP}"), Quantity(n.to_string()));
    }
    if let Some(c) = &q.cpu {
        hard.insert("requests.cpu".into(), Quantity(c.to_string()));
        hard.insert("limits.cpu".into(), Quantity(c.to_string()));
    }
    if let Some(m) = &q.memory {
        hard.insert("requests.memory".into(), Quantity(m.to_string()));
        hard.insert("limits.memory".into(), Quantity(m.to_string()));
    }
    if let Some(s) = &q.storage {
        hard.insert("requests.storage".into(), Quantity(s.to_string()));
    }
    if hard.is_empty() {
        return None;
    }
    Some(ResourceQuota {
        metadata: meta(t, QUOTA, Some(ns), "quota"),
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..Default::default() }),
        ..Default::default()
    })
}

/// Default requests/limits for containers that set none (so they fit a
/// quota), and per-container maxima from the quota.
pub fn limit_range(t: &Tenant, ns: &str) -> LimitRange {
    let q = t.spec.quota.as_ref();
    let mut max = BTreeMap::new();
    if let Some(c) = q.and_then(|q| q.cpu.as_ref()) {
        max.insert("cpu".to_string(), Quantity(c.to_string()));
    }
    if let Some(m) = q.and_then(|q| q.memory.as_ref()) {
        max.insert("memory".to_string(), Quantity(m.to_string()));
    }
    // Defaults never above the maximum (the API server refuses that): a
    // quota smaller than a default becomes the default.
    let capped = |key: &str, value: &str| {
        let limit = max.get(key).filter(|m| match (parse_quantity(&m.0), parse_quantity(value)) {
            (Some(m), Some(v)) => m < v,
            _ => false,
        });
        limit.cloned().unwrap_or_else(|| Quantity(value.into()))
    };
    let pair = |cpu: &str, mem: &str| {
        BTreeMap::from([("cpu".to_string(), capped("cpu", cpu)), ("memory".to_string(), capped("memory", mem))])
    };
    LimitRange {
        metadata: meta(t, LIMITS, Some(ns), "quota"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(pair("500m", "512Mi")),
                default_request: Some(pair("100m", "128Mi")),
                max: (!max.is_empty()).then_some(max),
                ..Default::default()
            }],
        }),
    }
}

/// The parameter of the admission policy in one namespace: the SKUs the
/// tenant may use (`allowedSkus`), the images it may run on any of them
/// (`allowedImages`) and on each SKU that allows more (`images.<sku>`), as
/// comma-separated lists.
pub fn policy_config_map(
    t: &Tenant,
    ns: &str,
    effective_skus: &[String],
    sku_images: &BTreeMap<String, Vec<String>>,
) -> ConfigMap {
    let mut data = BTreeMap::from([
        ("tenant".to_string(), t.name_any()),
        ("allowedSkus".to_string(), effective_skus.join(",")),
        ("allowedImages".to_string(), t.spec.allowed_images.join(",")),
    ]);
    for (sku, images) in sku_images {
        data.insert(format!("images.{sku}"), images.join(","));
    }
    ConfigMap { metadata: meta(t, POLICY_CONFIG_MAP, Some(ns), "policy"), data: Some(data), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(quota: serde_json::Value) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "t", "uid": "u"},
            "spec": {"owners": [{"kind": "User", "name": "a"}], "quota": quota}
        }))
        .unwrap()
    }

    /// (group, resource, verb) of every rule of a role.
    fn grants(r: &ClusterRole) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for rule in r.rules.iter().flatten() {
            for g in rule.api_groups.iter().flatten() {
                for res in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        out.push((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        out
    }

    fn has(r: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
        grants(r).iter().any(|(g, res, v)| g == group && res == resource && v == verb)
    }

    #[test]
    fn roles_grant_what_their_tier_promises_and_no_more() {
        let (owner, operator, viewer) = (owner_cluster_role(), operator_cluster_role(), viewer_cluster_role());
        for role in [&owner, &operator, &viewer] {
            for (g, res, v) in grants(role) {
                assert!(
                    g == GROUP || v == "get" || v == "list" || v == "watch",
                    "{g}/{res} {v}: only reads outside craftplane kinds"
                );
                assert!(res != "secrets" && !g.starts_with("rbac") && res != "tenants", "{g}/{res}");
                assert!(res != "pods/exec" && res != "pods/portforward" && res != "pods/attach", "{res}");
            }
            for read in ["minecraftservers", "backupsnapshots", "consolecommands", "plugininstallations"] {
                assert!(has(role, GROUP, read, "list"), "every role lists {read}");
            }
            assert!(has(role, "", "pods/log", "get"));
        }
        assert!(grants(&viewer).iter().all(|(_, _, v)| ["get", "list", "watch"].contains(&v.as_str())));
        for (res, verb) in [("minecraftservers", "patch"), ("backupsnapshots", "create"), ("consolecommands", "create")]
        {
            assert!(has(&operator, GROUP, res, verb), "operator {verb} {res}");
        }
        for (res, verb) in [
            ("minecraftservers", "create"),
            ("minecraftservers", "delete"),
            ("minecraftservers", "deletecollection"),
            ("minecraftservers", ADMINISTER),
            ("plugininstallations", "patch"),
            ("plugininstallations", "create"),
        ] {
            assert!(!has(&operator, GROUP, res, verb), "operator must not {verb} {res}");
        }
        assert!(has(&owner, GROUP, "minecraftservers", ADMINISTER) && has(&owner, GROUP, "minecraftservers", "delete"));
    }

    #[test]
    fn members_are_bound_by_role_and_owners_are_admins() {
        let t: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant", "metadata": {"name": "t", "uid": "u"},
            "spec": {"owners": [{"kind": "User", "name": "alice"}], "members": [
                {"kind": "User", "name": "vic", "role": "viewer"},
                {"kind": "Group", "name": "ops", "role": "operator"},
                {"kind": "ServiceAccount", "name": "bot", "namespace": "ci", "role": "operator"},
                {"kind": "User", "name": "ada", "role": "admin"},
                {"kind": "User", "name": "alice", "role": "admin"}
            ]}
        }))
        .unwrap();
        let bound: Vec<(String, String, Vec<String>)> = role_bindings(&t, "ns")
            .into_iter()
            .map(|b| {
                let names = b.subjects.unwrap_or_default().iter().map(|s| format!("{}:{}", s.kind, s.name)).collect();
                (b.metadata.name.unwrap(), b.role_ref.name, names)
            })
            .collect();
        let want =
            |b: &str, r: &str, s: &[&str]| (b.to_string(), r.to_string(), s.iter().map(|x| x.to_string()).collect());
        assert_eq!(
            bound,
            vec![
                want(OWNER_BINDING, OWNER_CLUSTER_ROLE, &["User:alice", "User:ada"]),
                want(OPERATOR_BINDING, OPERATOR_CLUSTER_ROLE, &["Group:ops", "ServiceAccount:bot"]),
                want(VIEWER_BINDING, VIEWER_CLUSTER_ROLE, &["User:vic"]),
            ]
        );
        let sa = role_bindings(&t, "ns")[1].subjects.clone().unwrap()[1].clone();
        assert_eq!((sa.namespace.as_deref(), sa.api_group.as_deref()), (Some("ci"), Some("")));
        let everyone = tenant_cluster_role_binding(&t).subjects.unwrap();
        assert_eq!(everyone.len(), 5, "owners and members read their Tenant and the SKUs, each once");
    }

    fn named(name: &str, created: &str, namespaces: &[&str]) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": created},
            "spec": {"owners": [{"kind": "User", "name": "a"}], "namespaces": namespaces}
        }))
        .unwrap()
    }

    #[test]
    fn per_tenant_rbac_never_takes_a_shared_role_name() {
        let shared: Vec<String> = shared_cluster_roles().into_iter().map(|r| r.metadata.name.unwrap()).collect();
        assert!(shared.iter().all(|n| is_shared_role_name(n)));
        for name in ["owner", "operator", "viewer", "owners", "admin", "a", &"x".repeat(56)] {
            let t = named(name, "2026-01-01T00:00:00Z", &[]);
            let role = tenant_cluster_role(&t);
            let binding = tenant_cluster_role_binding(&t);
            let rname = role.metadata.name.clone().unwrap();
            assert_eq!(rname, format!("craftplane:tenant:{name}"));
            assert!(!is_shared_role_name(&rname) && !shared.contains(&rname), "{rname}");
            assert_eq!(binding.metadata.name.as_deref(), Some(rname.as_str()));
            assert_eq!(binding.role_ref.name, rname, "binds its own role, never a shared one");
            assert_eq!(role.metadata.owner_references.unwrap()[0].uid, format!("uid-{name}"));
        }
        // What earlier releases did: the per-tenant name of `owner` was the
        // shared role (the reconciler never deletes it on upgrade).
        assert!(is_shared_role_name(&legacy_tenant_cluster_role_name(&named("owner", "2026-01-01T00:00:00Z", &[]))));
        for role in shared_cluster_roles() {
            assert!(role.metadata.owner_references.is_none(), "shared roles belong to no tenant");
            assert!(!role.metadata.labels.unwrap().contains_key(TENANT_LABEL));
        }
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn outcome(c: &NamespaceClaim) -> &'static str {
        match c {
            NamespaceClaim::Refused { reason, .. } => reason,
            NamespaceClaim::Create => "Create",
            NamespaceClaim::Owned => "Owned",
            NamespaceClaim::Adopt => "Adopt",
        }
    }

    #[test]
    fn a_tenant_takes_only_new_own_or_adoptable_namespaces() {
        let a = named("a", "2026-01-01T00:00:00Z", &["games"]);
        let claim =
            |n: &str, existing: Option<Namespace>| claim_namespace(&a, n, existing.as_ref(), [], "craftplane-system");
        assert_eq!(claim("games", None), NamespaceClaim::Create);
        assert_eq!(claim("games", Some(ns("games", &[(TENANT_LABEL, "a")]))), NamespaceClaim::Owned);
        assert_eq!(claim("games", Some(ns("games", &[(ADOPTABLE_LABEL, "a")]))), NamespaceClaim::Adopt);
        assert_eq!(outcome(&claim("games", Some(ns("games", &[])))), "NamespaceNotAdoptable");
        assert_eq!(outcome(&claim("games", Some(ns("games", &[(ADOPTABLE_LABEL, "b")])))), "NamespaceNotAdoptable");
        assert_eq!(claim("tenant-a", Some(ns("tenant-a", &[]))), NamespaceClaim::Adopt, "its default namespace");
        assert_eq!(outcome(&claim("tenant-b", Some(ns("tenant-b", &[])))), "NamespaceNotAdoptable");
        assert_eq!(outcome(&claim("tenant-a", Some(ns("tenant-a", &[(TENANT_LABEL, "b")])))), "NamespaceClaimed");
        let NamespaceClaim::Refused { message, .. } = claim("team-x", Some(ns("team-x", &[("team", "x")]))) else {
            panic!("an unlabelled namespace is taken")
        };
        assert!(message.contains("team-x") && message.contains("craftplane.io/adoptable-by=a"), "{message}");
        // Another tenant's namespace stays its own, adoptable or not.
        let theirs = ns("games", &[(TENANT_LABEL, "b"), (ADOPTABLE_LABEL, "a")]);
        let NamespaceClaim::Refused { reason, message } = claim("games", Some(theirs)) else { panic!() };
        assert_eq!(reason, "NamespaceClaimed");
        assert!(message.contains("tenant b"), "{message}");
        // Reserved: never, even marked adoptable or labelled by an earlier release.
        for r in ["kube-system", "kube-public", "kube-node-lease", "kube-anything", "default", "craftplane-system"] {
            for labels in [vec![], vec![(ADOPTABLE_LABEL, "a")], vec![(TENANT_LABEL, "a")]] {
                assert_eq!(outcome(&claim(r, Some(ns(r, &labels)))), "NamespaceReserved", "{r} {labels:?}");
            }
            assert_eq!(outcome(&claim(r, None)), "NamespaceReserved");
        }
    }

    #[test]
    fn a_namespace_two_tenants_list_is_the_first_ones() {
        let old = named("zeta", "2026-01-01T00:00:00Z", &["shared"]);
        let young = named("alpha", "2026-02-01T00:00:00Z", &["shared"]);
        let twin = named("beta", "2026-01-01T00:00:00Z", &["shared"]);
        let all = [&old, &young, &twin];
        let claim = |t: &Tenant, existing: Option<&Namespace>| claim_namespace(t, "shared", existing, all, "op");
        assert_eq!(claim(&twin, None), NamespaceClaim::Create, "oldest, first by name among equals");
        let NamespaceClaim::Refused { reason, message } = claim(&old, None) else { panic!() };
        assert_eq!((reason, message.contains("tenant beta")), ("NamespaceClaimed", true), "{message}");
        let NamespaceClaim::Refused { message, .. } = claim(&young, None) else { panic!() };
        assert!(message.contains("tenant beta"), "{message}");
        // Once it exists, the label decides: an older tenant never takes it.
        let labelled = ns("shared", &[(TENANT_LABEL, "alpha")]);
        assert_eq!(claim(&young, Some(&labelled)), NamespaceClaim::Owned);
        assert_eq!(outcome(&claim(&twin, Some(&labelled))), "NamespaceClaimed");
        // A tenant being deleted no longer competes.
        let mut leaving = twin.clone();
        leaving.metadata.deletion_timestamp = old.metadata.creation_timestamp.clone();
        assert_eq!(claim_namespace(&old, "shared", None, [&leaving, &young], "op"), NamespaceClaim::Create);
        // Its default namespace is the tenant's own, even against older tenants.
        let grabby = named("grabby", "2025-01-01T00:00:00Z", &["tenant-late"]);
        let late = named("late", "2026-06-01T00:00:00Z", &[]);
        assert_eq!(claim_namespace(&late, "tenant-late", None, [&grabby], "op"), NamespaceClaim::Create);
        assert_eq!(outcome(&claim_namespace(&grabby, "tenant-late", None, [&late], "op")), "NamespaceClaimed");
    }

    fn item(t: &Tenant) -> LimitRangeItem {
        limit_range(t, "ns").spec.unwrap().limits.remove(0)
    }

    #[test]
    fn container_defaults_never_exceed_the_quota() {
        // Found by the whole-reconcile fuzz test: a quota below the
        // defaults made the API server refuse the LimitRange.
        let small = item(&tenant(serde_json::json!({"cpu": "50m", "memory": "100Mi"})));
        let get = |m: &Option<BTreeMap<String, Quantity>>, k: &str| m.as_ref().unwrap()[k].0.clone();
        assert_eq!(get(&small.default, "cpu"), "50m");
        assert_eq!(get(&small.default_request, "cpu"), "50m");
        assert_eq!(get(&small.default, "memory"), "100Mi");
        assert_eq!(get(&small.default_request, "memory"), "100Mi");
        let big = item(&tenant(serde_json::json!({"cpu": "4", "memory": "8Gi"})));
        assert_eq!(get(&big.default, "cpu"), "500m");
        assert_eq!(get(&big.default_request, "memory"), "128Mi");
        assert_eq!(get(&big.max, "memory"), "8Gi");
        let zero = item(&tenant(serde_json::json!({"cpu": 0, "memory": "0"})));
        assert_eq!(get(&zero.default_request, "memory"), "0");
        assert_eq!(get(&zero.default, "cpu"), "0");
        let none = item(&tenant(serde_json::json!({"maxServers": 3})));
        assert_eq!(get(&none.default, "memory"), "512Mi");
        assert!(none.max.is_none());
    }

    /// Issue 30 item 8(b): ConsoleCommands and PluginInstallations are
    /// object-count quotas, with defaults when the tenant has a quota.
    #[test]
    fn quota_counts_console_commands_and_plugins() {
        let hard = |q: serde_json::Value| resource_quota(&tenant(q), "ns").unwrap().spec.unwrap().hard.unwrap();
        let set = hard(serde_json::json!({"maxServers": 2, "maxConsoleCommands": 5, "maxPlugins": 7, "maxBackups": 3}));
        assert_eq!(set["count/consolecommands.craftplane.io"].0, "5");
        assert_eq!(set["count/plugininstallations.craftplane.io"].0, "7");
        assert_eq!(set["count/backupsnapshots.craftplane.io"].0, "3");
        assert_eq!(set["count/minecraftservers.craftplane.io"].0, "2");
        let defaults = hard(serde_json::json!({}));
        assert_eq!(defaults["count/consolecommands.craftplane.io"].0, DEFAULT_MAX_CONSOLE_COMMANDS.to_string());
        assert_eq!(defaults["count/plugininstallations.craftplane.io"].0, DEFAULT_MAX_PLUGINS.to_string());
        let mut no_quota = tenant(serde_json::json!({}));
        no_quota.spec.quota = None;
        assert!(resource_quota(&no_quota, "ns").is_none(), "no quota, no ResourceQuota");
    }

    /// `network.allowedEgress`: one egress rule per entry (TCP ports, or
    /// every port when none are listed); without entries the policy has no
    /// rule, so it opens nothing.
    #[test]
    fn egress_exceptions_are_the_admins_entries_only() {
        let egress = |t: &Tenant| -> Option<Vec<NetworkPolicyEgressRule>> {
            let p = network_policies(t, "ns", "op")
                .into_iter()
                .find(|p| p.metadata.name.as_deref() == Some("craftplane-egress"));
            p.expect("craftplane-egress exists").spec.unwrap().egress
        };
        assert_eq!(egress(&tenant(serde_json::json!(null))), None);
        let mut t = tenant(serde_json::json!(null));
        t.spec.network = serde_json::from_value(serde_json::json!({
            "allowedEgress": [{"cidr": "10.20.0.5/32", "ports": [9000, 9001]}, {"cidr": "192.168.7.0/24"}]
        }))
        .unwrap();
        let rules = egress(&t).unwrap();
        let cidr = |r: &NetworkPolicyEgressRule| r.to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr.clone();
        let ports = |r: &NetworkPolicyEgressRule| {
            r.ports
                .as_ref()
                .map(|ps| ps.iter().map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap())).collect::<Vec<_>>())
        };
        assert_eq!(rules.len(), 2);
        assert_eq!(cidr(&rules[0]), "10.20.0.5/32");
        assert_eq!(
            ports(&rules[0]),
            Some(vec![("TCP".into(), IntOrString::Int(9000)), ("TCP".into(), IntOrString::Int(9001))])
        );
        assert_eq!((cidr(&rules[1]), ports(&rules[1])), ("192.168.7.0/24".into(), None));
    }
}
