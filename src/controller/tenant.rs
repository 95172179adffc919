//! The Tenant reconciler: namespaces, RBAC, NetworkPolicies, quota, limits
//! and the admission policy's parameter, for every tenant namespace.
//!
//! Deletion never deletes worlds: a finalizer blocks it while any
//! MinecraftServer exists in the tenant's namespaces; afterwards the owned
//! RBAC/policy objects are garbage-collected and the namespaces (with any
//! retained world volumes) are left for the cluster admin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use tracing::{info, warn};

use futures::future::BoxFuture;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;

use super::conditions::{self, Cond};
use super::context::{Context, delete_owned};
use super::error::{Error, Result};
use super::server::apply_child;
use super::watches::{Events, Watches, refs, run};
use crate::api::common::{Quantity, parse_quantity};
use crate::api::tenant::{ADOPTABLE_LABEL, TENANT_LABEL, Tenant, TenantStatus, TenantUsage};
use crate::api::{MinecraftServer, Sku};
use crate::resources::FIELD_MANAGER;
use crate::resources::tenant::{self as build, NamespaceClaim};

/// Finalizer that blocks deletion while the tenant has servers.
pub const FINALIZER: &str = "craftplane.io/tenant-protection";

/// Reconciles one Tenant.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let uid = tenant.uid().unwrap_or_default();
    let r = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Event::Apply(t) => match apply(t.clone(), &ctx).await {
                Err(e) if e.rejected().is_some() => report_rejected(&t, &ctx, &e).await,
                r => r,
            },
            Event::Cleanup(t) => cleanup(t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if r.is_ok() {
        ctx.succeeded(&uid);
    }
    r
}

/// Retries with backoff.
pub fn error_policy(tenant: Arc<Tenant>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&tenant.uid().unwrap_or_default());
    warn!(tenant = %tenant.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// SKUs a tenant may use now: allowed by its spec and available.
pub fn effective_skus<'a>(t: &Tenant, skus: impl IntoIterator<Item = &'a Sku>) -> Vec<String> {
    let mut out: Vec<String> =
        skus.into_iter().filter(|s| s.spec.available && t.allows_sku(&s.name_any())).map(|s| s.name_any()).collect();
    out.sort();
    out
}

async fn servers_in(ctx: &Context, ns: &str) -> Result<Vec<MinecraftServer>> {
    let api: Api<MinecraftServer> = Api::namespaced(ctx.client.clone(), ns);
    Ok(api.list(&ListParams::default()).await?.items)
}

