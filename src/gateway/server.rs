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
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::cache::Cache;
use super::limits::{Concurrency, Decision, RateLimiter, source_key};
use super::metrics::{BytesLabels, Direction, Metrics, Refusal, ServerLabels};
use super::protocol::{
    self, LegacyKind, LegacyStatus, MAX_HANDSHAKE_FRAME, NextState, Opening, Progress, StatusAnswer, StatusRequest,
};
use super::proxy::{self, Cidr};
use super::routes::{Route, ServerKey};

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
}

/// Longest PROXY header read before the handshake.
const MAX_PROXY_HEADER: usize = 16 + proxy::MAX_V2_BODY;
/// How long a lone `FE` / `FE 01` waits for more before it is a legacy ping.
const LEGACY_WAIT: Duration = Duration::from_millis(100);

impl Gateway {
    pub fn new(settings: Settings, cache: Arc<Cache>, metrics: Arc<Metrics>) -> Arc<Gateway> {
        let rate = RateLimiter::new(settings.rate_interval, settings.rate_burst, settings.max_sources);
        Arc::new(Gateway {
            settings,
            cache,
            metrics,
            rate: Mutex::new(rate),
            open: Mutex::new(Concurrency::new()),
            active: AtomicUsize::new(0),
        })
    }

    /// Accepts until `stop`; each connection runs on its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let pruner = {
            let g = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    g.rate.lock().unwrap_or_else(|e| e.into_inner()).prune(Instant::now());
                }
            })
        };
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok((sock, peer)) => {
                    let g = self.clone();
                    tokio::spawn(async move { g.handle(sock, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        pruner.abort();
    }

    async fn handle(self: Arc<Self>, mut sock: TcpStream, peer: SocketAddr) {
        let _ = sock.set_nodelay(true);
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
            })
        });
        let reply = |msg: String, reason: Refusal| Reply { msg, reason, kind: o.kind.clone(), end: o.end };
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
        let Some(addrs) = snap.backends.get(&route.server).cloned() else {
            let r = reply(format!("Server {} is not running right now.", route.server.name), Refusal::NotRunning);
            return self.refuse(sock, buf, r, deadline).await;
        };
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
        let Some(mut upstream) = self.connect(&addrs).await else {
            warn!(server = %route.server, ?addrs, "server unreachable");
            let r = reply(format!("Server {} cannot be reached right now.", route.server.name), Refusal::Unreachable);
            return self.refuse(sock, buf, r, deadline).await;
        };
        self.metrics.handshake_seconds.observe(started.elapsed().as_secs_f64());
        let labels =
            ServerLabels { server: route.server.to_string(), tenant: route.tenant.clone().unwrap_or_default() };
        self.metrics.connections.get_or_create(&labels).inc();
        let open = self.metrics.connections_open.get_or_create(&labels).clone();
        open.inc();
        self.active.fetch_add(1, Ordering::AcqRel);
        debug!(%peer, client = %o.client, server = %route.server, ?next, "spliced");
        let mut head = Vec::with_capacity(buf.len() + 64);
        if self.settings.proxy_protocol_to_servers {
            let dest = sock.local_addr().unwrap_or(peer);
            head.extend_from_slice(&proxy::encode_v2(o.client, dest));
        }
        head.extend_from_slice(&buf[o.skip..]);
        let result = async {
            upstream.write_all(&head).await?;
            tokio::io::copy_bidirectional(&mut sock, &mut upstream).await
        }
        .await;
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

    async fn connect(&self, addrs: &[SocketAddr]) -> Option<TcpStream> {
        for a in addrs {
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Some(s);
                }
                Ok(Err(e)) => debug!(addr = %a, error = %e, "connect failed"),
                Err(_) => debug!(addr = %a, "connect timed out"),
            }
        }
        None
    }

    /// Answers a connection the gateway does not splice, in the client's
    /// state: a status answer (and pong) with the message as MOTD, a login
    /// disconnect with it as reason, a legacy answer; then closes.
    async fn refuse(&self, mut sock: TcpStream, mut buf: Vec<u8>, r: Reply, deadline: tokio::time::Instant) {
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
                        version: "craftplane".into(),
                        motd: r.msg.clone(),
                        online: 0,
                        max: 0,
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
                                    version: "craftplane".into(),
                                    protocol: h.protocol,
                                    online: 0,
                                    max: 0,
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
        let _ =
            tokio::time::timeout_at(deadline.max(tokio::time::Instant::now() + Duration::from_secs(1)), answer).await;
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
}

/// Reads more bytes; the peer closing first is a malformed opening.
async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Refusal> {
    let mut chunk = [0u8; 1024];
    match sock.read(&mut chunk).await {
        Ok(0) | Err(_) => Err(Refusal::Malformed),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

/// Logs the gateway's start.
pub fn log_start(listen: SocketAddr, s: &Settings) {
    info!(
        %listen,
        trusted_proxies = s.trusted_proxies.len(),
        handshake_timeout_ms = s.handshake_timeout.as_millis() as u64,
        proxy_protocol_to_servers = s.proxy_protocol_to_servers,
        "gateway listening"
    );
}
