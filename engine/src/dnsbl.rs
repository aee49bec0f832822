//! DNS blocklists (DNSBL, RFC 5782) for mail from the internet, as
//! Postfix's `reject_rbl_client` has them: a client whose address is
//! listed in one of `smtp.dnsbl`'s zones has its recipients refused with
//! `554 5.7.1` (postmaster excepted, RFC 5321 §4.5.1). Clients that may
//! relay and logged-in ones are never looked up; a lookup that fails lets
//! the mail through, as a list that does not answer must not stop mail.
//!
//! A zone is `name`, listing any address answered in 127.0.0.0/24 but
//! 127.0.0.0 and 127.0.0.1 (so a list's error codes, such as Spamhaus's
//! 127.255.255.x for refused queries, never block), or `name=addr,addr`
//! for only those answers.

use crate::mail_auth::Dns;
use crate::relay::resolver::RecordKind;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// One list of `smtp.dnsbl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The list's DNS zone.
    pub name: String,
    /// The answers that mean "listed"; empty: 127.0.0.2 to 127.0.0.255.
    pub codes: Vec<Ipv4Addr>,
}

/// Read a `smtp.dnsbl` entry: `zone` or `zone=127.0.0.2,127.0.0.4`.
pub fn parse_zone(entry: &str) -> Result<Zone, String> {
    let (name, codes) = match entry.split_once('=') {
        Some((name, codes)) => (name, Some(codes)),
        None => (entry, None),
    };
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // An IPv6 query adds 64 octets; a name must stay within 253.
    if name.len() > 180 || !name.contains('.') || !name.split('.').all(label) {
        return Err(format!("{entry}: not a DNS zone"));
    }
    let codes = match codes {
        None => Vec::new(),
        Some(codes) => codes
            .split(',')
            .map(|c| c.trim().parse::<Ipv4Addr>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{entry}: the answers after = must be IPv4 addresses"))?,
    };
    Ok(Zone { name, codes })
}

/// The name that says whether `ip` is in `zone`: its octets (or an IPv6
/// address's nibbles) in reverse order, then the zone (RFC 5782 §2.1,
/// §2.4).
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let mut name = String::with_capacity(80);
    match ip {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                let _ = write!(name, "{octet}.");
            }
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return query_name(IpAddr::V4(v4), zone),
            None => {
                for byte in v6.octets().iter().rev() {
                    let _ = write!(name, "{:x}.{:x}.", byte & 0x0f, byte >> 4);
                }
            }
        },
    }
    name.push_str(zone);
    name
}

/// Whether `answers` (A records) say "listed" in `zone`.
pub fn listed(zone: &Zone, answers: &[String]) -> bool {
    answers
        .iter()
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .any(|a| match zone.codes.is_empty() {
            true => {
                let [first, second, third, fourth] = a.octets();
                (first, second, third) == (127, 0, 0) && fourth >= 2
            }
            false => zone.codes.contains(&a),
        })
}

/// What the lists say of `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Listed in this zone (the first in `smtp.dnsbl`'s order that lists
    /// it), with what the list says why (its TXT record), if anything.
    Listed {
        /// The zone.
        zone: String,
        /// The list's TXT record for the address, made safe for a reply.
        reason: Option<String>,
    },
    /// In none of them (or they could not be asked).
    Clear,
}

/// The longest a session waits for the lists, all of them together:
/// longer, and the client is let through (each list counted `error`).
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// Ask every zone at once whether `ip` is listed; the first in order
/// that lists it decides. `looked_up` hears of each answer (zone,
/// `listed`, `clear` or `error`).
pub async fn check(
    dns: &impl Dns,
    ip: IpAddr,
    zones: &[Zone],
    looked_up: impl Fn(&str, &str),
) -> Verdict {
    use crate::relay::resolver::LookupFailure;
    use futures::future::{select, Either};
    let names: Vec<String> = zones.iter().map(|z| query_name(ip, &z.name)).collect();
    let lookups = futures::future::join_all(names.iter().map(|n| dns.records(n, RecordKind::A)));
    let deadline = glommio::timer::sleep(DEADLINE);
    let answers = match select(std::pin::pin!(lookups), std::pin::pin!(deadline)).await {
        Either::Left((answers, _)) => answers,
        Either::Right(_) => {
            zones.iter().for_each(|zone| looked_up(&zone.name, "error"));
            return Verdict::Clear;
        }
    };
    let mut listing = None;
    for (index, (zone, answer)) in zones.iter().zip(answers).enumerate() {
        let result = match answer {
            Ok(answers) if listed(zone, &answers) => "listed",
            Ok(_) | Err(LookupFailure::None) => "clear",
            Err(LookupFailure::Temporary(_)) => "error",
        };
        looked_up(&zone.name, result);
        if result == "listed" && listing.is_none() {
            listing = Some(index);
        }
    }
    let Some(index) = listing else {
        return Verdict::Clear;
    };
    // Lists say why in a TXT record at the same name (often where to ask
    // for removal); it goes into the reply, as Postfix puts it.
    let txt = dns.records(&names[index], RecordKind::Txt);
    let deadline = glommio::timer::sleep(DEADLINE / 4);
    let reason = match select(std::pin::pin!(txt), std::pin::pin!(deadline)).await {
        Either::Left((Ok(texts), _)) => texts.first().map(|t| reply_safe(t)),
        _ => None,
    };
    Verdict::Listed {
        zone: zones[index].name.clone(),
        reason: reason.filter(|r| !r.is_empty()),
    }
}

