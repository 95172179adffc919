//! The PluginInstallation reconciler: resolves the source to one exact file
//! (URL + checksum), checks it against the server, resolves required
//! dependencies and reports progress up to Installed. The server reconciler
//! turns the resolved installations into the server's plugin manifest.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use futures::future::BoxFuture;
use kube::core::PartialObjectMeta;
use kube::runtime::Controller;

use super::conditions::{self, Cond};
use super::context::{Context, cached, cached_full};
use super::error::Result;
use super::watches::{Events, Watches, refs, run};
use crate::api::plugin::{PluginInstallation, PluginInstallationStatus, PluginPhase, ResolvedArtifact};
use crate::api::server::{MinecraftServer, ServerPhase};
use crate::plugins::fetch::FetchError;
use crate::plugins::modrinth::{self, ResolveError};
use crate::plugins::{self, Manifest};
use crate::resources::{CONFIG_HASH, FIELD_MANAGER};

/// Outcome of one evaluation: phase, condition reason and message.
struct Outcome {
    phase: PluginPhase,
    ready: bool,
    stalled: bool,
    reason: String,
    message: String,
}

impl Outcome {
    fn new(phase: PluginPhase, ready: bool, stalled: bool, reason: &str, message: impl Into<String>) -> Outcome {
        Outcome { phase, ready, stalled, reason: reason.into(), message: message.into() }
    }
}

/// The server's type and version as resolution input, e.g. `PAPER 1.21.4`
/// (LATEST/SNAPSHOT as resolved in the server's status).
fn resolved_for(server: &MinecraftServer) -> String {
    let version = crate::resources::version::minecraft_version(server).unwrap_or_else(|| server.spec.version.clone());
    format!("{} {version}", server.spec.server_type.as_str())
}

/// Reconciles one PluginInstallation.
pub async fn reconcile(pi: Arc<PluginInstallation>, ctx: Arc<Context>) -> Result<Action> {
    if !super::context::store_ready(&ctx.servers) || !super::context::store_ready(&ctx.plugins) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    if pi.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pi.namespace().unwrap_or_default();
    let name = pi.name_any();
    let old = pi.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = pi.metadata.generation;
    let server = ctx.servers.get(&ObjectRef::new(&pi.spec.server).within(&ns));

    let (outcome, requeue) = match server.as_deref() {
        None => (
            Outcome::new(
                PluginPhase::Pending,
                false,
                true,
                "ServerNotFound",
                format!("MinecraftServer {:?} does not exist in namespace {ns}", pi.spec.server),
            ),
            ctx.settings.resync,
        ),
        Some(_) if !pi.spec.enabled => {
            status.resolved = None;
            status.dependencies.clear();
            status.resolved_for = None;
            (
                Outcome::new(PluginPhase::Pending, false, false, "Disabled", "enabled is false: kept off the server"),
                ctx.settings.resync,
            )
        }
        Some(server) => evaluate(&pi, server, &ctx, &mut status).await?,
    };

    status.phase = Some(outcome.phase);
    let conds = if outcome.reason == "Disabled" {
        vec![
            Cond::new(conditions::READY, false, "Disabled", outcome.message.clone()),
            Cond::new(conditions::RECONCILING, false, "Disabled", ""),
            Cond::new(conditions::STALLED, false, "Disabled", ""),
        ]
    } else {
        conditions::kstatus(outcome.ready, outcome.stalled, &outcome.reason, &outcome.message)
    };
    status.conditions = conditions::merge(&old.conditions, &conds, pi.metadata.generation, Timestamp::now());
    if status != old {
        let api: Api<PluginInstallation> = Api::namespaced(ctx.client.clone(), &ns);
        let patch =
            serde_json::json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "PluginInstallation", "status": status});
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        if old.phase != status.phase {
            info!(plugin = %name, namespace = %ns, phase = ?outcome.phase, reason = %outcome.reason, "plugin phase changed");
            ctx.event(&pi.object_ref(&()), outcome.stalled, &outcome.reason, &outcome.message, "Reconcile").await;
        }
    }
    ctx.succeeded(&pi.uid().unwrap_or_default());
    Ok(Action::requeue(requeue))
}

