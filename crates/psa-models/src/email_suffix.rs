//! The email suffix of a company: the host of its website, used to recognise its people's email
//! addresses. Stored with self-registration disabled: the reference dropped self-registration by
//! domain as an attack surface, and we never enable it implicitly.

use url::Host;

use crate::validate::parse_http_url;

/// The suffix for a website: its host, lower-case, punycoded, without one leading `www.`.
/// `None` for what is not a registrable domain: unparsable input, IP addresses, single-label hosts
/// (`localhost`) and bare public suffixes (`co.uk`), which would match half the internet.
pub fn extract(website: &str) -> Option<String> {
    let url = parse_http_url(website.trim())?;
    let host = match url.host()? {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(_) | Host::Ipv6(_) => return None,
    };
    let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
    if host.is_empty() || !host.contains('.') {
        return None;
    }
    // A numeric-looking host that url did not read as IPv4 is still no domain.
    if host
        .split('.')
        .all(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    // Only the ICANN section counts: the private section lists hosting platforms' domains
    // (`x0.com`, `github.io`) whose owners are real companies.
    let suffix = psl::suffix(host.as_bytes())?;
    if suffix.as_bytes() == host.as_bytes() && suffix.typ() != Some(psl::Type::Private) {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::extract;

    #[test]
    fn cases() {
        let cases: &[(&str, Option<&str>)] = &[
            ("https://www.example.com", Some("example.com")),
            ("example.com", Some("example.com")),
            ("HTTP://WWW.Example.COM/path?q=1#x", Some("example.com")),
            (
                "https://shop.example.co.uk:8443/a/b",
                Some("shop.example.co.uk"),
            ),
            ("https://www.www.example.com", Some("www.example.com")),
            ("https://bücher.de", Some("xn--bcher-kva.de")),
            ("https://user:pw@example.org", Some("example.org")),
            ("https://example.com.", Some("example.com")),
            ("https://192.168.1.1", None),
            ("http://[::1]:8080", None),
            ("https://10.0.0.1:443/x", None),
            ("https://localhost", None),
            ("https://co.uk", None),
            ("https://www.co.uk", None),
            ("com", None),
            ("", None),
            ("   ", None),
            ("not a url", None),
            ("ftp://example.com", None),
            ("javascript:alert(1)", None),
            ("https://", None),
            ("http://:80", None),
        ];
        for (input, want) in cases {
            assert_eq!(extract(input).as_deref(), *want, "input {input:?}");
        }
    }
}
