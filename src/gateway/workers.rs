//! The threads that accept and splice players' connections: each its own
//! single-threaded event loop with its own listening socket on the one
//! address (`SO_REUSEPORT`).
//!
//! A connection lives on the thread that accepted it, so its steps (read
//! the handshake, connect, splice) never hop between threads; tokio's
//! work-stealing runtime handed them across its workers, a wake-up of
//! another thread on the path of every new connection. The watches, the
//! HTTP endpoints and the wake requests stay on the main runtime; what
//! the threads share (routes, limits, metrics) is already behind locks.
//!
//! Which thread: worker `i`'s socket takes the connections whose packets
//! arrive on the `i`-th CPU this process may use (`SO_INCOMING_CPU`), so
//! the thread that runs there takes them, rather than one asleep on
//! another CPU (on this benchmark's VM, waking it cost ~20 µs per
//! connection). When that makes one worker much busier than another (all
//! packets handled on one CPU: a NIC with one queue), it passes new
//! connections on to the least busy one, right after accepting them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use super::metrics::Metrics;
use super::server::Gateway;

/// A connection one worker accepted and passes to another.
pub type Handoff = (std::net::TcpStream, SocketAddr);

/// Whether a worker with `mine` open connections passes a new one to the
/// least busy worker, which has `fewest`: when it has more than a few,
/// plus an eighth, more (the kernel's spread is never exact, and each pass
/// costs a wake-up of the other thread).
pub fn should_pass(mine: i64, fewest: i64) -> bool {
    mine > fewest + 8 + fewest / 8
}

/// What the workers share to keep their loads even.
pub struct Balance {
    /// Connections open on each worker (their gauges in the metrics).
    open: Vec<Gauge>,
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    handoffs: Counter,
}

/// One worker's part of [`Balance`].
pub struct Lane {
    pub index: usize,
    pub balance: Arc<Balance>,
    pub inbox: mpsc::UnboundedReceiver<Handoff>,
}

/// Counts a connection on its worker while it lives.
pub struct Load(Gauge);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Balance {
    /// `n` lanes, their gauges and counter registered in `metrics`.
    pub fn lanes(n: usize, metrics: &Metrics) -> Vec<Lane> {
        let (inboxes, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..n).map(|i| metrics.worker(i)).collect();
        let balance = Arc::new(Balance { open, inboxes, handoffs: metrics.handoffs.clone() });
        rxs.into_iter().enumerate().map(|(index, inbox)| Lane { index, balance: balance.clone(), inbox }).collect()
    }

    /// Counts a connection on worker `i` until the returned guard drops.
    pub fn load(&self, i: usize) -> Load {
        self.open[i].inc();
        Load(self.open[i].clone())
    }

    /// Passes `conn`, accepted by worker `me`, to a less busy worker if
    /// `me` has too many more; gives it back when it stays here.
    pub fn pass_on(&self, me: usize, conn: tokio::net::TcpStream, peer: SocketAddr) -> Option<tokio::net::TcpStream> {
        let Some((to, fewest)) = self.open.iter().map(Gauge::get).enumerate().min_by_key(|&(_, n)| n) else {
            return Some(conn);
        };
        if to == me || !should_pass(self.open[me].get(), fewest) {
            return Some(conn);
        }
        let std = match conn.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pass a connection to another worker");
                return None;
            }
        };
        match self.inboxes[to].send((std, peer)) {
            Ok(()) => {
                // Counted there from now on, so the next accept here sees it.
                self.open[to].inc();
                self.handoffs.inc();
                None
            }
            // That worker stopped: keep it.
            Err(mpsc::error::SendError((std, _))) => tokio::net::TcpStream::from_std(std).ok(),
        }
    }

    /// The guard of a connection passed to worker `i` (`pass_on` counted it).
    pub fn adopt(&self, i: usize) -> Load {
        Load(self.open[i].clone())
    }
}

