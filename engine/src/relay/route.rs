//! Where mail for a domain goes: a static route, the smarthost, or the
//! domain's MX hosts, as a list of addresses to try in order.

use super::resolver::{MxLookup, Resolver};
use crate::config::RelayConfig;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A configured `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Parse `host:port` or `[v6]:port`.
pub fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{text:?} is not [address]:port"))?;
            (host, port)
        }
        None => text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port"))?,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{text:?} has no usable host"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?} has no port between 1 and 65535"))?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

/// One address to try, with the host name it came from (for logs and DSNs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// MX or route host name.
    pub host: String,
    /// Address and port to connect to.
    pub addr: SocketAddr,
    /// The host's MX preference (0 for a route, an implicit MX or an
    /// address literal).
    pub preference: u16,
}

/// Why a destination has no address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute {
    /// Permanent (bounce) or temporary (retry later).
    pub permanent: bool,
    /// Enhanced status code for the DSN and the log.
    pub status: &'static str,
    /// What went wrong, in words.
    pub text: String,
}

/// Chooses the targets of a destination domain.
pub struct Router {
    routes: HashMap<String, HostPort>,
    smarthost: Option<HostPort>,
    mx_port: u16,
}

impl Router {
    /// A router for `config` (already validated).
    pub fn new(config: &RelayConfig) -> Router {
        let parse = |text: &str| parse_host_port(text).expect("validated with the config");
        Router {
            routes: config
                .routes
                .iter()
                .map(|(domain, target)| (super::resolver::ascii_domain(domain), parse(target)))
                .collect(),
            smarthost: config.smarthost.as_deref().map(parse),
            mx_port: config.mx_port,
        }
    }

    /// Whether `domain`'s mail goes to a configured host (a route or the
    /// smarthost) rather than to its MX hosts.
    pub fn routes_statically(&self, domain: &str) -> bool {
        self.routes.contains_key(domain) || self.smarthost.is_some()
    }

    /// Addresses to try for `domain`, best first.
    pub async fn targets(&self, resolver: &Resolver, domain: &str) -> Result<Vec<Target>, NoRoute> {
        if let Some(route) = self.routes.get(domain).or(self.smarthost.as_ref()) {
            return resolve_static(route).await;
        }
        match resolver.mx(domain).await {
            MxLookup::Hosts(hosts) => {
                let targets: Vec<Target> = hosts
                    .into_iter()
                    .flat_map(|host| {
                        let port = self.mx_port;
                        host.addrs.into_iter().map(move |ip| Target {
                            host: host.name.clone(),
                            addr: SocketAddr::new(ip, port),
                            preference: host.preference,
                        })
                    })
                    .collect();
                if targets.is_empty() {
                    Err(NoRoute {
                        permanent: false,
                        status: "4.4.3",
                        text: format!("no address for any mail host of {domain}"),
                    })
                } else {
                    Ok(targets)
                }
            }
            other => {
                let status = other.status().unwrap_or("4.4.3");
                let text = match &other {
                    MxLookup::NullMx => format!("{domain} does not accept mail (null MX)"),
                    MxLookup::NoSuchDomain => format!("{domain}: no such domain"),
                    MxLookup::NoAddress(why) | MxLookup::TempFail(why) => {
                        format!("{domain}: {why}")
                    }
                    MxLookup::Hosts(_) => unreachable!("handled above"),
                };
                Err(NoRoute {
                    permanent: status.starts_with('5'),
                    status,
                    text,
                })
            }
        }
    }
}

/// A static route's addresses: the literal IP, or the host's addresses from
/// the system resolver (off the shard thread: `getaddrinfo` blocks).
async fn resolve_static(route: &HostPort) -> Result<Vec<Target>, NoRoute> {
    if let Ok(ip) = route.host.parse::<IpAddr>() {
        return Ok(vec![Target {
            host: route.host.clone(),
            addr: SocketAddr::new(ip, route.port),
            preference: 0,
        }]);
    }
    let (host, port) = (route.host.clone(), route.port);
    let lookup = glommio::executor()
        .spawn_blocking(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter))
        .await;
    match lookup {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs
            .into_iter()
            .map(|addr| Target {
                host: route.host.clone(),
                addr,
                preference: 0,
            })
            .collect()),
        Ok(_) | Err(_) => Err(NoRoute {
            permanent: false,
            status: "4.4.3",
            text: format!("cannot resolve route host {}", route.host),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("127.0.0.1:2526").unwrap(),
            HostPort {
                host: "127.0.0.1".into(),
                port: 2526
            }
        );
        assert_eq!(parse_host_port("[::1]:25").unwrap().host, "::1");
        assert_eq!(parse_host_port("mx.example:25").unwrap().host, "mx.example");
        for bad in ["nowhere", ":25", "a:0", "a:70000", "[::1]25", "a b:25"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }
}
