//! Sleep and wake (`spec.sleep`): the operator decides, the gateway asks.
//!
//! A server sleeps after its idle time with no player online (Server List
//! Ping) and no player's connection open through any gateway replica (asked
//! of each, see [`gateway_idle`]): its StatefulSet goes to 0 replicas — the
//! same graceful stop as `spec.state: Stopped`, world saved — and the volume,
//! Secret, ConfigMap and Services stay. It wakes on a wake Lease the gateway
//! writes in its own namespace when a player who may join logs in (the
//! operator stays the only writer of the StatefulSet; the gateway writes
//! nothing of a tenant's), on the owner's `craftplane.io/wake-request`
//! annotation, or when sleeping is turned off. `spec.state: Stopped` is a
//! hard stop: it ends a sleep and nothing wakes it.
//!
//! [`plan`] is pure; the reconcile does the I/O around it.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::debug;

use crate::api::server::ServerPhase;
use crate::api::sleep::{EffectiveSleep, LastSeen, SleepStatus, WAKE_BY};
use crate::minecraft::slp;

/// A wake request read from the server's wake Lease.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeRequest {
    /// When the gateway asked (the Lease's acquire or renew time).
    pub at: Timestamp,
    /// Who asked, e.g. `join of Steve through craftplane-gateway-7f9c`.
    pub by: String,
}

impl WakeRequest {
    /// The request of a wake Lease (`None` without a time).
    pub fn of(lease: &Lease) -> Option<WakeRequest> {
        let spec = lease.spec.as_ref()?;
        let at = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
        let by = lease.annotations().get(WAKE_BY).cloned().unwrap_or_else(|| "the gateway".into());
        Some(WakeRequest { at, by: crate::resources::text::clean(&by, 200, false) })
    }
}

/// What [`plan`] needs.
pub struct Inputs<'a> {
    pub policy: EffectiveSleep,
    /// `spec.state` is Running and no restore holds the server stopped.
    pub running: bool,
    /// The phase the server has as seen before this reconcile's writes.
    pub phase: ServerPhase,
    pub ping: Option<&'a Result<slp::Status, String>>,
    pub old: Option<&'a SleepStatus>,
    pub lease: Option<WakeRequest>,
    /// The owner's `craftplane.io/wake-request` annotation.
    pub annotation: Option<&'a str>,
    pub now: Timestamp,
}

/// What to do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The new `status.sleep` (`None`: nothing to record).
    pub status: Option<SleepStatus>,
    /// The server sleeps: 0 replicas.
    pub asleep: bool,
    /// The idle time is over: sleep now if no gateway has a connection open.
    pub sleep_due: bool,
    /// Look again after this long (the end of the idle time).
    pub wait: Option<Duration>,
    /// The wake Lease was read (handled, stale or refused): delete it.
    pub delete_lease: bool,
    /// It wakes now, by this.
    pub woke_by: Option<String>,
}

/// Decides sleep and wake from what the server shows.
pub fn plan(i: &Inputs) -> Plan {
    let mut st = i.old.cloned().unwrap_or_default();
    let mut p = Plan { delete_lease: i.lease.is_some(), ..Default::default() };
    let annotation_new = i.annotation.is_some_and(|a| st.handled_request.as_deref() != Some(a));
    if let Some(a) = i.annotation {
        st.handled_request = Some(a.to_string());
    }
    let now = Time(i.now);
    if !i.running {
        // A hard stop (or a restore) ends a sleep; the idle clock starts
        // again when the server runs.
        st.idle_since = None;
        st.asleep_since = None;
    } else if let Some(since) = st.asleep_since.clone() {
        let by = if i.policy.after_idle.is_none() {
            Some("sleeping turned off (spec.sleep or the SKU)".to_string())
        } else if annotation_new {
            Some(format!("the {} annotation", crate::api::sleep::WAKE_ANNOTATION))
        } else {
            i.lease.as_ref().filter(|l| i.policy.wake_on_join && l.at > since.0).map(|l| l.by.clone())
        };
        if let Some(by) = by {
            st.asleep_since = None;
            st.idle_since = None;
            st.last_wake = Some(now);
            st.last_wake_by = Some(by.clone());
            st.wake_count = st.wake_count.saturating_add(1);
            p.woke_by = Some(by);
        } else {
            p.asleep = true;
        }
    } else {
        match (i.phase, i.ping) {
            (ServerPhase::Running, Some(Ok(s))) => {
                st.last_seen = Some(LastSeen {
                    version: crate::resources::text::clean(&s.version, 128, false),
                    protocol: s.protocol,
                    max_players: s.max,
                });
                if s.online > 0 {
                    st.idle_since = None;
                } else if st.idle_since.is_none() {
                    st.idle_since = Some(now);
                }
            }
            // The idle clock runs only while the server runs and answers.
            _ => st.idle_since = None,
        }
        if let (Some(idle), Some(since)) = (i.policy.after_idle, st.idle_since.as_ref()) {
            let elapsed = i.now.duration_since(since.0);
            let left = k8s_openapi::jiff::SignedDuration::try_from(idle)
                .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
                - elapsed;
            if left.is_zero() || left.is_negative() {
                p.sleep_due = true;
            } else {
                p.wait = Some(Duration::try_from(left).unwrap_or(idle));
            }
        }
    }
    p.status = (st != SleepStatus::default()).then_some(st);
    p
}

