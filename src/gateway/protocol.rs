//! The Java Edition protocol as far as routing needs it: VarInt framing,
//! the handshake (the first packet of every connection), the login start
//! that follows it, and the legacy (pre-1.7) ping. No I/O: every parser
//! takes the bytes received so far and says whether it needs more, found
//! the input malformed, or is done after a number of bytes (which the
//! gateway then forwards to the server verbatim, so nothing is re-encoded).
//!
//! Every parser is bounded: a frame longer than its limit is malformed as
//! soon as its length prefix is read, so a client cannot make the gateway
//! buffer more than [`MAX_HANDSHAKE_FRAME`] bytes before routing.

use crate::minecraft::slp::write_varint;

/// Longest VarInt (a 32-bit value in 7-bit groups).
pub const MAX_VARINT_LEN: usize = 5;
/// Longest server address accepted, in bytes. Vanilla servers read it as a
/// string of at most 255 characters, i.e. at most 765 UTF-8 bytes; Forge's
/// `\0FML3\0` marker fits within that.
pub const MAX_ADDRESS_LEN: usize = 255 * 3;
/// Longest handshake frame (length prefix included): packet id (1), protocol
/// (5), address length (2) and address (765), port (2), next state (1), its
/// own length prefix (2) — 778 bytes; anything longer no client sends.
pub const MAX_HANDSHAKE_FRAME: usize = 1 + 5 + 2 + MAX_ADDRESS_LEN + 2 + 1 + 2;
/// Longest login start frame accepted: name (16 characters, ≤ 64 bytes with
/// its prefix), UUID (16) and, for 1.19-1.19.2, the optional profile key
/// signature (public key ≤ 512 and signature ≤ 4096 bytes in vanilla).
pub const MAX_LOGIN_START_FRAME: usize = 5 + 1 + 64 + 1 + 8 + 5 + 512 + 5 + 4096 + 1 + 16;
/// Longest player name (characters), as vanilla.
pub const MAX_NAME_CHARS: usize = 16;
/// Longest string the protocol carries in a status answer or disconnect
/// (characters), as vanilla.
pub const MAX_STRING_CHARS: usize = 32767;

/// Result of an incremental parse over the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress<T> {
    /// Not enough bytes yet; call again with more.
    NeedMore,
    /// Parsed; `consumed` bytes from the start of the buffer belong to it.
    Done { value: T, consumed: usize },
}

/// Why input was refused. The connection is closed; nothing is forwarded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("VarInt longer than {MAX_VARINT_LEN} bytes")]
    VarIntTooLong,
    #[error("negative or zero frame length {0}")]
    BadLength(i32),
    #[error("frame of {len} bytes is over the limit of {max}")]
    FrameTooLong { len: usize, max: usize },
    #[error("packet id {0:#04x} where {1:#04x} was expected")]
    UnexpectedPacket(i32, i32),
    #[error("string length {0} out of range")]
    BadStringLength(i32),
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("string of {len} characters is over the limit of {max}")]
    StringTooLong { len: usize, max: usize },
    #[error("frame ends before its fields")]
    Truncated,
    #[error("{0} bytes left over in the frame")]
    TrailingBytes(usize),
    #[error("unknown next state {0}")]
    BadNextState(i32),
}

/// Reads a VarInt at the start of `buf`: `NeedMore` when `buf` ends inside
/// it, malformed when it runs past [`MAX_VARINT_LEN`] bytes.
pub fn read_varint(buf: &[u8]) -> Result<Progress<i32>, Malformed> {
    let mut value: u32 = 0;
    for i in 0..MAX_VARINT_LEN {
        let Some(&b) = buf.get(i) else { return Ok(Progress::NeedMore) };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Progress::Done { value: value as i32, consumed: i + 1 });
        }
    }
    Err(Malformed::VarIntTooLong)
}

/// One frame: its packet id and the bytes after the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub id: i32,
    pub body: &'a [u8],
}

/// Reads one uncompressed frame (`VarInt length | VarInt id | body`) of at
/// most `max` bytes in all, refusing a longer one from its length prefix.
pub fn read_frame(buf: &[u8], max: usize) -> Result<Progress<Frame<'_>>, Malformed> {
    let (len, prefix) = match read_varint(buf)? {
        Progress::NeedMore => {
            // More bytes only add higher bits: a prefix already over the
            // limit is refused before the rest arrives.
            let so_far = buf.iter().enumerate().fold(0u64, |v, (i, b)| v | (u64::from(b & 0x7f) << (7 * i)));
            if so_far > max as u64 {
                return Err(Malformed::FrameTooLong { len: so_far as usize, max });
            }
            return Ok(Progress::NeedMore);
        }
        Progress::Done { value, consumed } => (value, consumed),
    };
    if len <= 0 {
        return Err(Malformed::BadLength(len));
    }
    let len = len as usize;
    let total = prefix + len;
    if total > max {
        return Err(Malformed::FrameTooLong { len: total, max });
    }
    let Some(packet) = buf.get(prefix..total) else { return Ok(Progress::NeedMore) };
    let (id, id_len) = match read_varint(packet)? {
        Progress::Done { value, consumed } => (value, consumed),
        Progress::NeedMore => return Err(Malformed::Truncated),
    };
    Ok(Progress::Done { value: Frame { id, body: &packet[id_len..] }, consumed: total })
}

