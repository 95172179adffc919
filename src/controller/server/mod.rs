//! The MinecraftServer reconciler: dereference → validate → build → apply →
//! status, following the pipeline in KUBE-RS-NOTES.

pub mod backup;
pub mod live;
pub mod sleep;
pub mod status;
pub mod tasks;

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::runtime::Controller;

use super::conditions::{self, Cond};
use super::context::{ChildEvents, Context, cached_full};
use super::error::{Error, Result};
use super::metrics::WakePartLabels;
use super::watches::{Events, Watches, refs, run};
use crate::api::server::{MinecraftServer, MinecraftServerStatus, Players, ServerPhase, ServerState};
use crate::api::{BackupSnapshot, PluginInstallation, Sku, Tenant};
use crate::resources::{self, APPLIED_HASH, FIELD_MANAGER, InvalidSpec, ServerModel};
use status::Observed;

/// Finalizer that keeps the world volume when `deletionPolicy: Retain`.
pub const FINALIZER: &str = "craftplane.io/world-volume";
/// Condition type: whether the server holds every custom hostname it asks
/// for (`spec.hostnames`) and its default one (set only when it asks for
/// one or its default hostname cannot be built).
pub const HOSTNAME: &str = "Hostname";
/// Condition type: `spec.service.annotations` keys left out (set only when
/// some are).
pub const SERVICE_ANNOTATIONS: &str = "ServiceAnnotations";
/// Condition type: `spec.sleep` (or the SKU's) cannot be applied (set only
/// then; the server then never sleeps).
pub const SLEEP: &str = "Sleep";

/// The tenant a namespace belongs to.
fn tenant_in<'a>(tenants: &'a [Arc<Tenant>], ns: &str) -> Option<&'a Arc<Tenant>> {
    tenants.iter().find(|t| {
        t.desired_namespaces().iter().any(|n| n == ns)
            || t.status.as_ref().is_some_and(|st| st.namespaces.iter().any(|n| n == ns))
    })
}

/// The hostnames a server holds: each custom hostname it may hold
/// ([`resources::hostname::grant`] against every server in the cache), then
/// its default `<server>.<namespace>.<base domain>` when the admin set a
/// base domain. The model keeps only the custom ones held (mc-router's
/// annotation names the first); the condition names every refusal.
struct Held {
    custom: Vec<String>,
    default: Option<String>,
    condition: Option<Cond>,
}

impl Held {
    /// Every hostname held, custom ones first: `status.hostnames`.
    fn all(&self) -> Vec<String> {
        self.custom.iter().chain(self.default.as_ref()).cloned().collect()
    }
}

fn claim_hostnames(server: &MinecraftServer, ctx: &Context, tenants: &[Arc<Tenant>], model: &mut ServerModel) -> Held {
    use resources::hostname::{Claim, default_hostname, grant};
    fn claim<'a>(s: &'a MinecraftServer, host: &'a str, tenants: &'a [Arc<Tenant>]) -> Option<Claim<'a>> {
        let ns = s.metadata.namespace.as_deref()?;
        Some(Claim {
            namespace: ns,
            name: s.metadata.name.as_deref()?,
            created: s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            hostname: host,
            domains: tenant_in(tenants, ns).map(|t| t.spec.hostname_domains.as_slice()).unwrap_or_default(),
        })
    }
    let base = ctx.settings.base_domain.as_deref();
    let default = base.map(|b| default_hostname(&model.name, &model.namespace, b));
    let wanted = server.spec.wanted_hostnames();
    // No custom hostname asked for: no rival to look at (no scan of every
    // server at each reconcile).
    let all = if wanted.is_empty() { vec![] } else { ctx.servers.state() };
    let others: Vec<(&MinecraftServer, Vec<String>)> = all
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| (s.as_ref(), s.spec.wanted_hostnames()))
        .filter(|(_, w)| w.iter().any(|h| wanted.contains(h)))
        .collect();
    let g = grant(
        &wanted,
        |h| {
            claim(server, h, tenants).unwrap_or(Claim {
                namespace: "",
                name: "",
                created: None,
                hostname: h,
                domains: &[],
            })
        },
        |h| {
            others
                .iter()
                .filter(|(_, w)| w.iter().any(|x| x == h))
                .filter_map(|(s, w)| claim(s, w.iter().find(|x| *x == h)?, tenants))
                .collect()
        },
        base,
    );
    model.hostname = g.held.first().cloned();
    let mut refused: Vec<String> = g.refused.iter().map(|r| r.to_string()).collect();
    let mut reason = g.refused.first().map(|r| r.reason());
    let default = match default {
        Some(Ok(h)) => Some(h),
        Some(Err(r)) => {
            reason = reason.or(Some(r.reason()));
            refused.push(r.to_string());
            None
        }
        None => None,
    };
    let held = Held { custom: g.held, default, condition: None };
    let holds = held.all();
    let holding =
        if holds.is_empty() { "holds no hostname".to_string() } else { format!("holds {}", holds.join(", ")) };
    let condition = match reason {
        Some(reason) => Some(Cond::new(
            HOSTNAME,
            false,
            reason,
            format!("{holding}; refused (no traffic by these names): {}", refused.join("; ")),
        )),
        None if !wanted.is_empty() => {
            Some(Cond::new(HOSTNAME, true, "Claimed", format!("{holding}: the gateway routes them to this server")))
        }
        None => None,
    };
    Held { condition, ..held }
}

