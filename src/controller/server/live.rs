//! The operator's RCON sessions with running servers: the live settings
//! (whitelist, ops, difficulty, game rules) applied without a restart, and
//! the connection console commands use. A session is opened for the work at
//! hand and closed after it: no connection is held per idle server.
//!
//! A live apply runs on its own task, one at a time per server (a second
//! one waits for the first: an older session finishing late must not undo a
//! newer one), so an unreachable pod never holds the server's reconcile; the
//! result comes back through [`Sessions`] and a wake-up of the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::api::server::{LiveStatus, MinecraftServer, ServerPhase};
use crate::controller::conditions::Cond;
use crate::controller::context::Context;
use crate::minecraft::rcon::Rcon;
use crate::resources::live::{self, LiveSettings};
use crate::resources::{ServerModel, secret, text};

/// Condition type of the live settings.
pub const LIVE_CONFIG: &str = "LiveConfig";
/// Deadline of one RCON connect, login or command exchange (as a whole).
const RCON_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts per session (1 s, then 2 s apart).
const ATTEMPTS: u32 = 3;
/// When a failed live apply is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// RCON sessions open at once in this process, in all.
pub const MAX_SESSIONS: usize = 64;
/// RCON sessions open at once for one tenant's servers (or, outside any
/// tenant, one namespace's): a tenant whose servers never answer holds at
/// most this share of [`MAX_SESSIONS`], and waits for its own.
pub const MAX_SESSIONS_PER_TENANT: usize = 8;

/// The bounds on concurrent RCON sessions: one semaphore per tenant, then
/// a global one (taken in that order, so one tenant never queues more than
/// its share on the global one). Waiting for a slot holds no reconcile:
/// sessions run on their own tasks.
pub struct Slots {
    global: Arc<Semaphore>,
    per_owner: usize,
    owners: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for Slots {
    fn default() -> Slots {
        Slots::new(MAX_SESSIONS, MAX_SESSIONS_PER_TENANT)
    }
}

/// A held slot, released on drop.
pub struct Permit {
    _owner: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(global: usize, per_owner: usize) -> Slots {
        Slots { global: Arc::new(Semaphore::new(global)), per_owner, owners: Mutex::default() }
    }

    /// Waits for a slot of `owner` (a tenant or namespace key).
    pub async fn acquire(&self, owner: &str) -> Result<Permit, String> {
        let sem = {
            let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            if owners.len() > 1024 {
                // Owners with no session going on or waiting.
                owners.retain(|_, s| Arc::strong_count(s) > 1);
            }
            owners.entry(owner.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_owner))).clone()
        };
        let closed = |_| "the RCON slots are closed (the operator is stopping)".to_string();
        let own = sem.acquire_owned().await.map_err(closed)?;
        let global = self.global.clone().acquire_owned().await.map_err(closed)?;
        Ok(Permit { _owner: own, _global: global })
    }
}

/// Whose share of the RCON slots a namespace's servers use: the tenant
/// that owns the namespace, else the namespace itself.
fn owner(ctx: &Context, ns: &str) -> String {
    ctx.tenants
        .state()
        .iter()
        .find(|t| t.status.as_ref().is_some_and(|s| s.namespaces.iter().any(|n| n == ns)))
        .map(|t| format!("tenant/{}", t.name_any()))
        .unwrap_or_else(|| format!("namespace/{ns}"))
}

/// An RCON session holding one of its tenant's slots.
pub struct RconSession {
    rcon: Rcon,
    _permit: Permit,
}

impl RconSession {
    /// Runs a command (one exchange, within its deadline).
    pub async fn command(&mut self, cmd: &str) -> Result<String, String> {
        self.rcon.command(cmd).await
    }
}

