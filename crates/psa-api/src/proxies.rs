//! The client's true address behind a load balancer or an ingress (`PSA_TRUSTED_PROXIES`).
//!
//! Only when the TCP peer is one of the trusted proxies is the address taken from the request's
//! headers: `Forwarded` (RFC 7239) when present, else `X-Forwarded-For`, read from the right (the
//! nearest hop) past every trusted proxy to the first address that is not one. From any other
//! peer the headers are ignored: a client cannot name itself someone else to escape a limit.
//! A header a trusted proxy sent that does not parse leaves the peer's address (logged once).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma- or space-separated list of addresses and CIDR networks; empty: none.
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
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|n| n.contains(&address))
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the one its
    /// headers name.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = match forwarded(headers).or_else(|| x_forwarded_for(headers)) {
            None => return peer,
            Some(Ok(hops)) => hops,
            Some(Err(())) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%peer, "a trusted proxy sent a forwarding header that does not parse: the peer's address is used (logged once)");
                }
                return peer;
            }
        };
        // From the nearest hop back: the first that is not a trusted proxy is the client; if
        // every one is, the farthest.
        let client = hops
            .iter()
            .rev()
            .find(|a| !self.trusts(**a))
            .or(hops.first())
            .copied();
        client.map_or(peer, |ip| SocketAddr::new(canonical(ip), peer.port()))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// `X-Forwarded-For: client, proxy1, proxy2` (every such header, in order).
fn x_forwarded_for(headers: &HeaderMap) -> Option<Result<Vec<IpAddr>, ()>> {
    let values: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    if values.is_empty() {
        return None;
    }
    let mut hops = Vec::new();
    for v in values {
        let Ok(v) = v.to_str() else {
            return Some(Err(()));
        };
        for part in v.split(',').map(str::trim) {
            match part.parse::<IpAddr>() {
                Ok(a) => hops.push(a),
                Err(_) => return Some(Err(())),
            }
        }
    }
    Some(Ok(hops))
}

/// `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"` (RFC 7239): the `for`
/// of each element, in order. An obfuscated or unknown `for` does not parse.
fn forwarded(headers: &HeaderMap) -> Option<Result<Vec<IpAddr>, ()>> {
    let values: Vec<_> = headers.get_all("forwarded").iter().collect();
    if values.is_empty() {
        return None;
    }
    let mut hops = Vec::new();
    for v in values {
        let Ok(v) = v.to_str() else {
            return Some(Err(()));
        };
        for element in v.split(',') {
            let Some(node) = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| v.trim().trim_matches('"'))
            }) else {
                continue;
            };
            match node_address(node) {
                Some(a) => hops.push(a),
                None => return Some(Err(())),
            }
        }
    }
    Some(Ok(hops))
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

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.5").unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            trusted.client(peer("10.1.2.3"), &h).ip().to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            trusted.client(peer("192.168.1.5"), &h).ip().to_string(),
            "203.0.113.9"
        );
        // Anyone else's headers are ignored.
        assert_eq!(
            trusted.client(peer("198.51.100.7"), &h).ip().to_string(),
            "198.51.100.7"
        );
        assert_eq!(
            TrustedProxies::default()
                .client(peer("10.1.2.3"), &h)
                .ip()
                .to_string(),
            "10.1.2.3"
        );
    }

    #[test]
    fn the_right_most_address_not_trusted_is_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // A client that sends its own X-Forwarded-For cannot choose its address: the proxy
        // appends the one it saw, and that is the right-most untrusted one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h).ip().to_string(),
            "203.0.113.9"
        );
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h).ip().to_string(),
            "203.0.113.9"
        );
        // Every hop a proxy: the farthest.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h).ip().to_string(),
            "10.9.9.9"
        );
    }

    #[test]
    fn forwarded_is_read_and_preferred() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=https, for=\"[2001:db8::1]:4711\"",
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h).ip().to_string(),
            "2001:db8::1"
        );
        let h = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(
            trusted.client(peer("10.0.0.1"), &h).ip().to_string(),
            "192.0.2.60"
        );
    }

    #[test]
    fn a_malformed_header_leaves_the_peer_and_a_bad_list_is_refused() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        for h in [
            headers(&[("x-forwarded-for", "not-an-address")]),
            headers(&[("forwarded", "for=_hidden")]),
        ] {
            assert_eq!(
                trusted.client(peer("10.0.0.1"), &h).ip().to_string(),
                "10.0.0.1"
            );
        }
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        // IPv4 peers written as IPv6 are matched as IPv4.
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            trusted.client(peer("::ffff:10.0.0.1"), &h).ip().to_string(),
            "203.0.113.9"
        );
    }
}
