//! kstatus-style conditions: Ready, Reconciling, Stalled.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types craftplane sets on every kind.
pub const READY: &str = "Ready";
/// True while the operator is converging the object.
pub const RECONCILING: &str = "Reconciling";
/// True when progress needs a spec change (or another object to change).
pub const STALLED: &str = "Stalled";

/// A condition without its transition time; [`merge`] fills that in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Cond {
        Cond { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Builds the new condition list. A condition whose status did not change
/// keeps its lastTransitionTime, so an unchanged object yields an identical
/// list (no write).
pub fn merge(old: &[Condition], new: &[Cond], generation: Option<i64>, now: Timestamp) -> Vec<Condition> {
    new.iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_string();
            let prev = old.iter().find(|o| o.type_ == c.type_);
            let last_transition_time = match prev {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The three kstatus conditions from one outcome.
pub fn kstatus(ready: bool, stalled: bool, reason: &str, message: &str) -> Vec<Cond> {
    vec![
        Cond::new(READY, ready, reason, message),
        Cond::new(RECONCILING, !ready && !stalled, reason, if !ready && !stalled { message } else { "" }),
        Cond::new(STALLED, stalled, reason, if stalled { message } else { "" }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let first = merge(&[], &kstatus(false, false, "Provisioning", "creating"), Some(1), t0);
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|c| c.last_transition_time.0 == t0));
        let again = merge(&first, &kstatus(false, false, "Provisioning", "creating"), Some(1), t1);
        assert_eq!(first, again, "identical input gives identical output");
        let ready = merge(&first, &kstatus(true, false, "Running", "ok"), Some(1), t1);
        let r = ready.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((r.status.as_str(), r.last_transition_time.0), ("True", t1));
        let s = ready.iter().find(|c| c.type_ == STALLED).unwrap();
        assert_eq!(s.last_transition_time.0, t0, "Stalled stayed False");
    }
}