/// Encodes one uncompressed frame.
pub fn frame(id: i32, body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(body.len() + 5);
    write_varint(&mut packet, id);
    packet.extend_from_slice(body);
    let mut out = Vec::with_capacity(packet.len() + 5);
    write_varint(&mut out, packet.len() as i32);
    out.extend_from_slice(&packet);
    out
}

/// Appends a protocol string (VarInt byte length, UTF-8).
pub fn write_string(buf: &mut Vec<u8>, s: &str) {
    write_varint(buf, s.len() as i32);
    buf.extend_from_slice(s.as_bytes());
}

/// Reads fields from inside a complete frame: running out is malformed.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<i32, Malformed> {
        match read_varint(self.0)? {
            Progress::Done { value, consumed } => {
                self.0 = &self.0[consumed..];
                Ok(value)
            }
            Progress::NeedMore => Err(Malformed::Truncated),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A string of at most `max_bytes` bytes and `max_chars` characters.
    fn string(&mut self, max_bytes: usize, max_chars: usize) -> Result<&'a str, Malformed> {
        let len = self.varint()?;
        if len < 0 || len as usize > max_bytes {
            return Err(Malformed::BadStringLength(len));
        }
        let s = std::str::from_utf8(self.bytes(len as usize)?).map_err(|_| Malformed::NotUtf8)?;
        let chars = s.chars().count();
        if chars > max_chars {
            return Err(Malformed::StringTooLong { len: chars, max: max_chars });
        }
        Ok(s)
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() { Ok(()) } else { Err(Malformed::TrailingBytes(self.0.len())) }
    }
}

/// What the client asks for after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextState {
    /// Server list ping.
    Status,
    /// Join.
    Login,
    /// Join after a transfer from another server (1.20.5+).
    Transfer,
}

impl NextState {
    fn from_wire(v: i32) -> Result<NextState, Malformed> {
        match v {
            1 => Ok(NextState::Status),
            2 => Ok(NextState::Login),
            3 => Ok(NextState::Transfer),
            other => Err(Malformed::BadNextState(other)),
        }
    }

    /// The value on the wire.
    pub fn to_wire(self) -> i32 {
        match self {
            NextState::Status => 1,
            NextState::Login => 2,
            NextState::Transfer => 3,
        }
    }
}

/// The handshake, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Protocol version number (e.g. 769 for 1.21.4).
    pub protocol: i32,
    /// The server address as the client sent it (not normalised).
    pub address: String,
    /// The port the client connected to, as it says.
    pub port: u16,
    pub next: NextState,
}

impl Handshake {
    /// The hostname to route by ([`normalize_host`] of the address).
    pub fn host(&self) -> Option<String> {
        normalize_host(&self.address)
    }

    /// Encodes the handshake as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.address.len() + 12);
        write_varint(&mut body, self.protocol);
        write_string(&mut body, &self.address);
        body.extend_from_slice(&self.port.to_be_bytes());
        write_varint(&mut body, self.next.to_wire());
        frame(0x00, &body)
    }
}

/// Parses the handshake at the start of `buf` (the connection's first
/// bytes, when [`classify`] says `Modern`).
pub fn parse_handshake(buf: &[u8]) -> Result<Progress<Handshake>, Malformed> {
    let (f, consumed) = match read_frame(buf, MAX_HANDSHAKE_FRAME)? {
        Progress::NeedMore => {
            // Refuse a wrong packet id as soon as it is in (a PROXY header
            // from an untrusted peer, another protocol), not after its frame.
            if let Ok(Progress::Done { consumed, .. }) = read_varint(buf)
                && let Some(&id) = buf.get(consumed)
                && id != 0x00
            {
                return Err(Malformed::UnexpectedPacket(i32::from(id), 0x00));
            }
            return Ok(Progress::NeedMore);
        }
        Progress::Done { value, consumed } => (value, consumed),
    };
    if f.id != 0x00 {
        return Err(Malformed::UnexpectedPacket(f.id, 0x00));
    }
    let mut r = Fields(f.body);
    let protocol = r.varint()?;
    let address = r.string(MAX_ADDRESS_LEN, MAX_ADDRESS_LEN)?.to_string();
    let port = u16::from_be_bytes(r.bytes(2)?.try_into().map_err(|_| Malformed::Truncated)?);
    let next = NextState::from_wire(r.varint()?)?;
    r.end()?;
    Ok(Progress::Done { value: Handshake { protocol, address, port, next }, consumed })
}