/// Resolves (when needed) and reports how far the plugin got.
async fn evaluate(
    pi: &PluginInstallation,
    server: &MinecraftServer,
    ctx: &Context,
    status: &mut PluginInstallationStatus,
) -> Result<(Outcome, Duration)> {
    let ns = pi.namespace().unwrap_or_default();
    let name = pi.name_any();
    let target_key = resolved_for(server);
    let fresh = status.resolved.is_some()
        && status.resolved_for.as_deref() == Some(target_key.as_str())
        && pi.status.as_ref().and_then(|s| s.observed_generation) == pi.metadata.generation
        && matches!(status.phase, Some(PluginPhase::Resolved | PluginPhase::Installed));

    // configFiles: their hash goes into the manifest, so edits restart the server.
    if let Some(cm) = &pi.spec.config_files {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        match api.get_opt(&cm.name).await? {
            Some(c) => status.config_files_hash = Some(crate::resources::object_hash(&(&c.data, &c.binary_data))),
            None => {
                return Ok((
                    Outcome::new(
                        PluginPhase::Failed,
                        false,
                        true,
                        "ConfigFilesNotFound",
                        format!("configFiles ConfigMap {:?} does not exist in namespace {ns}", cm.name),
                    ),
                    Duration::from_secs(60),
                ));
            }
        }
    } else if !pi.spec.files.is_empty() {
        // Inline files: a ConfigMap of the operator's, owned by this object.
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        let desired = crate::resources::config_map::plugin_files(pi);
        let cm_name = desired.metadata.name.clone().unwrap_or_default();
        let observed = api.get_opt(&cm_name).await?;
        let ours = observed.as_ref().is_none_or(|c| {
            c.owner_references().iter().any(|o| Some(&o.uid) == pi.metadata.uid.as_ref() && o.controller == Some(true))
        });
        if !ours {
            return Ok((
                Outcome::new(
                    PluginPhase::Failed,
                    false,
                    true,
                    "ConfigFilesConflict",
                    format!("ConfigMap {cm_name:?} exists and is not this PluginInstallation's; rename or remove it"),
                ),
                Duration::from_secs(60),
            ));
        }
        let applied = super::server::apply_child(&api, observed, desired).await?;
        status.config_files_hash = Some(crate::resources::object_hash(&(&applied.data, &applied.binary_data)));
    } else {
        status.config_files_hash = None;
    }

    if !fresh && pi.spec.source.modrinth.is_some() && crate::resources::version::minecraft_version(server).is_none() {
        return Ok((
            Outcome::new(
                PluginPhase::Pending,
                false,
                false,
                "VersionNotResolved",
                format!(
                    "waiting for the server's version {} to be resolved to a Minecraft version (its status.resolvedVersion)",
                    server.spec.version
                ),
            ),
            Duration::from_secs(30),
        ));
    }
    if !fresh {
        match resolve(pi, server, ctx).await {
            Ok((artifact, deps)) => {
                status.resolved = Some(artifact);
                status.dependencies = deps;
                status.resolved_for = Some(target_key);
            }
            Err(e @ ResolveError::Incompatible(_)) => {
                status.resolved = None;
                status.dependencies.clear();
                status.resolved_for = Some(target_key);
                return Ok((
                    Outcome::new(PluginPhase::Incompatible, false, true, e.reason(), e.to_string()),
                    ctx.settings.resync,
                ));
            }
            Err(e) => {
                // Keep the last good resolution (and the server's plugin)
                // through an outage; retry soon.
                let phase =
                    if status.resolved.is_some() { status.phase.unwrap_or_default() } else { PluginPhase::Failed };
                let stalled = matches!(e, ResolveError::SourceNotFound(_));
                return Ok((Outcome::new(phase, false, stalled, e.reason(), e.to_string()), Duration::from_secs(60)));
            }
        }
    }

    let missing: Vec<String> = status
        .dependencies
        .iter()
        .filter(|d| !d.satisfied)
        .map(|d| format!("{} ({})", d.project, d.message.as_deref().unwrap_or("unsatisfied")))
        .collect();
    if !missing.is_empty() {
        return Ok((
            Outcome::new(
                PluginPhase::Failed,
                false,
                true,
                "DependencyMissing",
                format!("required dependencies missing: {}", missing.join("; ")),
            ),
            ctx.settings.resync,
        ));
    }
    Ok(install_progress(pi, server, ctx, &name))
}