/// Marks `status` asleep from `now`.
pub fn fall_asleep(status: &mut SleepStatus, now: Timestamp) {
    status.asleep_since = Some(Time(now));
    status.idle_since = None;
}

/// Whether no gateway replica has a player's connection to the server open:
/// each address `gateway` resolves to (the chart's headless Service lists
/// every ready gateway pod) is asked `GET /connections?server=ns/name`.
/// Any that does not answer counts as "maybe": the server stays awake and
/// is asked again later (a sleep never cuts a player off). Without a
/// gateway configured, only the players matter.
pub async fn gateway_idle(http: &reqwest::Client, gateway: Option<&str>, namespace: &str, name: &str) -> bool {
    let Some(gateway) = gateway else { return true };
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(gateway).await {
        Ok(a) => a.collect(),
        Err(e) => {
            debug!(gateway, error = %e, "cannot resolve the gateway; not sleeping now");
            return false;
        }
    };
    if addrs.is_empty() {
        return false;
    }
    for a in addrs {
        let url = format!("http://{a}/connections?server={namespace}/{name}");
        let open = async {
            let r = http.get(&url).timeout(Duration::from_secs(3)).send().await.ok()?;
            let v: serde_json::Value = r.error_for_status().ok()?.json().await.ok()?;
            v.get("open")?.as_u64()
        }
        .await;
        match open {
            Some(0) => {}
            other => {
                debug!(%url, ?other, "a gateway has connections open or did not answer; not sleeping now");
                return false;
            }
        }
    }
    true
}

