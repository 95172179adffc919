//! The chart's RBAC against what the operator did: every write the
//! operator sent, from the API server's audit log, compared with the
//! ClusterRole it held (generated from src/controller/rbac.rs). Runs over
//! the e2e suite (the chart's ServiceAccount) and over the integration
//! tests (the operator users bound to the same rules, see
//! `cluster::operator_rbac`). Fails on a write that was refused (a verb the
//! chart lacks) and on a write verb the chart grants that nothing used —
//! unless owners are granted it (the operator must hold what it grants) or
//! the other suite's list names where it is used.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::e2e::Kube;

/// The operator pods' identity (chart: ServiceAccount `craftplane`).
pub const USER: &str = "system:serviceaccount:craftplane-system:craftplane";
const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Granted writes the e2e suite may not reach, with the code path that uses
/// them (and its integration test where there is one).
pub const E2E_ELSEWHERE: &[(&str, &str, &str, &str)] = &[
    (
        "",
        "services",
        "delete",
        "the RCON Service of an earlier release is deleted on upgrade (tests/server_reconcile.rs)",
    ),
    (
        "",
        "secrets",
        "patch",
        "a server's own RCON Secret whose labels or owner reference were edited is re-applied (tests/drift.rs); new Secrets are created, never applied over",
    ),
    ("", "configmaps", "delete", "tenant: a released namespace loses its policy ConfigMap"),
    ("", "resourcequotas", "delete", "a tenant's quota removed from its spec, or its namespace released"),
    ("", "limitranges", "delete", "tenant: a released namespace loses its limits"),
    ("networking.k8s.io", "networkpolicies", "delete", "tenant: a released namespace loses its policies"),
    ("rbac.authorization.k8s.io", "rolebindings", "delete", "tenant: a released namespace loses the owners' binding"),
    ("craftplane.io", "tenants", "patch", "tenant: finalizer added and removed"),
    (
        "rbac.authorization.k8s.io",
        "clusterroles",
        "delete",
        "tenant: the per-tenant ClusterRole of an earlier release is deleted on upgrade (tests/tenant.rs)",
    ),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "delete", "as above, its ClusterRoleBinding"),
    ("events.k8s.io", "events", "patch", "kube-runtime's Recorder: an Event repeated within its series"),
    (
        "craftplane.io",
        "minecraftservers/finalizers",
        "update",
        "owner references that block deletion, where OwnerReferencesPermissionEnforcement is on (not here)",
    ),
    ("craftplane.io", "plugininstallations/finalizers", "update", "as above"),
    ("craftplane.io", "backupsnapshots/finalizers", "update", "as above"),
    ("craftplane.io", "tenants/finalizers", "update", "as above"),
];

/// Granted writes the integration tests do not reach (their pods are kwok's
/// and no real node runs), with where they are used.
pub const INTEGRATION_ELSEWHERE: &[(&str, &str, &str, &str)] = &[
    ("", "pods", "delete", "a scheduled task's restart of a real pod (e2e suite)"),
    ("events.k8s.io", "events", "patch", "kube-runtime's Recorder: an Event repeated within its series (timing)"),
    // Releasing a namespace (tenant.rs release_namespace) deletes the
    // tenant's objects there; the integration runs leave them to garbage
    // collection (Tenant deleted) and drop no populated namespace: a gap.
    ("", "configmaps", "delete", "tenant release: the policy ConfigMap (not yet reached by a test)"),
    ("", "limitranges", "delete", "tenant release: the limits (not yet reached by a test)"),
    ("", "resourcequotas", "delete", "tenant release, or a quota removed (not yet reached by a test)"),
    ("networking.k8s.io", "networkpolicies", "delete", "tenant release: the policies (not yet reached by a test)"),
    ("rbac.authorization.k8s.io", "rolebindings", "delete", "tenant release: the bindings (not yet reached by a test)"),
    ("craftplane.io", "minecraftservers/finalizers", "update", "not reached here either, see E2E_ELSEWHERE"),
    ("craftplane.io", "plugininstallations/finalizers", "update", "as above"),
    ("craftplane.io", "backupsnapshots/finalizers", "update", "as above"),
    ("craftplane.io", "tenants/finalizers", "update", "as above"),
];

/// (group, resource[/subresource], verb)
type Use = (String, String, String);