/// `text` fit for a reply line: printable ASCII and spaces, at most 200
/// octets.
fn reply_safe(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .take(200)
        .collect();
    safe.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::resolver::{LookupFailure, Records};

    #[test]
    fn zones_and_their_answers() {
        let zen = parse_zone("zen.spamhaus.org").unwrap();
        assert!(zen.codes.is_empty());
        let strict = parse_zone("bl.test=127.0.0.2, 127.0.0.4").unwrap();
        assert_eq!(strict.codes.len(), 2);
        for bad in ["nodots", "bad zone.test", "bl.test=notanip", ""] {
            assert!(parse_zone(bad).is_err(), "{bad}");
        }
        let answers = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(listed(&zen, &answers(&["127.0.0.2"])));
        assert!(listed(&zen, &answers(&["127.0.0.11"])));
        // A list's own error codes never block.
        assert!(!listed(&zen, &answers(&["127.255.255.254"])));
        assert!(!listed(&zen, &answers(&["127.0.0.1"])));
        assert!(!listed(&strict, &answers(&["127.0.0.3"])));
        assert!(listed(&strict, &answers(&["127.0.0.3", "127.0.0.4"])));
    }

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "bl.test"),
            "99.2.0.192.bl.test"
        );
        assert_eq!(
            query_name("::ffff:192.0.2.99".parse().unwrap(), "bl.test"),
            "99.2.0.192.bl.test"
        );
        // RFC 5782 §2.4's example.
        assert_eq!(
            query_name(
                "2001:db8:1:2:3:4:567:89ab".parse().unwrap(),
                "ugly.example.com"
            ),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
        );
    }

    struct Table(Vec<(&'static str, RecordKind, Records)>);

    impl Dns for Table {
        async fn records(&self, name: &str, kind: RecordKind) -> Records {
            self.0
                .iter()
                .find(|(n, k, _)| *n == name && *k == kind)
                .map(|(_, _, r)| r.clone())
                .unwrap_or(Err(LookupFailure::None))
        }
    }

    /// `check` run on a glommio executor of its own (it keeps time with
    /// glommio's timers), with its verdict and what it counted.
    fn run_check(dns: Table, ip: &str, zones: Vec<Zone>) -> (Verdict, Vec<String>) {
        let ip: IpAddr = ip.parse().unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let seen = std::cell::RefCell::new(Vec::new());
                let verdict = check(&dns, ip, &zones, |zone, result| {
                    seen.borrow_mut().push(format!("{zone} {result}"))
                })
                .await;
                (verdict, seen.into_inner())
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn table() -> Table {
        Table(vec![
            (
                "1.2.0.192.broken.test",
                RecordKind::A,
                Err(LookupFailure::Temporary("timeout".into())),
            ),
            (
                "1.2.0.192.second.test",
                RecordKind::A,
                Ok(vec!["127.0.0.2".into()]),
            ),
            (
                "1.2.0.192.second.test",
                RecordKind::Txt,
                Ok(vec!["Listed:\r\nsee https://bl.test/1".into()]),
            ),
        ])
    }

    #[test]
    fn the_first_list_in_order_that_names_the_client_decides() {
        let zones: Vec<Zone> = ["broken.test", "first.test", "second.test"]
            .iter()
            .map(|z| parse_zone(z).unwrap())
            .collect();
        let (verdict, seen) = run_check(table(), "192.0.2.1", zones.clone());
        assert_eq!(
            verdict,
            Verdict::Listed {
                zone: "second.test".into(),
                reason: Some("Listed:  see https://bl.test/1".into()),
            }
        );
        assert_eq!(
            seen,
            [
                "broken.test error",
                "first.test clear",
                "second.test listed"
            ]
        );
        let (clear, _) = run_check(table(), "192.0.2.2", zones);
        assert_eq!(clear, Verdict::Clear);
    }
}
