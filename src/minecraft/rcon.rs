//! A Source RCON client (the protocol Minecraft servers speak on their RCON
//! port): little-endian `length, id, type, body, 0, 0` packets; type 3
//! authenticates, type 2 runs a command, answers come as type 0.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const AUTH: i32 = 3;
const COMMAND: i32 = 2;
/// Longest packet a Minecraft server sends or accepts.
const MAX_PACKET: i32 = 4096 + 10;

/// An authenticated RCON connection.
pub struct Rcon {
    stream: TcpStream,
    next_id: i32,
    timeout: Duration,
}

impl Rcon {
    /// Connects to `addr` (host:port) and logs in with `password`.
    pub async fn connect(addr: &str, password: &str, timeout: Duration) -> Result<Rcon, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("RCON {addr}: no connection within {timeout:?}"))?
            .map_err(|e| format!("RCON {addr}: {e}"))?;
        let mut r = Rcon { stream, next_id: 1, timeout };
        // Errors of the login name the address too.
        let at = |e: String| e.replacen("RCON:", &format!("RCON {addr}: login:"), 1);
        let id = r.send(AUTH, password).await.map_err(at)?;
        // Some servers send an empty type-0 packet before the auth answer.
        loop {
            let (rid, kind, _) = r.recv().await.map_err(at)?;
            if kind == COMMAND || kind == AUTH {
                if rid == -1 {
                    return Err(format!("RCON {addr}: wrong password"));
                }
                if rid == id {
                    return Ok(r);
                }
            }
        }
    }

    /// Runs a command and returns the server's answer.
    pub async fn command(&mut self, cmd: &str) -> Result<String, String> {
        let id = self.send(COMMAND, cmd).await?;
        loop {
            let (rid, _, body) = self.recv().await?;
            if rid == id {
                return Ok(body);
            }
        }
    }

    async fn send(&mut self, kind: i32, body: &str) -> Result<i32, String> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let len = 4 + 4 + body.len() as i32 + 2;
        if len > MAX_PACKET {
            return Err("RCON command too long".into());
        }
        let mut p = Vec::with_capacity(len as usize + 4);
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(body.as_bytes());
        p.extend_from_slice(&[0, 0]);
        tokio::time::timeout(self.timeout, self.stream.write_all(&p))
            .await
            .map_err(|_| "RCON: write timed out".to_string())?
            .map_err(|e| format!("RCON: {e}"))?;
        Ok(id)
    }

    async fn recv(&mut self) -> Result<(i32, i32, String), String> {
        let read = async {
            let len = self.stream.read_i32_le().await.map_err(|e| format!("RCON: connection lost: {e}"))?;
            if !(10..=MAX_PACKET).contains(&len) {
                return Err(format!("RCON: bad packet length {len}"));
            }
            let mut buf = vec![0u8; len as usize];
            self.stream.read_exact(&mut buf).await.map_err(|e| format!("RCON: connection lost: {e}"))?;
            let id = i32::from_le_bytes(buf[0..4].try_into().unwrap_or_default());
            let kind = i32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
            let body = String::from_utf8_lossy(&buf[8..buf.len() - 2]).into_owned();
            Ok((id, kind, body))
        };
        tokio::time::timeout(self.timeout, read).await.map_err(|_| "RCON: no answer in time".to_string())?
    }
}
