//! SASL for SMTP AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 9051 §6.2.2) and
//! POP3 AUTH (RFC 5034): the PLAIN (RFC 4616) and LOGIN mechanisms as one
//! small state machine the three protocols share.
//!
//! A protocol starts an [`Exchange`] with the mechanism name and the
//! optional initial response, sends each [`Step::Challenge`] in its own
//! framing (`334 `, `+ `), feeds the client's answer lines back, and ends
//! with [`Step::Done`] or [`Step::Failed`]. Everything on the wire is
//! base64; this module decodes and encodes it.
//!
//! Only the form is checked here; whether the credentials are good is the
//! driver's question. An authorization identity is accepted only when it is
//! empty or names the authentication identity itself: acting as another
//! user is a privilege this server does not offer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;

/// Longest client answer line in an exchange, CRLF included. It fits an
/// authorization identity, an authentication identity and a password of
/// 255 octets each (what RFC 4616 §2 asks servers to take), in base64.
pub const MAX_RESPONSE_LEN: usize = 1100;

/// The mechanisms offered, in the order they are advertised.
pub const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

/// A SASL mechanism this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: one message, `authzid NUL authcid NUL password`.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login): user
    /// name and password asked for one at a time. Outlook and older
    /// clients use it.
    Login,
}

impl Mechanism {
    /// The mechanism named `name` (any case), if we speak it.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        MECHANISMS
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Its registered name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a finished exchange carried.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The mechanism used.
    pub mechanism: Mechanism,
    /// The authentication identity (user name).
    pub user: String,
    /// The password, exactly as sent.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords never reach a log line through Debug.
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client answered `*` (RFC 4954 §4, RFC 9051 §6.2.2).
    Cancelled,
    /// Not valid base64.
    BadBase64,
    /// Decoded, but not what the mechanism expects (missing parts, empty
    /// name or password, not UTF-8).
    Malformed,
    /// An authorization identity other than the user.
    AuthzidRefused,
}

/// The next step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (already base64) and feed the answer line to
    /// [`Exchange::respond`].
    Challenge(String),
    /// The client sent well-formed credentials.
    Done(Credentials),
    /// The exchange is over without credentials.
    Failed(Failure),
}

/// One authentication exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    mechanism: Mechanism,
    /// LOGIN: the user name, once given.
    user: Option<String>,
}

/// LOGIN's prompts, base64 of `Username:` and `Password:`.
const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

impl Exchange {
    /// Start `mechanism`, with the initial response if the command carried
    /// one (`=` stands for an empty one, RFC 4954 §4).
    pub fn start(mechanism: Mechanism, initial: Option<&str>) -> (Exchange, Step) {
        let mut exchange = Exchange {
            mechanism,
            user: None,
        };
        let step = match initial {
            Some(response) => exchange.respond(response),
            None => exchange.first_challenge(),
        };
        (exchange, step)
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Start `mechanism` where the protocol's own grammar has decoded the
    /// initial response already (IMAP's SASL-IR).
    pub fn start_decoded(mechanism: Mechanism, initial: Option<Vec<u8>>) -> (Exchange, Step) {
        let mut exchange = Exchange {
            mechanism,
            user: None,
        };
        let step = match initial {
            Some(response) => exchange.respond_decoded(response),
            None => exchange.first_challenge(),
        };
        (exchange, step)
    }

    /// Take the client's answer line (without CRLF): base64, or `*`.
    pub fn respond(&mut self, line: &str) -> Step {
        let line = line.trim_end_matches([' ', '\t']);
        if line == "*" {
            return Step::Failed(Failure::Cancelled);
        }
        match decode(line) {
            Ok(bytes) => self.respond_decoded(bytes),
            Err(failure) => Step::Failed(failure),
        }
    }

    /// Take the client's answer, already decoded from base64.
    pub fn respond_decoded(&mut self, decoded: Vec<u8>) -> Step {
        match self.mechanism {
            Mechanism::Plain => plain(&decoded),
            Mechanism::Login => self.login(decoded),
        }
    }

    fn first_challenge(&self) -> Step {
        match self.mechanism {
            // PLAIN's challenge is empty: "334 " / "+ ".
            Mechanism::Plain => Step::Challenge(String::new()),
            Mechanism::Login => Step::Challenge(LOGIN_USER_PROMPT.into()),
        }
    }

    fn login(&mut self, decoded: Vec<u8>) -> Step {
        let Ok(text) = String::from_utf8(decoded) else {
            return Step::Failed(Failure::Malformed);
        };
        if text.is_empty() || text.contains('\0') {
            return Step::Failed(Failure::Malformed);
        }
        match self.user.take() {
            None => {
                self.user = Some(text);
                Step::Challenge(LOGIN_PASSWORD_PROMPT.into())
            }
            Some(user) => Step::Done(Credentials {
                mechanism: Mechanism::Login,
                user,
                password: text,
            }),
        }
    }
}

/// Decode a base64 answer; `=` and the empty line are the empty answer.
fn decode(line: &str) -> Result<Vec<u8>, Failure> {
    if line.is_empty() || line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| Failure::BadBase64)
}

