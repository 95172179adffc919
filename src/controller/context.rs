//! State shared by all reconcilers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use super::metrics::Metrics;
use crate::api::{MinecraftServer, Sku, Tenant};
use crate::minecraft::slp;

/// Settings from the command line that reconcilers read.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interval between Server List Pings of each running server; `None` disables them.
    pub slp_interval: Option<Duration>,
    /// Ping this address instead of each server's Service (local development).
    pub slp_address: Option<String>,
    /// Periodic re-check of every object even without events.
    pub resync: Duration,
    /// Namespace the operator runs in (may reach RCON in tenant namespaces).
    pub operator_namespace: String,
}

/// Key of a namespaced object.
pub type Key = (String, String);

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub skus: Store<Sku>,
    pub servers: Store<MinecraftServer>,
    pub tenants: Store<Tenant>,
    pub settings: Settings,
    /// Last Server List Ping result per server.
    pub pings: Mutex<HashMap<Key, Result<slp::Status, String>>>,
    /// Consecutive failures per object UID, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        skus: Store<Sku>,
        servers: Store<MinecraftServer>,
        tenants: Store<Tenant>,
        settings: Settings,
    ) -> Context {
        Context {
            client,
            metrics,
            recorder,
            skus,
            servers,
            tenants,
            settings,
            pings: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// Records a failure of `uid`; returns the backoff before the next try
    /// (1 s doubling up to 5 min).
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }

    /// Clears the failure count of `uid` after a success.
    pub fn succeeded(&self, uid: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(uid);
    }

    /// The last ping result of a server.
    pub fn ping(&self, key: &Key) -> Option<Result<slp::Status, String>> {
        self.pings.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }
}

/// Whether a reflector store has completed its first list, without waiting.
pub fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    use futures::FutureExt;
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}
