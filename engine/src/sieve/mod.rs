//! Users' Sieve filters at delivery: for each local account a message is
//! about to go into, its active script (if any) decides where the copy
//! goes instead, with which flags, whether it also goes on elsewhere, is
//! refused, or is answered while they are away.
//!
//! Everything the filters decide is carried out in the delivery's own
//! commit: the filed copies, the redirects' queue entries, the vacation
//! replies and their memory. A `250` still means all of it is on disk.
//! A script that fails at run time keeps the message in INBOX (RFC 5228
//! §2.10.6), and so does a `fileinto` to a mailbox that does not exist.
//!
//! [`scripts`] is how scripts get there: the rules for names and sizes,
//! shared by `ringpost user sieve`, the admin API and ManageSieve.

pub mod scripts;

use crate::intake;
use crate::shard::Shard;
use ringpost_protocols::sieve::{self, vacation, Mail, Outcome};
use ringpost_protocols::smtp::dsn::{Action, Diagnostic, RecipientStatus};
use ringpost_protocols::smtp::{replies::Reply, Transaction};
use ringpost_storage::mailbox::{self, flag, Flags};
use ringpost_storage::spool::{Filing, NewMessage};
use ringpost_storage::{StoreError, WriteBatch};

/// What the filters add to the delivery's commit.
#[derive(Default)]
pub(crate) struct Filtered {
    /// Messages of their own: vacation replies, reports of rejections.
    pub messages: Vec<NewMessage>,
    /// State to write with it (when each sender may hear again).
    pub state: WriteBatch,
    /// Accounts whose filter refused the message while others took it,
    /// with the refusal: over LMTP a recipient all of whose accounts
    /// refused is answered so (RFC 2033 §4.2), and the MTA in front
    /// reports it.
    pub refused: Vec<(String, Reply)>,
}

