//! URLAUTH (RFC 4467) against the store: GENURLAUTH, URLFETCH, RESETKEY.
//!
//! Each mailbox that has had a URL authorized has an access key: 32
//! random bytes, kept in its owner's account row (setting
//! [`SETTING_URLAUTH_KEYS`]), made at the first GENURLAUTH for it.
//! RESETKEY drops keys, so every URL made under them fetches NIL from then
//! on; the next GENURLAUTH makes a new one. A URL is fetched from its
//! owner's mailbox, named in its `imap://user@host/` part, only when its
//! access identifier admits the caller and its token is the HMAC of its
//! rump under the mailbox's key.
//!
//! The extended URLFETCH of URLAUTH=BINARY (RFC 5524) answers each URL
//! with the items asked: `(BODYPARTSTRUCTURE (...))`, then `(BODY {n}...)`
//! as stored or `(BINARY {n}...)` decoded (a literal8 when it holds NUL;
//! `(BINARY NIL)` for an encoding that cannot be removed, or a section
//! that is not a part), the structure then describing the decoded data.

use super::commands::{Done, Outcome};
use super::Conn;
use ringpost_protocols::imap::string as imap_string;
use ringpost_protocols::imap::types::fetch::{Part, Section};
use ringpost_protocols::imap::url::ImapUrl;
use ringpost_protocols::imap::urlauth::{self, FetchWant, UrlAuthCommand, UrlFetch};
use ringpost_protocols::imap::ImapSession;
use ringpost_protocols::imap::{binary, mime};
use ringpost_storage::users::{self, User};
use ringpost_storage::{mailbox, StoreError, WriteBatch};

/// The account row setting that holds the access keys: (name length u16
/// BE, name, key) for each mailbox.
pub const SETTING_URLAUTH_KEYS: u32 = 3;

const KEY_LEN: usize = 32;

/// The access keys in an account's row.
fn keys(user: &User) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(mut rest) = user.settings.get(&SETTING_URLAUTH_KEYS).map(Vec::as_slice) else {
        return out;
    };
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(name) = rest.get(2..2 + len) else {
            break;
        };
        let Some(key) = rest.get(2 + len..2 + len + KEY_LEN) else {
            break;
        };
        out.push((String::from_utf8_lossy(name).into_owned(), key.to_vec()));
        rest = &rest[2 + len + KEY_LEN..];
    }
    out
}

fn set_keys(user: &mut User, keys: &[(String, Vec<u8>)]) {
    if keys.is_empty() {
        user.settings.remove(&SETTING_URLAUTH_KEYS);
        return;
    }
    let mut value = Vec::new();
    for (name, key) in keys {
        value.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_be_bytes());
        value.extend_from_slice(name.as_bytes());
        value.extend_from_slice(key);
    }
    user.settings.insert(SETTING_URLAUTH_KEYS, value);
}

fn key_of<'k>(keys: &'k [(String, Vec<u8>)], name: &str) -> Option<&'k [u8]> {
    keys.iter()
        .find(|(n, _)| mailbox::normalize_name(n) == mailbox::normalize_name(name))
        .map(|(_, key)| key.as_slice())
}

