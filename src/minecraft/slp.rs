//! Server List Ping: the status handshake every Minecraft client uses to show
//! a server's version, MOTD and players.
//!
//! Protocol: a handshake packet (next state 1 = status), a status request,
//! and a JSON status response, each framed as `VarInt length | VarInt id |
//! payload`. A server answering with `players.max == 0` is still starting.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::resources::text;

/// Largest status response packet accepted: the packet id (1 byte), the
/// string's VarInt length (3 bytes) and the JSON, which the protocol caps
/// at 32767 characters, at most 4 UTF-8 bytes each: 128 KiB. The favicon
/// (a 64×64 PNG, base64) is part of that JSON; a vanilla client refuses a
/// longer answer too. It was 1 MiB.
pub const MAX_RESPONSE: usize = 1 + 3 + 32767 * 4;
/// Protocol version sent in the handshake; servers answer status for any.
const HANDSHAKE_PROTOCOL: i32 = 767;

/// What a server reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Version name, e.g. `1.21.4` or `Paper 1.21.4`.
    pub version: String,
    /// Protocol number.
    pub protocol: i32,
    /// Players online.
    pub online: i32,
    /// Player limit.
    pub max: i32,
    /// Names of players in the server's sample (at most [`MAX_NAMES`], sorted).
    pub names: Vec<String>,
    /// Plain-text MOTD (formatting removed).
    pub motd: String,
}

/// Why a ping failed.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[derive(Deserialize)]
struct RawStatus {
    version: Option<RawVersion>,
    players: Option<RawPlayers>,
    description: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawVersion {
    name: Option<String>,
    protocol: Option<i32>,
}

#[derive(Deserialize)]
struct RawPlayers {
    max: Option<i32>,
    online: Option<i32>,
    #[serde(default)]
    sample: Vec<RawSample>,
}

#[derive(Deserialize)]
struct RawSample {
    name: Option<String>,
    id: Option<String>,
}

/// Most names kept from a ping's player sample (vanilla sends up to 12).
pub const MAX_NAMES: usize = 20;

/// Player names in a sample: real names only (servers and plugins also put
/// lines of text or "Anonymous Player" entries with the nil UUID there), at
/// most [`MAX_NAMES`] of them.
fn names(sample: Vec<RawSample>) -> Vec<String> {
    let real = |n: &str| {
        (1..=text::MAX_PLAYER_NAME).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut out: Vec<String> = sample
        .into_iter()
        .filter(|s| s.id.as_deref().is_none_or(|id| id.chars().any(|c| c != '0' && c != '-')))
        .filter_map(|s| s.name)
        .filter(|n| real(n))
        .take(MAX_NAMES)
        .collect();
    out.sort_by_key(|n| n.to_lowercase());
    out.dedup();
    out
}

/// Pings `host:port`, giving up after `timeout` in total.
pub async fn ping(host: &str, port: u16, timeout: Duration) -> Result<Status, PingError> {
    tokio::time::timeout(timeout, ping_inner(host, port)).await.map_err(|_| PingError::Timeout(timeout))?
}

async fn ping_inner(host: &str, port: u16) -> Result<Status, PingError> {
    let mut stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    // Handshake.
    let mut payload = Vec::new();
    write_varint(&mut payload, 0x00);
    write_varint(&mut payload, HANDSHAKE_PROTOCOL);
    write_string(&mut payload, host);
    payload.extend_from_slice(&port.to_be_bytes());
    write_varint(&mut payload, 1);
    let mut out = Vec::new();
    write_varint(&mut out, payload.len() as i32);
    out.extend_from_slice(&payload);
    // Status request: empty packet 0x00.
    out.extend_from_slice(&[0x01, 0x00]);
    stream.write_all(&out).await?;

    let len = read_varint(&mut stream).await?;
    let len = usize::try_from(len).map_err(|_| PingError::Protocol(format!("negative packet length {len}")))?;
    if len == 0 || len > MAX_RESPONSE {
        return Err(PingError::Protocol(format!("status packet of {len} bytes")));
    }
    let mut packet = vec![0u8; len];
    stream.read_exact(&mut packet).await?;
    let mut cur = &packet[..];
    let id = read_varint_slice(&mut cur)?;
    if id != 0x00 {
        return Err(PingError::Protocol(format!("expected status response (0x00), got packet 0x{id:02x}")));
    }
    let json_len = read_varint_slice(&mut cur)?;
    let json_len = usize::try_from(json_len).map_err(|_| PingError::Protocol("negative string length".into()))?;
    if json_len > cur.len() {
        return Err(PingError::Protocol(format!("string of {json_len} bytes in a {}-byte packet", cur.len())));
    }
    let raw: RawStatus = serde_json::from_slice(&cur[..json_len])
        .map_err(|e| PingError::Protocol(format!("status is not the expected JSON: {e}")))?;
    Ok(parse(raw))
}

fn parse(raw: RawStatus) -> Status {
    let v = raw.version.unwrap_or(RawVersion { name: None, protocol: None });
    let p = raw.players.unwrap_or(RawPlayers { max: None, online: None, sample: vec![] });
    Status {
        version: text::clean(&v.name.unwrap_or_default(), text::MAX_VERSION, false),
        protocol: v.protocol.unwrap_or(-1),
        online: p.online.unwrap_or(0).max(0),
        max: p.max.unwrap_or(0).max(0),
        names: names(p.sample),
        motd: text::clean(&raw.description.map(|d| plain_text(&d)).unwrap_or_default(), text::MAX_MOTD, false),
    }
}

/// Flattens a chat component (string or `{text, extra}`) to plain text.
fn plain_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => strip_codes(s),
        serde_json::Value::Object(o) => {
            let mut s = o.get("text").map(plain_text).unwrap_or_default();
            if let Some(serde_json::Value::Array(extra)) = o.get("extra") {
                for e in extra {
                    s.push_str(&plain_text(e));
                }
            }
            s
        }
        serde_json::Value::Array(a) => a.iter().map(plain_text).collect(),
        _ => String::new(),
    }
}