/// The server-wide filter at `path` (`smtp.sieve_filter`), read and
/// checked; the error names the file and the line.
pub fn server_filter(path: &std::path::Path) -> Result<sieve::Script, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    sieve::check(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Run the server-wide filter (`smtp.sieve_filter`) over `message`: its
/// redirects become recipients (copies to an archive), and once the keep
/// is cancelled (`discard`, a plain `redirect`) the recipients given get
/// nothing; `Err` refuses the message (`reject`). Its other actions
/// (fileinto, flags, vacation) are for users' own scripts and do nothing
/// here. A run that fails delivers the message as addressed.
pub(crate) fn server_verdict(
    shard: &Shard,
    script: &sieve::Script,
    tx: &Transaction,
    message: &mut NewMessage,
) -> Result<(), Reply> {
    let config = shard.config();
    let outcome = sieve::run(
        script,
        &Mail {
            message: &message.body,
            envelope_from: &tx.mail_from,
            envelope_to: tx.recipients.first().map_or("", String::as_str),
            detail_separator: config.smtp.recipient_delimiter.chars().next(),
        },
    );
    if let Some(error) = &outcome.error {
        shard.security.sieve("server_error");
        tracing::warn!(shard = shard.id, error = %error, "server Sieve filter failed; delivered as addressed");
        return Ok(());
    }
    if let Some(reason) = &outcome.reject {
        shard.security.sieve("server_reject");
        tracing::info!(shard = shard.id, reason = %reason, "server Sieve filter rejected a message");
        return Err(Reply::new(550, "5.7.1", reply_text(reason)));
    }
    let remote =
        |a: &String| !config.is_local_domain(&intake::recipient_domain(a, &config.hostname));
    if shard.hub.is_none() && outcome.redirects.iter().any(remote) {
        shard.security.sieve("server_error");
        tracing::warn!(shard = shard.id, "server Sieve filter redirects to a remote address with the relay off; delivered as addressed");
        return Ok(());
    }
    if outcome.filings.is_empty() {
        // The keep was cancelled: the recipients given get nothing.
        message.mailboxes.clear();
        message.junk.clear();
        message.filed.clear();
        message.queue.clear();
        message.envelope.recipients.clear();
    }
    if !outcome.redirects.is_empty() {
        shard.security.sieve("server_redirect");
        redirect(shard, message, outcome.redirects);
    }
    if message.goes_nowhere() {
        shard.security.sieve("server_discard");
        tracing::info!(shard = shard.id, sender = %tx.mail_from, "server Sieve filter discarded a message");
    }
    Ok(())
}

/// How long a redirect is remembered: the same message (by its
/// Message-ID, or its body when it has none) reaching the same user again
/// within it is not sent to the same address again. That ends forwarding
/// loops between filters on the first round (Pigeonhole's duplicate
/// check does the same), and a sender's retry is not forwarded twice.
const REDIRECT_MEMORY_SECS: u64 = 86_400;

/// Keys looked at when expired memory is cleared.
const FORGET_SCAN: usize = 4096;

/// Run the active script of each account in `message.mailboxes` and
/// rewrite `message` by their outcomes. `Err`: the message is to be
/// refused with this reply (every local recipient rejected it and it has
/// nowhere else to go).
pub(crate) async fn filter(
    shard: &Shard,
    tx: &Transaction,
    message: &mut NewMessage,
    sender_vouched: bool,
    now_micros: u64,
) -> Result<Filtered, Reply> {
    let mut filtered = Filtered::default();
    if message.mailboxes.is_empty() {
        return Ok(filtered);
    }
    let now = now_micros / 1_000_000;
    // Each account's script runs once per message: those the message was
    // sent to, then those a script redirected it to here (whose own
    // filters see it as mail for them), each at most once, so filters
    // that send to each other end.
    let mut work: std::collections::VecDeque<(String, Option<String>)> = message
        .mailboxes
        .iter()
        .map(|u| (u.clone(), None))
        .collect();
    let mut seen: std::collections::HashSet<String> = message.mailboxes.iter().cloned().collect();
    let mut rejected: Vec<(String, String)> = Vec::new();
    let mut refused_users: Vec<(String, String)> = Vec::new();
    let mut redirects: Vec<String> = Vec::new();
    while let Some((user, redirected_to)) = work.pop_front() {
        let Some(script) = active_script(shard, &user) else {
            continue;
        };
        let config = shard.config();
        let envelope_to = redirected_to.unwrap_or_else(|| envelope_recipient(shard, tx, &user));
        let separator = config.smtp.recipient_delimiter.chars().next();
        let mut outcome = sieve::run(
            &script,
            &Mail {
                message: &message.body,
                envelope_from: &tx.mail_from,
                envelope_to: &envelope_to,
                detail_separator: separator,
            },
        );
        let remote =
            |a: &String| !config.is_local_domain(&intake::recipient_domain(a, &config.hostname));
        if shard.hub.is_none() && outcome.redirects.iter().any(remote) {
            outcome = Outcome::implicit_keep(Some(
                "redirect to a remote address with the relay off".into(),
            ));
        }
        if let Some(error) = &outcome.error {
            shard.security.sieve("error");
            tracing::warn!(shard = shard.id, user, error = %error, "Sieve script failed; kept in INBOX");
        }
        if let Some(reason) = &outcome.reject {
            shard.security.sieve("reject");
            message.mailboxes.retain(|u| *u != user);
            rejected.push((envelope_to.clone(), reason.clone()));
            refused_users.push((user.clone(), reason.clone()));
            continue;
        }
        if let Some(vacation) = &outcome.vacation {
            let addresses = [user.as_str(), envelope_to.as_str()];
            match vacation_reply(shard, tx, message, &addresses, vacation, now_micros) {
                Ok(Some((reply, key, until))) => {
                    shard.security.sieve("vacation");
                    ringpost_storage::sieve::remember(&mut filtered.state, &user, &key, until);
                    forget_sometimes(shard, &mut filtered.state, &user, &key, now);
                    filtered.messages.push(reply);
                }
                Ok(None) => shard.security.sieve("vacation_skipped"),
                Err(e) => {
                    tracing::error!(shard = shard.id, user, error = %e, "vacation memory unreadable; no reply sent")
                }
            }
        }
        file(shard, message, &user, &outcome).await;
        for address in &outcome.redirects {
            let key = redirect_key(&message.body, address);
            match ringpost_storage::sieve::remembers(&*shard.store, &user, &key, now) {
                Ok(false) => {}
                Ok(true) => {
                    shard.security.sieve("redirect_duplicate");
                    tracing::info!(shard = shard.id, user, to = %address, "Sieve redirect of a message sent there already (a loop, or a retry): not sent again");
                    continue;
                }
                Err(e) => {
                    tracing::error!(shard = shard.id, user, error = %e, "redirect memory unreadable");
                }
            }
            ringpost_storage::sieve::remember(
                &mut filtered.state,
                &user,
                &key,
                now + REDIRECT_MEMORY_SECS,
            );
            forget_sometimes(shard, &mut filtered.state, &user, &key, now);
            shard.security.sieve("redirect");
            tracing::info!(shard = shard.id, user, to = %address, "Sieve redirect");
            let local =
                config.is_local_domain(&intake::recipient_domain(address, &config.hostname));
            if !local {
                if !redirects.iter().any(|r| r.eq_ignore_ascii_case(address)) {
                    redirects.push(address.clone());
                }
                continue;
            }
            // Mail for a local address: its account's filter runs too (an
            // alias's remote targets go through the relay).
            for target in intake::local_targets_in(&config, &*shard.store)(address) {
                let target_local =
                    config.is_local_domain(&intake::recipient_domain(&target, &config.hostname));
                if !target_local {
                    if !redirects.iter().any(|r| r.eq_ignore_ascii_case(&target)) {
                        redirects.push(target);
                    }
                } else if seen.insert(target.clone()) {
                    message.mailboxes.push(target.clone());
                    work.push_back((target, Some(address.clone())));
                }
            }
        }
    }
    if !redirects.is_empty() {
        redirect(shard, message, redirects);
    }
    if !rejected.is_empty() {
        if message.goes_nowhere() {
            let reason = reply_text(&rejected[0].1);
            tracing::info!(
                shard = shard.id,
                users = rejected.len(),
                "Sieve reject; answered 550"
            );
            return Err(Reply::new(550, "5.7.1", reason));
        }
        filtered.refused = refused_users
            .iter()
            .map(|(user, reason)| (user.clone(), Reply::new(550, "5.7.1", reply_text(reason))))
            .collect();
        // Others take the message: the refusal goes to the sender as a
        // DSN, if the sender is theirs to trust (else it would be
        // backscatter to a forged address).
        if !tx.mail_from.is_empty() && sender_vouched {
            filtered
                .messages
                .push(rejection_report(shard, message, &rejected, now_micros));
        } else {
            tracing::info!(shard = shard.id, users = rejected.len(), sender = %tx.mail_from, "Sieve reject of mail from an unverified sender: dropped without a report");
        }
    }
    Ok(filtered)
}

/// `user`'s active script, parsed; `None` when there is none or it cannot
/// be read (the message then goes to INBOX as without a filter).
fn active_script(shard: &Shard, user: &str) -> Option<sieve::Script> {
    let text = match ringpost_storage::sieve::active(&*shard.store, user) {
        Ok(text) => text?,
        Err(e) => {
            tracing::error!(shard = shard.id, user, error = %e, "could not read the Sieve script; kept in INBOX");
            return None;
        }
    };
    match sieve::check(&text) {
        Ok(script) => Some(script),
        Err(e) => {
            // Checked at upload; a script an older version took that no
            // longer parses must still not lose mail.
            shard.security.sieve("error");
            tracing::warn!(shard = shard.id, user, error = %e, "Sieve script does not parse; kept in INBOX");
            None
        }
    }
}

/// What a redirect of this message to `address` is remembered by: its
/// Message-ID, or its body (below our trace fields, which differ at each
/// pass) when it has none.
fn redirect_key(message: &[u8], address: &str) -> String {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 4);
    let id = message[..header_end]
        .split(|&b| b == b'\n')
        .find(|line| line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:"))
        .map(|line| line[11..].trim_ascii());
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    match id {
        Some(id) if !id.is_empty() => context.update(id),
        _ => context.update(&message[header_end..]),
    }
    context.update(b"\0");
    context.update(address.to_ascii_lowercase().as_bytes());
    let digest = context.finish();
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("redirect/{hex}")
}

/// Clear `user`'s expired memory now and then (one new key in 64, picked
/// by the key's own hash), so it does not grow with every sender ever.
fn forget_sometimes(shard: &Shard, batch: &mut WriteBatch, user: &str, key: &str, now: u64) {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    if digest.as_ref()[0] % 64 != 0 {
        return;
    }
    if let Err(e) =
        ringpost_storage::sieve::forget_expired(&*shard.store, batch, user, now, FORGET_SCAN)
    {
        tracing::warn!(shard = shard.id, user, error = %e, "could not clear expired Sieve memory");
    }
}

/// The address this delivery came to `user` by: the first recipient of
/// the transaction whose targets include them (an alias, an address
/// with a detail), else the account name.
fn envelope_recipient(shard: &Shard, tx: &Transaction, user: &str) -> String {
    shard.with_recipients(|to| {
        tx.recipients
            .iter()
            .find(|rcpt| intake::targets_of(rcpt, to).iter().any(|t| t == user))
            .cloned()
            .unwrap_or_else(|| user.to_owned())
    })
}

/// Where `user`'s copy goes by `outcome`: INBOX (in `message.mailboxes`)
/// when it is kept there without flags, otherwise a [`Filing`]; copies
/// for one mailbox are one, their flags joined. A mailbox that does not
/// exist is made when the script said `:create`; otherwise the copy goes
/// to INBOX.
async fn file(shard: &Shard, message: &mut NewMessage, user: &str, outcome: &Outcome) {
    message.mailboxes.retain(|u| u != user);
    if outcome.filings.is_empty() && outcome.redirects.is_empty() {
        shard.security.sieve("discard");
        tracing::info!(shard = shard.id, user, "Sieve discard");
    }
    let mut plan: Vec<(String, Flags)> = Vec::new();
    for filing in &outcome.filings {
        let inbox = filing.mailbox.eq_ignore_ascii_case(mailbox::INBOX);
        let mut name = match inbox {
            true => mailbox::INBOX.to_owned(),
            false => filing.mailbox.clone(),
        };
        if !inbox && !mailbox_ready(shard, user, &name, filing.create).await {
            tracing::info!(shard = shard.id, user, mailbox = %name, "Sieve fileinto a missing mailbox; filed in INBOX");
            name = mailbox::INBOX.to_owned();
        }
        shard.security.sieve(match inbox {
            true => "keep",
            false => "fileinto",
        });
        let flags = flags_of(&filing.flags);
        match plan.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.system |= flags.system;
                for keyword in flags.keywords {
                    if !joined
                        .keywords
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(&keyword))
                    {
                        joined.keywords.push(keyword);
                    }
                }
            }
            None => plan.push((name, flags)),
        }
    }
    for (name, flags) in plan {
        if name == mailbox::INBOX && flags == Flags::default() {
            message.mailboxes.push(user.to_owned());
        } else {
            message.filed.push(Filing {
                user: user.to_owned(),
                mailbox: name,
                flags,
            });
        }
    }
}

