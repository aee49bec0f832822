//! Users' Sieve scripts as their owners and operators manage them
//! (ManageSieve's model, RFC 5804): named scripts, at most one active.
//! One implementation for every way in — `ringpost user sieve`, the admin
//! API and the ManageSieve service — so each checks names, sizes and the
//! script itself by the same rules. Scripts are checked when stored, so
//! delivery never meets one that does not parse.

use crate::accounts::{existing, AccountError, Commit};
use ringpost_protocols::sieve;
use ringpost_storage::sieve as stored;
use ringpost_storage::{Store, StoreError, WriteBatch};
use serde::Serialize;
use std::borrow::Cow;

/// Most scripts one account may keep.
pub const MAX_SCRIPTS: usize = 32;
/// Longest script name, in characters.
pub const MAX_NAME: usize = 128;

/// Why a script operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The account is missing, or the store failed.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The script does not parse (or is too large).
    #[error("{0}")]
    Invalid(sieve::SieveError),
    /// The name breaks RFC 5804 §1.6's rules or is too long.
    #[error("not a script name: {0:?}")]
    BadName(String),
    /// No script has this name.
    #[error("no script {0:?}")]
    NoSuchScript(String),
    /// The active script cannot be deleted (§2.10).
    #[error("script {0:?} is active")]
    Active(String),
    /// A script of the new name exists (RENAMESCRIPT).
    #[error("a script {0:?} exists already")]
    Exists(String),
    /// [`MAX_SCRIPTS`] reached.
    #[error("at most {MAX_SCRIPTS} scripts")]
    TooMany,
}

impl From<StoreError> for ScriptError {
    fn from(e: StoreError) -> Self {
        ScriptError::Account(AccountError::Store(e))
    }
}

/// One script as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptInfo {
    /// Its name.
    pub name: String,
    /// Its size in octets.
    pub size: usize,
    /// Whether delivery runs it.
    pub active: bool,
}

