//! Drift: every child of a MinecraftServer and of a Tenant that is edited
//! or deleted by hand is restored promptly (from its watch event, well
//! before the periodic resync), and restoring writes nothing once done.

mod common;

use std::time::Duration;

use common::fixture::{Fixture, tail};
use common::operator::{Operator, SHARD_LABEL, operator_writes};
use craftplane::api::Tenant;
use craftplane::api::server::ServerPhase;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Well below the operator's resync (300 s): only watch events can make it.
const PROMPTLY: Duration = Duration::from_secs(45);

/// A change by another field manager, as `kubectl edit` makes it (a
/// strategic merge patch for built-in kinds).
async fn edit<K>(api: &Api<K>, name: &str, patch: Value)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let pp = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    api.patch(name, &pp, &Patch::Strategic(patch)).await.unwrap_or_else(|e| panic!("edit {name}: {e}"));
}

/// Waits until `name` exists and `ok` holds of it.
async fn restored<K>(api: &Api<K>, name: &str, what: &str, op: &Operator, ok: impl Fn(&K) -> bool)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let r = common::wait_until(PROMPTLY, || async {
        api.get_opt(name).await.ok().flatten().is_some_and(|o| o.meta().deletion_timestamp.is_none() && ok(&o))
    })
    .await;
    assert!(r.is_ok(), "{what}: not restored within {PROMPTLY:?}\n{}", tail(&op.log_text(), 30));
}

/// Deletes `name` and waits until a new object (another UID) replaces it.
async fn recreated<K>(api: &Api<K>, name: &str, what: &str, op: &Operator)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let old = api.get(name).await.unwrap().uid();
    api.delete(name, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("delete {name}: {e}"));
    restored(api, name, what, op, |o| o.uid() != old).await;
}

fn label<K: Resource>(o: &K, k: &str) -> Option<String> {
    o.meta().labels.as_ref()?.get(k).cloned()
}

#[tokio::test]
async fn every_child_of_a_server_is_restored_after_edit_and_delete() {
    let f = Fixture::new("drift").await;
    let op = Operator::start(&f.shard, &[]).await;
    f.create_server("gamma", json!({"properties": {"difficulty": "hard"}})).await;
    let running = |s: &craftplane::api::MinecraftServer| {
        s.status.as_ref().and_then(|st| st.phase) == Some(ServerPhase::Running)
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    };
    f.wait("gamma", "Running", &op, running).await;

    // StatefulSet: scaled (scale subresource), image edited, deleted.
    let sts = f.api::<StatefulSet>();
    let pp = PatchParams { field_manager: Some("kubectl".into()), ..Default::default() };
    sts.patch_scale("gamma", &pp, &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    restored(&sts, "gamma", "scaled StatefulSet", &op, |s| s.spec.as_ref().unwrap().replicas == Some(1)).await;
    let image = |s: &StatefulSet| s.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone();
    let original = image(&sts.get("gamma").await.unwrap());
    let container = sts.get("gamma").await.unwrap().spec.unwrap().template.spec.unwrap().containers[0].name.clone();
    edit(
        &sts,
        "gamma",
        json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": "evil:1"}]}}}}),
    )
    .await;
    restored(&sts, "gamma", "StatefulSet image", &op, |s| image(s) == original).await;
    recreated(&sts, "gamma", "deleted StatefulSet", &op).await;

    // Game Service: port edited, deleted.
    let svc = f.api::<Service>();
    let mut ports = svc.get("gamma").await.unwrap().spec.unwrap().ports.unwrap();
    ports[0].port = 1234;
    let pp = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    svc.patch("gamma", &pp, &Patch::Merge(json!({"spec": {"ports": ports}}))).await.unwrap();
    restored(&svc, "gamma", "game Service port", &op, |s| {
        s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port == 25565
    })
    .await;
    recreated(&svc, "gamma", "deleted game Service", &op).await;

    // ConfigMap: server.properties edited, a key removed, deleted.
    let cms = f.api::<ConfigMap>();
    let props = |c: &ConfigMap| c.data.as_ref().and_then(|d| d.get("server.properties").cloned()).unwrap_or_default();
    let original = props(&cms.get("gamma-config").await.unwrap());
    edit(&cms, "gamma-config", json!({"data": {"server.properties": "pvp=false\n"}})).await;
    restored(&cms, "gamma-config", "edited ConfigMap", &op, |c| props(c) == original).await;
    edit(&cms, "gamma-config", json!({"data": {"server.properties": null}})).await;
    restored(&cms, "gamma-config", "ConfigMap key removed", &op, |c| props(c) == original).await;
    recreated(&cms, "gamma-config", "deleted ConfigMap", &op).await;

    // RCON Secret: owner reference removed, the managed-by label removed
    // (it leaves the operator's cache), deleted. Its password is the
    // admin's to rotate and is never reverted.
    let secrets = f.api::<Secret>();
    let password = |s: &Secret| s.data.as_ref().unwrap()["password"].0.clone();
    let before = password(&secrets.get("gamma-rcon").await.unwrap());
    edit(&secrets, "gamma-rcon", json!({"metadata": {"ownerReferences": null}})).await;
    restored(&secrets, "gamma-rcon", "Secret owner", &op, |s| !s.owner_references().is_empty()).await;
    edit(&secrets, "gamma-rcon", json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})).await;
    restored(&secrets, "gamma-rcon", "Secret label", &op, |s| {
        label(s, "app.kubernetes.io/managed-by").as_deref() == Some("craftplane")
    })
    .await;
    assert_eq!(password(&secrets.get("gamma-rcon").await.unwrap()), before, "password kept");
    recreated(&secrets, "gamma-rcon", "deleted Secret", &op).await;
    assert_eq!(password(&secrets.get("gamma-rcon").await.unwrap()).len(), 32);

    // PVC: a label edited; deleted (held by pvc-protection until the pod
    // is gone), then recreated as a new claim.
    let pvcs = f.api::<PersistentVolumeClaim>();
    edit(&pvcs, "gamma-data", json!({"metadata": {"labels": {"craftplane.io/server": "x"}}})).await;
    restored(&pvcs, "gamma-data", "PVC label", &op, |p| label(p, "craftplane.io/server").as_deref() == Some("gamma"))
        .await;
    let old = pvcs.get("gamma-data").await.unwrap().uid();
    pvcs.delete("gamma-data", &DeleteParams::default()).await.unwrap();
    let _ = f.api::<Pod>().delete("gamma-0", &DeleteParams::default()).await;
    restored(&pvcs, "gamma-data", "deleted PVC", &op, |p| p.uid() != old).await;
    f.wait("gamma", "Running again", &op, running).await;

    // Converged: nothing more is written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = operator_writes(quiet, |e| e["objectRef"]["namespace"] == f.ns.as_str());
    assert!(writes.is_empty(), "writes after convergence: {}", writes.len());
    op.stop();
    f.cleanup().await;
}

