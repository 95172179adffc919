//! A minimal Java Edition Server List Ping client: its handshake names the
//! hostname a player typed, whatever address the TCP connection goes to —
//! how the e2e and `cargo xtask dev` reach servers through the gateway.
//! (The independent client is the npm `minecraft-protocol` package; this one
//! is for the many quick pings of the gateway's storm and failover checks.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Protocol version sent in the handshake (1.21.4; routing does not depend
/// on it).
const PROTOCOL: i32 = 769;

pub(crate) fn varint(mut v: u32, out: &mut Vec<u8>) {
    loop {
        if v & !0x7f == 0 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
}

pub(crate) fn read_varint(r: &mut impl Read) -> Result<u32> {
    let mut v = 0u32;
    for i in 0..5 {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        v |= u32::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("VarInt longer than 5 bytes")
}

pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(body.len() as u32, &mut out);
    out.extend_from_slice(body);
    out
}

/// The status JSON a server (or the gateway on its behalf) answers at
/// `addr` for `hostname`.
pub fn status(addr: SocketAddr, hostname: &str, port: u16, timeout: Duration) -> Result<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut hs = vec![0x00];
    varint(PROTOCOL as u32, &mut hs);
    varint(hostname.len() as u32, &mut hs);
    hs.extend_from_slice(hostname.as_bytes());
    hs.extend_from_slice(&port.to_be_bytes());
    varint(1, &mut hs);
    let mut req = frame(&hs);
    req.extend(frame(&[0x00]));
    s.write_all(&req)?;
    let len = read_varint(&mut s).context("status answer length")? as usize;
    if len > 1 << 21 {
        bail!("status answer of {len} bytes");
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).context("status answer")?;
    let mut r = &body[..];
    let id = read_varint(&mut r)?;
    if id != 0 {
        bail!("status answer has packet id {id}");
    }
    let n = read_varint(&mut r)? as usize;
    let json = r.get(..n).context("status string shorter than its length")?;
    serde_json::from_slice(json).context("status JSON")
}

/// The MOTD of a status answer as plain text (chat components flattened).
pub fn motd(status: &serde_json::Value) -> String {
    fn text(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => out.push_str(s),
            serde_json::Value::Object(o) => {
                if let Some(t) = o.get("text") {
                    text(t, out);
                }
                for e in o.get("extra").and_then(|e| e.as_array()).into_iter().flatten() {
                    text(e, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|e| text(e, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    text(&status["description"], &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_motd_flattens() {
        for v in [0u32, 1, 127, 128, 255, 25565, 2_097_151, u32::MAX >> 1] {
            let mut b = Vec::new();
            varint(v, &mut b);
            assert_eq!(read_varint(&mut &b[..]).unwrap(), v);
        }
        let s = serde_json::json!({"description": {"text": "alpha ", "extra": [{"text": "lobby"}, "!"]}});
        assert_eq!(motd(&s), "alpha lobby!");
        assert_eq!(motd(&serde_json::json!({"description": "plain"})), "plain");
    }
}
