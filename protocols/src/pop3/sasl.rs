//! SASL PLAIN (RFC 4616) for AUTH (RFC 5034): base64 in, credentials out.
//!
//! Only the form checks happen here; whether the credentials are good is the
//! driver's question ([`super::Event::Authenticate`]). An authorization
//! identity is accepted only when it is empty or names the authentication
//! identity itself: acting as another user is a privilege this server does
//! not offer, so it is refused before the driver is asked.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::replies::{self, Reply};

/// Longest AUTH continuation line, CRLF included. A continuation carries
/// base64, not a command, so `max_line_len` does not bound it; this fits an
/// authorization identity, an authentication identity and a password of 255
/// octets each (the sizes RFC 4616 §2 requires servers to accept), in base64.
pub(super) const MAX_RESPONSE_LEN: usize = 1100;

/// What PLAIN carried.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Credentials {
    /// The authentication identity.
    pub(super) user: String,
    /// The password.
    pub(super) password: String,
}

/// Decode a PLAIN response given as base64; `=` is the empty response
/// (RFC 5034 §4). The error is the response to send.
pub(super) fn plain(response: &str) -> Result<Credentials, Reply> {
    let encoded = if response == "=" { "" } else { response };
    let message = STANDARD.decode(encoded).map_err(|_| replies::BAD_BASE64)?;
    let message = String::from_utf8(message).map_err(|_| replies::BAD_PLAIN)?;
    let mut parts = message.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(replies::BAD_PLAIN);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(replies::BAD_PLAIN);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(replies::AUTHZID_REFUSED);
    }
    Ok(Credentials {
        user: authcid.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(message: &[u8]) -> String {
        STANDARD.encode(message)
    }

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn plain_with_and_without_authzid() {
        assert_eq!(
            plain(&encode(b"\0alice\0s3 cret")),
            Ok(creds("alice", "s3 cret"))
        );
        assert_eq!(
            plain(&encode(b"alice\0alice\0pw")),
            Ok(creds("alice", "pw"))
        );
        assert_eq!(plain("AGFsaWNlAHB3"), Ok(creds("alice", "pw")));
        assert_eq!(
            plain(&encode("\0jörg\0pä".as_bytes())),
            Ok(creds("jörg", "pä"))
        );
    }

    #[test]
    fn another_authzid_is_refused() {
        assert_eq!(
            plain(&encode(b"bob\0alice\0pw")),
            Err(replies::AUTHZID_REFUSED)
        );
    }

    #[test]
    fn malformed_messages() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0",
            b"\0\0pw",
            b"\0alice\0pw\0",
            b"\0al\xffice\0pw",
        ] {
            assert_eq!(plain(&encode(bad)), Err(replies::BAD_PLAIN), "{bad:?}");
        }
        assert_eq!(plain("="), Err(replies::BAD_PLAIN));
    }

    #[test]
    fn bad_base64() {
        for bad in ["AGFsaWNlAHB3=", "AGFsaWNl AHB3", "*", "AGF", "YQ", "Y=Q="] {
            assert_eq!(plain(bad), Err(replies::BAD_BASE64), "{bad}");
        }
    }

    #[test]
    fn longest_plain_fits_the_line_limit() {
        let longest = encode(&[b'x'; 255 * 3 + 2]);
        assert!(longest.len() + 2 <= MAX_RESPONSE_LEN);
    }
}