/// Checks the writes of `users` in `audit_log` against the ClusterRole
/// `role` and the owners' ClusterRole, both read from the cluster.
pub fn check(
    kube: &Kube,
    audit_log: &Path,
    users: &[&str],
    role: &str,
    elsewhere: &[(&str, &str, &str, &str)],
) -> Result<()> {
    let text = std::fs::read_to_string(audit_log).with_context(|| format!("read {}", audit_log.display()))?;
    let mut used: BTreeSet<Use> = BTreeSet::new();
    let mut refused: BTreeSet<Use> = BTreeSet::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if !users.contains(&e["user"]["username"].as_str().unwrap_or(""))
            || !WRITES.contains(&e["verb"].as_str().unwrap_or(""))
        {
            continue;
        }
        let o = &e["objectRef"];
        let mut resource = o["resource"].as_str().unwrap_or("").to_string();
        if let Some(sub) = o["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let u =
            (o["apiGroup"].as_str().unwrap_or("").to_string(), resource, e["verb"].as_str().unwrap_or("").to_string());
        // Refused by authorization (RBAC), not by admission or a quota,
        // which answer 403 too.
        if e["annotations"]["authorization.k8s.io/decision"] == "forbid" {
            refused.insert(u);
        } else {
            used.insert(u);
        }
    }
    // A server-side apply that creates its object is audited as a patch,
    // and the API server authorizes it as create too.
    let applied: Vec<Use> =
        used.iter().filter(|(_, _, v)| v == "patch").map(|(g, r, _)| (g.clone(), r.clone(), "create".into())).collect();
    used.extend(applied);
    if used.is_empty() {
        bail!("the audit log has no write of {users:?}: is it being written?");
    }
    // What the chart installed.
    let role: serde_json::Value = serde_json::from_str(&kube.run(&["get", "clusterrole", role, "-o", "json"])?)?;
    let owners: serde_json::Value =
        serde_json::from_str(&kube.run(&["get", "clusterrole", "craftplane-tenant-owner", "-o", "json"])?)?;
    let expand = |role: &serde_json::Value| -> BTreeSet<Use> {
        let mut out = BTreeSet::new();
        for r in role["rules"].as_array().into_iter().flatten() {
            for g in r["apiGroups"].as_array().into_iter().flatten() {
                for res in r["resources"].as_array().into_iter().flatten() {
                    for v in r["verbs"].as_array().into_iter().flatten() {
                        out.insert((
                            g.as_str().unwrap_or("").into(),
                            res.as_str().unwrap_or("").into(),
                            v.as_str().unwrap_or("").into(),
                        ));
                    }
                }
            }
        }
        out
    };
    let granted = expand(&role);
    // A write the role grants can be refused only while the API server's
    // authorizer has not loaded the RBAC objects yet (right after it
    // starts: tests/apiserver_restart.rs restarts it under a running
    // operator). Not a gap in the rules: if the grant never took effect,
    // the write is never used below and fails there as unused.
    let (transient, refused): (BTreeSet<Use>, BTreeSet<Use>) = refused.into_iter().partition(|u| granted.contains(u));
    if !refused.is_empty() {
        bail!("the chart's RBAC refused writes the operator needs: {refused:?}");
    }
    if !transient.is_empty() {
        println!("rbac: note writes refused although granted (an API server starting up): {transient:?}");
    }
    let for_owners = expand(&owners);
    let elsewhere: BTreeSet<Use> =
        elsewhere.iter().map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string())).collect();
    let unused: Vec<&Use> = granted
        .iter()
        .filter(|(_, _, v)| WRITES.contains(&v.as_str()))
        .filter(|u| !used.contains(*u) && !for_owners.contains(*u) && !elsewhere.contains(*u))
        .collect();
    if !unused.is_empty() {
        bail!(
            "the chart grants writes the operator never sent (and owners are not granted): {unused:?}\nused: {used:?}"
        );
    }
    let stale: Vec<&Use> = elsewhere.iter().filter(|u| !granted.contains(*u)).collect();
    if !stale.is_empty() {
        bail!("e2e_rbac's list of writes used elsewhere names writes the chart no longer grants: {stale:?}");
    }
    println!(
        "rbac: ok   {} kinds of write sent by {users:?}, none refused; every granted write used here, granted to owners, or used by a named test ({} such)",
        used.len(),
        elsewhere.iter().filter(|u| !used.contains(*u)).count()
    );
    Ok(())
}