impl Conn<'_> {
    /// Run a URLAUTH command and write its answer.
    pub(super) async fn urlauth(
        &mut self,
        imap: &mut ImapSession,
        tag: &super::imap_tag::Tag,
        command: UrlAuthCommand,
    ) {
        let outcome = match command {
            UrlAuthCommand::Generate(urls) => self.generate(imap, &urls).await,
            UrlAuthCommand::Fetch(urls) => self.fetch_urls(imap, &urls),
            UrlAuthCommand::ResetKey(name) => {
                // The client's spelling: modified UTF-7 from IMAP4rev1.
                let name = name.map(|n| super::convert::from_client(&n, imap.is_rev2()));
                self.reset_keys(name.as_deref()).await
            }
        };
        self.answer(imap, tag, outcome);
    }

    fn account(&self) -> Result<User, StoreError> {
        users::get_user(&*self.shard.store, self.user())?
            .ok_or(StoreError::Engine("the account is gone".into()))
    }

    async fn save(&self, user: &User) -> Result<(), StoreError> {
        let mut batch = WriteBatch::new();
        users::put_user(&mut batch, user);
        self.shard.commits.commit(batch).await
    }

    /// GENURLAUTH: each URL (the caller's own, with an access identifier
    /// and no token yet) with its INTERNAL token.
    async fn generate(&mut self, imap: &mut ImapSession, urls: &[(String, String)]) -> Outcome {
        let mut account = self.account()?;
        let mut keys = keys(&account);
        let mut made = false;
        let mut answers = Vec::with_capacity(urls.len());
        for (url, mechanism) in urls {
            if !mechanism.eq_ignore_ascii_case("INTERNAL") {
                return Ok(Done::No(None, "only the INTERNAL mechanism is supported"));
            }
            let auth = urlauth::authorization(url).filter(|a| a.token.is_none());
            let named = ImapUrl::parse(urlauth::without_authorization(url));
            let (Some(auth), Some(named)) = (auth, named) else {
                return Ok(Done::Bad(
                    "not an IMAP URL with ;URLAUTH=access and no token",
                ));
            };
            let (Some(_), Some(name)) = (&named.user, &named.mailbox) else {
                return Ok(Done::Bad(
                    "the URL must name its user and mailbox (imap://user@host/mailbox/...)",
                ));
            };
            if !named.user_is(self.user()) {
                return Ok(Done::No(None, "a URL can only be authorized by its owner"));
            }
            if mailbox::meta(&*self.shard.store, self.user(), name)?.is_none() {
                return Ok(Done::No(Some("TRYCREATE"), "no such mailbox"));
            }
            let key = match key_of(&keys, name) {
                Some(key) => key.to_vec(),
                None => {
                    let mut key = vec![0u8; KEY_LEN];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                        .map_err(|_| StoreError::Engine("no randomness".into()))?;
                    keys.push((name.clone(), key.clone()));
                    made = true;
                    key
                }
            };
            let token = urlauth::token(&key, &auth.rump);
            answers.push(imap_string(&format!("{}:internal:{token}", auth.rump)));
        }
        if made {
            set_keys(&mut account, &keys);
            self.save(&account).await?;
        }
        imap.untagged(&format!("GENURLAUTH {}", answers.join(" ")));
        Ok(Done::Ok("GENURLAUTH completed"))
    }

    /// URLFETCH: each URL's data, or NIL when it names nothing, its token
    /// does not check out, or its access identifier does not admit us.
    fn fetch_urls(&self, imap: &mut ImapSession, urls: &[UrlFetch]) -> Outcome {
        // The answer is one response line built whole: at most one
        // command's worth, as an APPEND may bring, however many URLs (or
        // the same large one many times) are asked for.
        let limit = self.shard.config().imap.max_command_size as usize;
        let mut line = b"* URLFETCH".to_vec();
        for request in urls {
            if line.len() > limit {
                break;
            }
            line.push(b' ');
            line.extend_from_slice(imap_string(&request.url).as_bytes());
            let found = self.authorized_message(&request.url)?;
            // A section that cannot be read names nothing.
            let Some((message, named, section)) =
                found.and_then(|(m, named)| Some((m, named.clone(), named.fetch_section()?)))
            else {
                line.extend_from_slice(b" NIL");
                continue;
            };
            match request.want {
                None => {
                    let data = mime::section(&message, section.as_ref(), named.cut());
                    line.extend_from_slice(format!(" {{{}}}\r\n", data.len()).as_bytes());
                    line.extend_from_slice(&data);
                }
                Some(want) => extended(&mut line, &message, section.as_ref(), named.cut(), want),
            }
        }
        if line.len() > limit {
            return Ok(Done::No(
                Some("LIMIT"),
                "the URLs' data is more than one answer holds; fetch fewer at a time",
            ));
        }
        line.extend_from_slice(b"\r\n");
        imap.raw(&line);
        Ok(Done::Ok("URLFETCH completed"))
    }

    /// The whole message a URL names, and the URL as parsed, when the
    /// caller may have it.
    fn authorized_message(&self, url: &str) -> Result<Option<(Vec<u8>, ImapUrl)>, StoreError> {
        let Some(auth) = urlauth::authorization(url) else {
            // Without URLAUTH, a URL of the caller's own.
            let Some(named) = ImapUrl::parse(url) else {
                return Ok(None);
            };
            let message = self.message_for(self.user(), &named)?;
            return Ok(message.map(|m| (m, named)));
        };
        let Some((mechanism, token)) = &auth.token else {
            return Ok(None);
        };
        let Some(named) = ImapUrl::parse(urlauth::without_authorization(url)) else {
            return Ok(None);
        };
        let Some(name) = &named.mailbox else {
            return Ok(None);
        };
        if !mechanism.eq_ignore_ascii_case("internal")
            || !urlauth::allows(&auth.access, self.user())
        {
            return Ok(None);
        }
        let mut account = None;
        for owner in named.owners() {
            if let Some(found) = users::get_user(&*self.shard.store, &owner)? {
                account = Some(found);
                break;
            }
        }
        let Some(account) = account else {
            return Ok(None);
        };
        let keys = keys(&account);
        let Some(key) = key_of(&keys, name) else {
            return Ok(None);
        };
        if !urlauth::verify(key, &auth.rump, token) {
            return Ok(None);
        }
        let message = self.message_for(&account.name, &named)?;
        Ok(message.map(|m| (m, named)))
    }

    /// RESETKEY: the keys of one mailbox (or all) are dropped.
    async fn reset_keys(&mut self, name: Option<&str>) -> Outcome {
        let mut account = self.account()?;
        let mut keys = keys(&account);
        match name {
            Some(name) => {
                if mailbox::meta(&*self.shard.store, self.user(), name)?.is_none() {
                    return Ok(Done::No(Some("NONEXISTENT"), "no such mailbox"));
                }
                keys.retain(|(n, _)| mailbox::normalize_name(n) != mailbox::normalize_name(name));
            }
            None => keys.clear(),
        }
        set_keys(&mut account, &keys);
        self.save(&account).await?;
        Ok(Done::Ok("RESETKEY completed"))
    }
}

