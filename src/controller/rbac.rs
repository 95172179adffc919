//! The operator's cluster-wide permissions, derived from what the code does.
//!
//! Each rule names why it is there. Two sources:
//! - the API calls of the reconcilers (caches: get/list/watch; server-side
//!   apply: patch, and create for an object that does not exist yet — the
//!   API server authorizes both; `create` where the code creates; `delete`
//!   where it deletes; nothing uses `update`);
//! - the permissions the operator grants tenant owners
//!   ([`crate::resources::tenant::shared_cluster_roles`] of owners,
//!   operators and viewers, and the per-tenant ClusterRole): RBAC lets
//!   nobody grant more than they hold, and the operator has no `escalate`
//!   or `bind`.
//!
//! `cargo xtask crds` writes [`rules_yaml`] into the chart
//! (`charts/craftplane/files/operator-rules.yaml`); a test keeps the two
//! equal, another that every granted rule is held, and the e2e suite checks
//! the audit log of the operator's ServiceAccount against it.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// One rule: API groups, resources, verbs, and why.
pub struct Rule {
    pub groups: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

const READ: &[&str] = &["get", "list", "watch"];

/// What the operator holds, cluster-wide.
pub const RULES: &[Rule] = &[
    Rule {
        groups: &["craftplane.io"],
        resources: &["minecraftservers", "plugininstallations", "backupsnapshots", "consolecommands"],
        verbs: &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
        why: "watched and finalized (patch); scheduled snapshots created, pruned by retention (delete); console commands adopted by their server (patch) and deleted after their TTL; all of it granted to owners",
    },
    Rule {
        groups: &["craftplane.io"],
        resources: &["minecraftservers"],
        verbs: &["administer"],
        why: "custom verb: any server field may change (the operator-fields admission policy lets only its holders past); granted to owners",
    },
    Rule { groups: &["craftplane.io"], resources: &["skus"], verbs: READ, why: "watched; read granted to owners" },
    Rule {
        groups: &["craftplane.io"],
        resources: &["tenants"],
        verbs: &["get", "list", "watch", "patch"],
        why: "watched; the finalizer that keeps worlds (patch)",
    },
    Rule {
        groups: &["craftplane.io"],
        resources: &[
            "minecraftservers/status",
            "plugininstallations/status",
            "backupsnapshots/status",
            "consolecommands/status",
        ],
        verbs: &["get", "patch"],
        why: "status written with server-side apply; get granted to owners",
    },
    Rule {
        groups: &["craftplane.io"],
        resources: &["skus/status", "tenants/status"],
        verbs: &["patch"],
        why: "status written with server-side apply",
    },
    Rule {
        groups: &["craftplane.io"],
        resources: &[
            "minecraftservers/finalizers",
            "plugininstallations/finalizers",
            "backupsnapshots/finalizers",
            "tenants/finalizers",
        ],
        verbs: &["update"],
        why: "children's owner references block their owner's deletion (needed where OwnerReferencesPermissionEnforcement is on)",
    },
    Rule {
        groups: &["apiextensions.k8s.io"],
        resources: &["customresourcedefinitions"],
        verbs: READ,
        why: "waits for its CRDs to be Established",
    },
    Rule {
        groups: &["apps"],
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "a server's workload (server-side apply); removed by garbage collection",
    },
    Rule {
        groups: &[""],
        resources: &["services", "configmaps"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "game Services (the RCON Service of an earlier release is deleted), server and policy ConfigMaps (removed with a tenant namespace)",
    },
    Rule {
        groups: &[""],
        resources: &["persistentvolumeclaims"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "the world volume; released on Retain (patch), removed by garbage collection on Delete",
    },
    Rule {
        groups: &[""],
        resources: &["secrets"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "RCON Secrets (created once, never reverted), store credentials read in the operator namespace and copied next to backup and restore Jobs while they run",
    },
    Rule {
        groups: &[""],
        resources: &["pods", "pods/log", "events", "resourcequotas", "limitranges"],
        verbs: READ,
        why: "server pods watched; all of it granted to owners",
    },
    Rule {
        groups: &[""],
        resources: &["pods"],
        verbs: &["delete"],
        why: "a scheduled task's restart: the server's pod is deleted with its grace period (the StatefulSet starts it again)",
    },
    Rule {
        groups: &[""],
        resources: &["resourcequotas", "limitranges"],
        verbs: &["create", "patch", "delete"],
        why: "a tenant namespace's quota and limits (removed with the namespace or the quota)",
    },
    Rule {
        groups: &[""],
        resources: &["namespaces"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "tenant namespaces (never deleted: a released namespace keeps its worlds)",
    },
    Rule {
        groups: &["batch"],
        resources: &["jobs"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "backup and restore Jobs, deleted once their result is recorded; read granted to owners",
    },
    Rule {
        groups: &["networking.k8s.io"],
        resources: &["networkpolicies"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "a tenant namespace's isolation",
    },
    Rule {
        groups: &["rbac.authorization.k8s.io"],
        resources: &["rolebindings"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "owners bound in each tenant namespace",
    },
    Rule {
        groups: &["rbac.authorization.k8s.io"],
        resources: &["clusterroles", "clusterrolebindings"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "the owners' ClusterRole and each tenant's read access, removed by garbage collection; a tenant's ClusterRole and binding of an earlier release (craftplane-tenant-<name>, owned by the Tenant) deleted on upgrade",
    },
    Rule {
        groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "Events of state changes (events.k8s.io/v1); read granted to owners",
    },
];

/// [`RULES`] as Kubernetes PolicyRules.
pub fn policy_rules() -> Vec<PolicyRule> {
    RULES
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(r.groups.iter().map(|g| g.to_string()).collect()),
            resources: Some(r.resources.iter().map(|g| g.to_string()).collect()),
            verbs: r.verbs.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// Whether [`RULES`] allow `verb` on `group`/`resource` (a subresource as
/// `pods/log`).
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    RULES.iter().any(|r| r.groups.contains(&group) && r.resources.contains(&resource) && r.verbs.contains(&verb))
}

/// The chart's ClusterRole rules (`charts/craftplane/files/operator-rules.yaml`).
pub fn rules_yaml() -> String {
    let mut out = String::from(
        "# Generated from src/controller/rbac.rs by `cargo xtask crds`; do not edit.\n# The ClusterRole of the operator (templates/rbac.yaml).\n",
    );
    for r in RULES {
        let list = |items: &[&str]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
        out.push_str(&format!(
            "# {}\n- apiGroups: [{}]\n  resources: [{}]\n  verbs: [{}]\n",
            r.why,
            list(r.groups),
            list(r.resources),
            list(r.verbs)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_grants_what_the_code_needs() {
        let in_chart = include_str!("../../charts/craftplane/files/operator-rules.yaml");
        assert!(
            in_chart == rules_yaml(),
            "charts/craftplane/files/operator-rules.yaml is stale: run `cargo xtask crds` and commit the result"
        );
    }

    /// RBAC refuses to create a Role granting what its creator lacks.
    #[test]
    fn everything_granted_to_tenants_is_held() {
        let t: crate::api::Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "acme"}, "spec": {"owners": []}
        }))
        .unwrap();
        let mut roles = crate::resources::tenant::shared_cluster_roles();
        roles.push(crate::resources::tenant::tenant_cluster_role(&t));
        assert!(roles.len() >= 4, "owner, operator, viewer and the tenant's own");
        for rule in roles.iter().flat_map(|r| r.rules.clone().unwrap_or_default()) {
            for g in rule.api_groups.iter().flatten() {
                for res in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        assert!(allows(g, res, v), "owners get {v} on {g}/{res}, which the operator does not hold");
                    }
                }
            }
        }
    }

    #[test]
    fn no_update_and_no_namespace_deletion() {
        assert!(!allows("", "namespaces", "delete"), "tenant namespaces are never deleted");
        assert!(!allows("", "secrets", "update"));
        assert!(!allows("apps", "statefulsets", "delete"));
    }
}