/// Resolves the source to an artifact and its dependencies.
async fn resolve(
    pi: &PluginInstallation,
    server: &MinecraftServer,
    ctx: &Context,
) -> std::result::Result<(ResolvedArtifact, Vec<crate::api::plugin::ResolvedDependency>), ResolveError> {
    let loaders = plugins::loaders(server.spec.server_type);
    if loaders.is_empty() {
        return Err(ResolveError::Incompatible(format!(
            "{} servers run neither plugins nor mods; use a server type such as PAPER or FABRIC",
            server.spec.server_type.as_str()
        )));
    }
    if let Some(u) = &pi.spec.source.url {
        let file_name = plugins::file_name_from_url(&u.url).ok_or_else(|| {
            ResolveError::SourceNotFound(format!(
                "cannot tell a .jar file name from the URL {:?}; its last path segment must end in .jar",
                u.url
            ))
        })?;
        return Ok((
            ResolvedArtifact {
                url: u.url.clone(),
                version: None,
                project_id: None,
                version_id: None,
                file_name: Some(file_name),
                sha256: u.sha256.clone(),
                sha512: u.sha512.clone(),
            },
            vec![],
        ));
    }
    let Some(m) = &pi.spec.source.modrinth else {
        return Err(ResolveError::SourceNotFound("source has neither url nor modrinth".into()));
    };
    let Some(client) = &ctx.modrinth else {
        return Err(ResolveError::SourceUnreachable("Modrinth is disabled in this operator (--modrinth-url)".into()));
    };
    let Some(target) = plugins::modrinth_target(server) else {
        return Err(ResolveError::SourceUnreachable(format!(
            "the server's version {} is not resolved yet",
            server.spec.version
        )));
    };
    // Projects other installations on this server provide.
    let ns = pi.namespace().unwrap_or_default();
    let me = pi.name_any();
    let provided: Vec<String> = ctx
        .plugins
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.spec.server == pi.spec.server)
        .filter(|p| p.name_any() != me && p.spec.enabled)
        .filter_map(|p| p.status.as_ref()?.resolved.as_ref()?.project_id.clone())
        .collect();
    let r = modrinth::resolve(client, &m.project, m.version.as_deref(), &target, pi.spec.dependency_policy, &|id| {
        provided.iter().any(|p| p == id)
    })
    .await?;
    Ok((r.artifact, r.dependencies))
}

/// Resolved → Installed once the server runs with a manifest that lists the
/// plugin; a failed fetch in the server pod is reported with its reason.
fn install_progress(
    pi: &PluginInstallation,
    server: &MinecraftServer,
    ctx: &Context,
    name: &str,
) -> (Outcome, Duration) {
    let ns = pi.namespace().unwrap_or_default();
    let sname = server.name_any();
    let manifest: Option<Manifest> = cached(&ctx.children.config_maps, &ns, &format!("{sname}-config"))
        .and_then(|cm| serde_json::from_str(cm.manifest()?).ok());
    let wanted = pi.status.as_ref().and_then(|s| s.resolved.as_ref()).map(|r| r.url.clone());
    let listed =
        manifest.as_ref().is_some_and(|m| m.plugins.iter().any(|e| e.name == name && Some(&e.url) == wanted.as_ref()));
    let waiting = Duration::from_secs(30);
    if !listed {
        return (
            Outcome::new(
                PluginPhase::Resolved,
                false,
                false,
                "Resolved",
                "resolved; waiting for the server's manifest",
            ),
            waiting,
        );
    }
    let pod = cached_full(&ctx.children.pods, &ns, &format!("{sname}-0"));
    if let Some(failure) = pod.as_ref().and_then(fetch_failure) {
        let mine = failure.plugin.as_deref().is_none_or(|p| p == name || p.starts_with(&format!("{name}+")));
        if mine {
            return (Outcome::new(PluginPhase::Failed, false, true, failure.reason, failure.message.clone()), waiting);
        }
    }
    let sts_hash = cached(&ctx.children.statefulsets, &ns, &sname).and_then(|s| s.config_hash().map(String::from));
    let pod_hash = pod.as_ref().and_then(|p| p.annotations().get(CONFIG_HASH).cloned());
    let running = server.status.as_ref().and_then(|s| s.phase) == Some(ServerPhase::Running);
    if running && sts_hash.is_some() && sts_hash == pod_hash {
        return (
            Outcome::new(PluginPhase::Installed, true, false, "Installed", format!("installed on server {sname}")),
            ctx.settings.resync,
        );
    }
    let msg = if server.spec.state == crate::api::server::ServerState::Stopped {
        format!("in server {sname}'s manifest; installed at its next start")
    } else {
        format!("in server {sname}'s manifest; waiting for the server to restart with it")
    };
    // Ready: the desired state is recorded and will be applied.
    (Outcome::new(PluginPhase::Resolved, true, false, "Resolved", msg), waiting)
}