/// Connections a listening socket queues before the thread accepts them.
const BACKLOG: i32 = 1024;

/// `n` listening sockets on `addr` (port 0: the port the first one got).
pub fn listen(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    let cpus = if n > 1 { allowed_cpus() } else { vec![] };
    for i in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // This socket takes the connections whose packets the kernel
        // handles on this CPU (Linux 6.1+): their worker is the one already
        // running there, not an idle one that must be woken on another
        // CPU. An optimisation only: before 6.1, for other CPUs, or when it
        // cannot be set, the 4-tuple's hash picks.
        if let Some(cpu) = cpus.get(i)
            && let Err(e) = s.set_cpu_affinity(*cpu)
        {
            tracing::warn!(cpu, error = %e, "cannot steer a CPU's connections to its worker (SO_INCOMING_CPU)");
        }
        s.bind(&at.into()).with_context(|| format!("cannot listen on {at}"))?;
        s.listen(BACKLOG)?;
        s.set_nonblocking(true)?;
        let l: std::net::TcpListener = s.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// The CPUs this process may run on, in order (`Cpus_allowed_list` of
/// /proc/self/status, e.g. `0-3,8`); empty when unknown.
fn allowed_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(parse_cpu_list))
        .unwrap_or_default()
}

/// `0-3,8` → `[0, 1, 2, 3, 8]`; anything unreadable → empty.
fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut out = vec![];
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let range = match part.split_once('-') {
            Some((a, b)) => a.trim().parse::<usize>().ok().zip(b.trim().parse::<usize>().ok()),
            None => part.trim().parse::<usize>().ok().map(|a| (a, a)),
        };
        match range {
            Some((a, b)) if a <= b && b < 1 << 16 => out.extend(a..=b),
            _ => return vec![],
        }
    }
    out
}

