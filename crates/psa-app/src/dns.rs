//! DNS lookups the platform makes for tenants (a domain's TXT records, to verify it is theirs):
//! through the system's resolver, or the one `PSA_DNS_RESOLVER` names (`IP:PORT`; tests run a
//! DNS server on loopback).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use psa_models::{Error, Result};

/// Where lookups go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns {
    /// `None`: the system's resolver (`/etc/resolv.conf`).
    pub server: Option<SocketAddr>,
}

impl Dns {
    /// The TXT records of `domain` (each record's strings joined); none when it has none or
    /// does not exist. A resolver that does not answer is a 503 saying so.
    pub async fn txt(&self, domain: &str) -> Result<Vec<String>> {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        // A record just published must be seen: no answer is kept.
        opts.cache_size = 0;
        let builder = match self.server {
            Some(at) => {
                let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                udp.port = at.port();
                let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                tcp.port = at.port();
                let server = NameServerConfig::new(at.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|e| {
                Error::unavailable(format!("The system's DNS resolver cannot be read: {e}"))
            })?,
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| Error::unavailable(format!("The DNS resolver cannot be set up: {e}")))?;
        let name = format!("{}.", domain.trim_end_matches('.'));
        match resolver.txt_lookup(name).await {
            Ok(found) => Ok(found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(Error::unavailable(format!(
                "The DNS lookup of {domain} failed: {e}"
            ))),
        }
    }
}
