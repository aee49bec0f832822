//! The mailbox commands of RFC 9051 §6.3 and §6.4, run against the store.

use super::convert::{
    flags_from_imap, flags_to_imap, list_pattern, list_reference, mailbox_name, matches_pattern,
    micros_of, special_use, to_mailbox,
};
use super::view::{condstore_on, ranges_text, send_flags, send_modseq, View};
use super::{context, fetch, imap_tag::Tag, Conn};
use crate::conn::Connection;
use ringpost_protocols::imap::esearch::{sequence_set, SearchReturn};
use ringpost_protocols::imap::list::{ListExtended, ListReturn, ListSelect};
use ringpost_protocols::imap::multiappend::{AppendMessage, CatenatePart};
use ringpost_protocols::imap::search::{self, Bounds, Candidate};
use ringpost_protocols::imap::sort::{SortFields, Sortable};
use ringpost_protocols::imap::thread;
use ringpost_protocols::imap::types::command::{
    CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use ringpost_protocols::imap::types::core::{AString, Quoted, Vec1};
use ringpost_protocols::imap::types::extensions::binary::LiteralOrLiteral8;
use ringpost_protocols::imap::types::extensions::quota::{QuotaGet, Resource};
use ringpost_protocols::imap::types::extensions::sort::{SortCriterion, SortKey};
use ringpost_protocols::imap::types::extensions::thread::ThreadingAlgorithm;
use ringpost_protocols::imap::types::flag::{Flag, FlagNameAttribute, StoreResponse, StoreType};
use ringpost_protocols::imap::types::response::Data;
use ringpost_protocols::imap::types::search::SearchKey;
use ringpost_protocols::imap::types::sequence::SequenceSet;
use ringpost_protocols::imap::types::status::{StatusDataItem, StatusDataItemName};
use ringpost_protocols::imap::url::ImapUrl;
use ringpost_protocols::imap::{binary, Extra, ImapSession};
use ringpost_protocols::line_ends;
use ringpost_storage::mailbox::{
    self, flag, Applied, Change, FlagChange, MailboxRow, Refusal, INBOX,
};
use ringpost_storage::{quota, spool, users, Family, StoreError, WriteBatch};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::num::NonZeroU32;
use std::sync::Arc;

impl Conn<'_> {
    /// Run one command and write its tagged answer.
    pub(super) async fn command(
        &mut self,
        imap: &mut ImapSession,
        io: &mut Connection,
        tag: &Tag,
        body: CommandBody<'static>,
        extra: Extra,
    ) -> io::Result<()> {
        use CommandBody as C;
        self.shard.imap_metrics.commands.inc();
        // Mailbox names in modified UTF-7 for IMAP4rev1 sessions.
        let rev2 = imap.is_rev2();
        // RFC 9051 §7.5.1: no EXPUNGE during FETCH, STORE or SEARCH by number.
        let allow_expunge = !matches!(
            body,
            C::Fetch { uid: false, .. }
                | C::Store { uid: false, .. }
                | C::Search { uid: false, .. }
        );
        let outcome = match body {
            C::Noop | C::Check => Ok(Done::Ok("completed")),
            C::Select {
                mailbox,
                parameters,
            } => {
                self.select(imap, &mailbox_name(&mailbox, rev2), false, &parameters)
                    .await
            }
            C::Examine {
                mailbox,
                parameters,
            } => {
                self.select(imap, &mailbox_name(&mailbox, rev2), true, &parameters)
                    .await
            }
            C::Unselect => {
                self.view = None;
                imap.unselected();
                Ok(Done::Ok("UNSELECT completed"))
            }
            C::Close => {
                let result = self.expunge_deleted(imap, None, false).await;
                self.view = None;
                imap.unselected();
                result.map(|_| Done::Ok("CLOSE completed"))
            }
            C::Expunge => self
                .expunge_deleted(imap, None, true)
                .await
                .map(|_| Done::Ok("EXPUNGE completed")),
            C::ExpungeUid { sequence_set } => self
                .expunge_deleted(imap, Some(&sequence_set), true)
                .await
                .map(|_| Done::Ok("UID EXPUNGE completed")),
            C::Create { mailbox } => self.create(&mailbox_name(&mailbox, rev2)).await,
            C::Delete { mailbox } => self.delete(imap, &mailbox_name(&mailbox, rev2)).await,
            C::Rename { from, to } => {
                self.rename(&mailbox_name(&from, rev2), &mailbox_name(&to, rev2))
                    .await
            }
            C::Subscribe { mailbox } => self.subscribe(&mailbox_name(&mailbox, rev2), true).await,
            C::Unsubscribe { mailbox } => {
                self.subscribe(&mailbox_name(&mailbox, rev2), false).await
            }
            C::List {
                reference,
                mailbox_wildcard,
            } => {
                let request = match extra {
                    Extra::List(extended) => *extended,
                    _ => ListExtended {
                        select: ListSelect::default(),
                        returns: ListReturn::default(),
                        patterns: vec![mailbox_wildcard],
                    },
                };
                self.list(imap, &list_reference(&reference, rev2), &request)
            }
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => self.lsub(
                imap,
                &list_reference(&reference, rev2),
                &list_pattern(&mailbox_wildcard, rev2),
            ),
            C::Status {
                mailbox,
                item_names,
            } => self.status(imap, &mailbox_name(&mailbox, rev2), &item_names),
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                // MULTIAPPEND and CATENATE come taken apart; a plain
                // APPEND is its one message.
                let messages = match extra {
                    Extra::Appends(all) => all,
                    _ => vec![AppendMessage {
                        flags,
                        date,
                        message,
                        catenate: None,
                    }],
                };
                let unsettable =
                    |m: &AppendMessage| m.flags.iter().any(|f| matches!(f, Flag::Extension(_)));
                match messages.iter().any(unsettable) {
                    true => Ok(Done::Bad(UNSETTABLE_FLAG)),
                    false => {
                        self.append_command(&mailbox_name(&mailbox, rev2), messages)
                            .await
                    }
                }
            }
            // One key, so a message is read and parsed at most once.
            C::Search {
                criteria,
                uid,
                charset,
            } => match refused_charset(charset.as_ref().map(AsRef::as_ref)) {
                Some(refused) => Ok(refused),
                None => {
                    let answer = Answer::new(tag, uid, extra);
                    self.search(imap, &SearchKey::And(criteria), answer)
                }
            },
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                let changed_since = modifiers.iter().find_map(|m| match m {
                    FetchModifier::ChangedSince(since) => Some(since.get()),
                    FetchModifier::Vanished => None,
                });
                let vanished = modifiers.contains(&FetchModifier::Vanished);
                if vanished && (!uid || changed_since.is_none() || !imap.is_qresync()) {
                    // RFC 7162 §3.2.6: UID FETCH only, with CHANGEDSINCE,
                    // after ENABLE QRESYNC.
                    Ok(Done::Bad(
                        "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
                    ))
                } else {
                    let since = changed_since.unwrap_or(0);
                    let view = self.view.as_ref();
                    if let Some(view) = view.filter(|v| vanished && since < v.highest_modseq) {
                        // What went comes before what changed.
                        let store = &*self.shard.store;
                        let gone = view
                            .vanished_since(store, &sequence_set, 0, since)
                            .unwrap_or_else(|e| {
                                // Unread records: say more, never less.
                                tracing::warn!(error = %e, "imap: expunge records unreadable");
                                view.vanished(&sequence_set, 0)
                            });
                        if !gone.is_empty() {
                            imap.untagged(&format!("VANISHED (EARLIER) {}", ranges_text(&gone)));
                        }
                    }
                    fetch::run(
                        self,
                        imap,
                        io,
                        &sequence_set,
                        &macro_or_item_names,
                        uid,
                        changed_since,
                    )
                    .await?
                }
            }
            C::Store { flags, .. } if flags.iter().any(|f| matches!(f, Flag::Extension(_))) => {
                Ok(Done::Bad(UNSETTABLE_FLAG))
            }
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                let request = FlagStore {
                    set: &sequence_set,
                    how: match kind {
                        StoreType::Replace => FlagChange::Replace,
                        StoreType::Add => FlagChange::Add,
                        StoreType::Remove => FlagChange::Remove,
                    },
                    flags: flags_from_imap(&flags),
                    silent: response == StoreResponse::Silent,
                    uid,
                    unchanged_since: modifiers
                        .iter()
                        .map(|StoreModifier::UnchangedSince(since)| *since)
                        .next(),
                };
                self.store(imap, request).await
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy(
                    imap,
                    &sequence_set,
                    &mailbox_name(&mailbox, rev2),
                    uid,
                    false,
                )
                .await
            }
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy(
                    imap,
                    &sequence_set,
                    &mailbox_name(&mailbox, rev2),
                    uid,
                    true,
                )
                .await
            }
            C::Sort {
                sort_criteria,
                search_criteria,
                uid,
                charset,
            } => match refused_charset(Some(charset.as_ref())) {
                Some(refused) => Ok(refused),
                None => {
                    let answer = Answer::new(tag, uid, extra);
                    self.sort(
                        imap,
                        sort_criteria.as_ref(),
                        &SearchKey::And(search_criteria),
                        answer,
                    )
                }
            },
            C::Thread {
                algorithm,
                search_criteria,
                uid,
                charset,
            } => match refused_charset(Some(charset.as_ref())) {
                Some(refused) => Ok(refused),
                None => self.thread(imap, &algorithm, &SearchKey::And(search_criteria), uid),
            },
            C::GetQuotaRoot { mailbox } => self.quota_root(imap, &mailbox_name(&mailbox, rev2)),
            C::GetQuota { root } => self.quota(imap, root),
            C::SetQuota { .. } => Ok(Done::No(
                Some("NOPERM"),
                "quotas are set by the administrator (ringpost user quota)",
            )),
            _ => Ok(Done::Bad("command not supported")),
        };
        self.catch_up(imap, allow_expunge).await;
        self.report_updates(imap);
        // News a busy client's commands took is NOTIFY's news too.
        self.report_watched(imap);
        self.answer(imap, tag, outcome);
        Ok(())
    }

    /// The tagged answer to a command that ended with `outcome`.
    pub(super) fn answer(&self, imap: &mut ImapSession, tag: &Tag, outcome: Outcome) {
        match outcome {
            Ok(Done::Ok(text)) => imap.ok(tag, None, text),
            Ok(Done::OkCode(code, text)) => imap.ok(tag, Some(&code), text),
            Ok(Done::No(code, text)) => imap.no(tag, code, text),
            Ok(Done::NoCode(code, text)) => imap.no(tag, Some(&code), text),
            Ok(Done::Bad(text)) => imap.bad(tag, text),
            Err(e) => {
                let refused = matches!(e, StoreError::Refused(_));
                if !refused {
                    tracing::error!(shard = self.shard.id, error = %e, "imap command failed");
                }
                let (code, text) = refusal_text(&e);
                imap.no(tag, Some(code), text);
            }
        }
    }

    async fn select(
        &mut self,
        imap: &mut ImapSession,
        name: &str,
        read_only: bool,
        parameters: &[SelectParameter],
    ) -> Outcome {
        if parameters.contains(&SelectParameter::CondStore) {
            imap.enable_condstore();
        }
        let qresync = parameters.iter().find_map(|p| match p {
            SelectParameter::QResync {
                uid_validity,
                mod_sequence_value,
                known_uids,
                seq_match_data,
            } => Some((uid_validity, mod_sequence_value, known_uids, seq_match_data)),
            SelectParameter::CondStore => None,
        });
        if qresync.is_some() && !imap.is_qresync() {
            // RFC 7162 §3.2.5: only after ENABLE QRESYNC.
            return Ok(Done::Bad("QRESYNC is not enabled"));
        }
        if self.view.take().is_some() {
            imap.unselected();
            imap.untagged("OK [CLOSED] previous mailbox closed");
        }
        let show_recent = !imap.is_rev2();
        let load = |conn: &Self| {
            let (store, rows) = (&*conn.shard.store, &conn.shard.imap_rows);
            View::load(store, rows, conn.user(), name, read_only, show_recent)
        };
        let mut view = load(self)?;
        if view.is_none() && name == INBOX {
            // An account that never got mail has no INBOX yet.
            self.commit_one(Change::Create {
                user: self.user().to_owned(),
                mailbox: INBOX.to_owned(),
            })
            .await
            .or_else(|e| match e {
                StoreError::Refused(Refusal::MailboxExists) => Ok(Applied::Done),
                e => Err(e),
            })?;
            view = load(self)?;
        }
        let Some(view) = view else {
            return Ok(Done::No(Some("NONEXISTENT"), "no such mailbox"));
        };
        // News from before now is in the view already.
        self.take_news();
        self.view = Some(view);
        self.claim_recent().await;
        let view = self.view.as_ref().expect("just set");
        view.send_flags_list(imap);
        imap.untagged(&format!("{} EXISTS", view.messages.len()));
        view.send_recent(imap);
        imap.untagged(&format!("OK [UIDVALIDITY {}] UIDs valid", view.uidvalidity));
        imap.untagged(&format!("OK [UIDNEXT {}] predicted next UID", view.uidnext));
        imap.untagged(&format!(
            "OK [HIGHESTMODSEQ {}] highest modseq",
            view.highest_modseq.max(1)
        ));
        if let Some(first) = view
            .messages
            .iter()
            .position(|m| !m.row.flags.has(flag::SEEN))
        {
            imap.untagged(&format!("OK [UNSEEN {}] first unseen", first + 1));
        }
        if let Some((uidvalidity, modseq, known, matching)) = qresync {
            // A client that knew this mailbox hears what changed since
            // (RFC 7162 §3.2.5); another UIDVALIDITY means it must start over.
            // Every change, expunges included, raises HIGHESTMODSEQ: a
            // client that knew the highest one missed nothing.
            if uidvalidity.get() == view.uidvalidity && modseq.get() < view.highest_modseq {
                let everything = SequenceSet::try_from("1:*").expect("valid set");
                let known = known.as_ref().unwrap_or(&everything);
                let from = matching
                    .as_ref()
                    .map_or(0, |(seqs, uids)| view.unchanged_below(seqs, uids));
                let gone = view.vanished_since(&*self.shard.store, known, from, modseq.get())?;
                if !gone.is_empty() {
                    imap.untagged(&format!("VANISHED (EARLIER) {}", ranges_text(&gone)));
                }
                for index in view.select(known, true) {
                    let message = &view.messages[index];
                    if message.row.modseq > modseq.get() {
                        send_flags(imap, index + 1, message, true);
                    }
                }
            }
        }
        imap.selected();
        Ok(if read_only {
            Done::OkCode("READ-ONLY".into(), "EXAMINE completed")
        } else {
            Done::OkCode("READ-WRITE".into(), "SELECT completed")
        })
    }

    async fn commit_one(&self, change: Change) -> Result<Applied, StoreError> {
        let mut batch = WriteBatch::new();
        batch.change(change);
        Ok(self.commit(batch).await?.remove(0))
    }

    async fn create(&self, name: &str) -> Outcome {
        match creation(&*self.shard.store, self.user(), name)? {
            Creation::Invalid => Ok(Done::No(Some("CANNOT"), "invalid mailbox name")),
            Creation::TooMany => Ok(Done::No(Some("LIMIT"), "too many mailboxes")),
            Creation::Batch(batch) => {
                self.commit(batch).await?;
                Ok(Done::Ok("CREATE completed"))
            }
        }
    }

    async fn delete(&mut self, imap: &mut ImapSession, name: &str) -> Outcome {
        self.commit_one(Change::Delete {
            user: self.user().to_owned(),
            mailbox: name.to_owned(),
        })
        .await?;
        if self.view.as_ref().is_some_and(|v| v.name == name) {
            // The selected mailbox is gone: back to the authenticated state.
            self.view = None;
            imap.unselected();
            imap.untagged("OK [CLOSED] the selected mailbox was deleted");
        }
        Ok(Done::Ok("DELETE completed"))
    }

    async fn rename(&mut self, from: &str, to: &str) -> Outcome {
        if !valid_name(to) {
            return Ok(Done::No(Some("CANNOT"), "invalid mailbox name"));
        }
        let mut batch = WriteBatch::new();
        batch.change(Change::Rename {
            user: self.user().to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        });
        // Inferior names move along (RFC 9051 §6.3.6), INBOX's excepted.
        if from != INBOX {
            let children = format!("{from}/");
            for child in mailbox::list(&*self.shard.store, self.user())? {
                if let Some(rest) = child.name.strip_prefix(&children) {
                    batch.change(Change::Rename {
                        user: self.user().to_owned(),
                        from: child.name.clone(),
                        to: format!("{to}/{rest}"),
                    });
                }
            }
        }
        self.commit(batch).await?;
        // The selected mailbox keeps its UIDs under its new name.
        if let Some(view) = self.view.as_mut() {
            // INBOX stays where it is, and its children with it.
            let children = format!("{from}/");
            if from == INBOX {
                // Nothing the view names moved.
            } else if view.name == from {
                view.name = to.to_owned();
            } else if let Some(rest) = view.name.strip_prefix(&children) {
                view.name = format!("{to}/{rest}");
            }
        }
        Ok(Done::Ok("RENAME completed"))
    }

    async fn subscribe(&self, name: &str, subscribed: bool) -> Outcome {
        self.commit_one(Change::Subscribe {
            user: self.user().to_owned(),
            mailbox: name.to_owned(),
            subscribed,
        })
        .await?;
        Ok(Done::Ok(if subscribed {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        }))
    }

    /// LIST, plain (RFC 9051 §6.3.9) or extended (RFC 5258, 5819, 6154).
    fn list(&self, imap: &mut ImapSession, reference: &str, request: &ListExtended) -> Outcome {
        let ListExtended {
            select,
            returns,
            patterns,
        } = request;
        let patterns: Vec<String> = patterns
            .iter()
            .map(|p| format!("{reference}{}", list_pattern(p, imap.is_rev2())))
            .collect();
        if patterns.iter().all(|p| p == reference) && reference.is_empty() {
            // `LIST "" ""`: the hierarchy delimiter and root.
            imap.untagged("LIST (\\Noselect) \"/\" \"\"");
            return Ok(Done::Ok("LIST completed"));
        }
        let matches = |name: &str| {
            patterns.iter().any(|pattern| {
                if name == INBOX {
                    matches_pattern(pattern.to_ascii_uppercase().as_bytes(), b"INBOX")
                } else {
                    matches_pattern(pattern.as_bytes(), name.as_bytes())
                }
            })
        };
        let mut mailboxes = mailbox::list(&*self.shard.store, self.user())?;
        if !mailboxes.iter().any(|m| m.name == INBOX) {
            mailboxes.insert(
                0,
                mailbox::Mailbox {
                    name: INBOX.to_owned(),
                    meta: Default::default(),
                },
            );
        }
        let existing: BTreeSet<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
        let wants_subscriptions = select.subscribed || returns.subscribed;
        let subscribed: BTreeSet<String> = if wants_subscriptions {
            mailbox::subscriptions(&*self.shard.store, self.user())?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        // What the selection options pick, before the patterns.
        let picked: BTreeSet<&str> = if select.subscribed {
            subscribed.iter().map(String::as_str).collect()
        } else {
            existing.clone()
        };
        let picked: BTreeSet<&str> = picked
            .into_iter()
            .filter(|name| !select.special_use || special_use(name).is_some())
            .collect();
        // Name → CHILDINFO: whether it is shown only for a picked child
        // (RECURSIVEMATCH), or is a parent that does not exist.
        let mut shown: BTreeMap<&str, Shown> = BTreeMap::new();
        for &name in &picked {
            let listed = matches(name);
            if listed {
                shown.entry(name).or_default().itself = true;
            }
            for (at, _) in name.match_indices('/') {
                let parent = &name[..at];
                if !matches(parent) {
                    continue;
                }
                // CHILDINFO tells of a picked child the LIST leaves out
                // (RFC 5258 §3.5).
                if select.recursive_match && !listed {
                    shown.entry(parent).or_default().child_info = true;
                } else if !select.subscribed && !existing.contains(parent) && !listed {
                    // A parent whose mailbox was deleted: still a level.
                    shown.entry(parent).or_default();
                }
            }
        }
        let atom = |text: &'static str| {
            FlagNameAttribute::from(ringpost_protocols::imap::types::core::Atom::unvalidated(
                text,
            ))
        };
        for (name, how) in shown {
            let exists = existing.contains(name);
            let mut items = Vec::new();
            if !exists && how.itself {
                items.push(atom("NonExistent"));
            } else if !exists {
                items.push(FlagNameAttribute::Noselect);
            }
            let prefix = format!("{name}/");
            let children = existing.iter().any(|m| m.starts_with(&prefix));
            items.push(atom(if children {
                "HasChildren"
            } else {
                "HasNoChildren"
            }));
            if wants_subscriptions && subscribed.contains(name) {
                items.push(atom("Subscribed"));
            }
            if let Some(usage) = special_use(name).filter(|_| exists) {
                items.push(atom(usage));
            }
            let Some(mailbox) = to_mailbox(name, imap.is_rev2()) else {
                continue;
            };
            let delimiter = ringpost_protocols::imap::types::core::QuotedChar::try_from('/').ok();
            let data = Data::List {
                items,
                delimiter,
                mailbox,
            };
            if how.child_info {
                imap.data_extended(data, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            } else {
                imap.data(data);
            }
            // LIST-STATUS (RFC 5819 §2): a STATUS for each selectable one;
            // one that cannot be read is left out, not the whole LIST.
            if let Some(status_items) = returns.status.as_ref().filter(|_| exists) {
                if let Err(e) = self.status(imap, name, status_items) {
                    tracing::warn!(shard = self.shard.id, error = %e, "imap: LIST-STATUS of one mailbox failed");
                }
            }
        }
        Ok(Done::Ok("LIST completed"))
    }

    /// LSUB (RFC 3501 §6.3.9): the subscribed names that match. With `%`,
    /// a subscribed mailbox below what `%` reaches shows its ancestor at
    /// that level, flagged \Noselect unless the ancestor is subscribed.
    fn lsub(&self, imap: &mut ImapSession, reference: &str, pattern: &str) -> Outcome {
        if pattern.is_empty() {
            imap.untagged("LSUB (\\Noselect) \"/\" \"\"");
            return Ok(Done::Ok("LSUB completed"));
        }
        let full = format!("{reference}{pattern}");
        let matches = |name: &str| {
            if name == INBOX {
                matches_pattern(full.to_ascii_uppercase().as_bytes(), b"INBOX")
            } else {
                matches_pattern(full.as_bytes(), name.as_bytes())
            }
        };
        let subscribed = mailbox::subscriptions(&*self.shard.store, self.user())?;
        let mut shown: BTreeMap<&str, bool> = BTreeMap::new();
        for name in &subscribed {
            if matches(name) {
                shown.insert(name, false);
            } else {
                let ancestors = name.match_indices('/').map(|(at, _)| &name[..at]);
                if let Some(ancestor) = ancestors.rev().find(|a| matches(a)) {
                    shown.entry(ancestor).or_insert(true);
                }
            }
        }
        let existing = mailbox::list(&*self.shard.store, self.user())?;
        for (name, noselect) in shown {
            let prefix = format!("{name}/");
            let children = existing.iter().any(|m| m.name.starts_with(&prefix));
            let mut items = vec![FlagNameAttribute::from(
                ringpost_protocols::imap::types::core::Atom::unvalidated(if children {
                    "HasChildren"
                } else {
                    "HasNoChildren"
                }),
            )];
            if noselect {
                items.push(FlagNameAttribute::Noselect);
            }
            let Some(mailbox) = to_mailbox(name, imap.is_rev2()) else {
                continue;
            };
            let delimiter = ringpost_protocols::imap::types::core::QuotedChar::try_from('/').ok();
            imap.data(Data::Lsub {
                items,
                delimiter,
                mailbox,
            });
        }
        Ok(Done::Ok("LSUB completed"))
    }

    fn status(&self, imap: &mut ImapSession, name: &str, items: &[StatusDataItemName]) -> Outcome {
        let store = &*self.shard.store;
        let Some(meta) = mailbox::meta(store, self.user(), name)? else {
            if name == INBOX {
                // No mail yet: an empty INBOX.
                return self.status_of(imap, name, items, &mailbox::MailboxMeta::default(), &[]);
            }
            return Ok(Done::No(Some("NONEXISTENT"), "no such mailbox"));
        };
        let rows = self
            .shard
            .imap_rows
            .borrow_mut()
            .rows(store, self.user(), &meta)?;
        self.status_of(imap, name, items, &meta, &rows)
    }

    fn status_of(
        &self,
        imap: &mut ImapSession,
        name: &str,
        items: &[StatusDataItemName],
        meta: &mailbox::MailboxMeta,
        rows: &[(u32, MailboxRow)],
    ) -> Outcome {
        let count = |bit| rows.iter().filter(|(_, r)| r.flags.has(bit)).count() as u32;
        let mut out = Vec::new();
        for item in items {
            out.push(match item {
                StatusDataItemName::Messages => StatusDataItem::Messages(rows.len() as u32),
                StatusDataItemName::Recent => StatusDataItem::Recent(
                    rows.iter()
                        .filter(|(uid, _)| *uid >= meta.recent_from)
                        .count() as u32,
                ),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(
                    NonZeroU32::new(meta.uidnext).unwrap_or(NonZeroU32::MIN),
                ),
                StatusDataItemName::UidValidity => StatusDataItem::UidValidity(
                    NonZeroU32::new(meta.uidvalidity).unwrap_or(NonZeroU32::MIN),
                ),
                StatusDataItemName::Unseen => {
                    StatusDataItem::Unseen(rows.len() as u32 - count(flag::SEEN))
                }
                StatusDataItemName::Deleted => StatusDataItem::Deleted(count(flag::DELETED)),
                // RFC 9208 §4.2.2: what EXPUNGE would free, in the STORAGE
                // resource's unit (1024 octets, rounded up as GETQUOTA does).
                StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(
                    rows.iter()
                        .filter(|(_, r)| r.flags.has(flag::DELETED))
                        .map(|(_, r)| r.size)
                        .sum::<u64>()
                        .div_ceil(1024),
                ),
                // RFC 9051 §6.3.11: the mailbox's total size, in octets.
                StatusDataItemName::Size => {
                    StatusDataItem::Size(rows.iter().map(|(_, r)| r.size).sum())
                }
                StatusDataItemName::HighestModSeq => {
                    condstore_on(imap, self.view.as_ref());
                    StatusDataItem::HighestModSeq(meta.highest_modseq.max(1))
                }
            });
        }
        let Some(mailbox) = to_mailbox(name, imap.is_rev2()) else {
            return Ok(Done::No(Some("CANNOT"), "invalid mailbox name"));
        };
        imap.data(Data::Status {
            mailbox,
            items: out.into(),
        });
        Ok(Done::Ok("STATUS completed"))
    }

    /// The messages of an APPEND made ready to store: CATENATE ones
    /// assembled, binary content base64-encoded; then stored.
    async fn append_command(&mut self, name: &str, given: Vec<AppendMessage>) -> Outcome {
        // A mailbox that is not there is said before any URL is looked at
        // (RFC 4469 §6: TRYCREATE, as for any APPEND).
        let catenates = given.iter().any(|m| m.catenate.is_some());
        if catenates
            && !name.eq_ignore_ascii_case(mailbox::INBOX)
            && mailbox::meta(&*self.shard.store, self.user(), name)?.is_none()
        {
            return Ok(Done::No(Some("TRYCREATE"), "no such mailbox"));
        }
        let mut messages = Vec::with_capacity(given.len());
        // What all the messages come to, CATENATE's URLs resolved: within
        // the command limit too, or a few URLs to one large message could
        // ask for any amount of memory.
        let limit = self.shard.config().imap.max_command_size as usize;
        let mut total = 0usize;
        for m in given {
            // Text is stored with CRLF line ends, whatever the client wrote:
            // RFC822.SIZE, POP3's sizes and what both send must agree.
            // Binary content (a literal8, and CATENATE's parts, which may
            // be) is kept octet for octet.
            let bytes = match &m.catenate {
                Some(parts) => match self.catenate(parts)? {
                    Ok(bytes) => bytes,
                    Err(refused) => return Ok(refused),
                },
                None => match m.message {
                    LiteralOrLiteral8::Literal(l) => crlf(l.into_inner().into_owned()),
                    LiteralOrLiteral8::Literal8(l) => l.data.into_owned(),
                },
            };
            // Binary content (RFC 3516 §4.4) is kept base64-encoded.
            let Some(bytes) = binary::store_form(bytes) else {
                return Ok(Done::No(
                    Some("UNKNOWN-CTE"),
                    "binary content outside a body part cannot be stored",
                ));
            };
            total = total.saturating_add(bytes.len());
            if total > limit {
                return Ok(Done::No(Some("TOOBIG"), "the messages would be too big"));
            }
            let flags = flags_from_imap(&m.flags);
            if flags.keywords.len() > MAX_KEYWORDS {
                return Ok(Done::No(Some("LIMIT"), "too many keywords on a message"));
            }
            messages.push(NewMessage {
                flags,
                date: m.date.as_ref().map(micros_of),
                bytes,
            });
        }
        self.append(name, messages).await
    }

    /// A CATENATE message (RFC 4469): its TEXT parts and the (sections of)
    /// messages its URLs name, in order, at most `imap.max_command_size`
    /// octets. A URL that names nothing of this user's is refused with
    /// `BADURL`, the whole APPEND with it.
    fn catenate(&self, parts: &[CatenatePart]) -> Result<Result<Vec<u8>, Done>, StoreError> {
        let limit = self.shard.config().imap.max_command_size as usize;
        let mut out = Vec::new();
        for part in parts {
            match part {
                CatenatePart::Text(text) => out.extend_from_slice(text),
                CatenatePart::Url(url) => match self.resolve(url)? {
                    Some(bytes) => out.extend_from_slice(&bytes),
                    None => {
                        // In a response code: quoted, its controls made harmless.
                        let quoted = ringpost_protocols::imap::quoted(url);
                        return Ok(Err(Done::NoCode(
                            format!("BADURL {quoted}"),
                            "the URL names no message of yours",
                        )));
                    }
                },
            }
            if out.len() > limit {
                return Ok(Err(Done::No(
                    Some("TOOBIG"),
                    "the message would be too big",
                )));
            }
        }
        Ok(Ok(out))
    }

    /// The octets an IMAP URL names in this user's mailboxes, if any.
    fn resolve(&self, url: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(url) = ImapUrl::parse(url) else {
            return Ok(None);
        };
        self.resolve_for(self.user(), &url)
    }

    /// The octets `url` names in `user`'s mailboxes (the selected one when
    /// it names none), if any.
    pub(super) fn resolve_for(
        &self,
        user: &str,
        url: &ImapUrl,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(body) = self.message_for(user, url)? else {
            return Ok(None);
        };
        let Some(section) = url.fetch_section() else {
            return Ok(None);
        };
        Ok(Some(ringpost_protocols::imap::mime::section(
            &body,
            section.as_ref(),
            url.cut(),
        )))
    }

    /// The whole message a URL names in `user`'s mailboxes, if it is there.
    pub(super) fn message_for(
        &self,
        user: &str,
        url: &ImapUrl,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if url.user.is_some() && !url.user_is(user) {
            return Ok(None);
        }
        let name = match (&url.mailbox, &self.view) {
            (Some(name), _) => name.clone(),
            (None, Some(view)) => view.name.clone(),
            (None, None) => return Ok(None),
        };
        let Some(meta) = mailbox::meta(&*self.shard.store, user, &name)? else {
            return Ok(None);
        };
        if url.uidvalidity.is_some_and(|v| v != meta.uidvalidity) {
            return Ok(None);
        }
        let Some(row) = mailbox::row(&*self.shard.store, user, meta.uidvalidity, url.uid)? else {
            return Ok(None);
        };
        spool::read_body(&*self.shard.store, &row.message)
    }

    /// APPEND one message or, for MULTIAPPEND, several in one commit: all
    /// or none (RFC 3502 §6.3.11).
    async fn append(&mut self, name: &str, messages: Vec<NewMessage>) -> Outcome {
        let now = crate::intake::unix_micros();
        let size: u64 = messages.iter().map(|m| m.bytes.len() as u64).sum();
        if !self.has_room(messages.len() as u64, size)? {
            return Ok(Done::No(Some("OVERQUOTA"), "the account is at its quota"));
        }
        let mut batch = WriteBatch::new();
        for message in messages {
            let id = self.shard.next_id(now);
            let size = message.bytes.len() as u64;
            batch.put(Family::Blobs, id.0.to_vec(), message.bytes);
            batch.change(Change::Append {
                user: self.user().to_owned(),
                mailbox: name.to_owned(),
                row: MailboxRow {
                    message: id,
                    flags: message.flags,
                    internal_date: message.date.unwrap_or(now),
                    size,
                    modseq: 0,
                },
            });
        }
        let applied = match self.commit(batch).await {
            Err(StoreError::Refused(Refusal::NoSuchMailbox)) => {
                return Ok(Done::No(Some("TRYCREATE"), "no such mailbox"));
            }
            other => other?,
        };
        let mut uids = Vec::with_capacity(applied.len());
        let mut validity = None;
        for applied in &applied {
            if let Applied::Appended {
                uidvalidity, uid, ..
            } = *applied
            {
                validity = Some(uidvalidity);
                uids.push(uid);
            }
        }
        match validity {
            Some(uidvalidity) => Ok(Done::OkCode(
                format!("APPENDUID {uidvalidity} {}", sequence_set(&uids)),
                "APPEND completed",
            )),
            None => Ok(Done::Ok("APPEND completed")),
        }
    }

    fn search(
        &mut self,
        imap: &mut ImapSession,
        all_of: &SearchKey<'static>,
        answer: Answer,
    ) -> Outcome {
        let uid = answer.uid;
        let Some(view) = &self.view else {
            return Ok(Done::Bad("no mailbox selected"));
        };
        let with_modseq = search::uses_modseq(all_of);
        if with_modseq {
            condstore_on(imap, Some(view));
        }
        let mut found = Vec::new();
        let mut modseqs = Vec::new();
        for index in self.matching(view, all_of) {
            let message = &view.messages[index];
            found.push(if uid { message.uid } else { index as u32 + 1 });
            modseqs.push(message.row.modseq);
        }
        // A search by MODSEQ says the highest modseq of what it found
        // (RFC 7162 §3.1.5).
        if let Some(wanted) = answer.esearch {
            let modseq = wanted.modseq(&modseqs).filter(|_| with_modseq);
            imap.untagged(&wanted.response(answer.tag, uid, &found, modseq));
            if wanted.update {
                let uids: Vec<u32> = match uid {
                    true => found,
                    false => found
                        .iter()
                        .map(|&seq| view.messages[seq as usize - 1].uid)
                        .collect(),
                };
                self.keep_updated(imap, &answer, all_of, None, uids);
            }
            return Ok(Done::Ok("SEARCH completed"));
        }
        let modseq = modseqs.iter().copied().max().filter(|_| with_modseq);
        let mut line = String::from("SEARCH");
        for n in &found {
            line.push(' ');
            line.push_str(&n.to_string());
        }
        if let Some(modseq) = modseq {
            line.push_str(&format!(" (MODSEQ {modseq})"));
        }
        imap.untagged(&line);
        Ok(Done::Ok("SEARCH completed"))
    }

    /// Keep the result of a SEARCH or SORT RETURN (UPDATE) up to date
    /// (`uids`: the result, in its order), or say why not.
    fn keep_updated(
        &mut self,
        imap: &mut ImapSession,
        answer: &Answer,
        all_of: &SearchKey<'static>,
        sort: Option<context::Sorted>,
        uids: Vec<u32>,
    ) {
        let Some(view) = &mut self.view else {
            return;
        };
        let update = context::Update {
            tag: answer.tag.to_owned(),
            uid: answer.uid,
            key: all_of.clone(),
            sort,
            result: uids,
            checked: view
                .messages
                .iter()
                .map(|m| m.row.modseq)
                .max()
                .unwrap_or(0),
        };
        if !view.updates.add(update) {
            let tag = answer.tag.replace('\\', "\\\\").replace('"', "\\\"");
            imap.untagged(&format!(
                "NO [NOUPDATE \"{tag}\"] at most {} searches are kept up to date",
                context::MAX_UPDATES
            ));
        }
    }

    /// Tell the client how the results of its UPDATE searches changed
    /// since they last looked (RFC 5267 §4.3): only the messages whose
    /// modseq rose since are tried again.
    pub(super) fn report_updates(&mut self, imap: &mut ImapSession) {
        let Some(view) = self.view.as_mut() else {
            return;
        };
        if view.updates.is_empty() {
            return;
        }
        let mut updates = view.updates.take();
        let view = self.view.as_ref().expect("selected");
        let newest = view
            .messages
            .iter()
            .map(|m| m.row.modseq)
            .max()
            .unwrap_or(0);
        for update in &mut updates {
            let whole = context::shifts(&update.key);
            let tried: Vec<usize> = (0..view.messages.len())
                .filter(|&i| whole || view.messages[i].row.modseq > update.checked)
                .collect();
            update.checked = newest;
            if tried.is_empty() {
                continue;
            }
            let matched = self.matching_among(view, &update.key, tried.iter().copied());
            let store = &*self.shard.store;
            let mut fields_of = |index: usize| {
                let message = &view.messages[index];
                let arrival = (message.row.internal_date / 1_000_000) as i64;
                let body = spool::read_body_pinned(store, &message.row.message).ok()??;
                Some(context::sortable(
                    arrival,
                    message.row.size,
                    SortFields::of(&body, arrival),
                ))
            };
            update.report(imap, view, &tried, &matched, &mut fields_of);
        }
        if let Some(view) = self.view.as_mut() {
            view.updates.restore(updates);
        }
    }

    /// Indices of the view's messages that match `all_of`, ascending. A
    /// body is read (once) only for keys that need it.
    fn matching(&self, view: &View, all_of: &SearchKey<'static>) -> Vec<usize> {
        self.matching_among(view, all_of, 0..view.messages.len())
    }

    /// Those of `indices` (ascending) whose messages match `all_of`.
    fn matching_among(
        &self,
        view: &View,
        all_of: &SearchKey<'static>,
        indices: impl Iterator<Item = usize>,
    ) -> Vec<usize> {
        let store = &*self.shard.store;
        let bounds = Bounds {
            max_seq: view.messages.len() as u32,
            max_uid: view.messages.last().map_or(0, |m| m.uid),
            now: (crate::intake::unix_micros() / 1_000_000) as i64,
        };
        // Sets resolved and sorted once, for every message.
        let prepared = search::Prepared::new(all_of, bounds);
        let mut found = Vec::new();
        for index in indices {
            let message = &view.messages[index];
            let flags = flags_to_imap(&message.row.flags);
            let candidate = Candidate {
                seq: index as u32 + 1,
                uid: message.uid,
                flags: &flags,
                recent: message.recent,
                modseq: message.row.modseq,
                internal_date: (message.row.internal_date / 1_000_000) as i64,
                size: message.row.size,
            };
            let mut body: Option<Option<Arc<[u8]>>> = None;
            let mut load = || {
                body.get_or_insert_with(|| {
                    spool::read_body(store, &message.row.message)
                        .ok()
                        .flatten()
                        .map(Arc::from)
                })
                .clone()
            };
            if prepared.matches(&candidate, &mut load) {
                found.push(index);
            }
        }
        found
    }

    /// SORT (RFC 5256): the matching messages in the order asked.
    fn sort(
        &mut self,
        imap: &mut ImapSession,
        criteria: &[SortCriterion],
        all_of: &SearchKey<'static>,
        answer: Answer,
    ) -> Outcome {
        let uid = answer.uid;
        let Some(view) = &self.view else {
            return Ok(Done::Bad("no mailbox selected"));
        };
        let needs_header = criteria
            .iter()
            .any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size));
        let mut messages = self.sortable(view, all_of, needs_header)?;
        ringpost_protocols::imap::sort::sort(&mut messages, criteria);
        let numbers: Vec<u32> = messages
            .iter()
            .map(|sorted| match uid {
                true => view.messages[sorted.seq as usize - 1].uid,
                false => sorted.seq,
            })
            .collect();
        // SORT RETURN (...): ESORT (RFC 5267).
        if let Some(wanted) = answer.esearch {
            imap.untagged(&wanted.sorted_response(answer.tag, uid, &numbers));
            if wanted.update {
                let uids: Vec<u32> = messages
                    .iter()
                    .map(|s| view.messages[s.seq as usize - 1].uid)
                    .collect();
                let fields = uids.iter().copied().zip(messages).collect();
                let sorted = context::Sorted {
                    criteria: criteria.to_vec(),
                    fields,
                };
                self.keep_updated(imap, &answer, all_of, Some(sorted), uids);
            }
            return Ok(Done::Ok("SORT completed"));
        }
        let mut line = String::from("SORT");
        for number in &numbers {
            line.push_str(&format!(" {number}"));
        }
        imap.untagged(&line);
        Ok(Done::Ok("SORT completed"))
    }

    /// The messages matching `all_of` with what SORT and THREAD compare;
    /// their headers read only when `with_header`.
    fn sortable(
        &self,
        view: &View,
        all_of: &SearchKey<'static>,
        with_header: bool,
    ) -> Result<Vec<Sortable>, StoreError> {
        let store = &*self.shard.store;
        let mut messages = Vec::new();
        for index in self.matching(view, all_of) {
            let message = &view.messages[index];
            let arrival = (message.row.internal_date / 1_000_000) as i64;
            let fields = match with_header {
                true => match spool::read_body_pinned(store, &message.row.message)? {
                    Some(body) => SortFields::of(&body, arrival),
                    None => continue, // expunged meanwhile
                },
                false => SortFields::default(),
            };
            messages.push(Sortable {
                seq: index as u32 + 1,
                arrival,
                size: message.row.size,
                fields,
            });
        }
        Ok(messages)
    }

    /// THREAD (RFC 5256 §4), ORDEREDSUBJECT or REFERENCES.
    fn thread(
        &self,
        imap: &mut ImapSession,
        algorithm: &ThreadingAlgorithm<'_>,
        all_of: &SearchKey<'static>,
        uid: bool,
    ) -> Outcome {
        let Some(view) = &self.view else {
            return Ok(Done::Bad("no mailbox selected"));
        };
        let messages = self.sortable(view, all_of, true)?;
        let threads = match algorithm {
            ThreadingAlgorithm::OrderedSubject => thread::ordered_subject(&messages),
            ThreadingAlgorithm::References => thread::references(&messages),
            _ => return Ok(Done::Bad("unknown threading algorithm")),
        };
        let number = |i: usize| {
            let seq = messages[i].seq;
            if uid {
                view.messages[seq as usize - 1].uid
            } else {
                seq
            }
        };
        imap.untagged(&thread::response(&threads, number));
        Ok(Done::Ok("THREAD completed"))
    }

    async fn store(&mut self, imap: &mut ImapSession, request: FlagStore<'_>) -> Outcome {
        let FlagStore {
            set,
            how,
            flags: change,
            silent,
            uid,
            unchanged_since,
        } = request;
        let Some(view) = &self.view else {
            return Ok(Done::Bad("no mailbox selected"));
        };
        if view.read_only {
            return Ok(Done::No(Some("READ-ONLY"), "mailbox is read-only"));
        }
        if !uid && view.beyond_the_end(set) {
            return Ok(Done::Bad(BEYOND_THE_END));
        }
        if unchanged_since.is_some() {
            condstore_on(imap, Some(view));
        }
        let picked = view.select(set, uid);
        if picked.is_empty() {
            return Ok(Done::Ok("STORE completed"));
        }
        // Keywords are kept per message and merged by the one commit writer
        // every shard shares: a message carries a bounded number of them.
        // (A change that adds none passes, whatever a message carries.)
        let too_many = !change.keywords.is_empty()
            && picked.iter().any(|&index| {
                let have = &view.messages[index].row.flags.keywords;
                let new = |k: &&String| !have.iter().any(|h| h.eq_ignore_ascii_case(k));
                let after = match how {
                    FlagChange::Replace => change.keywords.len(),
                    FlagChange::Add => match change.keywords.iter().filter(new).count() {
                        0 => 0,
                        added => have.len() + added,
                    },
                    FlagChange::Remove => 0,
                };
                after > MAX_KEYWORDS
            });
        if too_many {
            return Ok(Done::No(Some("LIMIT"), "too many keywords on a message"));
        }
        // The change itself goes to the commit writer, which applies it to
        // the flags as stored: another session's change made meanwhile
        // (which this view may not show yet) is kept.
        let mut batch = WriteBatch::new();
        for &index in &picked {
            batch.change(Change::SetFlags {
                user: self.user().to_owned(),
                mailbox: view.name.clone(),
                uidvalidity: view.uidvalidity,
                uid: view.messages[index].uid,
                how,
                flags: change.clone(),
                unchanged_since,
            });
        }
        let applied = self.commit(batch).await?;
        let view = self.view.as_mut().expect("checked above");
        let mut modified = Vec::new();
        for (index, applied) in picked.into_iter().zip(applied) {
            let message = &view.messages[index];
            let (flags, modseq) = match applied {
                Applied::Flags { flags, modseq } => (flags, modseq),
                Applied::Modified { .. } => {
                    modified.push(if uid { message.uid } else { index as u32 + 1 });
                    continue;
                }
                _ => continue, // expunged meanwhile
            };
            let changed = modseq != message.row.modseq;
            view.announce(&flags, imap);
            let message = &mut view.messages[index];
            message.row.flags = flags;
            message.row.modseq = modseq;
            view.highest_modseq = view.highest_modseq.max(modseq);
            let message = &view.messages[index];
            if !silent {
                send_flags(imap, index + 1, message, uid);
            } else if changed && imap.is_condstore() {
                // .SILENT still tells a CONDSTORE client the new modseq
                // (RFC 7162 §3.1.3).
                send_modseq(imap, index + 1, message, uid);
            }
        }
        if !modified.is_empty() {
            let set: Vec<String> = modified.iter().map(u32::to_string).collect();
            return Ok(Done::OkCode(
                format!("MODIFIED {}", set.join(",")),
                "conditional STORE failed for some messages",
            ));
        }
        Ok(Done::Ok("STORE completed"))
    }

    async fn copy(
        &mut self,
        imap: &mut ImapSession,
        set: &SequenceSet,
        target: &str,
        uid: bool,
        remove: bool,
    ) -> Outcome {
        let Some(view) = &self.view else {
            return Ok(Done::Bad("no mailbox selected"));
        };
        if !uid && view.beyond_the_end(set) {
            return Ok(Done::Bad(BEYOND_THE_END));
        }
        if remove && view.read_only {
            return Ok(Done::No(Some("READ-ONLY"), "mailbox is read-only"));
        }
        let picked = view.select(set, uid);
        if picked.is_empty() {
            return Ok(Done::Ok("nothing to copy"));
        }
        // A MOVE within the account keeps its usage; a COPY adds to it.
        let bytes = picked.iter().map(|&i| view.messages[i].row.size).sum();
        if !remove && !self.has_room(picked.len() as u64, bytes)? {
            return Ok(Done::No(Some("OVERQUOTA"), "the account is at its quota"));
        }
        let view = self.view.as_ref().expect("checked above");
        let mut batch = WriteBatch::new();
        for &index in &picked {
            let message = &view.messages[index];
            batch.change(Change::Copy {
                user: self.user().to_owned(),
                mailbox: target.to_owned(),
                row: MailboxRow {
                    modseq: 0,
                    ..message.row.clone()
                },
                from_uidvalidity: view.uidvalidity,
                from_uid: message.uid,
            });
        }
        if remove {
            for &index in &picked {
                batch.change(self.expunge(view, view.messages[index].uid, false));
            }
        }
        let applied = match self.commit(batch).await {
            Err(StoreError::Refused(Refusal::NoSuchMailbox)) => {
                return Ok(Done::No(Some("TRYCREATE"), "no such mailbox"));
            }
            other => other?,
        };
        // Only what was copied: a message expunged elsewhere meanwhile
        // was not (and its body may be gone).
        let mut validity = 0;
        let mut new_uids = Vec::new();
        let mut old_uids = Vec::new();
        for (applied, &index) in applied[..picked.len()].iter().zip(&picked) {
            if let Applied::Appended {
                uidvalidity, uid, ..
            } = applied
            {
                validity = *uidvalidity;
                new_uids.push(*uid);
                old_uids.push(view.messages[index].uid);
            }
        }
        if new_uids.is_empty() {
            self.refresh(imap, true);
            return Ok(Done::No(
                Some("EXPUNGEISSUED"),
                "the messages were expunged",
            ));
        }
        let code = format!(
            "COPYUID {validity} {} {}",
            sequence_set(&old_uids),
            sequence_set(&new_uids)
        );
        if remove {
            // RFC 6851 §4.3: COPYUID goes untagged, before the EXPUNGEs.
            imap.untagged(&format!("OK [{code}] moved"));
            self.refresh(imap, true);
            return Ok(Done::Ok("MOVE completed"));
        }
        Ok(Done::OkCode(code, "COPY completed"))
    }

    /// Remove the messages flagged `\Deleted` (within `set`, for UID
    /// EXPUNGE), telling the client when `report`.
    async fn expunge_deleted(
        &mut self,
        imap: &mut ImapSession,
        set: Option<&SequenceSet>,
        report: bool,
    ) -> Result<(), StoreError> {
        if self.view.as_ref().is_none_or(|view| view.read_only) {
            return Ok(());
        }
        if report {
            // `\Deleted` set elsewhere since this session last looked
            // counts too (EXPUNGE responses are allowed here).
            self.refresh(imap, true);
        }
        let Some(view) = &self.view else {
            return Ok(());
        };
        let candidates = match set {
            Some(set) => view.select(set, true),
            None => (0..view.messages.len()).collect(),
        };
        let mut batch = WriteBatch::new();
        for index in candidates {
            let message = &view.messages[index];
            if message.row.flags.has(flag::DELETED) {
                // Only if still so when the writer gets to it: another
                // session may have taken the flag off meanwhile.
                batch.change(self.expunge(view, message.uid, true));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.commit(batch).await?;
        if report {
            self.refresh(imap, true);
        }
        Ok(())
    }
}

/// How a command ended, short of a store error.
pub(super) enum Done {
    Ok(&'static str),
    OkCode(String, &'static str),
    No(Option<&'static str>, &'static str),
    /// NO with a response code made for the occasion (`BADURL "..."`).
    NoCode(String, &'static str),
    Bad(&'static str),
}

pub(super) type Outcome = Result<Done, StoreError>;

/// The answer to a STORE or APPEND that names `\Recent` or another
/// backslash flag no client may set (RFC 9051 §2.3.2), as Dovecot says it.
const UNSETTABLE_FLAG: &str = "Invalid system flag: \\Recent and unknown \\ flags cannot be set";

/// `message` with CRLF line ends ([`line_ends`]), not copied when it has.
fn crlf(message: Vec<u8>) -> Vec<u8> {
    match line_ends::with_crlf(&message) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(repaired) => repaired,
    }
}

/// The BAD for a message number past the last (`Done::Bad` is static).
pub(super) const BEYOND_THE_END: &str = "invalid message sequence number: past the last message";
/// Keywords one message may carry (Dovecot's users rarely pass a dozen).
const MAX_KEYWORDS: usize = 128;

/// Mailboxes one account may have: each is listed, watched and kept in
/// memory by its sessions.
const MAX_MAILBOXES: usize = 10_000;

/// The answer to a SEARCH, SORT or THREAD in a charset other than the two
/// its strings are matched in (RFC 9051 §6.4.4: NO, naming those it takes).
fn refused_charset(charset: Option<&str>) -> Option<Done> {
    let taken = charset.is_none_or(|name| {
        name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII")
    });
    (!taken).then_some(Done::No(
        Some("BADCHARSET (US-ASCII UTF-8)"),
        "charset not supported",
    ))
}

/// A store error as the response code and text of a NO.
/// How a SEARCH is answered.
struct Answer<'a> {
    tag: &'a str,
    /// Numbers are UIDs (UID SEARCH).
    uid: bool,
    /// ESEARCH with these (RFC 4731), or else the SEARCH response.
    esearch: Option<SearchReturn>,
}

impl<'a> Answer<'a> {
    /// The answer a SEARCH or SORT with `extra` (its RETURN options) wants.
    fn new(tag: &'a Tag, uid: bool, extra: Extra) -> Self {
        Answer {
            tag: tag.as_ref(),
            uid,
            esearch: match extra {
                Extra::SearchReturn(wanted) => Some(wanted),
                _ => None,
            },
        }
    }
}

/// A STORE, as the command gave it.
struct FlagStore<'a> {
    set: &'a SequenceSet,
    how: FlagChange,
    flags: mailbox::Flags,
    /// `.SILENT`: no FETCH FLAGS in answer.
    silent: bool,
    uid: bool,
    /// RFC 7162 UNCHANGEDSINCE.
    unchanged_since: Option<u64>,
}

impl Conn<'_> {
    /// The account's quota and what it uses now.
    fn quota_state(&self) -> Result<(quota::Quota, quota::Usage), StoreError> {
        let store = &*self.shard.store;
        let default = self.shard.config().quota.default_quota();
        let limits = match users::get_user(store, self.user())? {
            Some(user) => quota::of(&user, default)?,
            None => default,
        };
        Ok((limits, quota::usage(store, self.user())?))
    }

    /// Whether the account may take `messages` more of `bytes` in all.
    fn has_room(&self, messages: u64, bytes: u64) -> Result<bool, StoreError> {
        let default = self.shard.config().quota.default_quota();
        let room = quota::room_for(&*self.shard.store, self.user(), default, messages, bytes)?;
        if room == Some(false) {
            self.shard.security.over_quota("imap");
            tracing::info!(
                shard = self.shard.id,
                user = self.user(),
                "imap: over quota"
            );
        }
        Ok(room != Some(false))
    }

    /// GETQUOTAROOT (RFC 9208 §4.3): every mailbox of an account is under
    /// its one quota root, "" (none when the account has no limit). The
    /// mailbox must exist; its name is said back as this server writes
    /// names, never in the client's form (a `{n+}` literal is the
    /// client's alone).
    fn quota_root(&self, imap: &mut ImapSession, name: &str) -> Outcome {
        if name != INBOX && mailbox::meta(&*self.shard.store, self.user(), name)?.is_none() {
            return Ok(Done::No(Some("NONEXISTENT"), "no such mailbox"));
        }
        let Some(mailbox) = to_mailbox(name, imap.is_rev2()) else {
            return Ok(Done::No(Some("CANNOT"), "invalid mailbox name"));
        };
        let (limits, usage) = self.quota_state()?;
        let roots = if limits.is_unlimited() {
            Vec::new()
        } else {
            vec![AString::from(Quoted::unvalidated(""))]
        };
        imap.data(Data::QuotaRoot { mailbox, roots });
        self.send_quota(imap, limits, usage);
        Ok(Done::Ok("GETQUOTAROOT completed"))
    }

    /// GETQUOTA (RFC 9208 §4.2) of the account's root, "".
    fn quota(&self, imap: &mut ImapSession, root: AString<'static>) -> Outcome {
        let (limits, usage) = self.quota_state()?;
        if !AsRef::<[u8]>::as_ref(&root).is_empty() || limits.is_unlimited() {
            return Ok(Done::No(Some("NONEXISTENT"), "no such quota root"));
        }
        self.send_quota(imap, limits, usage);
        Ok(Done::Ok("GETQUOTA completed"))
    }

    /// `* QUOTA "" (STORAGE used limit MESSAGE used limit)`, STORAGE in
    /// units of 1024 octets, only the resources that have a limit.
    fn send_quota(&self, imap: &mut ImapSession, limits: quota::Quota, usage: quota::Usage) {
        let mut quotas = Vec::new();
        if let Some(limit) = limits.storage {
            quotas.push(QuotaGet::new(
                Resource::Storage,
                usage.bytes.div_ceil(1024),
                limit / 1024,
            ));
        }
        if let Some(limit) = limits.messages {
            quotas.push(QuotaGet::new(Resource::Message, usage.messages, limit));
        }
        if let Ok(quotas) = Vec1::try_from(quotas) {
            imap.data(Data::Quota {
                root: AString::from(Quoted::unvalidated("")),
                quotas,
            });
        }
    }
}

/// How a name comes into a LIST.
#[derive(Debug, Default, Clone, Copy)]
struct Shown {
    /// It was picked and matches itself (else it is shown for a child).
    itself: bool,
    /// RECURSIVEMATCH: a child was picked (`CHILDINFO ("SUBSCRIBED")`).
    child_info: bool,
}

fn refusal_text(error: &StoreError) -> (&'static str, &'static str) {
    match error {
        StoreError::Refused(Refusal::NoSuchMailbox) => ("NONEXISTENT", "no such mailbox"),
        StoreError::Refused(Refusal::MailboxExists) => ("ALREADYEXISTS", "mailbox exists"),
        StoreError::Refused(Refusal::MailboxReplaced) => ("NONEXISTENT", "mailbox was replaced"),
        StoreError::Refused(Refusal::InboxIsPermanent) => ("CANNOT", "INBOX cannot be deleted"),
        StoreError::Refused(Refusal::UidsExhausted) => ("LIMIT", "mailbox is full"),
        _ => ("UNAVAILABLE", "storage failure, try again later"),
    }
}

/// A mailbox name the store and clients can live with.
/// What creating a mailbox takes ([`creation`]).
pub(crate) enum Creation {
    /// This batch (the mailbox and any superior names it lacks).
    Batch(WriteBatch),
    /// The name cannot be a mailbox.
    Invalid,
    /// The account has [`MAX_MAILBOXES`] already.
    TooMany,
}

/// The changes that create `user`'s mailbox `name`, as IMAP CREATE and
/// Sieve's `fileinto :create` make it: superior names come into being too
/// (RFC 9051 §6.3.4), and an account holds at most [`MAX_MAILBOXES`].
pub(crate) fn creation(
    store: &dyn ringpost_storage::Store,
    user: &str,
    name: &str,
) -> Result<Creation, StoreError> {
    if !valid_name(name) {
        return Ok(Creation::Invalid);
    }
    if mailbox::list(store, user)?.len() >= MAX_MAILBOXES {
        return Ok(Creation::TooMany);
    }
    let mut batch = WriteBatch::new();
    let mut prefix = String::new();
    let levels: Vec<&str> = name.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(level);
        let last = i + 1 == levels.len();
        if last || mailbox::meta(store, user, &prefix)?.is_none() {
            batch.change(Change::Create {
                user: user.to_owned(),
                mailbox: prefix.clone(),
            });
        }
    }
    Ok(Creation::Batch(batch))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && !name.starts_with('/')
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
}

/// A message APPEND stores: its flags, internal date and bytes.
struct NewMessage {
    flags: mailbox::Flags,
    date: Option<u64>,
    bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_lists_fold_runs() {
        assert_eq!(sequence_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(sequence_set(&[5]), "5");
        assert_eq!(sequence_set(&[]), "");
    }

    #[test]
    fn mailbox_names() {
        assert!(valid_name("Work/2026"));
        for bad in ["", "/x", "a//b", "a*", "a%b", "a\nb"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
