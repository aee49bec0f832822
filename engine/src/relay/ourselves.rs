//! Whether an MX target is this server itself: a domain whose MX names
//! `localhost`, one of our addresses, or us as a backup MX would have its
//! mail sent back to us, again and again. RFC 5321 §5.1: the MX hosts from
//! our own on are dropped, and with none left the mail bounces (5.4.6, as
//! Postfix's "mail for ... loops back to myself").

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The addresses mail reaches this server at.
#[derive(Debug, Default)]
pub struct Ourselves {
    /// The SMTP listeners, as bound (ports the OS chose included).
    listeners: Vec<SocketAddr>,
    /// The host's own addresses (its interfaces, the egress sources): a
    /// listener on the unspecified address answers on each of them.
    addresses: Vec<IpAddr>,
}

impl Ourselves {
    /// The server listening for SMTP on `listeners`, on a host that also
    /// has `extra` addresses (egress sources), besides its interfaces'.
    pub fn new(listeners: Vec<SocketAddr>, extra: impl IntoIterator<Item = IpAddr>) -> Ourselves {
        let mut addresses = interface_addresses();
        addresses.extend(extra);
        Ourselves {
            listeners,
            addresses,
        }
    }

    /// Whether connecting to `target` would reach this server.
    pub fn is_us(&self, target: SocketAddr) -> bool {
        let ip = unmapped(target.ip());
        self.listeners.iter().any(|listener| {
            let bound = unmapped(listener.ip());
            listener.port() == target.port()
                && (bound == ip
                    || bound.is_unspecified()
                        && (ip.is_loopback()
                            || ip.is_unspecified()
                            || self.addresses.iter().any(|a| unmapped(*a) == ip)))
        })
    }

    /// Drop the targets from the first that is us on (they come best
    /// first: the hosts less preferred than us would send the mail back
    /// to us too). True when one was.
    pub fn prune<T>(&self, targets: &mut Vec<T>, addr: impl Fn(&T) -> SocketAddr) -> bool {
        match targets.iter().position(|t| self.is_us(addr(t))) {
            Some(first) => {
                targets.truncate(first);
                true
            }
            None => false,
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every address of the host's interfaces (none if they cannot be read).
fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that freeifaddrs frees.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return found;
    }
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is a live element of the list getifaddrs returned.
        let ifa = unsafe { &*node };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points at a sockaddr whose family
            // says which sockaddr_* it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                found.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        node = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_listener_on_every_address_is_reached_at_each_of_ours() {
        let us = Ourselves::new(vec![addr("0.0.0.0:25")], ["192.0.2.7".parse().unwrap()]);
        assert!(us.is_us(addr("127.0.0.1:25")));
        assert!(us.is_us(addr("127.0.0.53:25")));
        assert!(us.is_us(addr("[::ffff:127.0.0.1]:25")));
        assert!(us.is_us(addr("192.0.2.7:25")), "an egress source's address");
        assert!(!us.is_us(addr("192.0.2.8:25")), "someone else");
        assert!(
            !us.is_us(addr("127.0.0.1:2525")),
            "another port: a content filter"
        );
        // This host's interfaces, whatever they are, are ours.
        for ip in interface_addresses() {
            assert!(us.is_us(SocketAddr::new(ip, 25)), "{ip}");
        }
    }

    #[test]
    fn a_listener_on_one_address_is_reached_there_only() {
        let us = Ourselves::new(vec![addr("127.0.0.1:2525"), addr("[::1]:2525")], []);
        assert!(us.is_us(addr("127.0.0.1:2525")));
        assert!(us.is_us(addr("[::1]:2525")));
        assert!(!us.is_us(addr("127.0.0.2:2525")));
        assert!(!us.is_us(addr("127.0.0.1:25")));
    }

    #[test]
    fn targets_from_ours_on_are_dropped() {
        let us = Ourselves::new(vec![addr("0.0.0.0:25")], []);
        let mut targets = vec![
            addr("192.0.2.1:25"),
            addr("127.0.0.1:25"),
            addr("192.0.2.2:25"),
        ];
        assert!(us.prune(&mut targets, |t| *t));
        assert_eq!(
            targets,
            [addr("192.0.2.1:25")],
            "a primary that is not us stays"
        );
        let mut only_us = vec![addr("127.0.0.1:25")];
        assert!(us.prune(&mut only_us, |t| *t));
        assert!(only_us.is_empty());
        let mut others = vec![addr("192.0.2.1:25")];
        assert!(!us.prune(&mut others, |t| *t));
        assert_eq!(others.len(), 1);
    }
}