/// The items of an extended URLFETCH answer for one URL (RFC 5524 §3.2).
fn extended(
    line: &mut Vec<u8>,
    message: &[u8],
    section: Option<&Section<'static>>,
    partial: Option<(u32, u32)>,
    want: FetchWant,
) {
    // BINARY and BODYPARTSTRUCTURE are about parts: the whole message, or
    // a part number.
    let part: Option<&[std::num::NonZeroU32]> = match section {
        None => Some(&[]),
        Some(Section::Part(Part(numbers))) => Some(numbers.as_ref()),
        Some(_) => None,
    };
    let decoded = match (want.binary, part) {
        (true, Some(numbers)) => binary::section(message, numbers).ok(),
        _ => None,
    };
    if want.structure {
        let structure = part.and_then(|numbers| mime::part_structure(message, numbers, true));
        if let Some(structure) = structure {
            let structure = match &decoded {
                Some(data) if !part.is_some_and(<[_]>::is_empty) => {
                    binary::decoded_structure(structure, data)
                }
                _ => structure,
            };
            line.extend_from_slice(&urlauth::bodypartstructure(structure));
        }
    }
    if want.binary {
        match decoded {
            Some(data) => {
                let data = mime::cut(&data, partial);
                // NUL octets go in a literal8 (RFC 3516 §4.3).
                let tilde = if data.contains(&0) { "~" } else { "" };
                line.extend_from_slice(
                    format!(" (BINARY {tilde}{{{}}}\r\n", data.len()).as_bytes(),
                );
                line.extend_from_slice(data);
                line.push(b')');
            }
            None => line.extend_from_slice(b" (BINARY NIL)"),
        }
    } else if want.body {
        let data = mime::section(message, section, partial);
        line.extend_from_slice(format!(" (BODY {{{}}}\r\n", data.len()).as_bytes());
        line.extend_from_slice(&data);
        line.push(b')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_in_the_account_row() {
        let mut user = User {
            name: "u@x.test".into(),
            password_hash: "h".into(),
            created: 1,
            settings: Default::default(),
        };
        assert!(keys(&user).is_empty());
        let list = vec![
            ("INBOX".to_owned(), vec![1; KEY_LEN]),
            ("Lists/rust".to_owned(), vec![2; KEY_LEN]),
        ];
        set_keys(&mut user, &list);
        assert_eq!(keys(&user), list);
        assert_eq!(key_of(&list, "inbox"), Some(&[1u8; KEY_LEN][..]));
        set_keys(&mut user, &[]);
        assert!(!user.settings.contains_key(&SETTING_URLAUTH_KEYS));
    }
}
