//! The Sku reconciler: counts the servers that use each SKU.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::warn;

use futures::future::BoxFuture;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;

use super::conditions;
use super::context::Context;
use super::error::Result;
use super::watches::{Events, Watches, run};
use crate::api::sku::{Sku, SkuStatus};
use crate::resources::FIELD_MANAGER;

/// Pure: how many of `servers` name `sku`.
pub fn count_servers<'a>(sku: &str, servers: impl IntoIterator<Item = &'a crate::api::MinecraftServer>) -> i32 {
    servers.into_iter().filter(|s| s.spec.sku == sku && s.meta().deletion_timestamp.is_none()).count() as i32
}

/// Reconciles one Sku: `status.servers` and the Ready condition.
pub async fn reconcile(sku: Arc<Sku>, ctx: Arc<Context>) -> Result<Action> {
    let name = sku.name_any();
    // Count only from a complete cache of servers.
    if !super::context::store_ready(&ctx.servers) {
        return Ok(Action::requeue(std::time::Duration::from_millis(500)));
    }
    let servers = ctx.servers.state();
    let count = count_servers(&name, servers.iter().map(|s| s.as_ref()));
    let old = sku.status.clone().unwrap_or_default();
    let (reason, message) = if sku.spec.available {
        ("Available", format!("{count} server(s) use this SKU"))
    } else {
        ("Unavailable", format!("not offered to new servers; {count} existing server(s) keep running"))
    };
    let new = SkuStatus {
        servers: count,
        observed_generation: sku.metadata.generation,
        conditions: conditions::merge(
            &old.conditions,
            &[conditions::Cond::new(conditions::READY, true, reason, message)],
            sku.metadata.generation,
            Timestamp::now(),
        ),
    };
    if new != old {
        let api: Api<Sku> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({"apiVersion": "craftplane.io/v1alpha1", "kind": "Sku", "status": new});
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    ctx.succeeded(&sku.uid().unwrap_or_default());
    // Servers that move to another SKU do not notify the old one: re-count
    // periodically (no write unless the count changed).
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}

/// Backoff on errors.
pub fn error_policy(sku: Arc<Sku>, err: &super::error::Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&sku.uid().unwrap_or_default());
    warn!(sku = %sku.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The Sku controller: its own kind, and the servers that name a SKU.
pub fn controller(w: &Watches, ctx: Arc<Context>, own: Events<Sku>) -> BoxFuture<'static, ()> {
    let c = Controller::for_stream(own, ctx.skus.clone())
        .watches_stream(w.trigger::<crate::api::MinecraftServer>(&w.selected, "MinecraftServer"), |s| {
            Some(ObjectRef::new(&s.spec.sku))
        });
    run(c, w, w.config(true), "Sku", reconcile, error_policy, ctx)
}
