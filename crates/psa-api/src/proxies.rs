//! The client's true address behind a load balancer or an ingress (`PSA_TRUSTED_PROXIES`,
//! `PSA_FORWARDED_HEADER`).
//!
//! Only when the TCP peer is one of the trusted proxies is the address taken from the one
//! forwarding header the proxies are configured to write: `X-Forwarded-For` (the default) or
//! `Forwarded` (RFC 7239). Never "whichever is present": a proxy that appends to one passes the
//! other through as the client wrote it. The header is read from the right (the nearest hop),
//! past every trusted proxy, to the first address that is not one: what is left of it the
//! client may have written, and is not even parsed. From any other peer the headers are
//! ignored: a client cannot name itself someone else to escape a limit. A hop that does not
//! parse before an untrusted one is found leaves the nearest trusted hop (logged once).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Which header the trusted proxies write the client's address in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (ingress-nginx, HAProxy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    pub fn parse(raw: &str) -> Result<ForwardedHeader, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(format!("{other:?} is not x-forwarded-for or forwarded")),
        }
    }
}

/// The proxies whose forwarding header is believed, and that header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// A comma- or space-separated list of addresses and CIDR networks; empty: none. An IPv4
    /// network written as IPv6 (`::ffff:10.0.0.0/104`) is the IPv4 network it is.
    pub fn parse(raw: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for part in raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            let net = part
                .parse::<IpNet>()
                .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{part:?} is not an address or a CIDR network"))?;
            nets.push(canonical_net(net)?);
        }
        Ok(TrustedProxies {
            nets,
            header: ForwardedHeader::default(),
        })
    }

    /// The header the proxies write.
    pub fn with_header(mut self, header: ForwardedHeader) -> TrustedProxies {
        self.header = header;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.nets.iter().any(|n| n.contains(&address))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the one its
    /// header names.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
            ForwardedHeader::Forwarded => forwarded(headers),
        };
        // From the nearest hop back; `nearest` is the last trusted one seen (at first the
        // peer itself), which stands for the client when the hops say nothing usable.
        let mut nearest = canonical(peer.ip());
        for hop in hops.iter().rev() {
            match hop {
                Some(address) if self.trusts(*address) => nearest = canonical(*address),
                Some(address) => return SocketAddr::new(canonical(*address), peer.port()),
                None => {
                    static LOGGED: AtomicBool = AtomicBool::new(false);
                    if !LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%peer, "a trusted proxy sent a forwarding header with a hop that does not parse: the nearest trusted hop's address is used (logged once)");
                    }
                    break;
                }
            }
        }
        SocketAddr::new(nearest, peer.port())
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// An IPv4 network written as IPv6 as the IPv4 network it is (peers are compared as IPv4).
fn canonical_net(net: IpNet) -> Result<IpNet, String> {
    match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .map_err(|e| e.to_string()),
            _ => Ok(net),
        },
        v4 => Ok(v4),
    }
}

/// The hops of `X-Forwarded-For` (every such header, in order); `None` for one that does not
/// parse.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(v) => v
                .split(',')
                .map(|part| part.trim().parse::<IpAddr>().ok())
                .collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The hops of `Forwarded` (RFC 7239): each element's `for`; `None` for an element without one,
/// or one that is obfuscated, `unknown` or does not parse.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(v) => v
                .split(',')
                .map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| node_address(v.trim().trim_matches('"')))
                            .flatten()
                    })
                })
                .collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// A node of `Forwarded`: `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.parse()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5000)
    }

    fn client(t: &TrustedProxies, from: &str, h: &HeaderMap) -> String {
        t.client(peer(from), h).ip().to_string()
    }

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.5").unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client(&trusted, "10.1.2.3", &h), "203.0.113.9");
        assert_eq!(client(&trusted, "192.168.1.5", &h), "203.0.113.9");
        // Anyone else's headers are ignored.
        assert_eq!(client(&trusted, "198.51.100.7", &h), "198.51.100.7");
        assert_eq!(
            client(&TrustedProxies::default(), "10.1.2.3", &h),
            "10.1.2.3"
        );
    }

    #[test]
    fn the_right_most_address_not_trusted_is_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // A client that sends its own X-Forwarded-For cannot choose its address: the proxy
        // appends the one it saw, and that is the right-most untrusted one. What the client
        // wrote is not even read, so junk there changes nothing.
        for sent in ["1.1.1.1", "junk", "unknown, 1.1.1.1"] {
            let h = headers(&[("x-forwarded-for", &format!("{sent}, 203.0.113.9, 10.0.0.2"))]);
            assert_eq!(client(&trusted, "10.0.0.1", &h), "203.0.113.9", "{sent}");
        }
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(client(&trusted, "10.0.0.1", &h), "203.0.113.9");
        // Every hop a proxy: the farthest.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(client(&trusted, "10.0.0.1", &h), "10.9.9.9");
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let xff = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let rfc = xff.clone().with_header(ForwardedHeader::Forwarded);
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=https, for=\"[2001:db8::1]:4711\"",
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        // A proxy that appends X-Forwarded-For passes a client's Forwarded through untouched:
        // it is not believed.
        assert_eq!(client(&xff, "10.0.0.1", &h), "198.51.100.1");
        assert_eq!(client(&rfc, "10.0.0.1", &h), "2001:db8::1");
        let h = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(client(&rfc, "10.0.0.1", &h), "192.0.2.60");
        // An element without `for` is a hop that says nothing: the client's element left of it
        // is not believed.
        let h = headers(&[("forwarded", "for=198.51.100.99, proto=https;by=10.0.0.5")]);
        assert_eq!(client(&rfc, "10.0.0.1", &h), "10.0.0.1");
        assert_eq!(
            ForwardedHeader::parse("Forwarded"),
            Ok(ForwardedHeader::Forwarded)
        );
        assert!(ForwardedHeader::parse("x-real-ip").is_err());
    }

    #[test]
    fn a_hop_that_does_not_parse_leaves_the_nearest_trusted_one() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(client(&trusted, "10.0.0.1", &h), "10.0.0.1");
        let h = headers(&[("x-forwarded-for", "203.0.113.9, bad, 10.0.0.7")]);
        assert_eq!(client(&trusted, "10.0.0.1", &h), "10.0.0.7");
        let rfc = trusted.clone().with_header(ForwardedHeader::Forwarded);
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client(&rfc, "10.0.0.1", &h), "10.0.0.1");
    }

    #[test]
    fn lists_are_checked_and_ipv4_is_ipv4_however_written() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        // A peer written as IPv6, a list entry written as IPv6: both IPv4.
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(client(&trusted, "::ffff:10.0.0.1", &h), "203.0.113.9");
        let mapped = TrustedProxies::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(client(&mapped, "10.0.0.1", &h), "203.0.113.9");
    }
}
