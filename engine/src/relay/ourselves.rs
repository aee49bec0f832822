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
            // 0.0.0.0 takes IPv4 only; `[::]` both (Linux's dual-stack
            // default, which the listeners keep).
            let covers = bound.is_unspecified()
                && (bound.is_ipv6() || ip.is_ipv4())
                && (ip.is_loopback()
                    || ip.is_unspecified()
                    || self.addresses.iter().any(|a| unmapped(*a) == ip));
            listener.port() == target.port() && (bound == ip || covers)
        })
    }

    /// Drop the targets that are us, and every one whose preference is
    /// not better than ours (RFC 5321 §5.1: they would send the mail back
    /// to us too), whatever order equal preferences were shuffled into.
    /// True when one was us.
    pub fn prune<T>(
        &self,
        targets: &mut Vec<T>,
        addr: impl Fn(&T) -> SocketAddr,
        preference: impl Fn(&T) -> u16,
    ) -> bool {
        let ours = targets
            .iter()
            .filter(|t| self.is_us(addr(t)))
            .map(&preference)
            .min();
        match ours {
            Some(ours) => {
                targets.retain(|t| preference(t) < ours);
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
        // This host's interfaces, whatever they are, are ours (IPv4 ones
        // on an IPv4 listener; IPv6 ones too on `[::]`).
        let dual = Ourselves::new(vec![addr("[::]:25")], []);
        for ip in interface_addresses() {
            assert_eq!(us.is_us(SocketAddr::new(ip, 25)), ip.is_ipv4(), "{ip}");
            assert!(dual.is_us(SocketAddr::new(ip, 25)), "{ip}");
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
    fn targets_as_preferred_as_us_or_less_are_dropped() {
        let us = Ourselves::new(vec![addr("0.0.0.0:25")], []);
        let prune = |targets: &mut Vec<(u16, SocketAddr)>| us.prune(targets, |t| t.1, |t| t.0);
        let mut targets = vec![
            (5, addr("192.0.2.1:25")),
            (10, addr("192.0.2.3:25")),
            (10, addr("127.0.0.1:25")),
            (20, addr("192.0.2.2:25")),
        ];
        assert!(prune(&mut targets));
        assert_eq!(
            targets,
            [(5, addr("192.0.2.1:25"))],
            "only the better one stays"
        );
        let mut only_us = vec![(10, addr("127.0.0.1:25"))];
        assert!(prune(&mut only_us));
        assert!(only_us.is_empty());
        let mut others = vec![(10, addr("192.0.2.1:25"))];
        assert!(!prune(&mut others));
        assert_eq!(others.len(), 1);
    }

    #[test]
    fn an_ipv4_listener_is_not_reached_over_ipv6() {
        let v4 = Ourselves::new(vec![addr("0.0.0.0:25")], []);
        assert!(!v4.is_us(addr("[::1]:25")));
        let both = Ourselves::new(vec![addr("[::]:25")], []);
        assert!(both.is_us(addr("[::1]:25")));
        assert!(both.is_us(addr("127.0.0.1:25")));
    }
}