async fn apply(t: Arc<Tenant>, ctx: &Context) -> Result<Action> {
    if !super::context::store_ready(&ctx.skus) {
        return Ok(Action::requeue(std::time::Duration::from_millis(500)));
    }
    let c = &ctx.client;
    let name = t.name_any();
    let cr_api: Api<ClusterRole> = Api::all(c.clone());
    let crb_api: Api<ClusterRoleBinding> = Api::all(c.clone());
    let ns_api: Api<Namespace> = Api::all(c.clone());

    for role in build::shared_cluster_roles() {
        let rname = role.metadata.name.clone().unwrap_or_default();
        apply_child(&cr_api, cr_api.get_opt(&rname).await?, role).await?;
    }
    let tcr = build::tenant_cluster_role(&t);
    let tcr_name = tcr.metadata.name.clone().unwrap_or_default();
    if build::is_shared_role_name(&tcr_name) {
        // Cannot happen with `craftplane:tenant:<name>`; a guard should the
        // naming ever change: a tenant's role must never replace a shared one.
        return Err(Error::Blocked(format!("per-tenant ClusterRole {tcr_name} would replace a shared role")));
    }
    apply_child(&cr_api, cr_api.get_opt(&tcr_name).await?, tcr).await?;
    apply_child(&crb_api, crb_api.get_opt(&tcr_name).await?, build::tenant_cluster_role_binding(&t)).await?;
    delete_legacy_rbac(&t, &cr_api, &crb_api).await?;

    let skus = ctx.skus.state();
    let effective = effective_skus(&t, skus.iter().map(|s| s.as_ref()));
    // The images each of those SKUs allows (the admission policy's parameter).
    let sku_images: BTreeMap<String, Vec<String>> = skus
        .iter()
        .filter(|s| effective.contains(&s.name_any()) && !s.spec.allowed_images.is_empty())
        .map(|s| (s.name_any(), s.spec.allowed_images.clone()))
        .collect();
    let old = t.status.clone().unwrap_or_default();
    let rivals = ctx.tenants.state();
    let mut taken = Vec::new();
    let mut managed = Vec::new();
    let mut refused: Vec<(&str, String)> = Vec::new();
    let mut retained = Vec::new();

    for ns in &t.desired_namespaces() {
        let mut existing = ns_api.get_opt(ns).await?;
        let rivals = rivals.iter().map(|r| r.as_ref());
        match build::claim_namespace(&t, ns, existing.as_ref(), rivals, &ctx.settings.operator_namespace) {
            NamespaceClaim::Refused { reason, message } => {
                refused.push((reason, message));
                continue;
            }
            // A create, not an apply: of two operators (shards) creating it
            // at once one wins; the other sees the winner's label next time.
            NamespaceClaim::Create => {
                let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                existing = Some(ns_api.create(&pp, &build::namespace(&t, ns)).await?);
                info!(tenant = %name, namespace = %ns, "namespace created");
            }
            NamespaceClaim::Adopt => info!(tenant = %name, namespace = %ns, "adopting a namespace marked adoptable"),
            NamespaceClaim::Owned => {}
        }
        apply_child(&ns_api, existing, build::namespace(&t, ns)).await?;
        apply_namespace_objects(&t, ctx, ns, &effective, &sku_images).await?;
        taken.push(ns.clone());
        managed.push(ns.clone());
    }
    // Namespaces no longer taken (dropped from the spec, or refused now):
    // released only when empty, and only if they carry this tenant's label.
    for ns in old.namespaces.iter().filter(|n| !taken.contains(n)) {
        let Some(owned) = owned_namespace(ctx, ns, &name).await? else { continue };
        let servers = servers_in(ctx, ns).await?;
        if servers.is_empty() {
            release_namespace(&t, ctx, &owned).await?;
            info!(tenant = %name, namespace = %ns, "namespace released");
        } else {
            retained.push(format!("{ns} ({} servers)", servers.len()));
            managed.push(ns.clone());
        }
    }

    let usage = usage(ctx, &managed).await?;
    let mut conds = match refused.first() {
        None => conditions::kstatus(true, false, "Reconciled", &format!("{} namespace(s) ready", managed.len())),
        Some((reason, _)) => {
            let messages: Vec<&str> = refused.iter().map(|(_, m)| m.as_str()).collect();
            conditions::kstatus(false, true, reason, &format!("left alone: {}", messages.join("; ")))
        }
    };
    conds.push(if retained.is_empty() {
        Cond::new("NamespacesRetained", false, "None", "")
    } else {
        Cond::new(
            "NamespacesRetained",
            true,
            "NamespaceInUse",
            format!(
                "removed from spec.namespaces but still holding servers, so still managed: {}; delete the servers to release them",
                retained.join(", ")
            ),
        )
    });
    let status = TenantStatus {
        namespaces: managed,
        usage: Some(usage),
        effective_skus: effective,
        observed_generation: t.metadata.generation,
        conditions: conditions::merge(&old.conditions, &conds, t.metadata.generation, Timestamp::now()),
    };
    write_status(&t, ctx, &old, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

async fn apply_namespace_objects(
    t: &Tenant,
    ctx: &Context,
    ns: &str,
    effective: &[String],
    sku_images: &BTreeMap<String, Vec<String>>,
) -> Result<()> {
    let c = &ctx.client;
    let rb: Api<RoleBinding> = Api::namespaced(c.clone(), ns);
    for binding in build::role_bindings(t, ns) {
        let bname = binding.metadata.name.clone().unwrap_or_default();
        apply_child(&rb, rb.get_opt(&bname).await?, binding).await?;
    }
    let np: Api<NetworkPolicy> = Api::namespaced(c.clone(), ns);
    for p in build::network_policies(t, ns, &ctx.settings.operator_namespace) {
        let pname = p.metadata.name.clone().unwrap_or_default();
        apply_child(&np, np.get_opt(&pname).await?, p).await?;
    }
    let rq: Api<ResourceQuota> = Api::namespaced(c.clone(), ns);
    let observed = rq.get_opt(build::QUOTA).await?;
    match build::resource_quota(t, ns) {
        Some(q) => {
            apply_child(&rq, observed, q).await?;
        }
        None if observed.is_some() => {
            rq.delete(build::QUOTA, &DeleteParams::default()).await?;
        }
        None => {}
    }
    let lr: Api<LimitRange> = Api::namespaced(c.clone(), ns);
    apply_child(&lr, lr.get_opt(build::LIMITS).await?, build::limit_range(t, ns)).await?;
    let cm: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let policy = build::policy_config_map(t, ns, effective, sku_images);
    apply_child(&cm, cm.get_opt(build::POLICY_CONFIG_MAP).await?, policy).await?;
    Ok(())
}

/// Deletes the per-tenant ClusterRole and ClusterRoleBinding of earlier
/// releases (`craftplane-tenant-<name>`): only objects this Tenant owns
/// (owner reference with its UID), and never a shared role's name (for a
/// tenant called `owner` that name is the shared role, which the shared
/// roles' apply above has taken back).
async fn delete_legacy_rbac(t: &Tenant, cr_api: &Api<ClusterRole>, crb_api: &Api<ClusterRoleBinding>) -> Result<()> {
    let legacy = build::legacy_tenant_cluster_role_name(t);
    let uid = t.uid().unwrap_or_default();
    if delete_owned(crb_api, &legacy, &uid).await? {
        info!(tenant = %t.name_any(), name = %legacy, "deleted the ClusterRoleBinding of an earlier release");
    }
    if !build::is_shared_role_name(&legacy) && delete_owned(cr_api, &legacy, &uid).await? {
        info!(tenant = %t.name_any(), name = %legacy, "deleted the ClusterRole of an earlier release");
    }
    Ok(())
}

/// The namespace if it exists and carries `tenant`'s label: the only
/// namespaces a tenant's release or deletion touches.
async fn owned_namespace(ctx: &Context, ns: &str, tenant: &str) -> Result<Option<Namespace>> {
    let n = Api::<Namespace>::all(ctx.client.clone()).get_opt(ns).await?;
    Ok(n.filter(|n| n.labels().get(TENANT_LABEL).is_some_and(|l| l == tenant)))
}

/// Removes the tenant label from a namespace, if it is still the one read
/// (a resourceVersion precondition: never a label someone set meanwhile),
/// and marks it adoptable by the same tenant: listed again, it is taken
/// back; by no other tenant unless an admin relabels it.
async fn unlabel(ctx: &Context, ns: &Namespace) -> Result<()> {
    let tenant = ns.labels().get(TENANT_LABEL).cloned();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": ns.metadata.resource_version,
        "labels": {TENANT_LABEL: null, ADOPTABLE_LABEL: tenant}
    }});
    match Api::<Namespace>::all(ctx.client.clone())
        .patch(&ns.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        // Gone, or changed since: the next reconcile looks again.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// Removes the tenant's objects (those it owns) from a namespace that
/// carries its label and unlabels it. The namespace itself (and anything
/// else in it) stays.
async fn release_namespace(t: &Tenant, ctx: &Context, namespace: &Namespace) -> Result<()> {
    let c = &ctx.client;
    let ns = &namespace.name_any();
    let uid = t.uid().unwrap_or_default();
    for binding in [build::OWNER_BINDING, build::OPERATOR_BINDING, build::VIEWER_BINDING] {
        delete_owned(&Api::<RoleBinding>::namespaced(c.clone(), ns), binding, &uid).await?;
    }
    for p in build::network_policies(t, ns, &ctx.settings.operator_namespace) {
        let pname = p.metadata.name.unwrap_or_default();
        delete_owned(&Api::<NetworkPolicy>::namespaced(c.clone(), ns), &pname, &uid).await?;
    }
    delete_owned(&Api::<ResourceQuota>::namespaced(c.clone(), ns), build::QUOTA, &uid).await?;
    delete_owned(&Api::<LimitRange>::namespaced(c.clone(), ns), build::LIMITS, &uid).await?;
    delete_owned(&Api::<ConfigMap>::namespaced(c.clone(), ns), build::POLICY_CONFIG_MAP, &uid).await?;
    unlabel(ctx, namespace).await
}

/// Usage across the tenant's namespaces: servers counted directly, the
/// rest from the ResourceQuotas' `status.used`.
async fn usage(ctx: &Context, namespaces: &[String]) -> Result<TenantUsage> {
    let mut servers = 0;
    let (mut cpu, mut memory, mut storage, mut backups) = (0.0, 0.0, 0.0, 0.0);
    let mut seen = BTreeSet::new();
    for ns in namespaces {
        if !seen.insert(ns) {
            continue;
        }
        servers += servers_in(ctx, ns).await?.len() as i32;
        let rq: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), ns);
        if let Some(used) = rq.get_opt(build::QUOTA).await?.and_then(|q| q.status).and_then(|s| s.used) {
            let get = |k: &str| used.get(k).and_then(|q| parse_quantity(&q.0)).unwrap_or(0.0);
            cpu += get("limits.cpu");
            memory += get("limits.memory");
            storage += get("requests.storage");
            backups += get("count/backupsnapshots.craftplane.io");
        }
    }
    Ok(TenantUsage {
        servers,
        cpu: Some(Quantity::new(format_cpu(cpu))),
        memory: Some(Quantity::new(format_bytes(memory))),
        storage: Some(Quantity::new(format_bytes(storage))),
        backups: backups as i32,
    })
}