/// The hostname a handshake address routes by: everything from the first
/// `\0` on cut off (Forge's `\0FML\0`, `\0FML2\0`, `\0FML3\0` markers and
/// any other client's or proxy's suffix), trailing dots removed (a fully
/// qualified name), ASCII-lower-cased (DNS names are case-insensitive).
/// `None` when nothing is left.
pub fn normalize_host(address: &str) -> Option<String> {
    let host = address.split('\0').next().unwrap_or_default();
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// The login start packet's fields routing and admission need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginStart {
    /// Player name (unauthenticated: the server checks it in online mode).
    pub name: String,
    /// Player UUID, when this protocol version sends one (1.20.2+ always,
    /// 1.19.3-1.20.1 optionally).
    pub uuid: Option<u128>,
}

/// First protocol version whose login start always carries the UUID (1.20.2).
const LOGIN_UUID_ALWAYS: i32 = 764;
/// First protocol version with an optional UUID and no signature (1.19.3).
const LOGIN_UUID_OPTIONAL: i32 = 761;

/// Parses the login start frame at the start of `buf` (right after the
/// handshake) for the handshake's `protocol`. Only the name is read for
/// versions before 1.19.3 (whose later fields changed between releases);
/// their frame is still bounded and consumed whole.
pub fn parse_login_start(buf: &[u8], protocol: i32) -> Result<Progress<LoginStart>, Malformed> {
    let (f, consumed) = match read_frame(buf, MAX_LOGIN_START_FRAME)? {
        Progress::NeedMore => return Ok(Progress::NeedMore),
        Progress::Done { value, consumed } => (value, consumed),
    };
    if f.id != 0x00 {
        return Err(Malformed::UnexpectedPacket(f.id, 0x00));
    }
    let mut r = Fields(f.body);
    let name = r.string(MAX_NAME_CHARS * 4, MAX_NAME_CHARS)?.to_string();
    let uuid_bytes = |r: &mut Fields<'_>| -> Result<u128, Malformed> {
        Ok(u128::from_be_bytes(r.bytes(16)?.try_into().map_err(|_| Malformed::Truncated)?))
    };
    let uuid = if protocol >= LOGIN_UUID_ALWAYS {
        let u = uuid_bytes(&mut r)?;
        r.end()?;
        Some(u)
    } else if protocol >= LOGIN_UUID_OPTIONAL {
        let has = r.bytes(1)?[0] != 0;
        let u = if has { Some(uuid_bytes(&mut r)?) } else { None };
        r.end()?;
        u
    } else {
        None
    };
    Ok(Progress::Done { value: LoginStart { name, uuid }, consumed })
}

/// How a connection opens, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Nothing yet, or too little to tell.
    NeedMore,
    /// A modern (1.7+) handshake frame: parse it with [`parse_handshake`].
    Modern,
    /// A legacy (pre-1.7) server list ping in this format.
    Legacy(LegacyKind),
    /// A legacy ping of this kind if nothing more arrives shortly (a pre-1.4
    /// client sends only `FE`, a 1.4-1.5 one only `FE 01`, then wait for the
    /// answer); a modern frame of 254+ bytes opens with the same bytes and
    /// goes on. The caller waits briefly, then answers as legacy.
    LegacyUnlessMore(LegacyKind),
}

/// Tells a legacy ping from a modern handshake as vanilla servers do: a
/// legacy ping starts `FE`, then nothing, or `01` and then nothing or `FA`
/// (1.6's `MC|PingHost`); anything else is a modern frame (whose VarInt
/// length may start with `FE`).
pub fn classify(buf: &[u8]) -> Opening {
    match buf {
        [] => Opening::NeedMore,
        [0xFE] => Opening::LegacyUnlessMore(LegacyKind::Pre14),
        [0xFE, 0x01] => Opening::LegacyUnlessMore(LegacyKind::V14),
        [0xFE, 0x01, 0xFA, ..] => Opening::Legacy(LegacyKind::V14),
        _ => Opening::Modern,
    }
}

/// Which legacy answer format the client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyKind {
    /// Beta 1.8 to 1.3: sent only `FE`; reads `motd§online§max`.
    Pre14,
    /// 1.4 to 1.6: sent `FE 01` (1.6 adds `FA` and its host); reads the
    /// `§1` format.
    V14,
}

