//! The threads that accept and splice players' connections: each its own
//! single-threaded event loop with its own listening socket on the one
//! address (`SO_REUSEPORT`: the kernel spreads new connections over them).
//!
//! A connection lives on the thread that accepted it, so its steps (read
//! the handshake, connect, splice) never hop between threads; tokio's
//! work-stealing runtime handed them across its workers, a wake-up of
//! another thread on the path of every new connection. The watches, the
//! HTTP endpoints and the wake requests stay on the main runtime; what
//! the threads share (routes, limits, metrics) is already behind locks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use super::server::Gateway;

/// Connections a listening socket queues before the thread accepts them.
const BACKLOG: i32 = 1024;

/// `n` listening sockets on `addr` (port 0: the port the first one got).
pub fn listen(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&at.into()).with_context(|| format!("cannot listen on {at}"))?;
        s.listen(BACKLOG)?;
        s.set_nonblocking(true)?;
        let l: std::net::TcpListener = s.into();
        at = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
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
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
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
                            Ok(l) => g.serve(l, stop_accepting).await,
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

    #[test]
    fn a_taken_address_is_an_error_that_names_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = listen(addr, 2).unwrap_err();
        assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
    }
}
