//! The Sender Rewriting Scheme (SRS), for mail this server forwards.
//!
//! An alias's remote address or a Sieve redirect sends a stranger's
//! message on to another domain. Sent with the stranger's envelope
//! sender, it fails the next server's SPF check (we are not among the
//! sender domain's servers), and with `-all` it is refused. So it leaves
//! from an address at our own domain (`srs.domain`) that encodes the
//! original sender; a bounce to that address comes back here, is checked,
//! and goes on to the original sender.
//!
//! The forms are Shevek's, as postsrsd and Stalwart write them:
//!
//! - `SRS0=HHHHHH=TT=far.example=alice@ours`: the first hop. `TT` is the
//!   day (two base32 characters, days since 1970 modulo 1024), `HHHHHH` a
//!   keyed hash (HMAC-SHA-256 over the rest, lowercased: servers on the
//!   way may change the case of a local part) in six base32 characters.
//!   Good for [`MAX_AGE_DAYS`].
//! - `SRS1=HHHHHH=first.hop==HHHHHH=TT=far.example=alice@ours`: mail that
//!   came from another forwarder's SRS0 address and is forwarded again.
//!   It goes back to that first hop, which checks its own hash and age.
//!
//! The key is made at first start and kept in the store
//! ([`ensure_secret`]), so addresses stay good across restarts.

use crate::config::Config;
use ring::hmac;
use ringpost_storage::{state, Store, StoreError, WriteBatch};

/// Where the key is kept.
const SECRET: &str = "srs\0secret";
/// How long an SRS0 address is good for: bounces come within days.
pub const MAX_AGE_DAYS: u64 = 21;
/// Characters of the hash: 30 bits, a guess in a billion.
const HASH_LEN: usize = 6;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Make the key if the store has none yet (at start, before any mail).
pub fn ensure_secret(store: &dyn Store) -> Result<(), StoreError> {
    if state::get(store, SECRET)?.is_some() {
        return Ok(());
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .expect("the OS has randomness");
    let mut batch = WriteBatch::new();
    state::put(&mut batch, SECRET, secret.to_vec());
    store.write(&[batch], true)
}

/// What an address says when read as SRS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reversed {
    /// Not an SRS address of ours: an address like any other.
    NotSrs,
    /// Ours and good: mail to it goes to this address.
    Valid(String),
    /// In our SRS form but forged, mangled or too old.
    Invalid,
}

/// The rewriter, with the key and the domain in force.
pub struct Srs {
    key: hmac::Key,
    domain: String,
}

