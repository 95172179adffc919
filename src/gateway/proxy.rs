//! PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer in front of the gateway sends first so the gateway learns the
//! player's address, and the version 2 header the gateway can send to a
//! server configured for it. No I/O.
//!
//! A header is believed only from a peer in the admin's trusted CIDR list
//! ([`trusted`]); from anyone else the same bytes are just the start of a
//! malformed handshake (a Minecraft handshake never begins with `PR` nor
//! with the version 2 signature), so no player can claim another address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::protocol::Progress;

/// Longest version 1 header, CRLF included (the specification's limit).
pub const MAX_V1_LEN: usize = 107;
/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 2 address block accepted (addresses and TLVs). An IPv6
/// address pair is 36 bytes; cloud load balancers add TLVs of tens of bytes
/// (AWS: the VPC endpoint id). The specification allows 65,535; a header
/// longer than this is refused rather than buffered.
pub const MAX_V2_BODY: usize = 2048;

/// A block of addresses, e.g. `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    /// `address/prefix`, or a bare address (one host). Host bits set after
    /// the prefix are refused: `10.0.0.1/8` is a typo, not a block.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: prefix length must be 0 to {max}")),
            },
        };
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            return Err(format!("{s:?} has bits set after its prefix; the block is {}/{prefix}", c.network()));
        }
        Ok(c)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address, as a
    /// dual-stack socket reports IPv4 peers, counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Whether a PROXY header from `peer` is believed: `peer` is in one of the
/// admin's trusted blocks. An empty list trusts no one (the default).
pub fn trusted(peer: IpAddr, cidrs: &[Cidr]) -> bool {
    cidrs.iter().any(|c| c.contains(peer))
}

/// What a PROXY header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and port; `None` for a health check or other
    /// connection of the proxy itself (v1 `UNKNOWN`, v2 `LOCAL`, or an
    /// address family other than TCP over IPv4/IPv6): use the peer's.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// Why a PROXY header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("PROXY v1 header without CRLF within {MAX_V1_LEN} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    V1(String),
    #[error("PROXY v2 header with version {0} (only 2 exists)")]
    V2Version(u8),
    #[error("PROXY v2 header with unknown command {0}")]
    V2Command(u8),
    #[error("PROXY v2 address block of {0} bytes is over the limit of {MAX_V2_BODY}")]
    V2TooLong(usize),
    #[error("PROXY v2 address block of {len} bytes is too short for its family (needs {need})")]
    V2Short { len: usize, need: usize },
}

/// Reads a PROXY header at the start of `buf`, version 1 or 2. `Done` with
/// `None` and 0 bytes consumed when the connection does not start with one
/// (the caller goes on to the handshake); `NeedMore` while the first bytes
/// could still be either.
pub fn parse(buf: &[u8]) -> Result<Progress<Option<ProxyHeader>>, ProxyError> {
    const V1: &[u8] = b"PROXY ";
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if n < V2_SIGNATURE.len() {
            return Ok(Progress::NeedMore);
        }
        return parse_v2(buf).map(wrap);
    }
    let n = buf.len().min(V1.len());
    if buf[..n] == V1[..n] {
        if n < V1.len() {
            return Ok(Progress::NeedMore);
        }
        return parse_v1(buf).map(wrap);
    }
    Ok(Progress::Done { value: None, consumed: 0 })
}

fn wrap(p: Progress<ProxyHeader>) -> Progress<Option<ProxyHeader>> {
    match p {
        Progress::NeedMore => Progress::NeedMore,
        Progress::Done { value, consumed } => Progress::Done { value: Some(value), consumed },
    }
}

fn parse_v1(buf: &[u8]) -> Result<Progress<ProxyHeader>, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_V1_LEN { Err(ProxyError::V1TooLong) } else { Ok(Progress::NeedMore) };
    };
    let bad = |m: &str| ProxyError::V1(m.to_string());
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| bad("not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let consumed = end + 2;
    let value = match parts.next() {
        Some("UNKNOWN") => ProxyHeader { source: None, destination: None },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else { return Err(bad("needs 4 fields after the protocol")) };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s.parse().map_err(|_| bad("bad address"))?;
                if ip.is_ipv4() != (proto == "TCP4") {
                    return Err(bad("address family does not match the protocol"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                if s.is_empty()
                    || s.len() > 5
                    || !s.bytes().all(|b| b.is_ascii_digit())
                    || (s.len() > 1 && s.starts_with('0'))
                {
                    return Err(bad("bad port"));
                }
                s.parse().map_err(|_| bad("bad port"))
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(bad("protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Progress::Done { value, consumed })
}

fn parse_v2(buf: &[u8]) -> Result<Progress<ProxyHeader>, ProxyError> {
    let Some(fixed) = buf.get(..16) else { return Ok(Progress::NeedMore) };
    let (ver, cmd) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if ver != 2 {
        return Err(ProxyError::V2Version(ver));
    }
    let (family, transport) = (fixed[13] >> 4, fixed[13] & 0x0f);
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_V2_BODY {
        return Err(ProxyError::V2TooLong(len));
    }
    let Some(body) = buf.get(16..16 + len) else { return Ok(Progress::NeedMore) };
    let consumed = 16 + len;
    let unknown = ProxyHeader { source: None, destination: None };
    let value = match cmd {
        // LOCAL: the proxy's own connection (a health check).
        0x0 => unknown,
        0x1 => match (family, transport) {
            (0x1, 0x1) => {
                let b = body.get(..12).ok_or(ProxyError::V2Short { len, need: 12 })?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]));
                let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(8))),
                    destination: Some(SocketAddr::new(ip(4), port(10))),
                }
            }
            (0x2, 0x1) => {
                let b = body.get(..36).ok_or(ProxyError::V2Short { len, need: 36 })?;
                let ip = |o: usize| {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&b[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(a))
                };
                let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(32))),
                    destination: Some(SocketAddr::new(ip(16), port(34))),
                }
            }
            // UNSPEC, UNIX or datagram: the specification says to use the
            // connection's own addresses.
            _ => unknown,
        },
        other => return Err(ProxyError::V2Command(other)),
    };
    Ok(Progress::Done { value, consumed })
}