/// The host and port a 1.6 client names in its legacy ping
/// (`FE 01 FA "MC|PingHost" …`), when all of it has arrived and is well formed.
pub fn legacy_ping_host(buf: &[u8]) -> Option<(String, u16)> {
    let rest = buf.strip_prefix(&[0xFE, 0x01, 0xFA])?;
    let (channel, rest) = utf16_string(rest)?;
    if channel != "MC|PingHost" {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let data = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    let (_protocol, data) = data.split_first()?;
    let (host, data) = utf16_string(data)?;
    let port = u16::try_from(i32::from_be_bytes(*data.first_chunk::<4>()?)).ok()?;
    Some((normalize_host(&host)?, port))
}

/// A big-endian UTF-16 string with a u16 length in code units.
fn utf16_string(buf: &[u8]) -> Option<(String, &[u8])> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    let bytes = rest.get(..usize::from(u16::from_be_bytes(*len)) * 2)?;
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    Some((String::from_utf16(&units).ok()?, &rest[bytes.len()..]))
}

/// What a legacy answer shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyStatus {
    pub protocol: i32,
    pub version: String,
    pub motd: String,
    pub online: i32,
    pub max: i32,
}

/// Longest legacy answer text (UTF-16 code units): vanilla clients read
/// at most 256 for the kick string of a ping.
const MAX_LEGACY_UNITS: usize = 256;
/// Longest version name in a legacy answer (characters).
const MAX_LEGACY_VERSION_CHARS: usize = 64;

/// The legacy kick packet (`FF`, u16 length, UTF-16BE text) answering a
/// legacy ping in the client's format. Separators inside the fields (`\0`,
/// and `§` for pre-1.4 clients) are removed and the text is cut to what the
/// client reads, so the answer always parses.
pub fn legacy_answer(kind: LegacyKind, s: &LegacyStatus) -> Vec<u8> {
    let clean = |t: &str, bad: char, max: usize| -> String {
        t.chars().filter(|&c| c != '\0' && c != bad && !c.is_control()).take(max).collect()
    };
    let version = clean(&s.version, '\0', MAX_LEGACY_VERSION_CHARS);
    let text = |motd: &str| match kind {
        LegacyKind::V14 => format!("§1\0{}\0{version}\0{motd}\0{}\0{}", s.protocol, s.online, s.max),
        LegacyKind::Pre14 => format!("{motd}§{}§{}", s.online, s.max),
    };
    // The MOTD gets what the other fields leave (they fit: at most 104 units).
    let budget = MAX_LEGACY_UNITS.saturating_sub(text("").encode_utf16().count());
    let mut used = 0;
    let motd: String = clean(&s.motd, if kind == LegacyKind::Pre14 { '§' } else { '\0' }, usize::MAX)
        .chars()
        .take_while(|c| {
            used += c.len_utf16();
            used <= budget
        })
        .collect();
    let units: Vec<u16> = text(&motd).encode_utf16().collect();
    let mut out = Vec::with_capacity(3 + units.len() * 2);
    out.push(0xFF);
    out.extend_from_slice(&(units.len() as u16).to_be_bytes());
    for u in units {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out
}

/// A status answer the gateway gives itself (unknown host; later: a server
/// asleep or starting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusAnswer {
    /// Version name shown by the client (in red when `protocol` differs
    /// from its own).
    pub version: String,
    pub protocol: i32,
    pub online: i32,
    pub max: i32,
    /// Plain text; escaped as a JSON text component.
    pub motd: String,
    /// `data:image/png;base64,…` of the server's icon, when known.
    pub favicon: Option<String>,
}

/// The status response frame (id 0x00, the status JSON). The version name
/// and MOTD are cut ([`MAX_MESSAGE_CHARS`]) and a favicon that would take
/// the JSON past the protocol's string limit is left out, so the client
/// always accepts the answer.
pub fn status_response(a: &StatusAnswer) -> Vec<u8> {
    // Capped so that, escaped (at most 6 characters each), they always fit.
    let version: String = a.version.chars().take(MAX_STATUS_VERSION_CHARS).collect();
    let motd: String = a.motd.chars().take(MAX_MESSAGE_CHARS).collect();
    let json = |favicon: Option<&String>| {
        let mut v = serde_json::json!({
            "version": {"name": version, "protocol": a.protocol},
            "players": {"max": a.max, "online": a.online},
            "description": {"text": motd},
        });
        if let Some(f) = favicon {
            v["favicon"] = serde_json::Value::String(f.clone());
        }
        v.to_string()
    };
    // The limit counts Java characters (UTF-16 units).
    let mut text = json(a.favicon.as_ref());
    if text.encode_utf16().count() > MAX_STRING_CHARS {
        text = json(None);
    }
    let mut body = Vec::with_capacity(text.len() + 3);
    write_string(&mut body, &text);
    frame(0x00, &body)
}

