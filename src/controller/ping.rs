//! Polls running servers with Server List Ping, off the reconcile path: a
//! slow or dead server never blocks a reconcile. Changed results trigger a
//! reconcile of that server, which writes status only if it changed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tracing::debug;

use super::context::Context;
use crate::api::MinecraftServer;
use crate::api::server::{ServerPhase, ServerState};
use crate::minecraft::slp;
use crate::resources::GAME_PORT;

/// Timeout of one ping.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Pings in flight at once.
const PARALLEL: usize = 32;

/// Where to ping a server: the override, else its game Service.
fn target(ctx: &Context, s: &MinecraftServer) -> Option<(String, u16)> {
    if let Some(addr) = &ctx.settings.slp_address {
        let (h, p) = addr.rsplit_once(':')?;
        return Some((h.to_string(), p.parse().ok()?));
    }
    let ns = s.namespace()?;
    let port = s.spec.service.as_ref().map(|s| s.port).unwrap_or(GAME_PORT);
    Some((format!("{}.{ns}.svc", s.name_any()), u16::try_from(port).ok()?))
}

/// Runs until the channel closes.
pub async fn run(ctx: Arc<Context>, interval: Duration, trigger: mpsc::Sender<ObjectRef<MinecraftServer>>) {
    loop {
        let servers: Vec<Arc<MinecraftServer>> = ctx
            .servers
            .state()
            .into_iter()
            .filter(|s| {
                s.spec.state == ServerState::Running
                    && matches!(
                        s.status.as_ref().and_then(|st| st.phase),
                        Some(ServerPhase::Running | ServerPhase::Starting)
                    )
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(servers)
            .map(|s| {
                let ctx = ctx.clone();
                async move {
                    let (host, port) = target(&ctx, &s)?;
                    let r = slp::ping(&host, port, PING_TIMEOUT)
                        .await
                        .map_err(|e| crate::resources::text::clean(&e.to_string(), 512, false));
                    debug!(server = %s.name_any(), ok = r.is_ok(), "server list ping");
                    Some((s, r))
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (s, r) in results.into_iter().flatten() {
            let key = (s.namespace().unwrap_or_default(), s.name_any());
            let changed = {
                let mut pings = ctx.pings.lock().unwrap_or_else(|p| p.into_inner());
                let changed = pings.get(&key) != Some(&r);
                pings.insert(key, r);
                changed
            };
            if changed && trigger.send(ObjectRef::from_obj(s.as_ref())).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(interval).await;
    }
}
