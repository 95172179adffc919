//! The bytes of a routed connection, both ways, until both sides are done.
//!
//! Like tokio's `copy_bidirectional` (an end of file one way shuts down the
//! writing side of the other; an error on either ends both), but each
//! direction's buffer starts small and uninitialised and doubles up to its
//! cap only while reads fill it: a status ping moves a few hundred bytes and
//! never pays for (or zeroes) the 80 KiB that a player's world download
//! wants, and an idle open connection holds kilobytes, not a full buffer.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a direction's buffer starts.
const FIRST: usize = 2 * 1024;

/// Copies `client` → `server` (buffer up to `up_cap`) and `server` →
/// `client` (up to `down_cap`) until both have ended; the bytes moved each
/// way, or the first error.
pub async fn splice(
    client: &mut TcpStream,
    server: &mut TcpStream,
    up_cap: usize,
    down_cap: usize,
) -> std::io::Result<(u64, u64)> {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let ended = AtomicBool::new(false);
    tokio::try_join!(pump(&mut sr, &mut cw, down_cap, &ended), pump(&mut cr, &mut sw, up_cap, &ended))
        .map(|(down, up)| (up, down))
}

/// Reads `from` until its end, writing every read to `to`; the bytes moved.
/// At the first end of the two (`ended`), `to` is shut down for writing;
/// at the second, nothing: both sockets are closed next, which ends `to`
/// as well (everything `to`'s own side sent has been read by then, so the
/// close is an orderly one).
async fn pump<R, W>(from: &mut R, to: &mut W, cap: usize, ended: &AtomicBool) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST.min(cap));
    let mut moved = 0u64;
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            if !ended.swap(true, Ordering::AcqRel) {
                // Passed on after whatever else is ready on this thread: a
                // new connection's handshake goes first.
                tokio::task::yield_now().await;
                to.shutdown().await?;
            }
            return Ok(moved);
        }
        to.write_all(&buf[..n]).await?;
        moved += n as u64;
        // A full read: more is coming than the buffer holds.
        if n == buf.capacity() && n < cap {
            buf.reserve_exact((2 * n).min(cap) - buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Two connected pairs: (client, gateway's client side) and (gateway's
    /// server side, server).
    async fn pairs() -> ((TcpStream, TcpStream), (TcpStream, TcpStream)) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (d, _) = l.accept().await.unwrap();
        ((a, b), (c, d))
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_and_passes_each_end_on() {
        let ((mut client, mut gc), (mut gs, mut server)) = pairs().await;
        let task = tokio::spawn(async move { splice(&mut gc, &mut gs, 16 * 1024, 64 * 1024).await });
        client.write_all(b"handshake").await.unwrap();
        let mut b = [0u8; 9];
        server.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"handshake");
        // A large answer: the down buffer grows to its cap on the way.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&sent).await.unwrap();
            server
        });
        let mut got = vec![0u8; big.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == big, "bytes changed on the way");
        let mut server = writer.await.unwrap();
        // The client ends its side: the server sees its end of file, and
        // may still answer before it ends its own.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.write_all(b"bye").await.unwrap();
        drop(server);
        let mut tail = Vec::new();
        client.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"bye");
        assert_eq!(task.await.unwrap().unwrap(), (9, big.len() as u64 + 3));
    }

    #[tokio::test]
    async fn a_reset_on_one_side_ends_both() {
        let ((client, mut gc), (mut gs, mut server)) = pairs().await;
        let task = tokio::spawn(async move { splice(&mut gc, &mut gs, 1024, 1024).await });
        // The client vanishes with a reset, not an end of file; the server
        // keeps its side open. The splice must end all the same, and close
        // the server's connection.
        let s = socket2::SockRef::from(&client);
        s.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(client);
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("splice ended").unwrap();
        let mut rest = Vec::new();
        // The server sees the connection end (end of file or reset).
        let _ = server.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        assert!(r.is_err(), "a reset is an error: {r:?}");
    }

    #[tokio::test]
    async fn buffers_grow_only_to_their_cap() {
        // A reader that always has more than asked for: every read fills
        // the buffer, which doubles from FIRST to the cap and stays there.
        struct Endless {
            sizes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
            left: usize,
        }
        impl AsyncRead for Endless {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = buf.remaining().min(self.left);
                self.sizes.lock().unwrap().push(buf.remaining());
                buf.put_slice(&vec![7u8; n]);
                self.left -= n;
                std::task::Poll::Ready(Ok(()))
            }
        }
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut from = Endless { sizes: sizes.clone(), left: 1 << 20 };
        let mut to = Vec::new();
        let ended = AtomicBool::new(false);
        assert_eq!(pump(&mut from, &mut to, 16 * 1024, &ended).await.unwrap(), 1 << 20);
        assert_eq!(to.len(), 1 << 20);
        let s = sizes.lock().unwrap().clone();
        assert_eq!(&s[..4], &[2048, 4096, 8192, 16384]);
        assert!(s.iter().all(|&n| n <= 16 * 1024), "a read asked for more than the cap: {s:?}");
    }
}
