//! Watch plumbing shared by the controllers: the watch configurations,
//! caches and trigger streams, and the loop that runs one controller. Each
//! reconciler module wires its own controller (`controller(...)`) from these
//! parts; `run_controllers` only composes them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{Action, Config as CtrlConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::warn;

use super::context::Context;
use super::error;

/// A stream of watched objects, as controllers take them.
pub type Events<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// What every controller's wiring needs: the client, the watch
/// configurations, the reconcile settings and the stop signal.
#[derive(Clone)]
pub struct Watches {
    pub client: Client,
    /// craftplane's own kinds, limited by `--watch-label-selector` (sharding).
    pub selected: watcher::Config,
    /// Objects the operator created (label `managed-by=craftplane`).
    pub children: watcher::Config,
    /// The servers' pods.
    pub pods: watcher::Config,
    /// Everything of a kind (no selector).
    pub all: watcher::Config,
    /// Reconciles at once, per kind.
    pub concurrency: u16,
    /// Wait for more events of an object before reconciling it.
    pub debounce: Duration,
    pub stop: watch::Receiver<bool>,
}

impl Watches {
    pub fn new(
        client: Client,
        selector: Option<&str>,
        concurrency: u16,
        debounce: Duration,
        stop: watch::Receiver<bool>,
    ) -> Watches {
        let all = watcher::Config::default().page_size(50);
        let mut selected = all.clone();
        if let Some(sel) = selector {
            selected = selected.labels(sel);
        }
        Watches {
            client,
            selected,
            children: all.clone().labels("app.kubernetes.io/managed-by=craftplane"),
            pods: all.clone().labels("app.kubernetes.io/managed-by=craftplane,app.kubernetes.io/component=server"),
            all,
            concurrency,
            debounce,
            stop,
        }
    }

    /// A trigger stream (no cache) of every `K` matching `cfg`, for
    /// `Controller::watches_stream`/`owns_stream`.
    pub fn trigger<K>(&self, cfg: &watcher::Config, kind: &'static str) -> Events<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + serde::de::DeserializeOwned + 'static,
    {
        watcher(Api::<K>::all(self.client.clone()), cfg.clone())
            .default_backoff()
            .touched_objects()
            .filter_map(no_errors(kind))
            .boxed()
    }

    /// Controller settings: the concurrency, and the debounce when asked
    /// (a burst of child events becomes one reconcile and one status write).
    pub fn config(&self, debounced: bool) -> CtrlConfig {
        let c = CtrlConfig::default().concurrency(self.concurrency);
        if debounced { c.debounce(self.debounce) } else { c }
    }

    /// Resolves when the process is asked to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// Drops watch errors after logging them. Every watch stream retries with
/// backoff and never hands an error to a controller (an error reaching a
/// controller's trigger queue was the suspect when controllers stopped
/// reconciling after an API server restart).
fn no_errors<K: kube::Resource>(
    kind: &'static str,
) -> impl FnMut(Result<K, watcher::Error>) -> futures::future::Ready<Option<Result<K, watcher::Error>>> {
    move |r| {
        futures::future::ready(match r {
            Ok(o) => Some(Ok(o)),
            Err(e) => {
                warn!(kind, error = %e, "watch failed; retrying");
                None
            }
        })
    }
}

/// A cache (managedFields and what `slim` drops left out) and the stream of
/// the objects it sees: applied objects for a controller's own kind
/// (`deletes: false`), deletions too for children (an owner must notice a
/// deleted child).
pub fn cached<K>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: &'static str,
    slim: fn(&mut K),
    deletes: bool,
) -> (reflector::Store<K>, Events<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = watcher(api, cfg)
        .default_backoff()
        .modify(move |o: &mut K| {
            // `slim` keeps the operator's own field sets (drift detection).
            slim(o);
            o.meta_mut().managed_fields = None;
        })
        .reflect(writer);
    let stream = if deletes {
        events.touched_objects().filter_map(no_errors(kind)).boxed()
    } else {
        events.applied_objects().filter_map(no_errors(kind)).boxed()
    };
    (store, stream)
}

/// The cache and trigger stream of a controller's own kind.
pub fn primary<K>(client: &Client, cfg: &watcher::Config, kind: &'static str) -> (reflector::Store<K>, Events<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
{
    cached(Api::all(client.clone()), cfg.clone(), kind, |_| {}, false)
}

/// Every object of `K` in `store` that `pick` selects (a mapper for
/// `watches_stream`).
pub fn refs<K>(store: &reflector::Store<K>, pick: impl Fn(&K) -> bool) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.state().into_iter().filter(|o| pick(o)).map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}

/// Runs `controller` until stopped: each reconcile timed and counted by
/// `kind`, errors handled by `error_policy`.
pub fn run<K, Fut>(
    controller: Controller<K>,
    w: &Watches,
    cfg: CtrlConfig,
    kind: &'static str,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<K>, &error::Error, Arc<Context>) -> Action,
    ctx: Arc<Context>,
) -> BoxFuture<'static, ()>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    Fut: Future<Output = error::Result<Action>> + Send + 'static,
{
    controller
        .with_config(cfg)
        .graceful_shutdown_on(w.stopped())
        .run(move |obj, ctx: Arc<Context>| timed(kind, ctx.clone(), reconcile(obj, ctx)), error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .boxed()
}

/// Runs one reconcile and records its duration and result by kind.
async fn timed<T>(
    kind: &'static str,
    ctx: Arc<Context>,
    reconcile: impl Future<Output = error::Result<T>>,
) -> error::Result<T> {
    let t0 = std::time::Instant::now();
    let running = ctx.metrics.in_flight(kind);
    let r = reconcile.await;
    // Counted before it stops being in flight: a scrape that shows none in
    // flight has counted every reconcile that finished.
    ctx.metrics.observe_reconcile(kind, t0.elapsed(), r.as_ref().err().map(|e| e.category()));
    drop(running);
    r
}