/// Deletes a handled wake Lease, only in the version read (a newer request
/// written meanwhile stays and triggers another reconcile).
pub async fn delete_lease(ctx: &super::Context, lease: &Lease) -> super::Result<()> {
    let api: kube::Api<Lease> = kube::Api::namespaced(ctx.client.clone(), &ctx.settings.operator_namespace);
    let dp = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions { resource_version: lease.resource_version(), uid: lease.uid() }),
        ..Default::default()
    };
    match api.delete(&lease.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn status(online: i32) -> Result<slp::Status, String> {
        Ok(slp::Status {
            version: "Paper 1.21.4".into(),
            protocol: 769,
            online,
            max: 20,
            names: vec![],
            motd: String::new(),
        })
    }

    fn inputs<'a>(
        old: Option<&'a SleepStatus>,
        ping: Option<&'a Result<slp::Status, String>>,
        now: &str,
    ) -> Inputs<'a> {
        Inputs {
            policy: EffectiveSleep { after_idle: Some(Duration::from_secs(600)), wake_on_join: true },
            running: true,
            phase: ServerPhase::Running,
            ping,
            old,
            lease: None,
            annotation: None,
            now: ts(now),
        }
    }

    #[test]
    fn idle_time_runs_from_the_first_empty_ping_and_resets_on_a_player() {
        let empty = status(0);
        let p = plan(&inputs(None, Some(&empty), "2026-01-01T00:00:00Z"));
        let st = p.status.clone().unwrap();
        assert_eq!(st.idle_since, Some(Time(ts("2026-01-01T00:00:00Z"))));
        assert_eq!(st.last_seen.as_ref().unwrap().protocol, 769);
        assert_eq!(p.wait, Some(Duration::from_secs(600)));
        assert!(!p.sleep_due && !p.asleep);
        // Nine minutes later: still counting from the first.
        let p2 = plan(&inputs(Some(&st), Some(&empty), "2026-01-01T00:09:00Z"));
        assert_eq!(p2.status.as_ref(), Some(&st), "no status write while idle");
        assert_eq!(p2.wait, Some(Duration::from_secs(60)));
        // Ten: due.
        assert!(plan(&inputs(Some(&st), Some(&empty), "2026-01-01T00:10:00Z")).sleep_due);
        // A player: the clock stops.
        let one = status(1);
        let p3 = plan(&inputs(Some(&st), Some(&one), "2026-01-01T00:09:59Z"));
        assert_eq!(p3.status.unwrap().idle_since, None);
        assert!(!p3.sleep_due);
        // A failed ping or a starting server: no clock.
        let failed: Result<slp::Status, String> = Err("timeout".into());
        assert_eq!(plan(&inputs(Some(&st), Some(&failed), "2026-01-01T00:20:00Z")).status.unwrap().idle_since, None);
        let mut starting = inputs(Some(&st), Some(&empty), "2026-01-01T00:20:00Z");
        starting.phase = ServerPhase::Starting;
        assert!(!plan(&starting).sleep_due);
        // Never: no deadline.
        let mut never = inputs(Some(&st), Some(&empty), "2026-01-01T05:00:00Z");
        never.policy.after_idle = None;
        let p4 = plan(&never);
        assert!(!p4.sleep_due && p4.wait.is_none());
    }

    #[test]
    fn a_newer_wake_request_wakes_once() {
        let mut asleep = SleepStatus::default();
        fall_asleep(&mut asleep, ts("2026-01-01T01:00:00Z"));
        let mut i = inputs(Some(&asleep), None, "2026-01-01T02:00:00Z");
        assert!(plan(&i).asleep);
        // A request older than the sleep (left from before): deleted, no wake.
        i.lease = Some(WakeRequest { at: ts("2026-01-01T00:59:00Z"), by: "old".into() });
        let p = plan(&i);
        assert!(p.asleep && p.delete_lease && p.woke_by.is_none());
        // A join after it: wakes, counted.
        i.lease = Some(WakeRequest { at: ts("2026-01-01T01:59:00Z"), by: "join of Steve".into() });
        let p = plan(&i);
        assert!(!p.asleep && p.delete_lease);
        assert_eq!(p.woke_by.as_deref(), Some("join of Steve"));
        let st = p.status.unwrap();
        assert_eq!((st.wake_count, st.asleep_since.is_none()), (1, true));
        assert_eq!(st.last_wake, Some(Time(ts("2026-01-01T02:00:00Z"))));
        // wakeOnJoin false: a join does not wake.
        i.policy.wake_on_join = false;
        assert!(plan(&i).asleep);
        // The owner's annotation does, once per value.
        i.lease = None;
        i.annotation = Some("2026-01-01T02:00:00Z");
        let p = plan(&i);
        assert!(!p.asleep);
        let mut again = p.status.unwrap();
        fall_asleep(&mut again, ts("2026-01-01T03:00:00Z"));
        i.old = Some(&again);
        assert!(plan(&i).asleep, "the same annotation value wakes once");
        // Sleeping turned off: wakes.
        i.policy.after_idle = None;
        assert!(!plan(&i).asleep);
    }

    #[test]
    fn a_hard_stop_ends_a_sleep_and_nothing_wakes_it() {
        let mut asleep = SleepStatus::default();
        fall_asleep(&mut asleep, ts("2026-01-01T01:00:00Z"));
        let mut i = inputs(Some(&asleep), None, "2026-01-01T02:00:00Z");
        i.running = false;
        i.phase = ServerPhase::Stopped;
        i.lease = Some(WakeRequest { at: ts("2026-01-01T01:59:00Z"), by: "join".into() });
        let p = plan(&i);
        assert!(!p.asleep && p.woke_by.is_none() && p.delete_lease && !p.sleep_due);
        assert_eq!(p.status, None, "nothing left to record");
    }
}