impl Srs {
    /// With `secret` for addresses at `domain`.
    pub fn new(secret: &[u8], domain: &str) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            domain: domain.to_ascii_lowercase(),
        }
    }

    /// The rewriter of `config` over `store`'s key; `None` when SRS is
    /// off, or the key is missing (the store was never started).
    pub fn of(config: &Config, store: &dyn Store) -> Result<Option<Srs>, StoreError> {
        if !config.srs.enabled {
            return Ok(None);
        }
        Ok(state::get(store, SECRET)?.map(|secret| Srs::new(&secret, config.srs_domain())))
    }

    /// The envelope sender for `sender`'s mail forwarded on `today` (days
    /// since 1970). Already one of our own SRS addresses, it stays. `None`
    /// when the rewritten address would be no valid mailbox (a quoted
    /// local part, an address literal, a local part past RFC 5321's 64
    /// octets): the mail then goes with its sender as it came, rather than
    /// from an address whose bounces could not come back.
    pub fn forward(&self, sender: &str, today: u64) -> Option<String> {
        let (local, domain) = sender.rsplit_once('@')?;
        if domain.eq_ignore_ascii_case(&self.domain) && is_srs(local) {
            return Some(sender.to_owned());
        }
        if local.starts_with('"') || domain.starts_with('[') {
            return None;
        }
        let rewritten = if let Some(rest) = strip_tag(local, "SRS0") {
            // Another forwarder's first hop: back to it, by SRS1.
            let hop_and_rest = format!("{domain}=={rest}");
            format!("SRS1={}={hop_and_rest}", self.hash(&hop_and_rest))
        } else if let Some(rest) = strip_tag(local, "SRS1") {
            // Forwarded again: still back to the first hop.
            match rest.split_once('=').map(|(_, hop_and_rest)| hop_and_rest) {
                Some(hop_and_rest) if hop_and_rest.contains("==") => {
                    format!("SRS1={}={hop_and_rest}", self.hash(hop_and_rest))
                }
                _ => self.first_hop(local, domain, today),
            }
        } else {
            self.first_hop(local, domain, today)
        };
        let address = format!("{rewritten}@{}", self.domain);
        ringpost_protocols::smtp::is_mailbox(&address).then_some(address)
    }

    fn first_hop(&self, local: &str, domain: &str, today: u64) -> String {
        let stamp = stamp(today);
        let rest = format!("{stamp}={domain}={local}");
        format!("SRS0={}={rest}", self.hash(&rest))
    }

    /// Where mail to `address` goes, if it is one of our SRS addresses.
    pub fn reverse(&self, address: &str, today: u64) -> Reversed {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Reversed::NotSrs;
        };
        if !domain.eq_ignore_ascii_case(&self.domain) || !is_srs(local) {
            return Reversed::NotSrs;
        }
        let checked = |tagged: &str| -> Option<String> {
            let (hash, rest) = tagged.split_once('=')?;
            self.hash_matches(hash, rest).then(|| rest.to_owned())
        };
        let original = if let Some(tagged) = strip_tag(local, "SRS0") {
            checked(tagged).and_then(|rest| {
                let (stamp_text, rest) = rest.split_once('=')?;
                let (domain, local) = rest.split_once('=')?;
                let fresh = age(stamp_text, today).is_some_and(|days| days <= MAX_AGE_DAYS);
                let plausible = !domain.is_empty() && !local.is_empty();
                (fresh && plausible).then(|| format!("{local}@{domain}"))
            })
        } else {
            strip_tag(local, "SRS1").and_then(checked).and_then(|rest| {
                let (hop, first) = rest.split_once("==")?;
                (!hop.is_empty() && !first.is_empty()).then(|| format!("SRS0={first}@{hop}"))
            })
        };
        match original {
            Some(original) => Reversed::Valid(original),
            None => Reversed::Invalid,
        }
    }

    fn hash(&self, text: &str) -> String {
        let tag = hmac::sign(&self.key, text.to_lowercase().as_bytes());
        tag.as_ref()
            .iter()
            .take(HASH_LEN)
            .map(|b| BASE32[usize::from(b & 31)] as char)
            .collect()
    }

    fn hash_matches(&self, given: &str, text: &str) -> bool {
        let expected = self.hash(text);
        // Lowercased as the hash is: whatever case it comes back in. The
        // comparison takes the same time wherever the first difference is.
        let differences = given
            .bytes()
            .zip(expected.bytes())
            .fold(0, |seen, (a, b)| seen | (a.to_ascii_lowercase() ^ b));
        given.len() == expected.len() && differences == 0
    }
}

/// Where mail to `address` goes when it is a good SRS address of ours:
/// the sender it stands for. Anything else (or the key unreadable): `None`.
pub fn original_sender(config: &Config, store: &dyn Store, address: &str) -> Option<String> {
    let local = address.rsplit_once('@')?.0;
    if !is_srs(local) {
        return None;
    }
    let srs = Srs::of(config, store).ok().flatten()?;
    match srs.reverse(address, day_of(crate::intake::unix_micros())) {
        Reversed::Valid(original) => Some(original),
        Reversed::NotSrs | Reversed::Invalid => None,
    }
}

/// Whether a local part is in an SRS form.
pub fn is_srs(local: &str) -> bool {
    strip_tag(local, "SRS0").is_some() || strip_tag(local, "SRS1").is_some()
}

/// `local` after `tag=` (any case), if it starts so. The scheme allows
/// `+` and `-` as separators too, but this server writes `=`, and an
/// account called `srs1-team` is no SRS address.
fn strip_tag<'a>(local: &'a str, tag: &str) -> Option<&'a str> {
    let head = local.get(..tag.len())?;
    let rest = &local[tag.len()..];
    (head.eq_ignore_ascii_case(tag) && rest.starts_with('=')).then(|| &rest[1..])
}

/// The day stamp: days since 1970 modulo 1024, two base32 characters.
fn stamp(today: u64) -> String {
    let day = (today % 1024) as usize;
    [BASE32[day >> 5] as char, BASE32[day & 31] as char]
        .iter()
        .collect()
}

/// Days since `text` was stamped, modulo 1024; `None` if it is no stamp.
fn age(text: &str, today: u64) -> Option<u64> {
    let value = |c: u8| BASE32.iter().position(|&b| b == c.to_ascii_lowercase());
    let [high, low] = text.as_bytes() else {
        return None;
    };
    let then = (value(*high)? << 5 | value(*low)?) as u64;
    Some((today % 1024 + 1024 - then) % 1024)
}