/// Whether `user`'s mailbox `name` exists, made first if `create`.
async fn mailbox_ready(shard: &Shard, user: &str, name: &str, create: bool) -> bool {
    match mailbox::meta(&*shard.store, user, name) {
        Ok(Some(_)) => return true,
        Ok(None) if create => {}
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(shard = shard.id, user, error = %e, "mailbox lookup failed");
            return false;
        }
    }
    let batch = match crate::imap::creation(&*shard.store, user, name) {
        Ok(crate::imap::Creation::Batch(batch)) => batch,
        Ok(_) => return false,
        Err(e) => {
            tracing::error!(shard = shard.id, user, error = %e, "mailbox lookup failed");
            return false;
        }
    };
    match shard.commits.commit(batch).await {
        Ok(()) => true,
        Err(StoreError::Refused(ringpost_storage::mailbox::Refusal::MailboxExists)) => true,
        Err(e) => {
            tracing::warn!(shard = shard.id, user, mailbox = name, error = %e, "Sieve :create failed");
            false
        }
    }
}

/// IMAP flags as stored: system flags by bit, keywords as atoms (others,
/// and `\Recent`, which no one may set, are left out).
fn flags_of(names: &[String]) -> Flags {
    let mut flags = Flags::default();
    for name in names {
        let bit = match name.to_ascii_lowercase().as_str() {
            "\\seen" => flag::SEEN,
            "\\answered" => flag::ANSWERED,
            "\\flagged" => flag::FLAGGED,
            "\\deleted" => flag::DELETED,
            "\\draft" => flag::DRAFT,
            _ => 0,
        };
        if bit != 0 {
            flags.system |= bit;
            continue;
        }
        let atom = !name.is_empty()
            && name.len() <= 100
            && name.bytes().all(|b| {
                b.is_ascii_graphic()
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
            });
        if atom && !flags.keywords.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            flags.keywords.push(name.clone());
        }
    }
    flags
}