/// The failure the server pod's fetch-plugins init-container reported.
pub fn fetch_failure(pod: &Pod) -> Option<FetchError> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    let cs = statuses.iter().find(|c| c.name == "fetch-plugins")?;
    let terminated = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    if terminated.exit_code == 0 || cs.state.as_ref().is_some_and(|s| s.running.is_some()) {
        return None;
    }
    let msg = terminated.message.clone().unwrap_or_default();
    Some(FetchError::parse(&msg).unwrap_or(FetchError {
        reason: "FetchFailed",
        plugin: None,
        message: format!("fetch-plugins exited {}: {}", terminated.exit_code, msg.trim()),
    }))
}

/// Backoff on errors.
pub fn error_policy(pi: Arc<PluginInstallation>, err: &super::error::Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&pi.uid().unwrap_or_default());
    warn!(plugin = %pi.name_any(), namespace = ?pi.namespace(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The PluginInstallation controller. A plugin is re-evaluated when its
/// server changes (type, version, phase), when another plugin of the same
/// server changes (a dependency it provides), and when a ConfigMap its files
/// come from changes (`configFiles`, or the operator's own for inline
/// `files`: metadata only, every namespace, as tenants' ConfigMaps carry no
/// label of ours).
pub fn controller(w: &Watches, ctx: Arc<Context>, own: Events<PluginInstallation>) -> BoxFuture<'static, ()> {
    let (by_config, by_server, by_sibling) = (ctx.plugins.clone(), ctx.plugins.clone(), ctx.plugins.clone());
    let c = Controller::for_stream(own, ctx.plugins.clone())
        .watches_stream(w.trigger::<PartialObjectMeta<ConfigMap>>(&w.all, "ConfigMap"), move |cm| {
            let (ns, name) = (cm.namespace(), cm.name_any());
            refs(&by_config, |p| p.namespace() == ns && reads_config_map(p, &name))
        })
        .watches_stream(w.trigger::<MinecraftServer>(&w.selected, "MinecraftServer"), move |s| {
            let (ns, name) = (s.namespace(), s.name_any());
            refs(&by_server, |p| p.namespace() == ns && p.spec.server == name)
        })
        .watches_stream(w.trigger::<PluginInstallation>(&w.selected, "PluginInstallation"), move |changed| {
            let (ns, me) = (changed.namespace(), changed.name_any());
            refs(&by_sibling, |p| p.namespace() == ns && p.spec.server == changed.spec.server && p.name_any() != me)
        });
    run(c, w, w.config(false), "PluginInstallation", reconcile, error_policy, ctx)
}

/// Whether `p` takes files from the ConfigMap `name` of its namespace.
fn reads_config_map(p: &PluginInstallation, name: &str) -> bool {
    p.spec.config_files.as_ref().is_some_and(|c| c.name == name)
        || (!p.spec.files.is_empty() && crate::resources::config_map::plugin_files_name(&p.name_any()) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_failures_are_read_from_the_init_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"status": {"initContainerStatuses": [{
            "name": "fetch-plugins", "image": "x", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "message": "ChecksumMismatch: plugin lp: LP.jar has sha256 aa, expected bb\n"}}
        }]}}))
        .unwrap();
        let f = fetch_failure(&pod).unwrap();
        assert_eq!((f.reason, f.plugin.as_deref()), ("ChecksumMismatch", Some("lp")));
        let ok: Pod = serde_json::from_value(serde_json::json!({"status": {"initContainerStatuses": [{
            "name": "fetch-plugins", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0}}
        }]}}))
        .unwrap();
        assert!(fetch_failure(&ok).is_none());
    }
}