/// PLAIN's one message: `authzid NUL authcid NUL password`.
fn plain(message: &[u8]) -> Step {
    let Ok(message) = std::str::from_utf8(message) else {
        return Step::Failed(Failure::Malformed);
    };
    let mut parts = message.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Failed(Failure::Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Step::Failed(Failure::Malformed);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Step::Failed(Failure::AuthzidRefused);
    }
    Step::Done(Credentials {
        mechanism: Mechanism::Plain,
        user: authcid.to_owned(),
        password: password.to_owned(),
    })
}

/// Base64 of `bytes`, for tests and clients.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(mechanism: Mechanism, user: &str, password: &str) -> Step {
        Step::Done(Credentials {
            mechanism,
            user: user.into(),
            password: password.into(),
        })
    }

    fn plain_with(initial: &[u8]) -> Step {
        Exchange::start(Mechanism::Plain, Some(&encode(initial))).1
    }

    #[test]
    fn plain_with_and_without_authzid() {
        let p = Mechanism::Plain;
        assert_eq!(plain_with(b"\0alice\0s3 cret"), done(p, "alice", "s3 cret"));
        assert_eq!(plain_with(b"alice\0alice\0pw"), done(p, "alice", "pw"));
        assert_eq!(
            Exchange::start(p, Some("AGFsaWNlAHB3")).1,
            done(p, "alice", "pw")
        );
        assert_eq!(plain_with("\0jörg\0pä".as_bytes()), done(p, "jörg", "pä"));
    }

    #[test]
    fn plain_without_initial_response_asks_with_an_empty_challenge() {
        let (mut exchange, step) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(step, Step::Challenge(String::new()));
        assert_eq!(
            exchange.respond(&encode(b"\0bob\0pw")),
            done(Mechanism::Plain, "bob", "pw")
        );
    }

    #[test]
    fn another_authzid_is_refused() {
        assert_eq!(
            plain_with(b"bob\0alice\0pw"),
            Step::Failed(Failure::AuthzidRefused)
        );
    }

    #[test]
    fn malformed_plain_messages() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0",
            b"\0\0pw",
            b"\0alice\0pw\0",
            b"\0al\xffice\0pw",
        ] {
            let step = Exchange::start(Mechanism::Plain, Some(&encode(bad))).1;
            assert_eq!(step, Step::Failed(Failure::Malformed), "{bad:?}");
        }
        assert_eq!(
            Exchange::start(Mechanism::Plain, Some("=")).1,
            Step::Failed(Failure::Malformed)
        );
    }

    #[test]
    fn bad_base64_and_cancel() {
        for bad in ["AGFsaWNlAHB3=", "AGFsaWNl AHB3", "AGF", "YQ", "Y=Q="] {
            let step = Exchange::start(Mechanism::Plain, Some(bad)).1;
            assert_eq!(step, Step::Failed(Failure::BadBase64), "{bad}");
        }
        let (mut exchange, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(exchange.respond("*"), Step::Failed(Failure::Cancelled));
    }

    #[test]
    fn login_asks_for_name_then_password() {
        let (mut exchange, step) = Exchange::start(Mechanism::Login, None);
        assert_eq!(step, Step::Challenge(LOGIN_USER_PROMPT.into()));
        assert_eq!(
            exchange.respond(&encode(b"alice@example.com")),
            Step::Challenge(LOGIN_PASSWORD_PROMPT.into())
        );
        assert_eq!(
            exchange.respond(&encode(b"s3cret")),
            done(Mechanism::Login, "alice@example.com", "s3cret")
        );
        // The name may come with the command (AUTH LOGIN <base64 name>).
        let (mut exchange, step) = Exchange::start(Mechanism::Login, Some(&encode(b"bob")));
        assert_eq!(step, Step::Challenge(LOGIN_PASSWORD_PROMPT.into()));
        assert_eq!(
            exchange.respond(&encode(b"pw")),
            done(Mechanism::Login, "bob", "pw")
        );
        // An empty name or password is refused.
        let (mut exchange, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(exchange.respond(""), Step::Failed(Failure::Malformed));
    }

    #[test]
    fn names_and_redaction() {
        assert_eq!(Mechanism::from_name("plain"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_name("Login"), Some(Mechanism::Login));
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
        let creds = Credentials {
            mechanism: Mechanism::Plain,
            user: "a".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    #[test]
    fn longest_plain_fits_the_line_limit() {
        let longest = encode(&[b'x'; 255 * 3 + 2]);
        assert!(longest.len() + 2 <= MAX_RESPONSE_LEN);
    }
}
