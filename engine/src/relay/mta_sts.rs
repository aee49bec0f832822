//! MTA-STS (RFC 8461): a destination domain that publishes a policy says
//! which MX hosts are its own and that mail to them must go over TLS with a
//! certificate valid for the host. Discovery is a TXT record at
//! `_mta-sts.DOMAIN` (`v=STSv1; id=...`); the policy itself comes over
//! HTTPS from `mta-sts.DOMAIN/.well-known/mta-sts.txt` and is cached for
//! its `max_age`, fetched again when the record's id changes. The DNS
//! thread does both ([`super::resolver`]); this module parses and matches.

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only the listed MX hosts, only over verified TLS.
    Enforce,
    /// Report what would fail, deliver as usual.
    Testing,
    /// No policy (a domain withdrawing one).
    None,
}

/// A domain's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `mode:`.
    pub mode: Mode,
    /// `mx:` patterns, lowercase: a host name, or `*.` and a domain.
    pub mx: Vec<String>,
    /// `max_age:`, seconds.
    pub max_age: u64,
}

/// RFC 8461 §3.2: a year.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// A policy file larger than this is refused (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

impl Policy {
    /// Whether `host` (an MX host name) is one the policy names: exactly,
    /// or by a wildcard covering one label (RFC 8461 §4.1).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

/// Parse a policy file (RFC 8461 §3.2).
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_owned()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode `{other}`")),
                })
            }
            "max_age" => {
                let seconds: u64 = value
                    .parse()
                    .map_err(|_| format!("max_age `{value}` is not a number"))?;
                max_age = Some(seconds.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("version is not STSv1".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// The policy id of a domain's `_mta-sts` TXT records: the one record that
/// starts with `v=STSv1` (none, or several: no policy).
pub fn policy_id(records: &[String]) -> Option<String> {
    let mut found = records.iter().filter(|r| {
        r.split(';')
            .next()
            .is_some_and(|v| v.trim().replace(' ', "") == "v=STSv1")
    });
    let (Some(record), None) = (found.next(), found.next()) else {
        return None;
    };
    record.split(';').find_map(|tag| {
        let (name, value) = tag.split_once('=')?;
        let value = value.trim();
        let valid = !value.is_empty()
            && value.len() <= 32
            && value.bytes().all(|b| b.is_ascii_alphanumeric());
        (name.trim() == "id" && valid).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_match() {
        let policy = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, 604_800);
        assert!(policy.matches("mail.example.com"));
        assert!(policy.matches("MX1.Example.NET."));
        assert!(!policy.matches("a.b.example.net"), "one label only");
        assert!(!policy.matches("example.net"));
        assert!(!policy.matches("evil.example.com"));
        for bad in [
            "mode: enforce\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.test\n",
        ] {
            assert!(parse_policy(bad).is_err(), "{bad}");
        }
        let long =
            parse_policy("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 99999999999\n")
                .unwrap();
        assert_eq!(long.max_age, MAX_AGE_LIMIT);
    }

    #[test]
    fn ids_come_from_the_one_record() {
        let id = |records: &[&str]| {
            policy_id(&records.iter().map(|r| r.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            id(&["v=STSv1; id=20261206T1"]).as_deref(),
            Some("20261206T1")
        );
        assert_eq!(
            id(&["v=spf1 -all", "v=STSv1; id=abc"]).as_deref(),
            Some("abc")
        );
        assert_eq!(id(&["v=STSv1; id=a", "v=STSv1; id=b"]), None);
        assert_eq!(id(&["v=STSv1; id=bad-id!"]), None);
        assert_eq!(id(&[]), None);
    }
}