/// Longest version name in a status answer (characters).
const MAX_STATUS_VERSION_CHARS: usize = 256;

/// The pong frame (id 0x01) echoing a status ping's payload.
pub fn pong(payload: i64) -> Vec<u8> {
    frame(0x01, &payload.to_be_bytes())
}

/// Parses a status-state request at the start of `buf`: the status request
/// (id 0, empty) or a ping (id 1, an i64 to echo).
pub fn parse_status_request(buf: &[u8]) -> Result<Progress<StatusRequest>, Malformed> {
    let (f, consumed) = match read_frame(buf, 16)? {
        Progress::NeedMore => return Ok(Progress::NeedMore),
        Progress::Done { value, consumed } => (value, consumed),
    };
    let mut r = Fields(f.body);
    let value = match f.id {
        0x00 => StatusRequest::Status,
        0x01 => StatusRequest::Ping(i64::from_be_bytes(r.bytes(8)?.try_into().map_err(|_| Malformed::Truncated)?)),
        other => return Err(Malformed::UnexpectedPacket(other, 0x00)),
    };
    r.end()?;
    Ok(Progress::Done { value, consumed })
}

/// A client's request in the status state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusRequest {
    Status,
    Ping(i64),
}

/// Longest disconnect message (characters) the gateway sends.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// The login-state disconnect frame (id 0x00) with `message` as a JSON text
/// component (login disconnects are JSON in every version, 1.20.3+ too).
pub fn login_disconnect(message: &str) -> Vec<u8> {
    let text: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    let json = serde_json::json!({ "text": text }).to_string();
    let mut body = Vec::with_capacity(json.len() + 3);
    write_string(&mut body, &json);
    frame(0x00, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn done<T>(p: Progress<T>) -> (T, usize) {
        match p {
            Progress::Done { value, consumed } => (value, consumed),
            Progress::NeedMore => panic!("needs more"),
        }
    }

    fn handshake(address: &str, next: NextState) -> Handshake {
        Handshake { protocol: 769, address: address.into(), port: 25565, next }
    }

    #[test]
    fn varints_need_more_stop_at_five_bytes_and_match_the_documented_examples() {
        let cases: [(i32, &[u8]); 6] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (25565, &[0xdd, 0xc7, 0x01]),
            (2147483647, &[0xff, 0xff, 0xff, 0xff, 0x07]),
            (-1, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (v, bytes) in cases {
            assert_eq!(read_varint(bytes), Ok(Progress::Done { value: v, consumed: bytes.len() }));
            for cut in 0..bytes.len() {
                assert_eq!(read_varint(&bytes[..cut]), Ok(Progress::NeedMore), "{v} cut at {cut}");
            }
        }
        assert_eq!(read_varint(&[0x80; 5]), Err(Malformed::VarIntTooLong));
        assert_eq!(read_varint(&[0x80; 4]), Ok(Progress::NeedMore));
    }

    #[test]
    fn a_handshake_parses_and_says_how_many_bytes_it_took() {
        let mut bytes = handshake("Play.Example.COM.", NextState::Login).encode();
        let hs_len = bytes.len();
        bytes.extend_from_slice(&[0x07, 0x00, 0x05, b'S', b't', b'e', b'v', b'e']);
        let (hs, consumed) = done(parse_handshake(&bytes).unwrap());
        assert_eq!(consumed, hs_len);
        assert_eq!(hs.protocol, 769);
        assert_eq!(hs.port, 25565);
        assert_eq!(hs.next, NextState::Login);
        assert_eq!(hs.host().as_deref(), Some("play.example.com"));
        for cut in 0..hs_len {
            assert_eq!(parse_handshake(&bytes[..cut]), Ok(Progress::NeedMore), "cut at {cut}");
        }
    }

    #[test]
    fn hostnames_are_normalised_for_routing() {
        for (sent, host) in [
            ("Survival.Acme.Play.Example.", Some("survival.acme.play.example")),
            ("mc.example.com\0FML\0", Some("mc.example.com")),
            ("mc.example.com\0FML2\0", Some("mc.example.com")),
            ("MC.example.com.\0FML3\0", Some("mc.example.com")),
            ("mc.example.com\u{0}192.0.2.1\u{0}uuid", Some("mc.example.com")),
            ("mc.example.com..", Some("mc.example.com")),
            ("", None),
            (".", None),
            ("\0FML\0", None),
        ] {
            assert_eq!(normalize_host(sent).as_deref(), host, "{sent:?}");
        }
    }

    #[test]
    fn malformed_handshakes_are_refused_with_a_reason() {
        // Wrong packet id (a PROXY header from an untrusted peer looks like this).
        // Refused on its second byte, before its frame is complete.
        assert_eq!(parse_handshake(b"PR"), Err(Malformed::UnexpectedPacket(0x52, 0)));
        assert_eq!(parse_handshake(b"\r\n\r\n\0\r\nQUIT\n"), Err(Malformed::UnexpectedPacket(0x0a, 0)));
        // Length prefix over the limit: refused before the bytes arrive.
        assert!(matches!(parse_handshake(&[0xff, 0x7f]), Err(Malformed::FrameTooLong { .. })));
        // A prefix that can only end over the limit is refused while incomplete.
        assert!(matches!(parse_handshake(&[0xff, 0xff]), Err(Malformed::FrameTooLong { .. })));
        assert_eq!(parse_handshake(&[0x00]), Err(Malformed::BadLength(0)));
        // Next state 4 does not exist.
        let mut hs = handshake("a", NextState::Status).encode();
        let last = hs.len() - 1;
        hs[last] = 4;
        assert_eq!(parse_handshake(&hs), Err(Malformed::BadNextState(4)));
        // Address not UTF-8.
        let mut body = vec![0x01, 0x02, 0xff, 0xfe, 0x63, 0xdd, 0x01];
        let bad = frame(0, &body);
        assert_eq!(parse_handshake(&bad), Err(Malformed::NotUtf8));
        // A byte left over inside the frame.
        body = vec![0x01, 0x01, b'a', 0x63, 0xdd, 0x01, 0x00];
        assert_eq!(parse_handshake(&frame(0, &body)), Err(Malformed::TrailingBytes(1)));
        // Address longer than vanilla accepts.
        let long = handshake(&"a".repeat(MAX_ADDRESS_LEN + 1), NextState::Status).encode();
        assert!(parse_handshake(&long).is_err());
        let longest = handshake(&"a".repeat(MAX_ADDRESS_LEN), NextState::Status).encode();
        assert!(longest.len() <= MAX_HANDSHAKE_FRAME);
        assert!(matches!(parse_handshake(&longest), Ok(Progress::Done { .. })));
    }

    /// The first bytes of real clients (src/gateway/testdata/capture.js):
    /// each parses, names the same host, and is followed by the client's
    /// next packet.
    #[test]
    fn captured_handshakes_of_the_npm_client_parse() {
        let cases: [(&str, &[u8], i32, NextState); 8] = [
            ("1.8.8 status", include_bytes!("testdata/status-1.8.8.bin"), 47, NextState::Status),
            ("1.8.8 login", include_bytes!("testdata/login-1.8.8.bin"), 47, NextState::Login),
            ("1.12.2 status", include_bytes!("testdata/status-1.12.2.bin"), 340, NextState::Status),
            ("1.12.2 login", include_bytes!("testdata/login-1.12.2.bin"), 340, NextState::Login),
            ("1.20.4 status", include_bytes!("testdata/status-1.20.4.bin"), 765, NextState::Status),
            ("1.20.4 login", include_bytes!("testdata/login-1.20.4.bin"), 765, NextState::Login),
            ("1.21.4 status", include_bytes!("testdata/status-1.21.4.bin"), 769, NextState::Status),
            ("1.21.4 login", include_bytes!("testdata/login-1.21.4.bin"), 769, NextState::Login),
        ];
        for (what, bytes, protocol, next) in cases {
            assert_eq!(classify(bytes), Opening::Modern, "{what}");
            let (hs, consumed) = done(parse_handshake(bytes).unwrap());
            assert_eq!((hs.protocol, hs.next, hs.port), (protocol, next, 25565), "{what}");
            assert_eq!(hs.address, "Survival.Acme.Play.Example.", "{what}");
            assert_eq!(hs.host().as_deref(), Some("survival.acme.play.example"), "{what}");
            // Re-encoding gives the client's own bytes (so splitting is exact).
            assert_eq!(hs.encode(), bytes[..consumed], "{what}");
            let rest = &bytes[consumed..];
            match next {
                NextState::Status => {
                    assert_eq!(done(parse_status_request(rest).unwrap()), (StatusRequest::Status, 2), "{what}")
                }
                _ => {
                    let (login, used) = done(parse_login_start(rest, protocol).unwrap());
                    assert_eq!(login.name, "Steve", "{what}");
                    assert_eq!(used, rest.len(), "{what}");
                    assert_eq!(login.uuid.is_some(), protocol >= LOGIN_UUID_ALWAYS, "{what}");
                }
            }
        }
    }

    #[test]
    fn legacy_pings_are_recognised_and_answered_in_the_clients_format() {
        assert_eq!(classify(&[]), Opening::NeedMore);
        assert_eq!(classify(&[0xFE]), Opening::LegacyUnlessMore(LegacyKind::Pre14));
        assert_eq!(classify(&[0xFE, 0x01]), Opening::LegacyUnlessMore(LegacyKind::V14));
        assert_eq!(classify(&[0xFE, 0x01, 0xFA, 0x00]), Opening::Legacy(LegacyKind::V14));
        // A modern handshake of 254 bytes opens with FE 01, then its packet id.
        let hs = handshake(&"a".repeat(246), NextState::Status).encode();
        assert_eq!(hs[..3], [0xFE, 0x01, 0x00]);
        assert_eq!(classify(&hs), Opening::Modern);
        assert!(matches!(parse_handshake(&hs), Ok(Progress::Done { .. })));
        let s = LegacyStatus {
            protocol: 127,
            version: "1.21.4".into(),
            motd: "Unknown\0 host §x".into(),
            online: 0,
            max: 0,
        };
        let a = legacy_answer(LegacyKind::V14, &s);
        assert_eq!(a[0], 0xFF);
        let units: Vec<u16> = a[3..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        assert_eq!(usize::from(u16::from_be_bytes([a[1], a[2]])), units.len());
        let text = String::from_utf16(&units).unwrap();
        assert_eq!(text, "§1\x00127\x001.21.4\x00Unknown host §x\x000\x000");
        let old = legacy_answer(LegacyKind::Pre14, &s);
        let units: Vec<u16> = old[3..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        assert_eq!(String::from_utf16(&units).unwrap(), "Unknown host x§0§0");
        // A long MOTD is cut; the numbers stay.
        let long = legacy_answer(LegacyKind::V14, &LegacyStatus { motd: "é".repeat(1000), ..s.clone() });
        let units: Vec<u16> = long[3..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        assert!(units.len() <= MAX_LEGACY_UNITS);
        assert!(String::from_utf16(&units).unwrap().ends_with("\x000\x000"));
    }

    #[test]
    fn a_16_legacy_ping_names_its_host() {
        let utf16 = |s: &str| -> Vec<u8> {
            let u: Vec<u16> = s.encode_utf16().collect();
            let mut out = (u.len() as u16).to_be_bytes().to_vec();
            u.iter().for_each(|x| out.extend_from_slice(&x.to_be_bytes()));
            out
        };
        let mut data = vec![74];
        data.extend(utf16("Old.Example."));
        data.extend_from_slice(&25565i32.to_be_bytes());
        let mut ping = vec![0xFE, 0x01, 0xFA];
        ping.extend(utf16("MC|PingHost"));
        ping.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ping.extend(&data);
        assert_eq!(legacy_ping_host(&ping), Some(("old.example".into(), 25565)));
        assert_eq!(legacy_ping_host(&ping[..ping.len() - 1]), None);
        assert_eq!(legacy_ping_host(&[0xFE, 0x01]), None);
    }

    #[test]
    fn status_and_disconnect_text_is_escaped_json() {
        let a = StatusAnswer {
            version: "craftplane".into(),
            protocol: 769,
            online: 0,
            max: 0,
            motd: "No server \"x\\y\" here\n</script>\u{0}".into(),
            favicon: None,
        };
        let bytes = status_response(&a);
        let (f, consumed) = done(read_frame(&bytes, bytes.len()).unwrap());
        assert_eq!((f.id, consumed), (0, bytes.len()));
        let mut r = Fields(f.body);
        let json: serde_json::Value = serde_json::from_str(r.string(usize::MAX, usize::MAX).unwrap()).unwrap();
        assert_eq!(json["description"]["text"], a.motd.as_str());
        assert_eq!(json["version"]["protocol"], 769);
        assert!(json.get("favicon").is_none());
        // A favicon over the limit is dropped, not sent.
        let big = status_response(&StatusAnswer { favicon: Some("x".repeat(40_000)), ..a.clone() });
        let (f, _) = done(read_frame(&big, big.len()).unwrap());
        let s = Fields(f.body).string(usize::MAX, MAX_STRING_CHARS).unwrap().to_string();
        assert!(!s.contains("favicon"));

        let d = login_disconnect("Unknown host \"evil\"\\");
        let (f, _) = done(read_frame(&d, d.len()).unwrap());
        assert_eq!(f.id, 0);
        let json: serde_json::Value =
            serde_json::from_str(Fields(f.body).string(usize::MAX, usize::MAX).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"text": "Unknown host \"evil\"\\"}));
        assert_eq!(
            parse_status_request(&pong(42)),
            Ok(Progress::Done { value: StatusRequest::Ping(42), consumed: 10 })
        );
    }

    fn any_handshake() -> impl Strategy<Value = Handshake> {
        (
            any::<i32>(),
            "[a-zA-Z0-9.\\-]{0,64}(\u{0}FML[23]?\u{0})?",
            any::<u16>(),
            prop_oneof![Just(NextState::Status), Just(NextState::Login), Just(NextState::Transfer)],
        )
            .prop_map(|(protocol, address, port, next)| Handshake { protocol, address, port, next })
    }

    proptest! {
        /// No input makes a parser panic, and no parser asks for more bytes
        /// than its limit.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_varint(&bytes);
            let _ = classify(&bytes);
            let _ = legacy_ping_host(&bytes);
            let _ = parse_status_request(&bytes);
            let _ = parse_login_start(&bytes, 769);
            let _ = parse_login_start(&bytes, 762);
            let _ = parse_login_start(&bytes, 47);
            if let Ok(Progress::NeedMore) = parse_handshake(&bytes) {
                prop_assert!(bytes.len() < MAX_HANDSHAKE_FRAME);
            }
            if let Ok(Progress::Done { consumed, .. }) = parse_handshake(&bytes) {
                prop_assert!(consumed <= bytes.len() && consumed <= MAX_HANDSHAKE_FRAME);
            }
        }

        /// Encode → parse gives the handshake back, with its exact length.
        #[test]
        fn handshakes_round_trip(hs in any_handshake(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut bytes = hs.encode();
            let len = bytes.len();
            bytes.extend(tail);
            prop_assert_eq!(parse_handshake(&bytes), Ok(Progress::Done { value: hs, consumed: len }));
        }

        /// However the bytes arrive, every prefix needs more and the whole
        /// parses the same as in one piece.
        #[test]
        fn any_split_of_a_handshake_parses_the_same(hs in any_handshake(), cut in any::<prop::sample::Index>()) {
            let bytes = hs.encode();
            let at = cut.index(bytes.len());
            prop_assert_eq!(parse_handshake(&bytes[..at]), Ok(Progress::NeedMore));
            prop_assert_eq!(parse_handshake(&bytes), Ok(Progress::Done { value: hs, consumed: bytes.len() }));
        }

        /// Any message gives a frame whose JSON reads back as the message.
        #[test]
        fn disconnect_messages_round_trip(msg in any::<String>()) {
            let d = login_disconnect(&msg);
            let (f, used) = done(read_frame(&d, d.len()).unwrap());
            prop_assert_eq!(used, d.len());
            let json: serde_json::Value = serde_json::from_str(Fields(f.body).string(usize::MAX, usize::MAX).unwrap()).unwrap();
            let want: String = msg.chars().take(MAX_MESSAGE_CHARS).collect();
            prop_assert_eq!(json["text"].as_str(), Some(want.as_str()));
        }

        /// Any status answer fits the protocol's string limit and reads back.
        #[test]
        fn status_answers_always_fit(version in prop_oneof![any::<String>(), Just("v".repeat(40_000))], motd in ".{0,3000}", icon in proptest::option::of(0usize..40_000)) {
            let a = StatusAnswer { version, protocol: 769, online: 1, max: 20, motd, favicon: icon.map(|n| "A".repeat(n)) };
            let bytes = status_response(&a);
            let (f, used) = done(read_frame(&bytes, usize::MAX).unwrap());
            prop_assert_eq!(used, bytes.len());
            let text = Fields(f.body).string(usize::MAX, usize::MAX).unwrap();
            prop_assert!(text.encode_utf16().count() <= MAX_STRING_CHARS);
            let json: serde_json::Value = serde_json::from_str(text).unwrap();
            let want: String = a.motd.chars().take(MAX_MESSAGE_CHARS).collect();
            prop_assert_eq!(json["description"]["text"].as_str(), Some(want.as_str()));
        }

        /// Legacy answers always carry a length that matches their text.
        #[test]
        fn legacy_answers_are_well_formed(motd in any::<String>(), version in ".{0,300}", old in any::<bool>()) {
            let kind = if old { LegacyKind::Pre14 } else { LegacyKind::V14 };
            let a = legacy_answer(kind, &LegacyStatus { protocol: 127, version, motd, online: 1, max: 20 });
            prop_assert_eq!(a[0], 0xFF);
            let n = usize::from(u16::from_be_bytes([a[1], a[2]]));
            prop_assert_eq!(a.len(), 3 + 2 * n);
            prop_assert!(n <= MAX_LEGACY_UNITS);
            let units: Vec<u16> = a[3..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            let text = String::from_utf16(&units).unwrap();
            prop_assert!(text.ends_with("1\x0020") || text.ends_with("1§20"), "{:?}", text);
        }
    }
}