/// Opens an RCON session with the server's pod: a slot of its tenant (see
/// [`Slots`]), the password from the server's Secret, the pod's own address
/// (it works from the operator's pod and from a host that routes to the pod
/// network). Bounded retries, each attempt timed out.
pub async fn connect(ctx: &Context, ns: &str, server: &str, pod: &Pod) -> Result<RconSession, String> {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).ok_or("the server's pod has no IP address yet")?;
    let permit = ctx.rcon_slots.acquire(&owner(ctx, ns)).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = crate::resources::secret_name(server);
    let s = secrets.get(&name).await.map_err(|e| format!("cannot read the RCON Secret {name}: {e}"))?;
    let password = s
        .data
        .as_ref()
        .and_then(|d| d.get(secret::PASSWORD_KEY))
        .map(|b| String::from_utf8_lossy(&b.0).trim_end_matches('\n').to_string())
        .ok_or_else(|| format!("the RCON Secret {name} has no {:?} key", secret::PASSWORD_KEY))?;
    let addr = crate::resources::rcon_address(&ip);
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        match Rcon::connect(&addr, &password, RCON_TIMEOUT).await {
            Ok(rcon) => return Ok(RconSession { rcon, _permit: permit }),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Live applies of this process: per server (`namespace/name`), the one
/// going on or the last one's result.
#[derive(Default)]
pub struct Sessions {
    state: Mutex<HashMap<String, Session>>,
}

struct Session {
    /// The settings revision and pod the session is for.
    revision: String,
    pod: Option<String>,
    /// None while it runs.
    result: Option<Finished>,
}

struct Finished {
    result: Result<usize, (&'static str, String)>,
    at: Instant,
    applied_at: Timestamp,
}

/// A server's entry in [`Sessions`].
fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Sessions {
    /// Forgets a deleted server.
    pub fn forget(&self, ns: &str, name: &str) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).remove(&key(ns, name));
    }
}

/// What a reconcile learned about the live settings.
pub struct Outcome {
    pub status: Option<LiveStatus>,
    /// The `LiveConfig` condition, when there is one to show.
    pub condition: Option<Cond>,
    /// Try again after this long (a failed apply).
    pub retry: Option<Duration>,
}

fn carried(old: &[Condition]) -> Option<Cond> {
    old.iter()
        .find(|c| c.type_ == LIVE_CONFIG)
        .map(|c| Cond::new(LIVE_CONFIG, c.status == "True", &c.reason, &c.message))
}

/// Applies the live settings to the running pod when they changed since
/// the last apply (or, with game rules, when the pod is new). Nothing
/// happens unless the server is Running: a starting server reads the same
/// settings from its ConfigMap.
pub fn apply(
    ctx: &Arc<Context>,
    server: &MinecraftServer,
    m: &ServerModel,
    pod: Option<&Pod>,
    phase: ServerPhase,
) -> Outcome {
    let st = server.status.as_ref();
    let old = st.and_then(|s| s.live.clone());
    let old_conditions = st.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let unchanged = Outcome { status: old.clone(), condition: carried(old_conditions), retry: None };
    let Some(pod) = pod.filter(|_| phase == ServerPhase::Running) else {
        return unchanged;
    };
    let uid = pod.metadata.uid.clone();
    let want = m.live();
    let revision = want.revision();
    if let Some(o) = &old
        && o.revision.as_deref() == Some(revision.as_str())
        && o.pod == uid
    {
        return unchanged;
    }
    // A pod starts with what the ConfigMap says (the whitelist, ops and
    // difficulty); only changes after that need RCON. Game rules live in
    // the world and go to every new pod. So: the first sight of a pod with
    // unchanged settings (or of a server that never had any applied) is
    // recorded without a connection — idle and starting servers are never
    // contacted.
    let same_settings = old.as_ref().is_none_or(|o| o.revision.as_deref() == Some(revision.as_str()));
    if same_settings && want.game_rules.is_empty() {
        let ops = old.as_ref().map(|o| o.ops.clone()).filter(|o| !o.is_empty()).unwrap_or_else(|| want.ops.clone());
        return Outcome {
            status: Some(LiveStatus {
                revision: Some(revision),
                pod: uid,
                applied_at: old.as_ref().and_then(|o| o.applied_at.clone()),
                ops,
            }),
            condition: carried(old_conditions),
            retry: None,
        };
    }
    let key = key(&m.namespace, &m.name);
    let mut sessions = ctx.live.state.lock().unwrap_or_else(|p| p.into_inner());
    let finished = match sessions.get(&key) {
        // One session at a time: wait for the one going on (its end wakes
        // the server).
        Some(s) if s.result.is_none() => return unchanged,
        Some(Session { revision: r, pod: p, result: Some(f) }) if *r == revision && *p == uid => {
            let again = RETRY.saturating_sub(f.at.elapsed());
            match &f.result {
                Ok(n) => Some((Ok(*n), f.applied_at)),
                Err(e) if !again.is_zero() => Some((Err((e.clone(), again)), f.applied_at)),
                Err(_) => None,
            }
        }
        _ => None,
    };
    let Some((result, applied_at)) = finished else {
        sessions.insert(key, Session { revision: revision.clone(), pod: uid.clone(), result: None });
        drop(sessions);
        start(ctx, m, pod, want, old.as_ref().map(|o| o.ops.clone()).unwrap_or_default(), revision, uid);
        return unchanged;
    };
    drop(sessions);
    match result {
        Ok(n) => {
            let message = format!("live settings {revision} applied over RCON ({n} commands) without a restart");
            Outcome {
                status: Some(LiveStatus {
                    revision: Some(revision),
                    pod: uid,
                    applied_at: Some(Time(applied_at)),
                    ops: want.ops.clone(),
                }),
                condition: Some(Cond::new(LIVE_CONFIG, true, "Applied", message)),
                retry: None,
            }
        }
        Err(((reason, message), again)) => {
            // Ops it made before stay recorded (a later apply may deop them).
            let status = old.map(|o| LiveStatus { ops: merged_ops(&o.ops, &want.ops), ..o });
            Outcome { status, condition: Some(Cond::new(LIVE_CONFIG, false, reason, message)), retry: Some(again) }
        }
    }
}

