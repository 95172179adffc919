//! Wake requests: when a player who may join logs in to a sleeping server,
//! the gateway writes the server's wake Lease in its own namespace (one
//! per server, `craftplane.io/wake-request`); the operator watches those
//! Leases and starts the server. The gateway's only write: it never
//! touches a tenant's objects, and a Lease names a server the operator
//! checks (asleep, `wakeOnJoin`) before it acts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::routes::ServerKey;
use crate::api::sleep::{WAKE_BY, WAKE_LEASE_LABEL, WAKE_SERVER_NAME, WAKE_SERVER_NAMESPACE, wake_lease_name};

/// Field manager of the gateway's writes.
pub const FIELD_MANAGER: &str = "craftplane-gateway";
/// The same server is asked for at most this often (many players joining
/// at once make one request).
const REPEAT: Duration = Duration::from_secs(5);

/// One request: which server, and who asks (for status and the Event).
#[derive(Clone, Debug)]
pub struct Request {
    pub server: ServerKey,
    pub by: String,
}

/// The Lease asking for `server`'s wake, written by `identity` now.
pub fn lease(namespace: &str, identity: &str, r: &Request, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(wake_lease_name(&r.server.namespace, &r.server.name)),
            namespace: Some(namespace.to_string()),
            labels: Some([(WAKE_LEASE_LABEL.to_string(), "true".to_string())].into()),
            annotations: Some(
                [
                    (WAKE_SERVER_NAMESPACE.to_string(), r.server.namespace.clone()),
                    (WAKE_SERVER_NAME.to_string(), r.server.name.clone()),
                    (WAKE_BY.to_string(), r.by.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(60),
            ..Default::default()
        }),
    }
}

/// Writes the requests until the channel closes.
pub async fn run(client: Client, namespace: String, identity: String, mut rx: mpsc::Receiver<Request>) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last: HashMap<ServerKey, Instant> = HashMap::new();
    while let Some(r) = rx.recv().await {
        let now = Instant::now();
        if last.get(&r.server).is_some_and(|t| now.duration_since(*t) < REPEAT) {
            continue;
        }
        last.retain(|_, t| now.duration_since(*t) < REPEAT);
        last.insert(r.server.clone(), now);
        let l = lease(&namespace, &identity, &r, Timestamp::now());
        let name = l.metadata.name.clone().unwrap_or_default();
        let mut body = serde_json::to_value(&l).unwrap_or_default();
        body["apiVersion"] = "coordination.k8s.io/v1".into();
        body["kind"] = "Lease".into();
        match api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await {
            Ok(_) => info!(server = %r.server, by = %r.by, lease = %name, "asked the operator to wake the server"),
            Err(e) => warn!(server = %r.server, error = %e, "cannot write the wake request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_names_the_server_and_who_asks() {
        let r = Request {
            server: ServerKey { namespace: "tenant-a".into(), name: "survival".into() },
            by: "join of Steve".into(),
        };
        let l = lease("craftplane-system", "gw-1", &r, "2026-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(l.metadata.name.as_deref(), Some(wake_lease_name("tenant-a", "survival").as_str()));
        let a = l.metadata.annotations.unwrap();
        assert_eq!(a[WAKE_SERVER_NAMESPACE], "tenant-a");
        assert_eq!(a[WAKE_SERVER_NAME], "survival");
        let req = crate::controller::server::sleep::WakeRequest::of(&Lease {
            metadata: ObjectMeta { annotations: Some(a), ..Default::default() },
            spec: l.spec,
        })
        .unwrap();
        assert_eq!(req.by, "join of Steve");
        assert_eq!(req.at, "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        // Two servers, two Leases, whatever their names' lengths.
        let long = "x".repeat(253);
        assert_ne!(wake_lease_name("a", &long), wake_lease_name("b", &long));
        assert!(wake_lease_name("a", &long).len() < 64);
    }
}
