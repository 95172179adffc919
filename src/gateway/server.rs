//! The listener: per connection, an optional PROXY header (trusted peers
//! only), the handshake under a deadline and the size limits of
//! [`protocol`], the limits, then the buffered bytes forwarded verbatim to
//! the server's ready address and the rest spliced both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::cache::Cache;
use super::limits::{Concurrency, Decision, RateLimiter, source_key};
use super::metrics::{BytesLabels, Direction, Metrics, Refusal, ServerLabels};
use super::protocol::{
    self, LegacyKind, LegacyStatus, MAX_HANDSHAKE_FRAME, NextState, Opening, Progress, StatusAnswer, StatusRequest,
};
use super::proxy::{self, Cidr};
use super::routes::{Route, ServerKey, SleepState, Sleeping};
use super::wake;
use super::workers::{Lane, Load};

/// How the listener behaves (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Peers whose PROXY protocol header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Time for the client to send its handshake (and, when refused, its
    /// status request).
    pub handshake_timeout: Duration,
    /// Time to connect to a server.
    pub connect_timeout: Duration,
    /// Shown for a hostname no server has (status MOTD, disconnect reason).
    pub unknown_host_message: String,
    /// Where unknown hostnames go instead, when set.
    pub default_server: Option<ServerKey>,
    /// Send a PROXY protocol v2 header to servers.
    pub proxy_protocol_to_servers: bool,
    /// Per source IP (IPv6 by /64): `burst` connections, then one per `interval`.
    pub rate_interval: Duration,
    pub rate_burst: u32,
    /// Source addresses tracked at most (a new one beyond is refused).
    pub max_sources: usize,
    /// Open connections per server / per tenant (None: no limit).
    pub max_per_server: Option<u32>,
    pub max_per_tenant: Option<u32>,
    /// MOTD of a sleeping server's status answer.
    pub asleep_message: String,
    /// MOTD while a woken server starts; also the message of a join that
    /// waited longer than `wake_hold` (with the time it waited).
    pub waking_message: String,
    /// How long a join of a sleeping server is held while it starts (the
    /// client's own login timeout is 30 s).
    pub wake_hold: Duration,
    /// Joins that may wake servers, per source IP: `burst`, then one per `interval`.
    pub wake_source_interval: Duration,
    pub wake_source_burst: u32,
    /// The same per tenant, all its servers.
    pub wake_tenant_interval: Duration,
    pub wake_tenant_burst: u32,
}

/// The shared state of every connection.
pub struct Gateway {
    pub settings: Settings,
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
    rate: Mutex<RateLimiter<IpAddr>>,
    open: Mutex<Concurrency<String>>,
    /// Connections spliced now (the drain waits for them).
    active: AtomicUsize,
    /// Where wake requests go (`None`: this gateway cannot wake servers).
    wakes: Option<mpsc::Sender<wake::Request>>,
    /// Who this gateway is, in wake requests (its pod's name).
    pub identity: String,
    wake_by_source: Mutex<RateLimiter<IpAddr>>,
    wake_by_tenant: Mutex<RateLimiter<String>>,
}

/// Longest PROXY header read before the handshake.
const MAX_PROXY_HEADER: usize = 16 + proxy::MAX_V2_BODY;
/// Largest copy buffers of a spliced connection (each starts at 2 KiB and
/// doubles while reads fill it): a player sends little (moves, chat), the
/// server sends the world (chunks), in bursts that 8-KiB copies moved at
/// 0.76x HAProxy's throughput in `cargo xtask bench gateway`.
const UP_BUFFER: usize = 16 * 1024;
const DOWN_BUFFER: usize = 64 * 1024;

/// Bytes a held join may buffer while its server wakes.
const MAX_HELD: usize = 64 * 1024;
/// How long a lone `FE` / `FE 01` waits for more before it is a legacy ping.
const LEGACY_WAIT: Duration = Duration::from_millis(100);