/// Runs one session on its own task; records the result and wakes the
/// server.
fn start(
    ctx: &Arc<Context>,
    m: &ServerModel,
    pod: &Pod,
    want: LiveSettings,
    applied_ops: Vec<String>,
    revision: String,
    uid: Option<String>,
) {
    let (ctx, ns, name, pod) = (ctx.clone(), m.namespace.clone(), m.name.clone(), pod.clone());
    tokio::spawn(async move {
        let result = run(&ctx, &ns, &name, &pod, &want, &applied_ops).await;
        match &result {
            Ok(n) => info!(server = %name, namespace = %ns, commands = n, %revision, "live settings applied"),
            Err((reason, message)) => {
                warn!(server = %name, namespace = %ns, reason, message, "live settings not applied")
            }
        }
        if let Some(s) = ctx.live.state.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key(&ns, &name))
            && s.revision == revision
            && s.pod == uid
        {
            s.result = Some(Finished { result, at: Instant::now(), applied_at: Timestamp::now() });
        }
        ctx.wake(ObjectRef::new(&name).within(&ns)).await;
    });
}

fn merged_ops(before: &[String], now: &[String]) -> Vec<String> {
    let mut all: Vec<String> = before.iter().chain(now).cloned().collect();
    all.sort_by_key(|s| s.to_lowercase());
    all.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    all.truncate(100);
    all
}

/// One session: read the whitelist, send the commands. The number of
/// commands sent, or (reason, message).
async fn run(
    ctx: &Context,
    ns: &str,
    name: &str,
    pod: &Pod,
    want: &LiveSettings,
    applied_ops: &[String],
) -> Result<usize, (&'static str, String)> {
    let mut rcon = connect(ctx, ns, name, pod).await.map_err(|e| ("RconUnreachable", e))?;
    let answer = rcon.command("whitelist list").await.map_err(|e| ("RconUnreachable", e))?;
    let listed = live::parse_whitelist(&answer).ok_or_else(|| {
        ("CommandFailed", format!("unexpected answer to `whitelist list`: {:?}", text::first_line(&answer, 200)))
    })?;
    let commands = live::commands(want, &listed, applied_ops);
    let mut failures = Vec::new();
    for c in &commands {
        let answer = rcon.command(c).await.map_err(|e| ("RconUnreachable", format!("{c}: {e}")))?;
        if live::failed(&answer) {
            failures.push(format!("`{c}`: {}", text::first_line(&answer, 200)));
        }
    }
    if failures.is_empty() {
        Ok(commands.len())
    } else {
        let all = format!("the server refused {}", failures.join("; "));
        Err(("CommandFailed", text::clean(&all, text::MAX_MESSAGE, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant whose sessions never end holds only its own share: the
    /// next of its sessions waits, another tenant's starts at once; the
    /// global cap bounds them all.
    #[tokio::test]
    async fn one_tenant_holds_at_most_its_share_of_rcon_slots() {
        let slots = Slots::new(5, 2);
        let wait = Duration::from_millis(200);
        let mut held = vec![slots.acquire("tenant/evil").await.unwrap(), slots.acquire("tenant/evil").await.unwrap()];
        assert!(tokio::time::timeout(wait, slots.acquire("tenant/evil")).await.is_err(), "a third one of evil waits");
        held.push(slots.acquire("tenant/good").await.expect("another tenant is not starved"));
        held.push(slots.acquire("namespace/x").await.unwrap());
        held.push(slots.acquire("tenant/good").await.unwrap());
        assert!(tokio::time::timeout(wait, slots.acquire("tenant/other")).await.is_err(), "global cap of 5");
        // A slot given back goes to the next waiter.
        held.remove(0);
        let p = tokio::time::timeout(wait, slots.acquire("tenant/evil")).await.expect("a released slot is reused");
        drop((p, held));
        assert_eq!(slots.global.available_permits(), 5);
    }
}
