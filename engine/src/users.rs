//! Accounts as the server sees them: password hashing and the rules for
//! names and passwords.
//!
//! The record itself (key, value, store functions) is
//! `ringpost_storage::users`; this module decides what may go into one.
//! `ringpost user add|passwd` call it before writing, and the SMTP session
//! asks the store whether a local recipient is an account.
//!
//! # Passwords
//! Hashed with Argon2id at the crate's default parameters (m = 19 MiB,
//! t = 2, p = 1, the OWASP recommendation), a fresh random 16-byte salt from
//! the OS for every hash, and stored as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which carries its own
//! parameters: hashes made with other parameters later still verify.
//! Verification compares in constant time (the `password-hash` crate's
//! `Output` comparison).
//!
//! # Names
//! An account name is a full address, `local@domain`, at most
//! [`MAX_NAME_LEN`] bytes (the longest forward path, RFC 5321 §4.5.3.1.3),
//! the local part at most [`MAX_LOCAL_PART_LEN`] (§4.5.3.1.1), exactly one
//! `@`, no whitespace or control characters, and a domain the server
//! receives mail for. Names are stored lowercased.

use argon2::Argon2;
use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ringpost_storage::users::User;

/// Longest account name, bytes (a whole address, RFC 5321 §4.5.3.1.3).
pub const MAX_NAME_LEN: usize = 254;
/// Longest local part, bytes (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// Longest password, bytes. Argon2 takes any length; the bound keeps a
/// careless caller from hashing megabytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a name or password was refused, or hashing failed; phrased for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The name is not a well-formed account name.
    #[error("`{name}` is not a valid account name: {problem}")]
    BadName {
        /// The name as given (control characters escaped).
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The name's domain is not one this server receives mail for.
    #[error(
        "`{domain}` is not one of the local domains (hostname and smtp.local_domains: {local})"
    )]
    NotLocal {
        /// The domain of the name.
        domain: String,
        /// The configured local domains, comma-separated, or "none".
        local: String,
    },
    /// An empty password.
    #[error("the password is empty")]
    EmptyPassword,
    /// A password longer than [`MAX_PASSWORD_LEN`].
    #[error("the password is longer than {MAX_PASSWORD_LEN} bytes")]
    PasswordTooLong,
    /// Hashing failed, or a stored hash is not a valid PHC string.
    #[error("password hash: {0}")]
    Hash(String),
}

/// Check an account name; return it as stored (lowercased).
///
/// `local_domains` is the configured `smtp.local_domains`; `None` skips that
/// check (a tool run without a configuration).
pub fn validate_name(name: &str, local_domains: Option<&[String]>) -> Result<String, UserError> {
    let bad = |problem| UserError::BadName {
        name: name.escape_debug().to_string(),
        problem,
    };
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 254 bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let Some((local, domain)) = name.split_once('@') else {
        return Err(bad("must be a full address, local@domain"));
    };
    if local.is_empty() {
        return Err(bad("the part before @ is empty"));
    }
    if local.len() > MAX_LOCAL_PART_LEN {
        return Err(bad("the part before @ is longer than 64 bytes"));
    }
    if domain.contains('@') {
        return Err(bad("has more than one @"));
    }
    if domain.is_empty() || domain.split('.').any(str::is_empty) {
        return Err(bad("the domain is empty or has an empty label"));
    }
    if let Some(locals) = local_domains {
        if !locals.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(UserError::NotLocal {
                domain: domain.to_owned(),
                local: match locals {
                    [] => "none".to_owned(),
                    _ => locals.join(", "),
                },
            });
        }
    }
    Ok(name.to_lowercase())
}

/// Check a password: not empty, at most [`MAX_PASSWORD_LEN`] bytes.
pub fn validate_password(password: &str) -> Result<(), UserError> {
    match password.len() {
        0 => Err(UserError::EmptyPassword),
        n if n > MAX_PASSWORD_LEN => Err(UserError::PasswordTooLong),
        _ => Ok(()),
    }
}

/// Hash a (validated) password: Argon2id, default parameters, random salt;
/// returns the PHC string.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (in constant time).
/// A `hash` that is not a valid PHC string is an error, not a mismatch.
pub fn verify_password(password: &str, hash: &str) -> Result<bool, UserError> {
    let parsed = PasswordHash::new(hash).map_err(|e| UserError::Hash(e.to_string()))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(UserError::Hash(e.to_string())),
    }
}

/// A new account: the name and password checked, the password hashed.
pub fn new_account(
    name: &str,
    password: &str,
    local_domains: Option<&[String]>,
    created: u64,
) -> Result<User, UserError> {
    let name = validate_name(name, local_domains)?;
    validate_password(password)?;
    Ok(User {
        name,
        password_hash: hash_password(password)?,
        created,
        settings: Default::default(),
    })
}

/// The mailboxes a new account starts with, besides INBOX: what mail
/// clients look for by their special use (RFC 6154), so they find them
/// rather than make their own.
pub const DEFAULT_MAILBOXES: [&str; 4] = ["Sent", "Drafts", "Trash", "Junk"];

/// The changes that give a new account INBOX and [`DEFAULT_MAILBOXES`],
/// all subscribed. They go through a commit writer, like every mailbox
/// change.
pub fn default_mailboxes(batch: &mut ringpost_storage::WriteBatch, user: &str) {
    use ringpost_storage::mailbox::{Change, INBOX};
    for mailbox in std::iter::once(INBOX).chain(DEFAULT_MAILBOXES) {
        batch.change(Change::Create {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
        });
        batch.change(Change::Subscribe {
            user: user.to_owned(),
            mailbox: mailbox.to_owned(),
            subscribed: true,
        });
    }
}

