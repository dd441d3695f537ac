//! The PROXY protocol (HAProxy's, versions 1 and 2) on the listener.
//!
//! Behind a TCP load balancer (nginx's `stream` module) every connection comes from the
//! balancer's address, so every limit keyed on the source address (password attempts,
//! connections per address) would be one limit shared by every client. With
//! `--proxy-protocol` the balancer starts each connection with a header naming the real
//! client, and the server keys its limits on that.
//!
//! A header is believed only from the addresses in `--proxy-protocol-from`: anyone else
//! could name any address in one. A connection from a trusted address MUST start with a
//! header (a balancer that forgot to send one would otherwise make every client look
//! like the balancer again); from any other address no header is looked for, and one
//! that is sent is just bytes of the protocol (answered as malformed).
//!
//! The header read is bounded: [`MAX_HEADER`] bytes and [`HEADER_TIMEOUT`]. Nothing past
//! the header is lost: bytes read with it are handed on to the session. Parsing is the
//! `ppp` crate's.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest header read: a version 1 header is at most 107 bytes; a version 2 one is
/// 16 bytes and its addresses (at most 216, for Unix sockets) and TLVs. Balancers send
/// few TLVs; a longer header is refused rather than buffered.
pub const MAX_HEADER: usize = 536;

/// How long a trusted peer may take to send the whole header (a balancer sends it at
/// once, with the connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address is a network of
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-bit address.
fn masked(addr: u128, prefix: u8, bits: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        addr >> (bits - prefix.min(bits))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack socket reports) as
/// the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Whom headers are believed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTrust {
    pub from: Vec<Cidr>,
}

impl ProxyTrust {
    /// Whether a connection from `peer` must start with a header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.from.iter().any(|net| net.contains(peer))
    }
}

/// Why no header could be read from a trusted peer (the connection is then closed).
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("connection closed before the PROXY protocol header ended")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a header says: the client's address (`None` when the header says nothing of it:
/// `UNKNOWN`, `LOCAL` health checks, Unix sockets; the connection's own address then
/// counts), and how many bytes it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub source: Option<SocketAddr>,
    pub len: usize,
}

/// Parses a header at the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, HeaderError> {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Err(HeaderError::TooLong)
        } else {
            Ok(None)
        };
    }
    let parsed = match result {
        HeaderResult::V1(Ok(header)) => Parsed {
            len: header.header.len(),
            source: match header.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(header)) => Parsed {
            len: header.len(),
            source: match (header.command, header.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                (v2::Command::Proxy, _) => None,
            },
        },
        HeaderResult::V1(Err(e)) => return Err(HeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => return Err(HeaderError::Invalid(e.to_string())),
    };
    if parsed.len > MAX_HEADER {
        return Err(HeaderError::TooLong);
    }
    Ok(Some(parsed))
}

/// Reads the header a trusted peer starts with. Returns what it says and the bytes read
/// past it (the start of the client's own stream). The caller bounds it in time.
pub async fn read_header<R: AsyncRead + Unpin>(
    read: &mut R,
) -> Result<(Parsed, BytesMut), HeaderError> {
    let mut buf = [0u8; MAX_HEADER];
    let mut len = 0;
    loop {
        let n = read.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        len += n;
        if let Some(parsed) = parse(&buf[..len])? {
            return Ok((parsed, BytesMut::from(&buf[parsed.len..len])));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses() {
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(net("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(net("::1").contains(ip("::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nginx".parse::<Cidr>().is_err());
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn reads_a_version_1_header_and_leaves_what_follows() {
        let input = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 6000\r\n{\"op\":\"ping\"}\n";
        let parsed = parse(input).unwrap().unwrap();
        assert_eq!(parsed.source, Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(&input[parsed.len..], b"{\"op\":\"ping\"}\n");
        let v6 = b"PROXY TCP6 2001:db8::1 ::1 5555 6000\r\n";
        let parsed = parse(v6).unwrap().unwrap();
        assert_eq!(parsed.source, Some("[2001:db8::1]:5555".parse().unwrap()));
        assert_eq!(parsed.len, v6.len());
        let unknown = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(unknown.source, None);
    }

    #[test]
    fn reads_a_version_2_header() {
        // PROXY, TCP over IPv4: 198.51.100.9:4000 -> 127.0.0.1:6000.
        let mut input = v2_header(
            1,
            0x11,
            &[198, 51, 100, 9, 127, 0, 0, 1, 0x0f, 0xa0, 0x17, 0x70],
        );
        let header_len = input.len();
        input.extend_from_slice(b"rest");
        let parsed = parse(&input).unwrap().unwrap();
        assert_eq!(parsed.source, Some("198.51.100.9:4000".parse().unwrap()));
        assert_eq!(parsed.len, header_len);
        // LOCAL (a health check): no address of a client.
        let local = parse(&v2_header(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!(local.source, None);
    }

    #[test]
    fn waits_for_a_partial_header_and_refuses_garbage() {
        assert!(parse(b"PROXY TCP4 203.0.113.7").unwrap().is_none());
        let v2 = v2_header(1, 0x11, &[198, 51, 100, 9, 127, 0, 0, 1, 0, 1, 0, 2]);
        assert!(parse(&v2[..20]).unwrap().is_none());
        assert!(matches!(
            parse(b"{\"op\":\"login\",\"name\":\"alice\"}\n"),
            Err(HeaderError::Invalid(_))
        ));
        // A header announcing more than the limit is refused, not waited for.
        let mut long = v2_header(1, 0x11, &[0; 600]);
        long.truncate(MAX_HEADER);
        assert!(matches!(parse(&long), Err(HeaderError::TooLong)));
        // A version 1 line that never ends is refused at the limit.
        let endless = [b'P'; MAX_HEADER];
        assert!(parse(&endless).is_err());
    }

    #[tokio::test]
    async fn reading_stops_at_the_header() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 6000\r\nhello",
        )
        .await
        .unwrap();
        let (parsed, rest) = read_header(&mut server).await.unwrap();
        assert_eq!(parsed.source.map(|s| s.ip()), Some(ip("203.0.113.7")));
        assert_eq!(&rest[..], b"hello");
        drop(client);
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2")
            .await
            .unwrap();
        drop(client);
        assert!(matches!(
            read_header(&mut server).await,
            Err(HeaderError::Closed)
        ));
    }
}