/// Removes `§x` formatting codes.
fn strip_codes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '§' {
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

/// Appends a protocol VarInt.
pub fn write_varint(buf: &mut Vec<u8>, value: i32) {
    let mut v = value as u32;
    loop {
        if v & !0x7f == 0 {
            buf.push(v as u8);
            return;
        }
        buf.push(((v & 0x7f) | 0x80) as u8);
        v >>= 7;
    }
}

fn write_string(buf: &mut Vec<u8>, s: &str) {
    write_varint(buf, s.len() as i32);
    buf.extend_from_slice(s.as_bytes());
}

async fn read_varint(stream: &mut TcpStream) -> Result<i32, PingError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = stream.read_u8().await?;
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value as i32);
        }
    }
    Err(PingError::Protocol("VarInt longer than 5 bytes".into()))
}

/// Reads a VarInt from the front of a slice.
pub fn read_varint_slice(cur: &mut &[u8]) -> Result<i32, PingError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let (&b, rest) = cur.split_first().ok_or_else(|| PingError::Protocol("truncated VarInt".into()))?;
        *cur = rest;
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value as i32);
        }
    }
    Err(PingError::Protocol("VarInt longer than 5 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_match_the_protocol_examples() {
        // Examples from the protocol documentation.
        let cases: [(i32, &[u8]); 7] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (25565, &[0xdd, 0xc7, 0x01]),
            (2147483647, &[0xff, 0xff, 0xff, 0xff, 0x07]),
            (-1, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
            let mut cur = &buf[..];
            assert_eq!(read_varint_slice(&mut cur).unwrap(), v);
            assert!(cur.is_empty());
        }
        let mut cur: &[u8] = &[0x80, 0x80];
        assert!(read_varint_slice(&mut cur).is_err());
        let mut cur: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(read_varint_slice(&mut cur).is_err());
    }

    #[test]
    fn sample_names_keep_real_players_only() {
        let raw: RawStatus = serde_json::from_value(serde_json::json!({
            "players": {"max": 20, "online": 3, "sample": [
                {"name": "bob", "id": "5627dd98-e6be-3c21-b8a8-e92344183641"},
                {"name": "Anonymous Player", "id": "00000000-0000-0000-0000-000000000000"},
                {"name": "§aWelcome to the server", "id": "00000000-0000-0000-0000-000000000001"},
                {"name": "Alice", "id": "1"}
            ]}
        }))
        .unwrap();
        let st = parse(raw);
        assert_eq!(st.names, vec!["Alice".to_string(), "bob".to_string()]);
        assert_eq!(st.online, 3);
    }

    /// A lying server's answer ends up bounded and clean: a huge version
    /// full of escapes, 1000 sample entries, a MOTD with control characters.
    #[test]
    fn a_lying_servers_answer_is_bounded_and_clean() {
        let sample: Vec<serde_json::Value> = (0..1000)
            .map(|i| serde_json::json!({"name": format!("player{i}"), "id": format!("{i:08}-0000-0000-0000-000000000001")}))
            .chain([serde_json::json!({"name": "x".repeat(5000), "id": "1"})])
            .chain([serde_json::json!({"name": "\u{1b}[2Jevil", "id": "2"})])
            .collect();
        let raw: RawStatus = serde_json::from_value(serde_json::json!({
            "version": {"name": format!("\u{1b}]0;pwned\u{7}\u{1b}[31mPaper{}\u{1b}[0m", "\u{9b}1m9".repeat(100_000)), "protocol": 767},
            "players": {"max": 20, "online": 1000, "sample": sample},
            "description": {"text": "hi\u{1b}[5m\u{0}\r\nthere"},
        }))
        .unwrap();
        let st = parse(raw);
        assert!(st.version.len() <= text::MAX_VERSION, "{}", st.version.len());
        assert!(st.version.starts_with("Paper999") && st.version.ends_with(text::CUT), "{:?}", st.version);
        assert!(!st.version.chars().any(char::is_control), "{:?}", st.version);
        assert_eq!(st.names.len(), MAX_NAMES);
        assert!(st.names.iter().all(|n| n.len() <= text::MAX_PLAYER_NAME && n.starts_with("player")), "{:?}", st.names);
        assert_eq!(st.motd, "hi  there");
        assert_eq!(st.online, 1000);
    }

    #[test]
    fn chat_components_flatten_to_text() {
        let v = serde_json::json!({"text": "§aHello ", "extra": [{"text": "world"}, "§r!"]});
        assert_eq!(plain_text(&v), "Hello world!");
    }

    #[tokio::test]
    async fn garbage_and_silence_are_errors_not_panics() {
        use tokio::net::TcpListener;
        // A server that answers with junk.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 0x0f]).await;
            }
        });
        let e = ping("127.0.0.1", port, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, PingError::Protocol(_)), "{e}");
        // A server that never answers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let e = ping("127.0.0.1", port, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(e, PingError::Timeout(_)), "{e}");
        // A server announcing more than the protocol allows: refused
        // before it is read.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut p = Vec::new();
                write_varint(&mut p, (MAX_RESPONSE + 1) as i32);
                let _ = s.write_all(&p).await;
                let _ = s.write_all(&vec![b' '; MAX_RESPONSE + 1]).await;
            }
        });
        let e = ping("127.0.0.1", port, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.to_string().contains("status packet of 131073 bytes"), "{e}");
    }
}