/// How many threads `--workers 0` means: one per CPU this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts one thread per listener. Each accepts until `stop_accepting` turns
/// true, then keeps its connections running until `stop` does.
pub fn start(
    gateway: &Arc<Gateway>,
    listeners: Vec<std::net::TcpListener>,
    stop_accepting: &watch::Receiver<bool>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let lanes = Balance::lanes(listeners.len(), &gateway.metrics);
    listeners
        .into_iter()
        .zip(lanes)
        .map(|(l, lane)| {
            let i = lane.index;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a gateway worker's event loop")?;
            let (g, stop_accepting, mut stop) = (gateway.clone(), stop_accepting.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => g.serve(l, lane, stop_accepting).await,
                            Err(e) => tracing::error!(error = %e, "a gateway worker cannot use its listener"),
                        }
                        let _ = stop.wait_for(|s| *s).await;
                    })
                })
                .context("cannot start a gateway worker thread")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn listeners_share_the_port_the_first_one_got() {
        let ls = listen("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(ls.len(), 3);
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
        // Every connection reaches one of them (the kernel picks which).
        for i in 0..20u8 {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(&[i]).unwrap();
            let got = (0..200).find_map(|_| {
                let hit = ls.iter().find_map(|l| l.accept().ok());
                if hit.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                hit
            });
            let (mut s, _) = got.expect("accepted by one listener");
            s.set_nonblocking(false).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i);
        }
    }

    /// Pins the calling thread to `cpu` (its packets to loopback are then
    /// handled there).
    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only
        // read and write it and set this thread's own affinity.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "pin to {cpu}");
        }
    }

    fn two_cpus() -> Vec<usize> {
        let cpus = allowed_cpus();
        assert!(cpus.len() >= 2, "these tests need two CPUs, this process may use {cpus:?}");
        cpus
    }

    #[test]
    fn cpu_lists_parse_and_garbage_gives_none() {
        assert_eq!(parse_cpu_list("0-3,8\n"), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpu_list("5"), vec![5]);
        assert_eq!(parse_cpu_list("3-1"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("0-x"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("0-99999999"), Vec::<usize>::new());
    }

    #[test]
    fn each_listener_takes_the_connections_handled_on_its_cpu() {
        let cpus = two_cpus();
        let ls = listen("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        for (i, cpu) in cpus.iter().take(2).enumerate() {
            let got = std::thread::scope(|t| {
                t.spawn(|| {
                    pin(*cpu);
                    let conns: Vec<_> =
                        (0..20).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    let got: Vec<usize> = ls.iter().map(|l| std::iter::from_fn(|| l.accept().ok()).count()).collect();
                    drop(conns);
                    got
                })
                .join()
                .unwrap()
            });
            let mut want = vec![0, 0];
            want[i] = 20;
            assert_eq!(got, want, "20 connections from CPU {cpu}: accepted by each listener");
        }
    }

    #[test]
    fn a_busier_worker_passes_on_and_an_even_one_keeps() {
        assert!(!should_pass(8, 0));
        assert!(should_pass(9, 0));
        assert!(!should_pass(120, 100));
        assert!(should_pass(121, 100));
        assert!(!should_pass(0, 0));
    }

    #[tokio::test]
    async fn a_passed_connection_reaches_the_other_workers_inbox_counted_there() {
        let metrics = Metrics::new();
        let mut lanes = Balance::lanes(2, &metrics);
        let b = lanes[0].balance.clone();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accept = || async {
            let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (s, peer) = l.accept().await.unwrap();
            (s, peer, _c)
        };
        // Even: it stays.
        let (s, peer, _c1) = accept().await;
        assert!(b.pass_on(0, s, peer).is_some());
        assert_eq!(metrics.handoffs.get(), 0);
        // Nine more open here than there: it goes.
        let held: Vec<Load> = (0..9).map(|_| b.load(0)).collect();
        let (s, peer, _c2) = accept().await;
        assert!(b.pass_on(0, s, peer).is_none());
        let (got, from) = lanes[1].inbox.try_recv().expect("passed to worker 1");
        assert_eq!(from, peer);
        assert_eq!(got.peer_addr().unwrap(), peer);
        assert_eq!(metrics.handoffs.get(), 1);
        let open = |i: usize| metrics.worker(i).get();
        assert_eq!((open(0), open(1)), (9, 1));
        let adopted = b.adopt(1);
        drop(adopted);
        drop(held);
        assert_eq!((open(0), open(1)), (0, 0));
    }

    #[test]
    fn connections_from_one_cpu_spread_over_both_workers() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: super::super::GatewayArgs,
        }
        let cpus = two_cpus();
        let args = <Cli as clap::Parser>::parse_from(["gateway", "--handshake-timeout-ms", "20000"]).args;
        let metrics = Arc::new(Metrics::new());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let g = rt.block_on(async {
            Gateway::new(args.settings(), Default::default(), metrics.clone(), None, "test".into())
        });
        let ls = listen("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        let (stop_tx, stop) = watch::channel(false);
        let threads = start(&g, ls, &stop, &stop).unwrap();
        // 60 connections whose packets are all handled on one CPU, held
        // open (no handshake yet): one listener takes them all.
        let conns = std::thread::scope(|t| {
            t.spawn(|| {
                pin(cpus[0]);
                (0..60).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect::<Vec<_>>()
            })
            .join()
            .unwrap()
        });
        let open = |i: usize| metrics.worker(i).get();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while open(0) + open(1) < 60 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (a, b) = (open(0), open(1));
        let _ = stop_tx.send(true);
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(conns);
        assert_eq!(a + b, 60, "every connection counted on a worker");
        assert!(a.min(b) >= 20, "both workers run a fair share: {a} and {b}");
        assert!(metrics.handoffs.get() >= 20, "passed on: {}", metrics.handoffs.get());
    }

    #[test]
    fn a_taken_address_is_an_error_that_names_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = listen(addr, 2).unwrap_err();
        assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
    }
}
