//! The admin API's bearer token: a random secret in a file only the
//! server's user can read (mode 0600), made at first start. Whoever can
//! read the file may administer the server; the CLI reads it the same way.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file name of the token in the data dir.
pub const TOKEN_FILE: &str = "admin.token";

/// The file, in the data dir, where a running server says where its
/// control plane listens (`ringpost user ...` finds it there).
pub const ADDRESS_FILE: &str = "admin.addr";

/// Where the token of the server with `data_dir` lives.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Where the server with `data_dir` says where its control plane listens.
pub fn address_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADDRESS_FILE)
}

/// A bearer token.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `path`, or a new one written there (0600) when there
    /// is none yet.
    pub fn load_or_create(path: &Path) -> io::Result<Token> {
        match fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                warn_if_readable_by_others(path);
                return Ok(Token(text.trim().to_owned()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| io::Error::other("no randomness for the admin token"))?;
        let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        // `mode` applies only to a file it creates: one that was there
        // (empty, made by hand or restored) is made private before the
        // secret goes in.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()?;
        Ok(Token(token))
    }

    /// The token as sent: `Authorization: Bearer <token>`.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token,
    /// compared in constant time.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let given = authorization
            .and_then(|v| v.split_at_checked(7))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "));
        let Some((_, given)) = given else {
            return false;
        };
        let given = given.trim_ascii();
        let expected = self.0.as_bytes();
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// Say so when the token file can be read by others than its owner: the
/// token is the whole control plane.
fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the admin token file can be read by others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(dir.path());
        let token = Token::load_or_create(&path).unwrap();
        assert_eq!(token.secret().len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restart reads the same token.
        assert_eq!(
            Token::load_or_create(&path).unwrap().secret(),
            token.secret()
        );
        // An empty file left readable by others is made private before
        // the new secret goes in.
        let other = dir.path().join("touched.token");
        fs::write(&other, "").unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o644)).unwrap();
        Token::load_or_create(&other).unwrap();
        let mode = fs::metadata(&other).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let header = format!("Bearer {}", token.secret());
        assert!(token.admits(Some(header.as_bytes())));
        let lower = format!("bearer {}", token.secret());
        assert!(token.admits(Some(lower.as_bytes())));
        assert!(!token.admits(None));
        assert!(!token.admits(Some(b"Bearer wrong")));
        assert!(!token.admits(Some(token.secret().as_bytes())));
        let mut off_by_one = header.into_bytes();
        *off_by_one.last_mut().unwrap() ^= 1;
        assert!(!token.admits(Some(&off_by_one)));
    }
}