/// The other servers in `store` that ask for or hold a custom hostname
/// `server` asks for or holds: re-queued on each event of it, so a hostname
/// freed (server deleted, hostname changed) goes to the next claimant at
/// once. Default hostnames (under `base`) have no rivals: a server without
/// custom hostnames costs no scan.
fn hostname_rivals(
    store: &kube::runtime::reflector::Store<MinecraftServer>,
    server: &MinecraftServer,
    base: Option<&str>,
) -> Vec<ObjectRef<MinecraftServer>> {
    let suffix = base.map(|b| format!(".{b}"));
    let names = |s: &MinecraftServer| {
        let mut n = s.spec.wanted_hostnames();
        let held = s.status.iter().flat_map(|st| st.hostnames.iter());
        n.extend(held.filter(|h| suffix.as_ref().is_none_or(|x| !h.ends_with(x.as_str()))).cloned());
        n
    };
    let mine = names(server);
    if mine.is_empty() {
        return vec![];
    }
    let me = ObjectRef::from_obj(server);
    refs(store, |s| names(s).iter().any(|h| mine.contains(h))).into_iter().filter(|r| *r != me).collect()
}

/// Reconciles one MinecraftServer.
pub async fn reconcile(server: Arc<MinecraftServer>, ctx: Arc<Context>) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MinecraftServer> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = server.uid().unwrap_or_default();
    let result = finalizer(&api, FINALIZER, server, |event| async {
        match event {
            Event::Apply(s) => match apply(s.clone(), &ctx).await {
                Err(e) if e.rejected().is_some() => report_rejected(&s, &ctx, &e).await,
                Err(Error::SecretConflict(m)) => report_stalled(&s, &ctx, super::secrets::SECRET_CONFLICT, &m).await,
                r => r,
            },
            Event::Cleanup(s) => cleanup(s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.succeeded(&uid);
    }
    result
}

/// Retries failed reconciles with per-object exponential backoff.
pub fn error_policy(server: Arc<MinecraftServer>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&server.uid().unwrap_or_default());
    warn!(server = %server.name_any(), namespace = ?server.namespace(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Server-side applies `desired` unless the observed object is in sync: it
/// carries the same desired-state hash and the operator still owns every
/// field of `desired` (see `drift`), so an idle reconcile writes nothing
/// while an edited or deleted child is restored. Returns the object as the
/// API now has it.
pub async fn apply_child<K>(api: &Api<K>, observed: Option<K>, mut desired: K) -> Result<K>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let hash = resources::object_hash(&desired);
    desired.meta_mut().annotations.get_or_insert_with(Default::default).insert(APPLIED_HASH.into(), hash.clone());
    let name = desired.meta().name.clone().ok_or(Error::MissingField("metadata.name"))?;
    if let Some(obs) = observed
        && obs.meta().annotations.as_ref().and_then(|a| a.get(APPLIED_HASH)) == Some(&hash)
    {
        let want = serde_json::to_value(&desired)?;
        if super::drift::owns_all(&want, obs.meta().managed_fields.as_deref()) {
            return Ok(obs);
        }
        info!(kind = %K::kind(&Default::default()), name = %name, namespace = ?obs.meta().namespace, "child drifted; restoring");
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        return match api.patch(&name, &pp, &Patch::Apply(&desired)).await {
            // Someone added an element to a list the operator sets (a
            // second port, say) that cannot stand beside ours: a merge
            // patch replaces such lists whole (and leaves others' map
            // entries), then the apply takes every field back.
            Err(kube::Error::Api(e)) if e.code == 422 => {
                let merge = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                api.patch(&name, &merge, &Patch::Merge(&desired)).await?;
                Ok(api.patch(&name, &pp, &Patch::Apply(&desired)).await?)
            }
            r => Ok(r?),
        };
    }
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?)
}

/// Deletes the RCON Service an earlier release gave the server (the
/// operator and backup Jobs use the pod's address now): only a Service this
/// server owns (another server may be named like it, `<name>-rcon`) and only
/// that object (a UID precondition, so a stale cache cannot delete a
/// successor).
async fn delete_legacy_rcon(api: &Api<Service>, server: &MinecraftServer, observed: Option<Service>) -> Result<()> {
    let Some(svc) = observed else { return Ok(()) };
    delete_owned_service(api, server, svc, "the RCON Service of an earlier release").await
}

/// Deletes a Service `server` owns (by UID, so a replacement is never hit).
async fn delete_owned_service(api: &Api<Service>, server: &MinecraftServer, svc: Service, why: &str) -> Result<()> {
    let owner = server.metadata.uid.as_deref();
    if owner.is_none() || !svc.owner_references().iter().any(|o| Some(o.uid.as_str()) == owner) {
        return Ok(());
    }
    let name = svc.metadata.name.clone().ok_or(Error::MissingField("metadata.name"))?;
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: svc.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => info!(service = %name, namespace = ?svc.metadata.namespace, why, "deleted a Service"),
        // Gone already, or already replaced (its UID differs).
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn apply(server: Arc<MinecraftServer>, ctx: &Arc<Context>) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = server.name_any();
    if ctx.status_writes.stale(&(ns.clone(), name.clone()), server.resource_version().as_deref()) {
        // Our last status write is not in the cache yet (its watch event
        // triggers the next reconcile; the requeue is only a fallback).
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let c = &ctx.client;
    let sts_api: Api<StatefulSet> = Api::namespaced(c.clone(), &ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), &ns);
    let svc_api: Api<Service> = Api::namespaced(c.clone(), &ns);

    // 1. Dereference. The SKU cache must be complete first, or a restart
    // would briefly report existing SKUs as missing.
    // (Polled, not awaited: a waiter parked before the store became ready
    // was seen never to wake.)
    if !super::context::store_ready(&ctx.skus)
        || !super::context::store_ready(&ctx.tenants)
        || !super::context::store_ready(&ctx.plugins)
        || !ctx.children.ready()
    {
        return Ok(Action::requeue(std::time::Duration::from_millis(500)));
    }
    let ch = &ctx.children;
    let observed_sts = cached_full(&ch.statefulsets, &ns, &name);
    let sku = ctx.skus.get(&ObjectRef::new(&server.spec.sku));
    let tenants = ctx.tenants.state();
    let tenant = tenant_in(&tenants, &ns);
    let old_status = server.status.clone().unwrap_or_default();
    // The SKU the workload runs on: recorded at each apply (a server
    // provisioned before the record existed runs on its spec's).
    let current_sku =
        observed_sts.as_ref().map(|_| old_status.applied_sku.clone().unwrap_or_else(|| server.spec.sku.clone()));

    // 2. Validate.
    let mut model = match resources::validate(&server, sku.as_deref(), tenant.map(|t| &**t), current_sku.as_deref()) {
        Ok(m) => m,
        Err(invalid) => return report_invalid(&server, ctx, invalid, observed_sts.as_ref()).await,
    };
    let hostnames = claim_hostnames(&server, ctx, &tenants, &mut model);
    let installs = ctx.plugins.state();
    let mine: Vec<&crate::api::PluginInstallation> = installs
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()) && p.spec.server == name)
        .collect();
    model.plugins = crate::plugins::manifest_for(model.server_type, &mine);
    model.helper_image = ctx.settings.helper_image.clone();
    // LATEST/SNAPSHOT: resolved once, then kept (see resources::version).
    let spec_version = &server.spec.version;
    let recorded = old_status.resolved_version.as_ref();
    let latest = if resources::version::is_alias(spec_version) && recorded.is_none_or(|r| &r.from != spec_version) {
        ctx.latest_versions().await
    } else {
        None
    };
    let (version, resolved_version) = resources::version::effective(spec_version, recorded, latest.as_ref());
    let unresolved = resources::version::is_alias(&version);
    model.set_version(version, server.spec.image.is_none());
    let restore = backup::restore(&server, ctx, old_status.restore.as_ref()).await?;
    if restore.hold_stopped {
        model.state = crate::api::server::ServerState::Stopped;
    }

    // Sleep and wake (sleep.rs), decided before the StatefulSet is built.
    let desired = model.state;
    let key = (ns.clone(), name.clone());
    let ping = ctx.ping(&key);
    let pod = cached_full(&ch.pods, &ns, &format!("{name}-0"));
    let (policy, sleep_cond) = match crate::api::sleep::effective(
        server.spec.sleep.as_ref(),
        sku.as_ref().and_then(|s| s.spec.sleep.as_ref()),
    ) {
        Ok(p) => (p, None),
        Err(e) => (
            crate::api::sleep::EffectiveSleep { after_idle: None, wake_on_join: true },
            Some(Cond::new(SLEEP, false, "InvalidSleep", format!("{e}; the server does not sleep"))),
        ),
    };
    let before = status::phase(
        desired,
        &Observed { statefulset: observed_sts.as_ref(), pod: pod.as_ref(), pvc: None, ping: ping.as_ref() },
    );
    let lease_name = crate::api::sleep::wake_lease_name(&ns, &name);
    let lease = super::context::cached(&ctx.wake_leases, &ctx.settings.operator_namespace, &lease_name);
    let wake_request = lease.as_ref().and_then(sleep::WakeRequest::of);
    let mut plan = sleep::plan(&sleep::Inputs {
        policy: policy.clone(),
        running: desired == ServerState::Running,
        phase: before.phase,
        ping: ping.as_ref(),
        old: old_status.sleep.as_ref(),
        lease: wake_request.clone(),
        annotation: server.annotations().get(crate::api::sleep::WAKE_ANNOTATION).map(String::as_str),
        now: Timestamp::now(),
    });
    let mut sleep_wait = plan.wait;
    let mut fell_asleep = false;
    if plan.sleep_due {
        if sleep::gateway_idle(&ctx.http, ctx.settings.gateway_http.as_deref(), &ns, &name).await {
            sleep::fall_asleep(plan.status.get_or_insert_with(Default::default), Timestamp::now());
            plan.asleep = true;
            fell_asleep = true;
        } else {
            sleep_wait = Some(std::time::Duration::from_secs(30));
        }
    }
    if fell_asleep {
        // The decision is recorded before the workload changes: an operator
        // stopped between the two leaves a server whose `asleepSince` makes
        // the next leader finish the sleep, never one it starts again.
        let mut decided = old_status.clone();
        decided.sleep = plan.status.clone();
        write_status(&server, ctx, &old_status, decided).await?;
        sleep_events(&server, ctx, true, None, &policy).await;
    }
    if plan.asleep {
        model.state = ServerState::Stopped;
        // After a wake, the first fresh ping decides (not the last one
        // before the sleep, which said 0 players).
        ctx.pings.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    // While a pod runs, the list variables stay as the existing StatefulSet
    // has them: the lists change live (`live`), never through a running
    // pod's template. Scaled to zero (asleep or stopped), nothing would
    // roll: the template follows the spec, so the next start — a wake
    // above all, whose player goes in as soon as the server answers —
    // begins with the lists in force, not waiting for a live apply.
    if let Some(sts) = super::context::cached(&ch.statefulsets, &ns, &name)
        && !sts.scaled_to_zero()
    {
        let env = sts.list_env();
        model.keep_list_env(env.whitelist, env.ops);
    }

    // 3+4. Build and apply: what the pod mounts (Secret, ConfigMap,
    // claim) at once, as none depends on another.
    let cm_api: Api<ConfigMap> = Api::namespaced(c.clone(), &ns);
    let (_, _, pvc) = futures::try_join!(
        ensure_secret(ctx, &model),
        apply_child(
            &cm_api,
            cached_full(&ch.config_maps, &ns, &model.config_map_name()),
            resources::config_map::build(&model),
        ),
        apply_child(&pvc_api, cached_full(&ch.pvcs, &ns, &model.pvc_name()), resources::pvc::build(&model, true)),
    )?;
    // The StatefulSet before the Service: its pod needs the Secret, the
    // ConfigMap and the claim, not the Service (which only routes to it),
    // so a pod starts while the Service is made — the slowest write of a
    // server: the API server allocates cluster IPs one at a time (~3 s per
    // Service apply at 1,000 servers at once, see BENCHMARKS.md).
    let sts = apply_child(&sts_api, observed_sts, resources::statefulset::build(&model)).await?;
    if plan.woke_by.is_some()
        && let Some(asked) = &wake_request
    {
        // The operator's share of a wake: the gateway's request (its Lease
        // time, microseconds) to the StatefulSet scaled up.
        let took = Timestamp::now().duration_since(asked.at).as_secs_f64();
        if (0.0..900.0).contains(&took) {
            ctx.metrics.wake_parts.get_or_create(&WakePartLabels { part: "operator" }).observe(took);
        }
    }
    let desired_game = resources::service::game(&model);
    let mut observed_game = cached_full(&ch.services, &ns, &model.game_service_name());
    if let Some(svc) = &observed_game
        && resources::service::is_headless(svc) != resources::service::is_headless(&desired_game)
    {
        // A cluster IP cannot be added or removed in place.
        delete_owned_service(&svc_api, &server, svc.clone(), "its type moved between Headless and a cluster IP")
            .await?;
        observed_game = None;
    }
    let game = apply_child(&svc_api, observed_game, desired_game).await?;
    delete_legacy_rcon(&svc_api, &server, cached_full(&ch.services, &ns, &model.legacy_rcon_service_name())).await?;

    // 5. Status from what the cluster reports.
    let observed = Observed { statefulset: Some(&sts), pod: pod.as_ref(), pvc: Some(&pvc), ping: ping.as_ref() };
    let p = if restore.hold_stopped {
        status::restoring(restore.status.as_ref())
    } else if plan.asleep {
        status::asleep(pod.is_some(), &policy)
    } else {
        status::phase(desired, &observed)
    };
    let ready = status::is_ready(desired, p.phase);
    // A woken server running for the first time since its wake.
    if p.phase == ServerPhase::Running
        && old_status.phase != Some(ServerPhase::Running)
        && let Some(woke) = plan.status.as_ref().and_then(|s| s.last_wake.as_ref())
    {
        let now = Timestamp::now();
        let took = now.duration_since(woke.0).as_secs_f64();
        if (0.0..900.0).contains(&took) {
            ctx.metrics.wake_duration.observe(took);
            // Split at the server container's start (whole seconds, as the
            // kubelet reports it).
            if let Some(started) = pod.as_ref().and_then(status::server_started_at) {
                let pod_start = started.duration_since(woke.0).as_secs_f64().max(0.0);
                let server_start = now.duration_since(started).as_secs_f64().max(0.0);
                ctx.metrics.wake_parts.get_or_create(&WakePartLabels { part: "pod_start" }).observe(pod_start);
                ctx.metrics.wake_parts.get_or_create(&WakePartLabels { part: "server_start" }).observe(server_start);
            }
        }
    }
    let stalled = p.phase == ServerPhase::Failed;
    let old = server.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let revision = resources::statefulset::config_hash(&model);
    let (players, version) = match (&ping, p.phase) {
        (Some(Ok(s)), ServerPhase::Running | ServerPhase::Starting) => (
            Some(Players { online: s.online, max: s.max, names: s.names.clone() }),
            Some(s.version.clone()).filter(|v| !v.is_empty()),
        ),
        _ => (None, None),
    };
    let schedule = backup::schedule(&server, ctx, old.backup_schedule.as_ref()).await?;
    let live = live::apply(ctx, &server, &model, pod.as_ref(), p.phase);
    let tasks = tasks::step(&server, ctx, p.phase);
    let mut conds = conditions::kstatus(ready, stalled, &p.reason, &p.message);
    conds.extend(restore.condition(server.spec.restore.is_some()));
    conds.extend(schedule.condition);
    conds.extend(live.condition);
    conds.extend(tasks.condition);
    conds.extend(hostnames.condition.clone());
    conds.extend(sleep_cond);
    if !model.refused_annotations.is_empty() {
        conds.push(Cond::new(
            SERVICE_ANNOTATIONS,
            false,
            "ServiceAnnotationNotAllowed",
            format!(
                "not applied to the Service, the SKU does not allow them: {} (an admin allows keys in Sku.spec.allowedServiceAnnotations)",
                model.refused_annotations.join(", ")
            ),
        ));
    }
    let status = MinecraftServerStatus {
        phase: Some(p.phase),
        address: resources::hostname::address(
            &hostnames.custom,
            hostnames.default.as_deref(),
            ctx.settings.gateway_port,
        )
        .or_else(|| resources::service::address(&model, Some(&game))),
        players,
        version,
        resolved_version,
        config_revision: Some(revision.clone()),
        config_history: status::record_revision(&old.config_history, &revision, model.generation, now),
        live: live.status,
        last_backup: backup::last_backup(ctx, &server),
        backup_schedule: schedule.status,
        restore: restore.status,
        applied_sku: Some(model.sku.clone()),
        hostnames: hostnames.all(),
        tasks: tasks.status,
        sleep: plan.status.clone(),
        observed_generation: server.metadata.generation,
        conditions: conditions::merge(&old.conditions, &conds, server.metadata.generation, now),
    };
    let restoring = restore.hold_stopped;
    write_status(&server, ctx, &old, status).await?;
    // Recorded first: a request is deleted only once its wake is in status.
    sleep_events(&server, ctx, false, plan.woke_by.as_deref(), &policy).await;
    if plan.delete_lease
        && let Some(l) = &lease
    {
        sleep::delete_lease(ctx, l).await?;
    }
    let mut wait = ctx.settings.resync;
    if let Some(w) = schedule.wait {
        wait = wait.min(w);
    }
    if let Some(w) = live.retry {
        wait = wait.min(w);
    }
    if let Some(w) = tasks.wait {
        wait = wait.min(w);
    }
    if restoring {
        wait = wait.min(std::time::Duration::from_secs(3));
    }
    if unresolved {
        wait = wait.min(std::time::Duration::from_secs(60));
    }
    if let Some(w) = sleep_wait {
        wait = wait.min(w);
    }
    Ok(Action::requeue(wait))
}

/// The Events of a sleep and a wake (one each, never per reconcile).
async fn sleep_events(
    server: &MinecraftServer,
    ctx: &Context,
    fell_asleep: bool,
    woke_by: Option<&str>,
    policy: &crate::api::sleep::EffectiveSleep,
) {
    let oref = server.object_ref(&());
    if fell_asleep {
        ctx.metrics.sleeps.inc();
        let idle = policy.after_idle.map(|d| format!("{} s", d.as_secs())).unwrap_or_default();
        info!(server = %server.name_any(), namespace = ?server.namespace(), idle, "falling asleep");
        let note = format!("no player for {idle}: saving the world and stopping; the volume and configuration stay");
        ctx.event(&oref, false, "Asleep", &note, "Sleep").await;
    }
    if let Some(by) = woke_by {
        ctx.metrics.wakes.inc();
        info!(server = %server.name_any(), namespace = ?server.namespace(), by, "waking");
        ctx.event(&oref, false, "Woken", &format!("woken by {by}"), "Wake").await;
    }
}

/// Reports a spec that cannot run; an existing workload is left as it is.
async fn report_invalid(
    server: &MinecraftServer,
    ctx: &Context,
    invalid: InvalidSpec,
    sts: Option<&StatefulSet>,
) -> Result<Action> {
    let old = server.status.clone().unwrap_or_default();
    let phase = if sts.is_some() { old.phase.unwrap_or(ServerPhase::Pending) } else { ServerPhase::Pending };
    let mut status = old.clone();
    status.phase = Some(phase);
    status.observed_generation = server.metadata.generation;
    let message = if sts.is_some() {
        format!("{invalid}; the running server is left unchanged")
    } else {
        format!("{invalid}; no workload is created")
    };
    status.conditions = conditions::merge(
        &old.conditions,
        &conditions::kstatus(false, true, invalid.reason(), &message),
        server.metadata.generation,
        Timestamp::now(),
    );
    write_status(server, ctx, &old, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// An object built from the spec was refused by the API server: Stalled
/// with the API's message (the phase stays as it was); checked again at the
/// next resync or spec change.
async fn report_rejected(server: &MinecraftServer, ctx: &Context, e: &Error) -> Result<Action> {
    let message = format!("the API server refused an object built from this spec: {}", e.rejected().unwrap_or(""));
    report_stalled(server, ctx, "ChildRejected", &message).await
}

/// Stalled with `reason` and `message` (the phase stays as it was, the
/// workload is left as it is); checked again at the next resync or change.
async fn report_stalled(server: &MinecraftServer, ctx: &Context, reason: &str, message: &str) -> Result<Action> {
    // Read back: the failed reconcile may have written status first (a
    // sleep's decision), which a write from the older copy would undo.
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MinecraftServer> = Api::namespaced(ctx.client.clone(), &ns);
    let fresh = api.get_status(&server.name_any()).await?;
    let server = &fresh;
    let old = server.status.clone().unwrap_or_default();
    warn!(server = %server.name_any(), namespace = ?server.namespace(), reason, error = %message, "stalled");
    let mut status = old.clone();
    status.phase = Some(old.phase.unwrap_or(ServerPhase::Pending));
    status.observed_generation = server.metadata.generation;
    status.conditions = conditions::merge(
        &old.conditions,
        &conditions::kstatus(false, true, reason, message),
        server.metadata.generation,
        Timestamp::now(),
    );
    write_status(server, ctx, &old, status).await?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// Creates the RCON Secret once. Of an existing Secret only labels and
/// owner are restored when changed; its password is never rewritten, so it
/// cannot rotate by accident. A Secret of that name that this server does
/// not own (an owner reference with its UID) is never written, adopted or
/// mounted: [`Error::SecretConflict`].
async fn ensure_secret(ctx: &Context, m: &ServerModel) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &m.namespace);
    let uid = m.owner_ref().uid;
    let foreign = || super::secrets::conflict(&m.namespace, &m.secret_name(), &format!("MinecraftServer {}", m.name));
    if let Some(mut s) = cached_full(&ctx.children.secrets, &m.namespace, &m.secret_name()) {
        if !super::secrets::owned_by(&s, &uid) {
            // The cache keeps no labels: decide on the Secret itself.
            s = api.get_opt(&m.secret_name()).await?.ok_or_else(foreign)?;
            if !super::secrets::owned_by(&s, &uid) {
                return Err(foreign());
            }
        }
        apply_child(&api, Some(s), resources::secret::owned(m)).await?;
        return Ok(());
    }
    // Not cached: create it. Creating never overwrites: when the cache
    // trails a Secret created a moment ago, or misses one whose labels
    // were edited, the API refuses (409); then it is read, and only if it
    // is this server's are its labels and owner applied, the password
    // kept. (One request for a new server, not a GET before the create.)
    let secret = resources::secret::build(m, &resources::secret::generate_password());
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get_opt(&m.secret_name()).await?.ok_or_else(foreign)?;
            if !super::secrets::owned_by(&existing, &uid) {
                return Err(foreign());
            }
            apply_child(&api, None, resources::secret::owned(m)).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the status when it differs; publishes an Event on phase changes.
async fn write_status(
    server: &MinecraftServer,
    ctx: &Context,
    old: &MinecraftServerStatus,
    new: MinecraftServerStatus,
) -> Result<()> {
    if *old == new {
        return Ok(());
    }
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MinecraftServer> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "craftplane.io/v1alpha1",
        "kind": "MinecraftServer",
        "status": new,
    });
    let written =
        api.patch_status(&server.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.status_writes.wrote(
        (ns.clone(), server.name_any()),
        server.resource_version().as_deref(),
        written.resource_version().as_deref(),
    );
    // Events for the phases a person acts on (not every transient step:
    // at scale each Event is one more write).
    let notable = matches!(
        new.phase,
        Some(ServerPhase::Running | ServerPhase::Stopped | ServerPhase::Failed | ServerPhase::Pending)
    );
    if old.phase != new.phase && notable {
        let from = old.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "none".into());
        let to = new.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        info!(server = %server.name_any(), namespace = %ns, from = %from, to = %to, "phase changed");
        let ready = new.conditions.iter().find(|c| c.type_ == conditions::READY);
        let failed = new.phase == Some(ServerPhase::Failed) || ready.is_some_and(|c| c.reason.ends_with("NotFound"));
        let note = format!("phase {from} → {to}: {}", ready.map(|c| c.message.as_str()).unwrap_or(""));
        ctx.event(&server.object_ref(&()), failed, &to, &note, "Reconcile").await;
    }
    Ok(())
}

/// Deletion: with `Retain` the world volume is released from garbage
/// collection (owner reference removed, labelled); with `Delete` the garbage
/// collector removes it with the server.
async fn cleanup(server: Arc<MinecraftServer>, ctx: &Context) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = server.name_any();
    if let Ok(mut pings) = ctx.pings.lock() {
        pings.remove(&(ns.clone(), name.clone()));
    }
    ctx.live.forget(&ns, &name);
    ctx.status_writes.forget(&(ns.clone(), name.clone()));
    if server.spec.deletion_policy == crate::api::server::DeletionPolicy::Retain {
        let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let pvc_name = resources::pvc_name(&name);
        if pvc_api.get_opt(&pvc_name).await?.is_some() {
            let patch = serde_json::json!({
                "metadata": {
                    "ownerReferences": null,
                    "labels": {"craftplane.io/retained": "true"},
                    "annotations": {"craftplane.io/retained-from": format!("MinecraftServer {ns}/{name}")},
                }
            });
            pvc_api.patch(&pvc_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            info!(server = %name, namespace = %ns, pvc = %pvc_name, "world volume retained");
        }
    }
    Ok(Action::await_change())
}

/// The MinecraftServer controller: its own kind, the children it owns, its
/// pods, the SKU, plugins and snapshots that name it, and the pinger's
/// requests (`pings`, a reconcile when a ping result changed).
pub fn controller(
    w: &Watches,
    ctx: Arc<Context>,
    own: Events<MinecraftServer>,
    children: ChildEvents,
    wake_requests: Events<k8s_openapi::api::coordination::v1::Lease>,
    pings: impl futures::Stream<Item = ObjectRef<MinecraftServer>> + Send + 'static,
) -> BoxFuture<'static, ()> {
    let servers = ctx.servers.clone();
    let (rivals_tx, rivals) = futures::channel::mpsc::unbounded();
    let store = ctx.servers.clone();
    let base = ctx.settings.base_domain.clone();
    let own = own.inspect(move |s| {
        if let Ok(s) = s {
            for r in hostname_rivals(&store, s, base.as_deref()) {
                let _ = rivals_tx.unbounded_send(r);
            }
        }
    });
    let c = Controller::for_stream(own, ctx.servers.clone())
        .owns_stream(children.statefulsets)
        .owns_stream(children.pvcs)
        .owns_stream(children.services)
        .owns_stream(children.config_maps)
        .owns_stream(children.secrets)
        .watches_stream(children.pods, |pod| Some(ObjectRef::new(pod.server()?).within(&pod.namespace()?)))
        .watches_stream(w.trigger::<Sku>(&w.selected, "Sku"), move |sku| {
            let name = sku.name_any();
            refs(&servers, |s| s.spec.sku == name)
        })
        .watches_stream(w.trigger::<PluginInstallation>(&w.selected, "PluginInstallation"), |p| {
            Some(ObjectRef::new(&p.spec.server).within(&p.namespace()?))
        })
        .watches_stream(w.trigger::<BackupSnapshot>(&w.selected, "BackupSnapshot"), |b| {
            Some(ObjectRef::new(&b.spec.server).within(&b.namespace()?))
        })
        // The gateway's wake requests name the server in annotations.
        .watches_stream(wake_requests, |lease| {
            let a = lease.annotations();
            let ns = a.get(crate::api::sleep::WAKE_SERVER_NAMESPACE)?;
            Some(ObjectRef::new(a.get(crate::api::sleep::WAKE_SERVER_NAME)?).within(ns))
        })
        .reconcile_on(futures::stream::select(futures::stream::select(pings, ctx.wakes()), rivals));
    run(c, w, w.config(true), "MinecraftServer", reconcile, error_policy, ctx)
}
