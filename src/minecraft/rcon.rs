//! A Source RCON client (the protocol Minecraft servers speak on their RCON
//! port): little-endian `length, id, type, body, 0, 0` packets; type 3
//! authenticates, type 2 runs a command, answers come as type 0.
//!
//! The server is not trusted: every exchange (the login, each command) has
//! one deadline for the whole of it, however many packets arrive, and at
//! most [`MAX_SKIPPED`] packets that do not answer it are read; after a
//! failed exchange the connection is not used again.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AUTH: i32 = 3;
const COMMAND: i32 = 2;
/// Longest packet a Minecraft server sends or accepts.
const MAX_PACKET: i32 = 4096 + 10;
/// Packets that do not answer the exchange (another request id, the empty
/// packet some servers send before the login answer) read before giving
/// up: with [`MAX_PACKET`], at most 66 KiB per exchange.
pub const MAX_SKIPPED: usize = 16;

/// An authenticated RCON connection.
pub struct Rcon {
    stream: TcpStream,
    addr: String,
    next_id: i32,
    /// Deadline of one whole exchange.
    timeout: Duration,
    /// An exchange failed half-way: the stream is out of step.
    broken: bool,
}

impl Rcon {
    /// Connects to `addr` (host:port) and logs in with `password`;
    /// `timeout` bounds the connection, the login exchange, and each later
    /// command's exchange as a whole.
    pub async fn connect(addr: &str, password: &str, timeout: Duration) -> Result<Rcon, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("RCON {addr}: no connection within {timeout:?}"))?
            .map_err(|e| format!("RCON {addr}: {e}"))?;
        let mut r = Rcon { stream, addr: addr.to_string(), next_id: 1, timeout, broken: false };
        r.exchange(AUTH, password, "the login").await?;
        Ok(r)
    }

    /// Runs a command and returns the server's answer.
    pub async fn command(&mut self, cmd: &str) -> Result<String, String> {
        let what: String = cmd.chars().take(80).collect();
        self.exchange(COMMAND, cmd, &format!("`{what}`")).await
    }

    /// Sends one request and reads its answer, within the deadline.
    async fn exchange(&mut self, kind: i32, body: &str, what: &str) -> Result<String, String> {
        if self.broken {
            return Err(format!("RCON {}: the connection failed earlier", self.addr));
        }
        let limit = self.timeout;
        let r = tokio::time::timeout(limit, async {
            let id = self.send(kind, body).await?;
            self.answer(id, kind == AUTH).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer to {what} within {limit:?}")));
        r.map_err(|e| {
            self.broken = true;
            format!("RCON {}: {}{e}", self.addr, if kind == AUTH { "login: " } else { "" })
        })
    }

    /// Reads packets up to the answer to request `id`.
    async fn answer(&mut self, id: i32, login: bool) -> Result<String, String> {
        for _ in 0..=MAX_SKIPPED {
            let (rid, kind, body) = self.recv().await?;
            if login {
                // The login answer is type 2; a server may send an empty
                // type-0 packet before it.
                if kind == COMMAND || kind == AUTH {
                    if rid == -1 {
                        return Err("wrong password".into());
                    }
                    if rid == id {
                        return Ok(body);
                    }
                }
            } else if rid == id {
                return Ok(body);
            }
        }
        Err(format!("{} packets that do not answer request {id}: not a Minecraft RCON server?", MAX_SKIPPED + 1))
    }

    async fn send(&mut self, kind: i32, body: &str) -> Result<i32, String> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let len = 4 + 4 + body.len() as i32 + 2;
        if len > MAX_PACKET {
            return Err("command too long".into());
        }
        let mut p = Vec::with_capacity(len as usize + 4);
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(&[0, 0]);
        self.stream.write_all(&p).await.map_err(|e| format!("{e}"))?;
        Ok(id)
    }

    async fn recv(&mut self) -> Result<(i32, i32, String), String> {
        let len = self.stream.read_i32_le().await.map_err(|e| format!("connection lost: {e}"))?;
        if !(10..=MAX_PACKET).contains(&len) {
            return Err(format!("bad packet length {len}"));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await.map_err(|e| format!("connection lost: {e}"))?;
        let id = i32::from_le_bytes(buf[0..4].try_into().unwrap_or_default());
        let kind = i32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
        let body = String::from_utf8_lossy(&buf[8..buf.len() - 2]).into_owned();
        Ok((id, kind, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn packet(id: i32, kind: i32, body: &str) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&(10 + body.len() as i32).to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }

    async fn read_packet(s: &mut TcpStream) -> Option<(i32, i32, String)> {
        let len = s.read_i32_le().await.ok()?;
        let mut buf = vec![0u8; len as usize];
        s.read_exact(&mut buf).await.ok()?;
        let id = i32::from_le_bytes(buf[0..4].try_into().ok()?);
        let kind = i32::from_le_bytes(buf[4..8].try_into().ok()?);
        Some((id, kind, String::from_utf8_lossy(&buf[8..buf.len() - 2]).into_owned()))
    }

    /// A fake server: logs in (an empty type-0 packet first, as some
    /// servers do), then answers commands as `answer` says.
    async fn server(answer: fn(i32, String) -> Option<Vec<u8>>, pause: Duration) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let Some((id, _, _)) = read_packet(&mut s).await else { return };
                    let _ = s.write_all(&packet(id, 0, "")).await;
                    let _ = s.write_all(&packet(id, 2, "")).await;
                    while let Some((id, _, body)) = read_packet(&mut s).await {
                        match answer(id, body) {
                            Some(p) => {
                                let _ = s.write_all(&p).await;
                            }
                            // Packets with a wrong request id, forever.
                            None => loop {
                                if s.write_all(&packet(id + 1000, 0, "spam")).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(pause).await;
                            },
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn commands_are_answered() {
        let addr = server(|id, body| Some(packet(id, 0, &format!("ran {body}"))), Duration::ZERO).await;
        let mut r = Rcon::connect(&addr, "pw", Duration::from_secs(2)).await.unwrap();
        assert_eq!(r.command("list").await.unwrap(), "ran list");
        assert_eq!(r.command("say hi").await.unwrap(), "ran say hi");
    }

    /// A server that keeps sending packets with another request id: a
    /// clear error soon, whether it streams them fast (the skip bound) or
    /// slowly (the exchange's deadline, not one per packet).
    #[tokio::test]
    async fn a_server_streaming_wrong_ids_fails_the_exchange_within_its_deadline() {
        let deadline = Duration::from_millis(1500);
        for (pause, expect) in [
            (Duration::ZERO, "packets that do not answer request 2"),
            (Duration::from_millis(200), "no answer to `list` within 1.5s"),
        ] {
            let addr = server(|_, _| None, pause).await;
            let mut r = Rcon::connect(&addr, "pw", deadline).await.unwrap();
            let t0 = std::time::Instant::now();
            let e = tokio::time::timeout(Duration::from_secs(10), r.command("list"))
                .await
                .expect("the exchange held the caller past its deadline")
                .unwrap_err();
            assert!(t0.elapsed() <= deadline + Duration::from_millis(500), "{:?}", t0.elapsed());
            assert!(e.contains(expect) && e.contains(&addr), "{e}");
            // The connection is out of step: not used again.
            let e = r.command("list").await.unwrap_err();
            assert!(e.contains("failed earlier"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_silent_or_refusing_login_is_an_error() {
        // Accepts and never answers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let e = Rcon::connect(&addr, "pw", Duration::from_millis(300)).await.err().unwrap();
        assert!(e.contains("login: no answer to the login within 300ms"), "{e}");
        // Refuses the password.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = read_packet(&mut s).await;
                let _ = s.write_all(&packet(-1, 2, "")).await;
            }
        });
        let e = Rcon::connect(&addr, "pw", Duration::from_secs(2)).await.err().unwrap();
        assert!(e.ends_with("login: wrong password"), "{e}");
    }
}