/// A script name as RFC 5804 §1.6 allows: not empty, no control
/// characters, no line or paragraph separators; at most [`MAX_NAME`].
pub fn check_name(name: &str) -> Result<(), ScriptError> {
    let bad = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\0';
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(bad) {
        return Err(ScriptError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Check `text` as a script without storing it (ManageSieve CHECKSCRIPT).
pub fn check(text: &[u8]) -> Result<(), ScriptError> {
    sieve::check(text).map(drop).map_err(ScriptError::Invalid)
}

/// `user`'s scripts, in name order.
pub fn list(store: &dyn Store, user: &str) -> Result<Vec<ScriptInfo>, ScriptError> {
    let active = stored::active_name(store, user)?;
    Ok(stored::list(store, user)?
        .into_iter()
        .map(|(name, size)| ScriptInfo {
            active: active.as_deref() == Some(name.as_str()),
            name,
            size,
        })
        .collect())
}

/// A script name in the one form it is kept in: Unicode NFC, as RFC 5804
/// §1.6 has names be (RFC 5198), so that `é` typed as one character or
/// as `e` and an accent names the same script.
fn name_form(name: &str) -> Cow<'_, str> {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    match is_nfc_quick(name.chars()) {
        IsNormalized::Yes => Cow::Borrowed(name),
        _ => Cow::Owned(name.nfc().collect()),
    }
}

/// The text of `user`'s script `name`.
pub fn get(store: &dyn Store, user: &str, name: &str) -> Result<Vec<u8>, ScriptError> {
    let name = name_form(name);
    stored::script(store, user, &name)?.ok_or_else(|| ScriptError::NoSuchScript(name.into_owned()))
}

/// Store `text` as `user`'s script `name`, checked first; make it the
/// active one when `activate`.
pub fn put(
    store: &dyn Store,
    commit: Commit<'_>,
    user: &str,
    name: &str,
    text: &[u8],
    activate: bool,
) -> Result<(), ScriptError> {
    commit_with(commit, put_batch(store, user, name, text, activate)?)
}

/// Make `name` `user`'s active script, or none (`None`).
pub fn activate(
    store: &dyn Store,
    commit: Commit<'_>,
    user: &str,
    name: Option<&str>,
) -> Result<(), ScriptError> {
    commit_with(commit, activate_batch(store, user, name)?)
}

/// Delete `user`'s script `name`, which must not be the active one.
pub fn delete(
    store: &dyn Store,
    commit: Commit<'_>,
    user: &str,
    name: &str,
) -> Result<(), ScriptError> {
    commit_with(commit, delete_batch(store, user, name)?)
}

/// Rename `user`'s script `from` to `to`; an active script stays active.
pub fn rename(
    store: &dyn Store,
    commit: Commit<'_>,
    user: &str,
    from: &str,
    to: &str,
) -> Result<(), ScriptError> {
    commit_with(commit, rename_batch(store, user, from, to)?)
}

fn commit_with(commit: Commit<'_>, batch: WriteBatch) -> Result<(), ScriptError> {
    commit(batch).map_err(|e| ScriptError::Account(AccountError::Store(e)))
}

/// Whether `user` may store a script named `name` (ManageSieve's
/// HAVESPACE, and PUTSCRIPT's own check): a good name, and a place for it
/// among [`MAX_SCRIPTS`] unless it replaces one.
pub fn room(store: &dyn Store, user: &str, name: &str) -> Result<(), ScriptError> {
    let name = &*name_form(name);
    let user = existing(store, user)?.name;
    check_name(name)?;
    let scripts = stored::list(store, &user)?;
    if scripts.len() >= MAX_SCRIPTS && !scripts.iter().any(|(n, _)| n == name) {
        return Err(ScriptError::TooMany);
    }
    Ok(())
}

/// The batch [`put`] commits (for a caller that commits on its own, as a
/// shard does without blocking).
pub fn put_batch(
    store: &dyn Store,
    user: &str,
    name: &str,
    text: &[u8],
    activate: bool,
) -> Result<WriteBatch, ScriptError> {
    let name = &*name_form(name);
    let user = existing(store, user)?.name;
    check(text)?;
    room(store, &user, name)?;
    let mut batch = WriteBatch::new();
    stored::put_script(&mut batch, &user, name, text.to_vec());
    if activate {
        stored::set_active(&mut batch, &user, Some(name));
    }
    Ok(batch)
}

/// The batch [`activate`] commits.
pub fn activate_batch(
    store: &dyn Store,
    user: &str,
    name: Option<&str>,
) -> Result<WriteBatch, ScriptError> {
    let name = name.map(name_form);
    let name = name.as_deref();
    let user = existing(store, user)?.name;
    if let Some(name) = name {
        // A script stored by an older version is checked again: the one
        // delivery runs must parse.
        check(&get(store, &user, name)?)?;
    }
    let mut batch = WriteBatch::new();
    stored::set_active(&mut batch, &user, name);
    Ok(batch)
}

/// The batch [`delete`] commits.
pub fn delete_batch(store: &dyn Store, user: &str, name: &str) -> Result<WriteBatch, ScriptError> {
    let name = &*name_form(name);
    let user = existing(store, user)?.name;
    get(store, &user, name)?;
    if stored::active_name(store, &user)?.as_deref() == Some(name) {
        return Err(ScriptError::Active(name.to_owned()));
    }
    let mut batch = WriteBatch::new();
    stored::delete_script(&mut batch, &user, name);
    Ok(batch)
}

/// The batch [`rename`] commits.
pub fn rename_batch(
    store: &dyn Store,
    user: &str,
    from: &str,
    to: &str,
) -> Result<WriteBatch, ScriptError> {
    let (from, to) = (&*name_form(from), &*name_form(to));
    let user = existing(store, user)?.name;
    check_name(to)?;
    let text = get(store, &user, from)?;
    if stored::script(store, &user, to)?.is_some() {
        return Err(ScriptError::Exists(to.to_owned()));
    }
    let mut batch = WriteBatch::new();
    stored::delete_script(&mut batch, &user, from);
    stored::put_script(&mut batch, &user, to, text);
    if stored::active_name(store, &user)?.as_deref() == Some(from) {
        stored::set_active(&mut batch, &user, Some(to));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_storage::{CommitPipeline, MemoryStore, PipelineConfig};
    use std::sync::Arc;

    #[test]
    fn put_activate_rename_delete() {
        let store = Arc::new(MemoryStore::new());
        let (_pipeline, commits) =
            CommitPipeline::start(store.clone(), PipelineConfig::default(), None);
        let commit = |batch| commits.commit_blocking(batch);
        let store = &*store;
        crate::accounts::add(
            store,
            &commit,
            "alice@example.com",
            "a long password 1",
            None,
            0,
        )
        .unwrap();
        let user = "Alice@example.com";
        assert!(matches!(
            put(store, &commit, "nobody@example.com", "a", b"keep;", false),
            Err(ScriptError::Account(AccountError::NotFound(_)))
        ));
        let bad = put(store, &commit, user, "a", b"keep", false).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "line 1: expected ';' or a block after keep"
        );
        assert!(matches!(
            put(store, &commit, user, "a\nb", b"keep;", false),
            Err(ScriptError::BadName(_))
        ));
        put(store, &commit, user, "main", b"keep;", true).unwrap();
        put(store, &commit, user, "spare", b"discard;", false).unwrap();
        assert_eq!(
            list(store, user).unwrap(),
            [
                ScriptInfo {
                    name: "main".into(),
                    size: 5,
                    active: true
                },
                ScriptInfo {
                    name: "spare".into(),
                    size: 8,
                    active: false
                },
            ]
        );
        assert!(matches!(
            delete(store, &commit, user, "main"),
            Err(ScriptError::Active(_))
        ));
        assert!(matches!(
            rename(store, &commit, user, "main", "spare"),
            Err(ScriptError::Exists(_))
        ));
        rename(store, &commit, user, "main", "filters").unwrap();
        assert_eq!(
            stored::active_name(store, "alice@example.com")
                .unwrap()
                .as_deref(),
            Some("filters")
        );
        activate(store, &commit, user, Some("spare")).unwrap();
        delete(store, &commit, user, "filters").unwrap();
        assert!(matches!(
            activate(store, &commit, user, Some("filters")),
            Err(ScriptError::NoSuchScript(_))
        ));
        activate(store, &commit, user, None).unwrap();
        assert_eq!(stored::active(store, "alice@example.com").unwrap(), None);
        for i in 0..MAX_SCRIPTS - 1 {
            put(store, &commit, user, &format!("s{i}"), b"keep;", false).unwrap();
        }
        assert!(matches!(
            put(store, &commit, user, "one more", b"keep;", false),
            Err(ScriptError::TooMany)
        ));
        // HAVESPACE says so before the script is sent; replacing one
        // still has room.
        assert!(matches!(
            room(store, user, "one more"),
            Err(ScriptError::TooMany)
        ));
        assert!(room(store, user, "s0").is_ok());
        // One name, however its accents are written (NFC, RFC 5804 §1.6).
        put(store, &commit, user, "s1", b"keep;", false).unwrap();
        rename(store, &commit, user, "s1", "cafe\u{301}").unwrap();
        assert_eq!(get(store, user, "caf\u{e9}").unwrap(), b"keep;");
        assert!(matches!(
            put(store, &commit, user, "one more", b"keep;", false),
            Err(ScriptError::TooMany)
        ));
        put(store, &commit, user, "caf\u{e9}", b"discard;", false).unwrap();
        assert_eq!(get(store, user, "cafe\u{301}").unwrap(), b"discard;");
        assert!(matches!(
            room(store, user, "bad\nname"),
            Err(ScriptError::BadName(_))
        ));
        // Deleting the account leaves none of its scripts.
        crate::accounts::delete(store, &commit, user).unwrap();
        assert!(stored::list(store, "alice@example.com").unwrap().is_empty());
    }
}