impl Gateway {
    pub fn new(
        settings: Settings,
        cache: Arc<Cache>,
        metrics: Arc<Metrics>,
        wakes: Option<mpsc::Sender<wake::Request>>,
        identity: String,
    ) -> Arc<Gateway> {
        let rate = RateLimiter::new(settings.rate_interval, settings.rate_burst, settings.max_sources);
        let by_source =
            RateLimiter::new(settings.wake_source_interval, settings.wake_source_burst, settings.max_sources);
        let by_tenant =
            RateLimiter::new(settings.wake_tenant_interval, settings.wake_tenant_burst, settings.max_sources);
        Arc::new(Gateway {
            settings,
            cache,
            metrics,
            rate: Mutex::new(rate),
            open: Mutex::new(Concurrency::new()),
            active: AtomicUsize::new(0),
            wakes,
            identity,
            wake_by_source: Mutex::new(by_source),
            wake_by_tenant: Mutex::new(by_tenant),
        })
    }

    /// Players' connections open to `server` (`namespace/name`) here,
    /// joins held for a wake included.
    pub fn open_to(&self, server: &str) -> u32 {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).open(&format!("s/{server}"))
    }

    /// Forgets rate-limit entries of quiet sources, every 10 s, forever.
    pub async fn prune(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let now = Instant::now();
            self.rate.lock().unwrap_or_else(|e| e.into_inner()).prune(now);
            self.wake_by_source.lock().unwrap_or_else(|e| e.into_inner()).prune(now);
            self.wake_by_tenant.lock().unwrap_or_else(|e| e.into_inner()).prune(now);
        }
    }

    /// Accepts until `stop`; each connection runs on its own task (of the
    /// runtime this runs on: a worker's, see [`super::workers`]), unless
    /// this worker is much busier than another: then it goes there.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut lane: Lane, mut stop: watch::Receiver<bool>) {
        loop {
            let (sock, peer, load) = tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, peer)) => match lane.balance.pass_on(lane.index, sock, peer) {
                        Some(sock) => (sock, peer, lane.balance.load(lane.index)),
                        None => continue,
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: back off, go on.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                Some((std, peer)) = lane.inbox.recv() => {
                    let load = lane.balance.adopt(lane.index);
                    match TcpStream::from_std(std) {
                        Ok(sock) => (sock, peer, load),
                        Err(e) => {
                            warn!(error = %e, "cannot take a connection from another worker");
                            continue;
                        }
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            };
            // The new connection's first steps right here, before the
            // tasks already queued on this thread: its handshake is
            // usually there already, and is read, routed and sent to the
            // server in this one poll. What has to wait goes on on its own
            // task (which polls it again at once, with its own waker).
            let mut conn = Box::pin(self.clone().handle(sock, peer, load));
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(conn.as_mut().poll(cx))).await;
            if first.is_pending() {
                tokio::spawn(conn);
            }
        }
    }

    /// One connection, counted on its worker (`_load`) until it ends.
    async fn handle(self: Arc<Self>, mut sock: TcpStream, peer: SocketAddr, _load: Load) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.settings.handshake_timeout;
        let mut buf = Vec::with_capacity(256);
        match tokio::time::timeout_at(deadline, self.opening(&mut sock, peer, &mut buf)).await {
            Ok(Ok(o)) => self.route(sock, peer, buf, o, started, deadline).await,
            Ok(Err(reason)) => {
                debug!(%peer, ?reason, "connection refused before routing");
                self.metrics.refuse(reason);
            }
            Err(_) => {
                debug!(%peer, "handshake timed out");
                self.metrics.refuse(Refusal::Timeout);
            }
        }
    }

    /// Reads the PROXY header (trusted peers) and the handshake or legacy ping.
    async fn opening(&self, sock: &mut TcpStream, peer: SocketAddr, buf: &mut Vec<u8>) -> Result<Opened, Refusal> {
        let (client, skip) = loop {
            match proxy::client_address(peer, &self.settings.trusted_proxies, buf) {
                Ok(Progress::Done { value, consumed }) => break (value, consumed),
                Ok(Progress::NeedMore) if buf.len() < MAX_PROXY_HEADER => read_more(sock, buf).await?,
                _ => return Err(Refusal::Malformed),
            }
        };
        let limited = matches!(
            self.rate.lock().unwrap_or_else(|e| e.into_inner()).check(&source_key(client.ip()), Instant::now()),
            Decision::Limited { .. }
        );
        loop {
            let rest = &buf[skip..];
            match protocol::classify(rest) {
                Opening::NeedMore => {}
                Opening::Legacy(kind) => return Ok(Opened::legacy(client, skip, kind, limited)),
                Opening::LegacyUnlessMore(kind) => {
                    match tokio::time::timeout(LEGACY_WAIT, read_more(sock, buf)).await {
                        Err(_) => return Ok(Opened::legacy(client, skip, kind, limited)),
                        Ok(r) => r?,
                    }
                    continue;
                }
                Opening::Modern => match protocol::parse_handshake(rest) {
                    Ok(Progress::Done { value, consumed }) => {
                        return Ok(Opened { client, skip, end: skip + consumed, kind: Kind::Modern(value), limited });
                    }
                    Ok(Progress::NeedMore) => {}
                    Err(_) => return Err(Refusal::Malformed),
                },
            }
            if buf.len() - skip > MAX_HANDSHAKE_FRAME + 8 {
                return Err(Refusal::Malformed);
            }
            read_more(sock, buf).await?;
        }
    }

    async fn route(
        self: Arc<Self>,
        mut sock: TcpStream,
        peer: SocketAddr,
        mut buf: Vec<u8>,
        o: Opened,
        started: Instant,
        deadline: tokio::time::Instant,
    ) {
        let (host, next) = match &o.kind {
            Kind::Modern(h) => (h.host(), Some(h.next)),
            Kind::Legacy(kind) => {
                // 1.6 pings name their host; wait for all of it, briefly.
                let mut host = protocol::legacy_ping_host(&buf[o.skip..]).map(|(h, _)| h);
                if *kind == LegacyKind::V14 && host.is_none() && buf.len() > o.skip + 2 {
                    let wait = tokio::time::Instant::now() + LEGACY_WAIT;
                    while host.is_none() && buf.len() - o.skip < 512 {
                        match tokio::time::timeout_at(wait.min(deadline), read_more(&mut sock, &mut buf)).await {
                            Ok(Ok(())) => host = protocol::legacy_ping_host(&buf[o.skip..]).map(|(h, _)| h),
                            _ => break,
                        }
                    }
                }
                (host, None)
            }
        };
        let snap = self.cache.get();
        let route: Option<Route> = host.as_deref().and_then(|h| snap.routes.lookup(h).cloned()).or_else(|| {
            self.settings.default_server.clone().map(|server| Route {
                server,
                tenant: None,
                limits: Default::default(),
                sleep: None,
            })
        });
        let reply = |msg: String, reason: Refusal| Reply { msg, reason, kind: o.kind.clone(), end: o.end, seen: None };
        if o.limited {
            let r = reply(
                "Too many connections from your address; wait a moment and try again.".into(),
                Refusal::RateLimited,
            );
            return self.refuse(sock, buf, r, deadline).await;
        }
        let Some(route) = route else {
            debug!(%peer, host = host.as_deref().unwrap_or(""), "unknown hostname");
            let r = reply(self.settings.unknown_host_message.clone(), Refusal::UnknownHost);
            return self.refuse(sock, buf, r, deadline).await;
        };
        let ready = snap.backends.get(&route.server).cloned();
        drop(snap);
        let keys = [format!("s/{}", route.server), format!("t/{}", route.tenant.as_deref().unwrap_or(""))];
        let mut claims = vec![(keys[0].clone(), route.limits.per_server.or(self.settings.max_per_server))];
        if route.tenant.is_some() {
            claims.push((keys[1].clone(), route.limits.per_tenant.or(self.settings.max_per_tenant)));
        }
        let acquired = self.open.lock().unwrap_or_else(|e| e.into_inner()).try_acquire(&claims);
        if let Err(full) = acquired {
            let (msg, reason) = if full == keys[0] {
                (format!("Server {} is full at the gateway; try again later.", route.server.name), Refusal::ServerLimit)
            } else {
                (
                    "This host's servers have as many connections as they may; try again later.".to_string(),
                    Refusal::TenantLimit,
                )
            };
            return self.refuse(sock, buf, reply(msg, reason), deadline).await;
        }
        let held: Vec<String> = claims.into_iter().map(|(k, _)| k).collect();
        let _release = Release { gateway: self.clone(), keys: held };
        let mut woken = false;
        let (addrs, connected) = match (ready, route.sleep.clone()) {
            (Some(a), _) => (a, None),
            (None, Some(sleeping)) => match Box::pin(self.wake(sock, peer, buf, &o, &route, &sleeping, deadline)).await
            {
                Some((s, b, held)) => {
                    (sock, buf, woken) = (s, b, true);
                    (vec![], Some(held))
                }
                None => return,
            },
            (None, None) => {
                let r = reply(format!("Server {} is not running right now.", route.server.name), Refusal::NotRunning);
                return self.refuse(sock, buf, r, deadline).await;
            }
        };
        // The bytes so far go with the connect; a held join's connection is
        // open already and gets them before the splice.
        let head = self.head(&sock, peer, &o, &buf);
        let (upstream, unsent) = match connected {
            Some(up) => (Some(up), &head[..]),
            None => (self.connect(&addrs, &head).await, &[][..]),
        };
        let Some(mut upstream) = upstream else {
            warn!(server = %route.server, ?addrs, "server unreachable");
            let r = reply(format!("Server {} cannot be reached right now.", route.server.name), Refusal::Unreachable);
            return self.refuse(sock, buf, r, deadline).await;
        };
        if woken {
            self.metrics.wake_seconds.observe(started.elapsed().as_secs_f64());
        } else {
            self.metrics.handshake_seconds.observe(started.elapsed().as_secs_f64());
        }
        let labels =
            ServerLabels { server: route.server.to_string(), tenant: route.tenant.clone().unwrap_or_default() };
        self.metrics.connections.get_or_create(&labels).inc();
        let open = self.metrics.connections_open.get_or_create(&labels).clone();
        open.inc();
        self.active.fetch_add(1, Ordering::AcqRel);
        // After the server has the handshake: off the path a new
        // connection waits on.
        let _ = sock.set_nodelay(true);
        debug!(%peer, client = %o.client, server = %route.server, ?next, "spliced");
        let result = async {
            upstream.write_all(unsent).await?;
            super::splice::splice(&mut sock, &mut upstream, UP_BUFFER, DOWN_BUFFER).await
        }
        .await;
        // The rest (counters, closing both sockets) after whatever else is
        // ready on this thread: a new connection's bytes go first.
        tokio::task::yield_now().await;
        open.dec();
        self.active.fetch_sub(1, Ordering::AcqRel);
        let (up, down) = match result {
            Ok((up, down)) => (up, down),
            Err(e) => {
                debug!(server = %route.server, error = %e, "connection ended with an error");
                (0, 0)
            }
        };
        let bytes = |direction| BytesLabels { server: labels.server.clone(), tenant: labels.tenant.clone(), direction };
        self.metrics.bytes.get_or_create(&bytes(Direction::Upstream)).inc_by(up + (buf.len() - o.skip) as u64);
        self.metrics.bytes.get_or_create(&bytes(Direction::Downstream)).inc_by(down);
    }

    /// What a server is sent first: the PROXY header (when configured) and
    /// the client's bytes so far (handshake and login start).
    fn head(&self, sock: &TcpStream, peer: SocketAddr, o: &Opened, buf: &[u8]) -> Vec<u8> {
        let mut head = Vec::with_capacity(buf.len() + 64);
        if self.settings.proxy_protocol_to_servers {
            let dest = sock.local_addr().unwrap_or(peer);
            head.extend_from_slice(&proxy::encode_v2(o.client, dest));
        }
        head.extend_from_slice(&buf[o.skip..]);
        head
    }

    /// A connection to a sleeping or waking server. Status pings and
    /// legacy pings are answered here (the server's last version and slots,
    /// a MOTD that says it sleeps or starts). A login is read: a player the
    /// whitelist refuses is told so and wakes nothing; otherwise (when
    /// joins may wake it, within the wake rates) the operator is asked to
    /// wake the server and the connection is held until the server has a
    /// ready address that accepts a connection — then the caller forwards
    /// the buffered handshake and login, so the player lands in the game on
    /// this same connection — or until `wake_hold`, when the player is told
    /// to join again shortly.
    /// `None`: answered here.
    #[allow(clippy::too_many_arguments)]
    async fn wake(
        &self,
        mut sock: TcpStream,
        peer: SocketAddr,
        mut buf: Vec<u8>,
        o: &Opened,
        route: &Route,
        sl: &Sleeping,
        deadline: tokio::time::Instant,
    ) -> Option<(TcpStream, Vec<u8>, TcpStream)> {
        let motd = match sl.state {
            SleepState::Asleep => self.settings.asleep_message.clone(),
            SleepState::Waking => self.settings.waking_message.clone(),
        };
        let seen = sl.last_seen.as_ref().map(|l| (l.version.clone(), l.protocol, l.max_players));
        let reply =
            |msg: String, reason: Refusal| Reply { msg, reason, kind: o.kind.clone(), end: o.end, seen: seen.clone() };
        let h = match &o.kind {
            Kind::Modern(h) if h.next != NextState::Status => h.clone(),
            _ => {
                self.refuse(sock, buf, reply(motd, Refusal::Asleep), deadline).await;
                return None;
            }
        };
        // The login start, under the handshake's deadline.
        let login = loop {
            match protocol::parse_login_start(&buf[o.end..], h.protocol) {
                Ok(Progress::Done { value, .. }) => break value,
                Ok(Progress::NeedMore) => {
                    match tokio::time::timeout_at(deadline, read_more(&mut sock, &mut buf)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(r)) => {
                            self.metrics.refuse(r);
                            return None;
                        }
                        Err(_) => {
                            self.metrics.refuse(Refusal::Timeout);
                            return None;
                        }
                    }
                }
                Err(_) => {
                    self.metrics.refuse(Refusal::Malformed);
                    return None;
                }
            }
        };
        if !sl.admits(&login.name, login.uuid) {
            debug!(%peer, server = %route.server, player = %login.name, "not whitelisted; not waking");
            let r = reply("You are not whitelisted on this server.".into(), Refusal::NotWhitelisted);
            self.refuse(sock, buf, r, deadline).await;
            return None;
        }
        if sl.state == SleepState::Asleep {
            if !sl.wake_on_join || self.wakes.is_none() {
                let r = reply(
                    format!(
                        "Server {} is asleep and joining does not wake it; ask its owner to start it.",
                        route.server.name
                    ),
                    Refusal::Asleep,
                );
                self.refuse(sock, buf, r, deadline).await;
                return None;
            }
            let now = Instant::now();
            let limited = matches!(
                self.wake_by_source.lock().unwrap_or_else(|e| e.into_inner()).check(&source_key(o.client.ip()), now),
                Decision::Limited { .. }
            ) || matches!(
                self.wake_by_tenant
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(&route.tenant.clone().unwrap_or_else(|| route.server.namespace.clone()), now),
                Decision::Limited { .. }
            );
            if limited {
                let r = reply("Too many wake requests from here; try again in a minute.".into(), Refusal::WakeLimited);
                self.refuse(sock, buf, r, deadline).await;
                return None;
            }
            let by = format!("join of {} through {}", login.name, self.identity);
            if let Some(tx) = &self.wakes
                && tx.try_send(wake::Request { server: route.server.clone(), by }).is_ok()
            {
                self.metrics.wakes.inc();
            }
        }
        info!(%peer, server = %route.server, player = %login.name, "holding a join while the server wakes");
        let held_since = Instant::now();
        let until = tokio::time::Instant::now() + self.settings.wake_hold;
        let mut chunk = [0u8; 1024];
        loop {
            // Ready (its readiness probe passed: a server that only
            // listens may still turn logins away) and taking the
            // connection; tried again on every change and twice a second.
            let ready = self.cache.get().backends.get(&route.server).cloned();
            if let Some(a) = ready
                && let Some(up) = self.connect(&a, &[]).await
            {
                return Some((sock, buf, up));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = self.cache.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                r = sock.read(&mut chunk) => match r {
                    // The player gave up.
                    Ok(0) | Err(_) => return None,
                    Ok(n) if buf.len() + n <= MAX_HELD => buf.extend_from_slice(&chunk[..n]),
                    Ok(_) => {
                        self.metrics.refuse(Refusal::Malformed);
                        return None;
                    }
                },
            }
        }
        let waited = held_since.elapsed().as_secs();
        let msg = format!("{} (waited {waited} s; join again in a few seconds)", self.settings.waking_message);
        self.refuse(sock, buf, reply(msg, Refusal::WakeTimeout), tokio::time::Instant::now() + Duration::from_secs(2))
            .await;
        None
    }

    /// Waits until no connection is spliced, or `grace` passed; returns
    /// how many are still open.
    pub async fn drain(&self, grace: Duration) -> usize {
        let end = Instant::now() + grace;
        loop {
            let n = self.active.load(Ordering::Acquire);
            if n == 0 || Instant::now() >= end {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Connects to the first address that takes the connection and sends
    /// it `head`.
    async fn connect(&self, addrs: &[SocketAddr], head: &[u8]) -> Option<TcpStream> {
        for a in addrs {
            match tokio::time::timeout(self.settings.connect_timeout, connect_sending(*a, head)).await {
                Ok(Ok(s)) => return Some(s),
                Ok(Err(e)) => debug!(addr = %a, error = %e, "connect failed"),
                Err(_) => debug!(addr = %a, "connect timed out"),
            }
        }
        None
    }

    /// Answers a connection the gateway does not splice, in the client's
    /// state: a status answer (and pong) with the message as MOTD, a login
    /// disconnect with it as reason, a legacy answer; then closes.
    /// Boxed (as `route()` awaits `wake()`): inline, its state was part of
    /// every connection's future, spliced ones included (4.7 KiB per
    /// connection instead of 2.7).
    fn refuse(
        &self,
        mut sock: TcpStream,
        mut buf: Vec<u8>,
        r: Reply,
        deadline: tokio::time::Instant,
    ) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = sock.set_nodelay(true);
            self.metrics.refuse(if matches!(r.kind, Kind::Legacy(_)) && r.reason == Refusal::UnknownHost {
                Refusal::Legacy
            } else {
                r.reason
            });
            let answer = async {
                match &r.kind {
                    Kind::Legacy(kind) => {
                        let s = LegacyStatus {
                            protocol: 127,
                            version: r.seen.as_ref().map(|s| s.0.clone()).unwrap_or_else(|| "craftplane".into()),
                            motd: r.msg.clone(),
                            online: 0,
                            max: r.seen.as_ref().map(|s| s.2).unwrap_or(0),
                        };
                        sock.write_all(&protocol::legacy_answer(*kind, &s)).await?;
                    }
                    Kind::Modern(h) if h.next == NextState::Status => {
                        let mut at = r.end;
                        loop {
                            match protocol::parse_status_request(&buf[at..]) {
                                Ok(Progress::Done { value: StatusRequest::Status, consumed }) => {
                                    at += consumed;
                                    let a = StatusAnswer {
                                        version: r
                                            .seen
                                            .as_ref()
                                            .map(|s| s.0.clone())
                                            .unwrap_or_else(|| "craftplane".into()),
                                        protocol: r.seen.as_ref().map(|s| s.1).unwrap_or(h.protocol),
                                        online: 0,
                                        max: r.seen.as_ref().map(|s| s.2).unwrap_or(0),
                                        motd: r.msg.clone(),
                                        favicon: None,
                                    };
                                    sock.write_all(&protocol::status_response(&a)).await?;
                                }
                                Ok(Progress::Done { value: StatusRequest::Ping(p), .. }) => {
                                    sock.write_all(&protocol::pong(p)).await?;
                                    break;
                                }
                                Ok(Progress::NeedMore) if buf.len() - at < 64 => {
                                    if read_more(&mut sock, &mut buf).await.is_err() {
                                        break;
                                    }
                                }
                                _ => break,
                            }
                        }
                    }
                    Kind::Modern(_) => sock.write_all(&protocol::login_disconnect(&r.msg)).await?,
                }
                sock.shutdown().await
            };
            let _ = tokio::time::timeout_at(deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)), answer)
                .await;
        })
    }
}