fn format_cpu(cores: f64) -> String {
    let milli = (cores * 1000.0).round() as i64;
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

fn format_bytes(b: f64) -> String {
    let b = b.round() as i64;
    let mi = 1024 * 1024;
    if b % (1024 * mi) == 0 {
        format!("{}Gi", b / (1024 * mi))
    } else if b % mi == 0 {
        format!("{}Mi", b / mi)
    } else {
        b.to_string()
    }
}

/// An object built from the spec was refused by the API server (e.g. by a
/// cluster admin's admission policy): Stalled with the API's message;
/// checked again at the next resync or spec change.
async fn report_rejected(t: &Tenant, ctx: &Context, e: &Error) -> Result<Action> {
    let old = t.status.clone().unwrap_or_default();
    let message = format!("the API server refused an object built from this spec: {}", e.rejected().unwrap_or(""));
    warn!(tenant = %t.name_any(), error = %message, "spec rejected");
    let status = TenantStatus {
        observed_generation: t.metadata.generation,
        conditions: conditions::merge(
            &old.conditions,
            &conditions::kstatus(false, true, "ChildRejected", &message),
            t.metadata.generation,
            Timestamp::now(),
        ),
        ..old.clone()
    };
    write_status(t, ctx, &old, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

async fn write_status(t: &Tenant, ctx: &Context, old: &TenantStatus, new: TenantStatus) -> Result<()> {
    if *old == new {
        return Ok(());
    }
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant", "status": new});
    api.patch_status(&t.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Deletion is blocked while servers exist; then owned objects are
/// garbage-collected and the namespaces are kept.
async fn cleanup(t: Arc<Tenant>, ctx: &Context) -> Result<Action> {
    let old = t.status.clone().unwrap_or_default();
    let mut listed: BTreeSet<String> = old.namespaces.iter().cloned().collect();
    listed.extend(t.desired_namespaces());
    // Only namespaces that carry this tenant's label: one it listed but
    // never took (another tenant's, an unmarked one) is not touched.
    let mut namespaces = Vec::new();
    for ns in &listed {
        namespaces.extend(owned_namespace(ctx, ns, &t.name_any()).await?);
    }
    let mut blocking = Vec::new();
    for namespace in &namespaces {
        let ns = &namespace.name_any();
        let n = servers_in(ctx, ns).await?.len();
        if n > 0 {
            blocking.push(format!("{ns}: {n}"));
        }
    }
    if !blocking.is_empty() {
        let message = format!(
            "deletion waits until every MinecraftServer of the tenant is deleted (servers left: {}); worlds are never deleted with a tenant",
            blocking.join(", ")
        );
        let mut status = old.clone();
        status.conditions = conditions::merge(
            &old.conditions,
            &conditions::kstatus(false, true, "DeletionBlocked", &message),
            t.metadata.generation,
            Timestamp::now(),
        );
        write_status(&t, ctx, &old, status).await?;
        return Err(Error::Blocked(message));
    }
    for namespace in &namespaces {
        unlabel(ctx, namespace).await?;
    }
    info!(tenant = %t.name_any(), "tenant deleted; its namespaces are kept");
    Ok(Action::await_change())
}

/// The Tenant controller: its own kind; the objects it creates (they carry
/// the tenant label); the owners' ClusterRole every tenant binds; SKU
/// changes (the effective SKUs) and server changes (the usage).
pub fn controller(w: &Watches, ctx: Arc<Context>, own: Events<Tenant>) -> BoxFuture<'static, ()> {
    fn by_label<K: kube::Resource>(o: &K) -> Option<ObjectRef<Tenant>> {
        Some(ObjectRef::new(o.meta().labels.as_ref()?.get(TENANT_LABEL)?))
    }
    let labelled = w.all.clone().labels(TENANT_LABEL);
    let adoptable = w.all.clone().labels(ADOPTABLE_LABEL);
    let (for_roles, for_skus, for_servers) = (ctx.tenants.clone(), ctx.tenants.clone(), ctx.tenants.clone());
    let c = Controller::for_stream(own, ctx.tenants.clone())
        .watches_stream(w.trigger::<Namespace>(&labelled, "Namespace"), |o| by_label(&o))
        // A namespace an admin marks adoptable: the tenant it names may take it.
        .watches_stream(w.trigger::<Namespace>(&adoptable, "Namespace"), |o| {
            Some(ObjectRef::new(o.labels().get(ADOPTABLE_LABEL)?))
        })
        .watches_stream(w.trigger::<RoleBinding>(&labelled, "RoleBinding"), |o| by_label(&o))
        .watches_stream(w.trigger::<NetworkPolicy>(&labelled, "NetworkPolicy"), |o| by_label(&o))
        .watches_stream(w.trigger::<ResourceQuota>(&labelled, "ResourceQuota"), |o| by_label(&o))
        .watches_stream(w.trigger::<LimitRange>(&labelled, "LimitRange"), |o| by_label(&o))
        .watches_stream(w.trigger::<ConfigMap>(&labelled, "ConfigMap"), |o| by_label(&o))
        .watches_stream(w.trigger::<ClusterRoleBinding>(&labelled, "ClusterRoleBinding"), |o| by_label(&o))
        // The role tiers' ClusterRoles all tenants bind (by name, whatever
        // labels they carry), and per-tenant ClusterRoles (tenant label).
        .watches_stream(w.trigger::<ClusterRole>(&w.children, "ClusterRole"), move |o| {
            if build::is_shared_role_name(&o.name_any()) {
                refs(&for_roles, |_| true)
            } else {
                by_label(&o).into_iter().collect()
            }
        })
        .watches_stream(w.trigger::<Sku>(&w.selected, "Sku"), move |_| refs(&for_skus, |_| true))
        .watches_stream(w.trigger::<MinecraftServer>(&w.all, "MinecraftServer"), move |s| {
            let ns = s.namespace()?;
            refs(&for_servers, |t| {
                t.status.as_ref().is_some_and(|st| st.namespaces.contains(&ns)) || t.desired_namespaces().contains(&ns)
            })
            .into_iter()
            .next()
        });
    run(c, w, w.config(false), "Tenant", reconcile, error_policy, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_usage() {
        assert_eq!(format_cpu(2.0), "2");
        assert_eq!(format_cpu(1.5), "1500m");
        assert_eq!(format_bytes(4.0 * 1024.0 * 1024.0 * 1024.0), "4Gi");
        assert_eq!(format_bytes(512.0 * 1024.0 * 1024.0), "512Mi");
        assert_eq!(format_bytes(0.0), "0Gi");
    }
}
