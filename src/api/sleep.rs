//! Sleep and wake: a server that nobody plays on stops (its pod goes, its
//! world volume and configuration stay) and the first player who joins
//! through the gateway starts it again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation a server's owner sets to wake it (any new value, e.g. the
/// time: `kubectl craftplane wake`); handled once per value.
pub const WAKE_ANNOTATION: &str = "craftplane.io/wake-request";
/// Label of the Leases the gateway writes in its own namespace to ask the
/// operator to wake a server (the gateway may write nothing else).
pub const WAKE_LEASE_LABEL: &str = "craftplane.io/wake-request";
/// Annotations of a wake Lease: the server's namespace and name, and who asks.
pub const WAKE_SERVER_NAMESPACE: &str = "craftplane.io/server-namespace";
pub const WAKE_SERVER_NAME: &str = "craftplane.io/server-name";
pub const WAKE_BY: &str = "craftplane.io/wake-by";

/// Name of the wake Lease of a server: one per server, whatever the length
/// of its namespace and name.
pub fn wake_lease_name(namespace: &str, name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("wake-{hex}")
}

/// The shortest idle time accepted: shorter would stop a server between two
/// of its own player checks.
pub const MIN_IDLE: Duration = Duration::from_secs(10);

/// When a server sleeps, and whether a join wakes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SleepPolicy {
    /// Sleep after this long with no player online and no player's
    /// connection open through the gateway: `15m`, `1h`, `90s` (at least
    /// 10 s), or `never`. Absent: the SKU's default (none: never). A
    /// sleep saves the world and stops the pod; the volume and the
    /// configuration stay, phase Hibernated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(never|([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?)$"), length(min = 2, max = 24))]
    pub after_idle: Option<String>,
    /// Whether a player joining through the gateway wakes the server
    /// (default true). A player the whitelist refuses never wakes it.
    /// False: it sleeps until the owner wakes it (`kubectl craftplane wake`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_on_join: Option<bool>,
}

/// A SKU's sleep default for its servers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkuSleep {
    /// Default idle time of this SKU's servers that set none (as in
    /// `MinecraftServer.spec.sleep.afterIdle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(never|([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?)$"), length(min = 2, max = 24))]
    pub after_idle: Option<String>,
    /// Default of `wakeOnJoin` (true when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_on_join: Option<bool>,
    /// The SKU's values apply whatever the server sets (a host that sleeps
    /// every idle server of a cheap tier).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Sleep and wake as the operator last saw them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SleepStatus {
    /// Since when no player has been online (absent while one is, or while
    /// the server does not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Time>,
    /// Since when the server sleeps (absent: awake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asleep_since: Option<Time>,
    /// When it was last woken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_wake: Option<Time>,
    /// Who or what woke it last, e.g. `join of Steve through gateway-7f9c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub last_wake_by: Option<String>,
    /// Wakes so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wake_count: u32,
    /// The wake request last handled (the gateway's request time), so one
    /// request wakes the server once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    /// What the server reported over Server List Ping before it slept, shown
    /// by the gateway while it sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<LastSeen>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A server's answer to Server List Ping, kept while it sleeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSeen {
    /// Version name, e.g. `Paper 1.21.4`.
    #[schemars(length(max = 128))]
    pub version: String,
    /// Protocol number.
    pub protocol: i32,
    /// Player limit.
    pub max_players: i32,
}

/// Parses an idle time: `None` for `never`, an error for anything else not
/// of the schema's pattern or shorter than [`MIN_IDLE`].
pub fn parse_idle(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s == "never" {
        return Ok(None);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_unit = 0u8;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, secs) = match c {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(format!("{s:?} is not an idle time such as 15m, 1h30m, 90s or never")),
        };
        if digits.is_empty() || digits.len() > 5 || rank <= last_unit {
            return Err(format!("{s:?} is not an idle time such as 15m, 1h30m, 90s or never"));
        }
        total += digits.parse::<u64>().map_err(|e| e.to_string())? * secs;
        digits.clear();
        last_unit = rank;
    }
    if !digits.is_empty() || last_unit == 0 {
        return Err(format!("{s:?} is not an idle time such as 15m, 1h30m, 90s or never"));
    }
    let d = Duration::from_secs(total);
    if d < MIN_IDLE {
        return Err(format!("idle time {s:?} is shorter than {} s", MIN_IDLE.as_secs()));
    }
    Ok(Some(d))
}

/// The policy that applies: the SKU's when it forces it, else the server's
/// field by field over the SKU's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSleep {
    /// Idle time before a sleep; `None`: never.
    pub after_idle: Option<Duration>,
    pub wake_on_join: bool,
}

/// Resolves the policy; a value that does not parse (admission should have
/// refused it) is an error with the field's path.
pub fn effective(server: Option<&SleepPolicy>, sku: Option<&SkuSleep>) -> Result<EffectiveSleep, String> {
    let forced = sku.is_some_and(|s| s.force);
    let (idle, idle_field) = match (forced, server.and_then(|s| s.after_idle.as_deref())) {
        (false, Some(v)) => (Some(v), "spec.sleep.afterIdle"),
        _ => (sku.and_then(|s| s.after_idle.as_deref()), "the SKU's sleep.afterIdle"),
    };
    let after_idle = match idle {
        Some(v) => parse_idle(v).map_err(|e| format!("{idle_field}: {e}"))?,
        None => None,
    };
    let wake_on_join = match (forced, server.and_then(|s| s.wake_on_join)) {
        (false, Some(v)) => v,
        _ => sku.and_then(|s| s.wake_on_join).unwrap_or(true),
    };
    Ok(EffectiveSleep { after_idle, wake_on_join })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_times_parse_in_order_of_units() {
        assert_eq!(parse_idle("never"), Ok(None));
        assert_eq!(parse_idle("15m"), Ok(Some(Duration::from_secs(900))));
        assert_eq!(parse_idle("1h30m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_idle("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_idle("1h0m10s"), Ok(Some(Duration::from_secs(3610))));
        for bad in ["", "5", "m", "10m1h", "1x", "1h1h", "9s", "0m", "-5m", "123456m"] {
            assert!(parse_idle(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_sku_forces_or_defaults() {
        let server = SleepPolicy { after_idle: Some("never".into()), wake_on_join: Some(false) };
        let sku = SkuSleep { after_idle: Some("10m".into()), wake_on_join: None, force: false };
        assert_eq!(effective(Some(&server), Some(&sku)), Ok(EffectiveSleep { after_idle: None, wake_on_join: false }));
        assert_eq!(
            effective(None, Some(&sku)),
            Ok(EffectiveSleep { after_idle: Some(Duration::from_secs(600)), wake_on_join: true })
        );
        let forced = SkuSleep { force: true, ..sku };
        assert_eq!(
            effective(Some(&server), Some(&forced)),
            Ok(EffectiveSleep { after_idle: Some(Duration::from_secs(600)), wake_on_join: true })
        );
        assert_eq!(effective(None, None), Ok(EffectiveSleep { after_idle: None, wake_on_join: true }));
        let bad = SleepPolicy { after_idle: Some("5s".into()), wake_on_join: None };
        assert!(effective(Some(&bad), None).unwrap_err().contains("spec.sleep.afterIdle"));
    }
}