/// Releases a connection's counts when it ends, however it ends.
struct Release {
    gateway: Arc<Gateway>,
    keys: Vec<String>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.gateway.open.lock().unwrap_or_else(|e| e.into_inner()).release(&self.keys);
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Modern(protocol::Handshake),
    Legacy(LegacyKind),
}

/// What the opening bytes said.
struct Opened {
    /// The client's address (from the PROXY header of a trusted peer).
    client: SocketAddr,
    /// Bytes of the PROXY header (not forwarded).
    skip: usize,
    /// End of the handshake in the buffer.
    end: usize,
    kind: Kind,
    /// The source is over its rate.
    limited: bool,
}

impl Opened {
    fn legacy(client: SocketAddr, skip: usize, kind: LegacyKind, limited: bool) -> Opened {
        Opened { client, skip, end: skip, kind: Kind::Legacy(kind), limited }
    }
}

struct Reply {
    msg: String,
    reason: Refusal,
    kind: Kind,
    end: usize,
    /// A sleeping server's last version, protocol and slots (its status
    /// answer shows them); `None`: the gateway's own answer.
    seen: Option<(String, i32, i32)>,
}

/// Reads more bytes; the peer closing first is a malformed opening.
///
/// The socket is tried first: tokio reads only after its event loop has
/// reported the socket readable, a turn (and on a quiet gateway a sleep and
/// wake-up of the thread) that bytes already there do not need. A client's
/// handshake usually is there when its connection is accepted.
async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Refusal> {
    let mut chunk = [0u8; 1024];
    let n = match read_now(sock, &mut chunk) {
        Some(r) => r,
        None => sock.read(&mut chunk).await,
    };
    match n {
        Ok(0) | Err(_) => Err(Refusal::Malformed),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// One non-blocking `recv` straight on the socket; `None` when nothing is
/// there yet (tokio then waits for readiness, which stays correct: the
/// edge-triggered readiness of new bytes still arrives).
fn read_now(sock: &TcpStream, chunk: &mut [u8]) -> Option<std::io::Result<usize>> {
    use std::io::Read as _;
    match (&*socket2::SockRef::from(sock)).read(chunk) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        r => Some(r),
    }
}

/// Connects to `addr` and sends `head`, straight on the socket first: to
/// a server on this network the kernel has usually completed the TCP
/// handshake when `connect` returns "in progress", and takes the bytes at
/// once, where tokio would first wait for its event loop to report the
/// socket writable. Otherwise (still connecting, buffer full) tokio waits.
async fn connect_sending(addr: SocketAddr, head: &[u8]) -> std::io::Result<TcpStream> {
    use std::io::{ErrorKind, Write as _};
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM.nonblocking(), None)?;
    s.set_tcp_nodelay(true)?;
    match s.connect(&addr.into()) {
        Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => return Err(e),
        _ => {}
    }
    let mut sent = 0;
    while sent < head.len() {
        match (&s).write(&head[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let mut stream = TcpStream::from_std(s.into())?;
    // Nothing sent, nothing confirmed: wait for the connect's outcome.
    if head.is_empty() || sent < head.len() {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        stream.write_all(&head[sent..]).await?;
    }
    Ok(stream)
}

/// Logs the gateway's start.
pub fn log_start(listen: SocketAddr, workers: usize, s: &Settings) {
    info!(
        %listen,
        workers,
        trusted_proxies = s.trusted_proxies.len(),
        handshake_timeout_ms = s.handshake_timeout.as_millis() as u64,
        proxy_protocol_to_servers = s.proxy_protocol_to_servers,
        "gateway listening"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_sending_delivers_the_head_with_the_connect() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let up = connect_sending(addr, b"handshake bytes").await.unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 15];
        std::io::Read::read_exact(&mut s, &mut b).unwrap();
        assert_eq!(&b, b"handshake bytes");
        // The stream it returns is a working tokio stream both ways.
        std::io::Write::write_all(&mut s, b"answer").unwrap();
        let mut up = up;
        let mut a = [0u8; 6];
        up.read_exact(&mut a).await.unwrap();
        assert_eq!(&a, b"answer");
    }

    #[tokio::test]
    async fn connect_sending_to_a_closed_port_fails() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(connect_sending(addr, b"x").await.is_err());
        assert!(connect_sending(addr, b"").await.is_err());
    }

    #[tokio::test]
    async fn read_more_takes_bytes_already_there_and_waits_for_later_ones() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        c.write_all(b"first").await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut buf = Vec::new();
        read_more(&mut s, &mut buf).await.unwrap();
        assert_eq!(buf, b"first");
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(b" then more").await.unwrap();
            c
        });
        read_more(&mut s, &mut buf).await.unwrap();
        assert_eq!(buf, b"first then more");
        drop(later.await.unwrap());
        assert_eq!(read_more(&mut s, &mut buf).await, Err(Refusal::Malformed));
    }
}