/// The version 2 header (command PROXY, TCP) the gateway sends a server
/// before the client's bytes, for servers configured to read it. IPv4 when
/// both addresses are IPv4, otherwise both as IPv6 (IPv4-mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (source.ip().to_canonical(), destination.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// The client's address for a connection from `peer` that starts with
/// `buf`: the PROXY header's source when `peer` is trusted and sent one
/// (then `consumed` bytes are the header, not forwarded), else `peer`.
/// From a trusted peer the header is optional: a load balancer's health
/// check or an in-cluster client in a trusted block may connect without.
pub fn client_address(peer: SocketAddr, cidrs: &[Cidr], buf: &[u8]) -> Result<Progress<SocketAddr>, ProxyError> {
    if !trusted(peer.ip(), cidrs) {
        return Ok(Progress::Done { value: peer, consumed: 0 });
    }
    Ok(match parse(buf)? {
        Progress::NeedMore => Progress::NeedMore,
        Progress::Done { value, consumed } => {
            Progress::Done { value: value.and_then(|h| h.source).unwrap_or(peer), consumed }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_strictly_and_match_their_addresses() {
        let c = cidrs(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "0.0.0.0/0"]);
        assert!(c[0].contains("10.255.0.1".parse().unwrap()));
        assert!(!c[0].contains("11.0.0.1".parse().unwrap()));
        // A dual-stack socket's IPv4-mapped peer counts as IPv4.
        assert!(c[0].contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(c[1].contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!c[1].contains("2001:db9::1".parse().unwrap()));
        assert!(c[2].contains("192.0.2.7".parse().unwrap()));
        assert!(!c[2].contains("192.0.2.8".parse().unwrap()));
        assert!(c[3].contains("203.0.113.1".parse().unwrap()));
        assert!(!c[3].contains("::1".parse().unwrap()), "IPv4 /0 is not IPv6");
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "example.com", "", "::/129"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert!("10.0.0.1/8".parse::<Cidr>().unwrap_err().contains("10.0.0.0/8"));
        assert_eq!(c[1].to_string(), "2001:db8::/32");
    }

    #[test]
    fn only_trusted_peers_set_the_client_address() {
        let trusted_lb = cidrs(&["10.0.0.0/8"]);
        let header = b"PROXY TCP4 203.0.113.9 10.0.0.5 51000 25565\r\n\x10\x00";
        // From the load balancer: the header's source, and its length.
        assert_eq!(
            client_address(sa("10.1.1.1:4000"), &trusted_lb, header),
            Ok(Progress::Done { value: sa("203.0.113.9:51000"), consumed: header.len() - 2 })
        );
        // From anyone else: the peer itself, nothing consumed (the header
        // then fails the handshake parse).
        assert_eq!(
            client_address(sa("198.51.100.1:4000"), &trusted_lb, header),
            Ok(Progress::Done { value: sa("198.51.100.1:4000"), consumed: 0 })
        );
        assert_eq!(
            client_address(sa("10.1.1.1:4000"), &[], header),
            Ok(Progress::Done { value: sa("10.1.1.1:4000"), consumed: 0 })
        );
        // A trusted peer without a header (a health check): itself.
        assert_eq!(
            client_address(sa("10.1.1.1:4000"), &trusted_lb, &[0x10, 0x00]),
            Ok(Progress::Done { value: sa("10.1.1.1:4000"), consumed: 0 })
        );
        assert_eq!(client_address(sa("10.1.1.1:4000"), &trusted_lb, b"PRO"), Ok(Progress::NeedMore));
    }

    #[test]
    fn v1_headers_parse_and_bad_ones_are_refused() {
        let ok = |s: &[u8]| match parse(s) {
            Ok(Progress::Done { value: Some(h), consumed }) => (h, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(s)),
        };
        let (h, n) = ok(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\nrest");
        assert_eq!((h.source, n), (Some(sa("[2001:db8::1]:1")), 44));
        assert_eq!(ok(b"PROXY UNKNOWN\r\n").0.source, None);
        assert_eq!(ok(b"PROXY UNKNOWN ffff:: 1.2.3.4 1 2\r\n").0.source, None);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(matches!(parse(bad), Err(ProxyError::V1(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Progress::NeedMore));
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
        assert_eq!(parse(&long[..MAX_V1_LEN - 1]), Ok(Progress::NeedMore));
    }

    #[test]
    fn v2_headers_parse_skip_tlvs_and_bad_ones_are_refused() {
        let mut h = encode_v2(sa("203.0.113.9:51000"), sa("10.0.0.5:25565"));
        assert_eq!(h.len(), 28);
        // A TLV (type 0xEA, AWS's) after the addresses is skipped.
        h[15] += 7;
        h.extend_from_slice(&[0xEA, 0x00, 0x04, b'v', b'p', b'c', b'e']);
        h.extend_from_slice(b"next");
        assert_eq!(
            parse(&h),
            Ok(Progress::Done {
                value: Some(ProxyHeader {
                    source: Some(sa("203.0.113.9:51000")),
                    destination: Some(sa("10.0.0.5:25565"))
                }),
                consumed: 35
            })
        );
        for cut in 0..35 {
            assert_eq!(parse(&h[..cut]), Ok(Progress::NeedMore), "cut at {cut}");
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse(&local),
            Ok(Progress::Done { value: Some(ProxyHeader { source: None, destination: None }), consumed: 16 })
        );
        let with = |b12: u8, b13: u8, len: u16| {
            let mut v = V2_SIGNATURE.to_vec();
            v.extend_from_slice(&[b12, b13]);
            v.extend_from_slice(&len.to_be_bytes());
            v.extend(std::iter::repeat_n(0u8, usize::from(len).min(64)));
            v
        };
        assert_eq!(parse(&with(0x11, 0x11, 12)), Err(ProxyError::V2Version(1)));
        assert_eq!(parse(&with(0x22, 0x11, 12)), Err(ProxyError::V2Command(2)));
        assert_eq!(parse(&with(0x21, 0x11, 8)), Err(ProxyError::V2Short { len: 8, need: 12 }));
        assert_eq!(parse(&with(0x21, 0x21, 12)), Err(ProxyError::V2Short { len: 12, need: 36 }));
        assert_eq!(parse(&with(0x21, 0x11, 4096)), Err(ProxyError::V2TooLong(4096)));
        // UNIX sockets: use the connection's own addresses.
        let unix = with(0x21, 0x31, 64);
        assert!(matches!(parse(&unix), Ok(Progress::Done { value: Some(ProxyHeader { source: None, .. }), .. })));
    }

    #[test]
    fn a_handshake_is_not_taken_for_a_proxy_header() {
        let hs = super::super::protocol::Handshake {
            protocol: 769,
            address: "a".repeat(73),
            port: 25565,
            next: super::super::protocol::NextState::Status,
        }
        .encode();
        assert_eq!(hs[0], b'P', "a handshake of 80 bytes starts like PROXY");
        assert_eq!(parse(&hs), Ok(Progress::Done { value: None, consumed: 0 }));
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::from(a), p)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::from(a), p)),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), v2 in any::<bool>()) {
            let buf = if v2 { [&V2_SIGNATURE[..], &bytes].concat() } else { [&b"PROXY "[..], &bytes].concat() };
            for b in [&bytes[..], &buf[..]] {
                if let Ok(Progress::Done { consumed, .. }) = parse(b) {
                    prop_assert!(consumed <= b.len());
                }
                if let Ok(Progress::NeedMore) = parse(b) {
                    prop_assert!(b.len() < 16 + MAX_V2_BODY);
                }
            }
        }

        /// encode_v2 → parse gives the addresses back (IPv4-mapped ones as
        /// IPv4 when both sides are IPv4).
        #[test]
        fn v2_round_trips(src in any_addr(), dst in any_addr()) {
            let h = encode_v2(src, dst);
            let Ok(Progress::Done { value: Some(got), consumed }) = parse(&h) else { panic!("not parsed") };
            prop_assert_eq!(consumed, h.len());
            let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            let (gs, gd) = (got.source.unwrap(), got.destination.unwrap());
            prop_assert_eq!((canon(gs), canon(gd)), (canon(src), canon(dst)));
        }

        /// A v1 header written from any address pair parses back.
        #[test]
        fn v1_round_trips(src in any_addr(), dst in any_addr()) {
            prop_assume!(src.is_ipv4() == dst.is_ipv4());
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!("PROXY {proto} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port());
            prop_assert!(line.len() <= MAX_V1_LEN);
            prop_assert_eq!(
                parse(line.as_bytes()),
                Ok(Progress::Done { value: Some(ProxyHeader { source: Some(src), destination: Some(dst) }), consumed: line.len() })
            );
        }
    }
}