/// Days since 1970 of `micros` (Unix microseconds).
pub fn day_of(micros: u64) -> u64 {
    micros / 1_000_000 / 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: u64 = 20_429;

    fn ours() -> Srs {
        Srs::new(b"a secret of ours", "Fwd.Example")
    }

    #[test]
    fn a_forwarded_sender_comes_back_as_itself() {
        let srs = ours();
        let rewritten = srs.forward("Alice@far.example", TODAY).unwrap();
        assert!(rewritten.starts_with("SRS0="), "{rewritten}");
        assert!(
            rewritten.ends_with("=far.example=Alice@fwd.example"),
            "{rewritten}"
        );
        assert_eq!(
            srs.reverse(&rewritten, TODAY),
            Reversed::Valid("Alice@far.example".into())
        );
        // Servers on the way may change the case.
        assert_eq!(
            srs.reverse(&rewritten.to_uppercase(), TODAY + 3),
            Reversed::Valid("ALICE@FAR.EXAMPLE".into())
        );
        // Our own SRS address is not wrapped again.
        assert_eq!(srs.forward(&rewritten, TODAY), Some(rewritten.clone()));
        // What cannot be written as a plain mailbox is not rewritten.
        for odd in [
            "\"odd person\"@far.example",
            "user@[192.0.2.1]",
            &format!("{}@far.example", "x".repeat(60)),
        ] {
            assert_eq!(srs.forward(odd, TODAY), None, "{odd}");
        }
    }

    #[test]
    fn forged_mangled_and_old_addresses_are_refused() {
        let srs = ours();
        let good = srs.forward("alice@far.example", TODAY).unwrap();
        assert_eq!(
            srs.reverse(&good, TODAY + MAX_AGE_DAYS),
            Reversed::Valid("alice@far.example".into())
        );
        assert_eq!(
            srs.reverse(&good, TODAY + MAX_AGE_DAYS + 1),
            Reversed::Invalid
        );
        // The day counter wraps at 1024.
        assert!(matches!(
            srs.reverse(&good, TODAY + 1024 + 2),
            Reversed::Valid(_)
        ));
        let forged = good.replacen("=far.example=", "=victim.example=", 1);
        assert_eq!(srs.reverse(&forged, TODAY), Reversed::Invalid);
        let other_key = Srs::new(b"someone else's", "fwd.example");
        assert_eq!(other_key.reverse(&good, TODAY), Reversed::Invalid);
        for broken in [
            "SRS0=@fwd.example",
            "SRS0=abcdef@fwd.example",
            "SRS0=abcdef=zz=far.example=@fwd.example",
            "srs1=x@fwd.example",
        ] {
            assert_eq!(srs.reverse(broken, TODAY), Reversed::Invalid, "{broken}");
        }
        // Not ours: another domain, or no SRS form.
        assert_eq!(srs.reverse("alice@fwd.example", TODAY), Reversed::NotSrs);
        assert_eq!(
            srs.reverse(&good.replace("@fwd.example", "@else.example"), TODAY),
            Reversed::NotSrs
        );
    }

    #[test]
    fn another_forwarders_address_goes_back_to_its_first_hop() {
        let first = Srs::new(b"first hop's", "hop1.example");
        let srs0 = first.forward("alice@far.example", TODAY).unwrap();
        let (local, _) = srs0.rsplit_once('@').unwrap();
        let ours = ours();
        let srs1 = ours.forward(&srs0, TODAY).unwrap();
        assert_eq!(
            srs1,
            format!(
                "SRS1={}=hop1.example=={}@fwd.example",
                ours.hash(&format!("hop1.example=={}", &local[5..])),
                &local[5..]
            )
        );
        // A bounce to it goes to the first hop's address as it was...
        assert_eq!(ours.reverse(&srs1, TODAY), Reversed::Valid(srs0.clone()));
        // ...which that hop turns back into the original sender.
        assert_eq!(
            first.reverse(&srs0, TODAY),
            Reversed::Valid("alice@far.example".into())
        );
        // Forwarded once more by a third server: still to the first hop.
        let third = Srs::new(b"third", "hop3.example");
        let again = third.forward(&srs1, TODAY).unwrap();
        assert!(
            again.starts_with("SRS1=") && again.contains("=hop1.example=="),
            "{again}"
        );
        assert_eq!(third.reverse(&again, TODAY), Reversed::Valid(srs0));
    }
}