#[tokio::test]
async fn every_child_of_a_tenant_is_restored_after_edit_and_delete() {
    let client = common::client().await;
    common::ensure_crds(&client).await;
    let shard = format!("drift-t-{}", common::unique_suffix());
    let name = shard.clone();
    let ns = format!("tenant-{name}");
    let t: Tenant = serde_json::from_value(json!({
        "apiVersion": "craftplane.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
        "spec": {"owners": [{"kind": "User", "name": "drift-owner"}],
                 "quota": {"maxServers": 2, "cpu": "4", "memory": "8Gi", "storage": "10Gi"}},
    }))
    .unwrap();
    let tenants = Api::<Tenant>::all(client.clone());
    tenants.create(&PostParams::default(), &t).await.unwrap();
    let op = Operator::start(&shard, &[]).await;
    let ready = common::wait_until(Duration::from_secs(60), || async {
        tenants
            .get(&name)
            .await
            .ok()
            .and_then(|t| t.status)
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;
    assert!(ready.is_ok(), "tenant not Ready\n{}", tail(&op.log_text(), 30));

    // Namespace: Pod Security label edited.
    let nss = Api::<Namespace>::all(client.clone());
    let enforce = "pod-security.kubernetes.io/enforce";
    edit(&nss, &ns, json!({"metadata": {"labels": {enforce: "privileged"}}})).await;
    restored(&nss, &ns, "namespace label", &op, |n| label(n, enforce).as_deref() == Some("restricted")).await;

    // Owners' RoleBinding: subjects replaced, deleted.
    let rbs = Api::<RoleBinding>::namespaced(client.clone(), &ns);
    let rb = "craftplane-tenant-owners";
    let subject = |b: &RoleBinding| b.subjects.as_ref().and_then(|s| s.first()).map(|s| s.name.clone());
    let mallory = json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]});
    edit(&rbs, rb, mallory.clone()).await;
    restored(&rbs, rb, "RoleBinding subjects", &op, |b| subject(b).as_deref() == Some("drift-owner")).await;
    recreated(&rbs, rb, "deleted RoleBinding", &op).await;

    // NetworkPolicies: each one's pod selector edited, each deleted.
    let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let list = nps.list(&Default::default()).await.unwrap();
    assert!(list.items.len() >= 2, "tenant NetworkPolicies: {}", list.items.len());
    for p in list.items {
        let pname = p.name_any();
        let spec = serde_json::to_value(p.spec.as_ref().unwrap()).unwrap();
        edit(&nps, &pname, json!({"spec": {"policyTypes": ["Egress"], "podSelector": {"matchLabels": {"x": "y"}}}}))
            .await;
        restored(&nps, &pname, "NetworkPolicy spec", &op, |n| {
            serde_json::to_value(n.spec.as_ref().unwrap()).unwrap() == spec
        })
        .await;
        recreated(&nps, &pname, "deleted NetworkPolicy", &op).await;
    }

    // ResourceQuota: a limit raised, deleted.
    let rqs = Api::<ResourceQuota>::namespaced(client.clone(), &ns);
    let hard = |q: &ResourceQuota| serde_json::to_value(q.spec.as_ref().and_then(|s| s.hard.clone())).unwrap();
    let want = hard(&rqs.get("craftplane-quota").await.unwrap());
    edit(&rqs, "craftplane-quota", json!({"spec": {"hard": {"limits.cpu": "400"}}})).await;
    restored(&rqs, "craftplane-quota", "ResourceQuota", &op, |q| hard(q) == want).await;
    recreated(&rqs, "craftplane-quota", "deleted ResourceQuota", &op).await;

    // LimitRange: limits removed, deleted.
    let lrs = Api::<LimitRange>::namespaced(client.clone(), &ns);
    let limits = |l: &LimitRange| l.spec.as_ref().map(|s| s.limits.len()).unwrap_or(0);
    edit(&lrs, "craftplane-limits", json!({"spec": {"limits": []}})).await;
    restored(&lrs, "craftplane-limits", "LimitRange", &op, |l| limits(l) > 0).await;
    recreated(&lrs, "craftplane-limits", "deleted LimitRange", &op).await;

    // The admission policy's parameter ConfigMap: data edited, deleted.
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let cm = "craftplane-tenant-policy";
    let data = |c: &ConfigMap| serde_json::to_value(&c.data).unwrap();
    let want = data(&cms.get(cm).await.unwrap());
    edit(&cms, cm, json!({"data": {"allowedSkus": "everything"}})).await;
    restored(&cms, cm, "policy ConfigMap", &op, |c| data(c) == want).await;
    recreated(&cms, cm, "deleted policy ConfigMap", &op).await;

    // Cluster-wide RBAC: the tenant's ClusterRole and binding, and the
    // owners' ClusterRole all tenants share.
    let crs = Api::<ClusterRole>::all(client.clone());
    let crbs = Api::<ClusterRoleBinding>::all(client.clone());
    let tcr = format!("craftplane:tenant:{name}");
    let rules = |r: &ClusterRole| serde_json::to_value(&r.rules).unwrap();
    for role in [tcr.as_str(), "craftplane-tenant-owner"] {
        let want = rules(&crs.get(role).await.unwrap());
        edit(&crs, role, json!({"rules": []})).await;
        restored(&crs, role, "ClusterRole rules", &op, |r| rules(r) == want).await;
        recreated(&crs, role, "deleted ClusterRole", &op).await;
    }
    let bound = |b: &ClusterRoleBinding| b.subjects.as_ref().and_then(|s| s.first()).map(|s| s.name.clone());
    edit(&crbs, &tcr, mallory).await;
    restored(&crbs, &tcr, "ClusterRoleBinding subjects", &op, |b| bound(b).as_deref() == Some("drift-owner")).await;
    recreated(&crbs, &tcr, "deleted ClusterRoleBinding", &op).await;

    // The namespace itself, deleted: recreated once the namespace
    // controller has removed it, with the tenant's objects in it.
    let old = nss.get(&ns).await.unwrap().uid();
    nss.delete(&ns, &DeleteParams::default()).await.unwrap();
    let back = common::wait_until(Duration::from_secs(120), || async {
        nss.get_opt(&ns).await.ok().flatten().is_some_and(|n| n.uid() != old && n.metadata.deletion_timestamp.is_none())
            && rbs.get_opt(rb).await.ok().flatten().is_some()
    })
    .await;
    assert!(back.is_ok(), "deleted namespace not recreated\n{}", tail(&op.log_text(), 30));

    // Converged: nothing more is written for this tenant.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = operator_writes(quiet, |e| {
        e["objectRef"]["namespace"] == ns.as_str() || e["objectRef"]["name"].as_str().is_some_and(|n| n.contains(&name))
    });
    assert!(writes.is_empty(), "writes after convergence: {writes:?}");
    op.stop();
    let _ = tenants.delete(&name, &DeleteParams::default()).await;
}