/// Give `user` a new password (checked and hashed); the rest of the record stays.
pub fn set_password(user: &mut User, password: &str) -> Result<(), UserError> {
    validate_password(password)?;
    user.password_hash = hash_password(password)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locals() -> Vec<String> {
        vec!["example.test".into(), "Other.Test".into()]
    }

    #[test]
    fn hash_then_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_eq!(verify_password("correct horse", &hash), Ok(true));
        assert_eq!(verify_password("correct horsf", &hash), Ok(false));
        assert_eq!(verify_password("", &hash), Ok(false));
        // Every hash gets its own salt.
        let again = hash_password("correct horse").unwrap();
        assert_ne!(hash, again);
        assert_eq!(verify_password("correct horse", &again), Ok(true));
    }

    #[test]
    fn a_broken_stored_hash_is_an_error_not_a_mismatch() {
        assert!(matches!(
            verify_password("x", "not a phc string"),
            Err(UserError::Hash(_))
        ));
        assert!(matches!(verify_password("x", ""), Err(UserError::Hash(_))));
    }

    #[test]
    fn good_names_come_back_lowercased() {
        let locals = locals();
        let ok = |name| validate_name(name, Some(&locals));
        assert_eq!(ok("alice@example.test").unwrap(), "alice@example.test");
        assert_eq!(
            ok("Alice.B+tag@EXAMPLE.test").unwrap(),
            "alice.b+tag@example.test"
        );
        assert_eq!(ok("bob@other.test").unwrap(), "bob@other.test");
        assert_eq!(ok("Ünï@example.test").unwrap(), "ünï@example.test");
        let longest = format!("{}@example.test", "a".repeat(MAX_LOCAL_PART_LEN));
        assert!(ok(longest.as_str()).is_ok());
        // Without a configuration any domain will do.
        assert_eq!(
            validate_name("x@Anywhere.Example", None).unwrap(),
            "x@anywhere.example"
        );
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        let locals = locals();
        let problem = |name: &str| match validate_name(name, Some(&locals)) {
            Err(UserError::BadName { problem, .. }) => problem,
            other => panic!("{name}: {other:?}"),
        };
        assert!(problem("alice").contains("local@domain"));
        assert!(problem("@example.test").contains("before @"));
        assert!(problem("alice@").contains("domain"));
        assert!(problem("alice@.example.test").contains("label"));
        assert!(problem("alice@example..test").contains("label"));
        assert!(problem("a@b@example.test").contains("more than one @"));
        assert!(problem("al ice@example.test").contains("whitespace"));
        assert!(problem("alice\n@example.test").contains("control"));
        assert!(problem("alice\0@example.test").contains("control"));
        let long_local = format!("{}@example.test", "a".repeat(MAX_LOCAL_PART_LEN + 1));
        assert!(problem(long_local.as_str()).contains("64"));
        let long = format!("a@{}.example.test", "d".repeat(250));
        assert!(problem(long.as_str()).contains("254"));
        // The echoed name cannot break the operator's terminal line.
        let text = validate_name("a\nb", None).unwrap_err().to_string();
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn names_outside_the_local_domains_are_refused() {
        let locals = locals();
        let err = validate_name("alice@elsewhere.test", Some(&locals)).unwrap_err();
        assert_eq!(
            err,
            UserError::NotLocal {
                domain: "elsewhere.test".into(),
                local: "example.test, Other.Test".into()
            }
        );
        let err = validate_name("alice@example.test", Some(&[])).unwrap_err();
        assert!(
            err.to_string().contains("smtp.local_domains: none"),
            "{err}"
        );
    }

    #[test]
    fn password_rules() {
        assert_eq!(validate_password(""), Err(UserError::EmptyPassword));
        assert_eq!(validate_password("x"), Ok(()));
        assert_eq!(validate_password(&"x".repeat(MAX_PASSWORD_LEN)), Ok(()));
        assert_eq!(
            validate_password(&"x".repeat(MAX_PASSWORD_LEN + 1)),
            Err(UserError::PasswordTooLong)
        );
    }

    #[test]
    fn new_account_and_password_change() {
        let locals = locals();
        let mut user = new_account("Alice@Example.Test", "s3cret", Some(&locals), 42).unwrap();
        assert_eq!(user.name, "alice@example.test");
        assert_eq!(user.created, 42);
        assert_eq!(verify_password("s3cret", &user.password_hash), Ok(true));
        assert_eq!(
            new_account("alice@example.test", "", Some(&locals), 42),
            Err(UserError::EmptyPassword)
        );
        let old = user.password_hash.clone();
        set_password(&mut user, "n3w").unwrap();
        assert_ne!(user.password_hash, old);
        assert_eq!(verify_password("n3w", &user.password_hash), Ok(true));
        assert_eq!(verify_password("s3cret", &user.password_hash), Ok(false));
        assert_eq!(user.created, 42);
        assert_eq!(set_password(&mut user, ""), Err(UserError::EmptyPassword));
    }

    #[test]
    fn every_error_reads_well() {
        let errors = [
            UserError::BadName {
                name: "x".into(),
                problem: "must be a full address, local@domain",
            },
            UserError::NotLocal {
                domain: "d.test".into(),
                local: "none".into(),
            },
            UserError::EmptyPassword,
            UserError::PasswordTooLong,
            UserError::Hash("invalid".into()),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{e:?}: {text}");
        }
    }
}