/// Send the message on to the remote `addresses` through the queue, with
/// the original sender (local ones were made recipients already, their
/// own filters run).
fn redirect(shard: &Shard, message: &mut NewMessage, addresses: Vec<String>) {
    // Remote ones with the relay off never get here: their run was made a
    // failure (the message kept) before.
    shard.with_recipients(|to| intake::add_recipients(message, &addresses, to));
}

/// A vacation reply to the sender, with the memory key and expiry (Unix
/// seconds) that keep them from hearing again too soon; `None` when the
/// message gets no reply. `addresses`: the account, then the address the
/// mail came to (the reply is from that one, unless `:from`).
fn vacation_reply(
    shard: &Shard,
    tx: &Transaction,
    message: &NewMessage,
    addresses: &[&str; 2],
    vacation: &sieve::script::Vacation,
    now_micros: u64,
) -> Result<Option<(NewMessage, String, u64)>, StoreError> {
    let [user, came_to] = *addresses;
    let sender = match vacation::reply_to(&message.body, &tx.mail_from, addresses, vacation) {
        Ok(sender) => sender,
        Err(why) => {
            tracing::debug!(shard = shard.id, user, ?why, "no vacation reply");
            return Ok(None);
        }
    };
    let key = vacation::tracking_key(user, &sender, vacation);
    let now = now_micros / 1_000_000;
    if ringpost_storage::sieve::remembers(&*shard.store, user, &key, now)? {
        return Ok(None);
    }
    let config = shard.config();
    let remote = !config.is_local_domain(&intake::recipient_domain(&sender, &config.hostname));
    if remote && shard.hub.is_none() {
        return Ok(None);
    }
    // A `:from` the user may not send from (the sender policy decides, as
    // for submitted mail) is not used: the reply is signed by the keys of
    // its From domain, and must not speak for someone else.
    let submission = shard.smtp_config();
    let vacation = match vacation::from_address(vacation) {
        Some(from)
            if !submission
                .sender_policy
                .allows(user, from, &submission.sender_addresses) =>
        {
            tracing::info!(
                shard = shard.id,
                user,
                from,
                "vacation :from is not the user's; replied from the address the mail came to"
            );
            std::borrow::Cow::Owned(sieve::script::Vacation {
                from: None,
                ..vacation.clone()
            })
        }
        _ => std::borrow::Cow::Borrowed(vacation),
    };
    let id = shard.next_id(now_micros);
    let message_id = format!("{}@{}", id.to_hex(), config.hostname);
    let date = crate::relay::bounce::rfc2822(now_micros);
    let body = vacation::compose(
        &vacation,
        &vacation::Reply {
            original: &message.body,
            user: came_to,
            to: &sender,
            message_id: &message_id,
            date: &date,
        },
    );
    // Signed as the user's own mail is: it leaves From their address.
    let body = crate::dkim::signed_generated(shard.dkim.as_deref(), body);
    // From the null sender: nothing may answer an automatic reply.
    let reply = shard.with_recipients(|to| {
        intake::stored(id, body, "", std::slice::from_ref(&sender), to, now_micros)
    });
    tracing::info!(shard = shard.id, user, to = %sender, "Sieve vacation reply queued");
    Ok(Some((reply, key, now + vacation.days * 86_400)))
}

/// A DSN to the sender saying these addresses refused the message, with
/// the reasons their owners' filters gave.
fn rejection_report(
    shard: &Shard,
    message: &NewMessage,
    rejected: &[(String, String)],
    now_micros: u64,
) -> NewMessage {
    let statuses: Vec<RecipientStatus> = rejected
        .iter()
        .map(|(address, reason)| RecipientStatus {
            recipient: address.clone(),
            action: Action::Failed,
            status: "5.7.1".into(),
            remote_mta: None,
            diagnostic: Some(Diagnostic::Local(format!(
                "550 5.7.1 {}",
                reply_text(reason)
            ))),
            meaning: Some("The recipient's mail filter refused the message.".into()),
            original_recipient: None,
        })
        .collect();
    shard.with_recipients(|to| {
        crate::relay::bounce::new_dsn(
            shard.next_id(now_micros),
            to,
            &message.id,
            &message.envelope,
            &message.body,
            &statuses,
            now_micros,
        )
    })
}

/// A reason as reply text: one line of printable ASCII, not too long.
fn reply_text(reason: &str) -> String {
    let line: String = reason
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect();
    let line = line.trim();
    match line.is_empty() {
        true => "Message refused by the recipient's filter".into(),
        false => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_by_name() {
        let flags = flags_of(&[
            "\\Seen".into(),
            "\\FLAGGED".into(),
            "\\Recent".into(),
            "$Work".into(),
            "$work".into(),
            "bad(atom".into(),
        ]);
        assert_eq!(flags.system, flag::SEEN | flag::FLAGGED);
        assert_eq!(flags.keywords, ["$Work"]);
    }

    #[test]
    fn reasons_become_one_clean_line() {
        assert_eq!(reply_text("No\r\nthanks,\tbye é"), "No thanks, bye");
        assert_eq!(
            reply_text("\r\n"),
            "Message refused by the recipient's filter"
        );
        assert_eq!(reply_text(&"x".repeat(500)).len(), 200);
    }
}
