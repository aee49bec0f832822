//! Mailbox cases: local delivery, UIDs, folders and body references, all
//! through the commit pipeline (the only way mailbox changes are applied).

use super::{wait_until, Gated};
use crate::mailbox::{self, flag, Applied, Change, FlagChange, Flags, MailboxRow, Refusal, INBOX};
use crate::spool::{self, Envelope, MessageId, NewMessage, QueueEntry};
use crate::{CommitHandle, CommitPipeline, Family, PipelineConfig, Store, StoreError, WriteBatch};
use std::sync::{Arc, Mutex};

/// A pipeline over `store` whose listener records the accounts it hears of.
fn start(store: Arc<dyn Store>) -> (CommitPipeline, CommitHandle, Arc<Mutex<Vec<String>>>) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let record = heard.clone();
    let (pipeline, handle) = CommitPipeline::start_with_listener(
        store,
        PipelineConfig::default(),
        None,
        Some(Box::new(move |user: &str| {
            record.lock().unwrap().push(user.to_owned())
        })),
    );
    (pipeline, handle, heard)
}

/// A message for `locals` (INBOX) and, if given, one remote recipient.
fn delivery(seq: u64, locals: &[&str], remote: Option<&str>) -> NewMessage {
    let id = MessageId::new(1_700_000_000_000_000 + seq, 0, seq);
    let body = format!("Subject: {seq}\r\n\r\nbody {seq}\r\n").into_bytes();
    let queue = remote
        .map(|rcpt| QueueEntry {
            due: 1,
            id,
            domain: rcpt.rsplit_once('@').unwrap().1.to_owned(),
            recipients: vec![rcpt.to_owned()],
            ..Default::default()
        })
        .into_iter()
        .collect();
    NewMessage {
        id,
        envelope: Envelope {
            sender: "a@example.org".into(),
            received_at: 1_700_000_000_000_000 + seq,
            size: body.len() as u64,
            recipients: remote.map(str::to_owned).into_iter().collect(),
            dsn: Default::default(),
        },
        body,
        queue,
        mailboxes: locals.iter().map(|u| u.to_string()).collect(),
        junk: Vec::new(),
        filed: Vec::new(),
    }
}

fn change(commits: &CommitHandle, change: Change) -> Result<Applied, StoreError> {
    let mut batch = WriteBatch::new();
    batch.change(change);
    commits
        .commit_changes_blocking(batch)
        .map(|mut applied| applied.remove(0))
}

fn inbox(store: &dyn Store, user: &str) -> mailbox::MailboxMeta {
    mailbox::meta(store, user, INBOX)
        .unwrap()
        .expect("INBOX exists")
}

fn uids(store: &dyn Store, user: &str, mailbox: &str) -> Vec<u32> {
    let meta = mailbox::meta(store, user, mailbox).unwrap().unwrap();
    mailbox::all_rows(store, user, meta.uidvalidity)
        .unwrap()
        .into_iter()
        .map(|(uid, _)| uid)
        .collect()
}

fn body_exists(store: &dyn Store, id: &MessageId) -> bool {
    spool::read_body(store, id).unwrap().is_some()
}

/// One message for two local users and a remote one: one body, two INBOX
/// rows, one queue entry; the body outlives whichever holder goes first.
pub fn mailbox_local_delivery_shares_one_body(store: Arc<dyn Store>) {
    let (pipeline, commits, heard) = start(store.clone());
    let store = &*store;
    let m = delivery(1, &["Alice@Ours.test", "bob@ours.test"], Some("c@far.test"));
    let applied = commits
        .commit_changes_blocking(m.clone().into_batch())
        .unwrap();
    let alice = inbox(store, "alice@ours.test");
    assert!(
        alice.uidvalidity > 1_600_000_000,
        "UIDVALIDITY starts from the clock"
    );
    assert_eq!(
        applied[0],
        Applied::Appended {
            uidvalidity: alice.uidvalidity,
            uid: 1,
            modseq: 2
        }
    );
    assert_ne!(inbox(store, "bob@ours.test").uidvalidity, alice.uidvalidity);
    let rows = mailbox::all_rows(store, "alice@ours.test", alice.uidvalidity).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.message, m.id);
    assert_eq!(rows[0].1.size, m.body.len() as u64);
    assert_eq!(rows[0].1.internal_date, m.envelope.received_at);
    assert_eq!(mailbox::refs(store, &m.id).unwrap(), 2);
    assert!(spool::read_envelope(store, &m.id).unwrap().is_some());
    wait_until("the listener", || heard.lock().unwrap().len() == 2);
    assert_eq!(
        *heard.lock().unwrap(),
        vec!["alice@ours.test".to_owned(), "bob@ours.test".to_owned()]
    );

    // The relay finishes first: envelope gone, body kept for the rows.
    let mut batch = WriteBatch::new();
    spool::delete_queue_entry(&mut batch, &m.queue[0]);
    spool::delete_message(&mut batch, &m.id);
    commits.commit_blocking(batch).unwrap();
    assert!(spool::read_envelope(store, &m.id).unwrap().is_none());
    assert!(body_exists(store, &m.id));

    // Alice expunges: Bob still has it.
    let expunge = |user: &str, uid| Change::Expunge {
        user: user.into(),
        mailbox: INBOX.into(),
        uidvalidity: inbox(store, user).uidvalidity,
        uid,
        if_deleted: false,
    };
    assert_eq!(
        change(&commits, expunge("alice@ours.test", 1)),
        Ok(Applied::Changed { modseq: 3 })
    );
    assert_eq!(
        change(&commits, expunge("alice@ours.test", 1)),
        Ok(Applied::Gone),
        "expunging twice is no error"
    );
    // The expunge is recorded with its modseq, for QRESYNC.
    let alice_inbox = inbox(store, "alice@ours.test").uidvalidity;
    let since = |modseq| mailbox::expunged_since(store, "alice@ours.test", alice_inbox, modseq);
    assert_eq!(since(2).unwrap(), Some(vec![1]));
    assert_eq!(since(3).unwrap(), Some(vec![]));
    assert_eq!(since(0).unwrap(), Some(vec![1]), "recorded since creation");
    assert!(body_exists(store, &m.id));
    assert_eq!(mailbox::refs(store, &m.id).unwrap(), 1);
    // Bob too: the body goes with the last row.
    change(&commits, expunge("bob@ours.test", 1)).unwrap();
    assert!(!body_exists(store, &m.id));
    assert_eq!(mailbox::refs(store, &m.id).unwrap(), 0);
    // UIDs are never reused.
    commits
        .commit_blocking(delivery(2, &["alice@ours.test"], None).into_batch())
        .unwrap();
    assert_eq!(uids(store, "alice@ours.test", INBOX), vec![2]);
    pipeline.shutdown();
}

/// Mail only for local users has no envelope; the body goes with the last
/// row, and a relay that finishes last deletes it instead.
pub fn mailbox_body_goes_with_its_last_holder(store: Arc<dyn Store>) {
    let (pipeline, commits, _) = start(store.clone());
    let store = &*store;
    let local = delivery(1, &["a@ours.test"], None);
    commits.commit_blocking(local.clone().into_batch()).unwrap();
    assert!(spool::read_envelope(store, &local.id).unwrap().is_none());
    assert_eq!(spool::stats(store).unwrap().messages, 0);
    let uidvalidity = inbox(store, "a@ours.test").uidvalidity;
    change(
        &commits,
        Change::Expunge {
            user: "a@ours.test".into(),
            mailbox: INBOX.into(),
            uidvalidity,
            uid: 1,
            if_deleted: false,
        },
    )
    .unwrap();
    assert!(!body_exists(store, &local.id));

    // Rows go first, the relay last.
    let both = delivery(2, &["a@ours.test"], Some("x@far.test"));
    commits.commit_blocking(both.clone().into_batch()).unwrap();
    change(
        &commits,
        Change::Expunge {
            user: "a@ours.test".into(),
            mailbox: INBOX.into(),
            uidvalidity,
            uid: 2,
            if_deleted: false,
        },
    )
    .unwrap();
    assert!(body_exists(store, &both.id), "the relay still needs it");
    let mut batch = WriteBatch::new();
    spool::delete_queue_entry(&mut batch, &both.queue[0]);
    spool::delete_message(&mut batch, &both.id);
    commits.commit_blocking(batch).unwrap();
    assert!(!body_exists(store, &both.id));
    assert!(spool::read_envelope(store, &both.id).unwrap().is_none());
    pipeline.shutdown();
}

/// Deleting an account removes every mailbox and row it had, in one
/// commit with its account row; a body another account still holds stays.
pub fn mailbox_account_deletion_takes_its_mailboxes(store: Arc<dyn Store>) {
    let (pipeline, commits, heard) = start(store.clone());
    let store = &*store;
    let shared = delivery(1, &["a@ours.test", "b@ours.test"], None);
    let own = delivery(2, &["a@ours.test"], None);
    for message in [&shared, &own] {
        commits
            .commit_blocking(message.clone().into_batch())
            .unwrap();
    }
    for folder in ["Work", "Work/Old"] {
        change(
            &commits,
            Change::Create {
                user: "a@ours.test".into(),
                mailbox: folder.into(),
            },
        )
        .unwrap();
    }
    let copy = MailboxRow {
        message: own.id,
        flags: Flags::default(),
        internal_date: 1,
        size: own.body.len() as u64,
        modseq: 0,
    };
    change(
        &commits,
        Change::Append {
            user: "a@ours.test".into(),
            mailbox: "Work".into(),
            row: copy,
        },
    )
    .unwrap();
    assert_eq!(mailbox::list(store, "a@ours.test").unwrap().len(), 3);

    let mut batch = WriteBatch::new();
    crate::users::delete_user(&mut batch, "A@ours.test");
    commits.commit_changes_blocking(batch).unwrap();
    assert!(mailbox::list(store, "a@ours.test").unwrap().is_empty());
    let mut rows = 0;
    store
        .scan(
            Family::Mailboxes,
            b"a@ours.test\0",
            Some(b"a@ours.test\x01"),
            &mut |_, _| {
                rows += 1;
                true
            },
        )
        .unwrap();
    assert_eq!(rows, 0);
    assert!(!body_exists(store, &own.id), "no one holds it any more");
    assert!(body_exists(store, &shared.id), "b still holds it");
    assert_eq!(uids(store, "b@ours.test", INBOX), [1]);
    assert!(heard.lock().unwrap().contains(&"a@ours.test".to_owned()));
    // Nothing left to delete is no error.
    let mut batch = WriteBatch::new();
    crate::users::delete_user(&mut batch, "a@ours.test");
    commits.commit_changes_blocking(batch).unwrap();
    pipeline.shutdown();
}

/// Concurrent deliveries to one mailbox get distinct, ascending UIDs with
/// no gaps, however the writer groups them.
pub fn mailbox_uids_are_sequenced(store: Arc<dyn Store>) {
    let (pipeline, commits, _) = start(store.clone());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let commits = commits.clone();
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|n| {
                        let m = delivery(t * 100 + n, &["a@ours.test"], None);
                        match &commits.commit_changes_blocking(m.into_batch()).unwrap()[0] {
                            Applied::Appended { uid, .. } => *uid,
                            other => panic!("{other:?}"),
                        }
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| {
            let uids = t.join().unwrap();
            assert!(
                uids.windows(2).all(|w| w[0] < w[1]),
                "one sender sees ascending UIDs"
            );
            uids
        })
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u32>>());
    let meta = inbox(&*store, "a@ours.test");
    assert_eq!(meta.uidnext, 201);
    assert_eq!(meta.highest_modseq, 201);
    assert_eq!(uids(&*store, "a@ours.test", INBOX).len(), 200);
    // The mailbox's count and size are kept with every append.
    let rows = mailbox::all_rows(&*store, "a@ours.test", meta.uidvalidity).unwrap();
    let bytes = rows.iter().map(|(_, row)| row.size).sum::<u64>();
    assert_eq!((meta.messages, meta.bytes), (200, bytes));

    // \Recent: sessions claiming at once each get a share, never the same
    // message twice, and all of them in the end.
    let claim = |up_to| {
        let commits = commits.clone();
        std::thread::spawn(move || {
            let claim = Change::ClaimRecent {
                user: "a@ours.test".into(),
                mailbox: INBOX.into(),
                uidvalidity: meta.uidvalidity,
                up_to,
            };
            match change(&commits, claim) {
                Ok(Applied::Recent { from }) => (from, up_to),
                other => panic!("{other:?}"),
            }
        })
    };
    let mut claimed: Vec<(u32, u32)> = [50, 120, 201, 201]
        .map(claim)
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|(from, up_to)| from < up_to)
        .collect();
    claimed.sort_unstable();
    assert_eq!(claimed[0].0, 1, "{claimed:?}");
    assert!(claimed.windows(2).all(|w| w[0].1 == w[1].0), "{claimed:?}");
    assert_eq!(claimed.last().unwrap().1, 201, "{claimed:?}");
    assert_eq!(inbox(&*store, "a@ours.test").recent_from, 201);
    pipeline.shutdown();
}

/// CREATE, RENAME (INBOX too), SUBSCRIBE, flags and DELETE, with the
/// refusals an IMAP server turns into NO.
pub fn mailbox_folders(store: Arc<dyn Store>) {
    let (pipeline, commits, _) = start(store.clone());
    let store = &*store;
    let user = "u@ours.test";
    let create = |name: &str| Change::Create {
        user: user.into(),
        mailbox: name.into(),
    };
    assert_eq!(change(&commits, create("Work")), Ok(Applied::Done));
    assert_eq!(
        change(&commits, create("Work")),
        Err(StoreError::Refused(Refusal::MailboxExists))
    );

    // Append to a missing mailbox: refused, and the body is not written either.
    let lost = delivery(9, &[], None);
    let mut batch = lost.clone().into_batch();
    batch.change(Change::Append {
        user: user.into(),
        mailbox: "Nowhere".into(),
        row: MailboxRow {
            message: lost.id,
            ..Default::default()
        },
    });
    assert_eq!(
        commits.commit_changes_blocking(batch),
        Err(StoreError::Refused(Refusal::NoSuchMailbox))
    );
    assert!(!body_exists(store, &lost.id));

    // Two messages in INBOX, one copied to Work (same body, another row).
    let first = delivery(1, &[user], None);
    commits.commit_blocking(first.clone().into_batch()).unwrap();
    commits
        .commit_blocking(delivery(2, &[user], None).into_batch())
        .unwrap();
    let inbox_validity = inbox(store, user).uidvalidity;
    let copy_of = |uid| Change::Copy {
        user: user.into(),
        mailbox: "Work".into(),
        row: MailboxRow {
            message: first.id,
            ..Default::default()
        },
        from_uidvalidity: inbox_validity,
        from_uid: uid,
    };
    // A copy of a row that is gone (expunged elsewhere) adds nothing.
    assert_eq!(change(&commits, copy_of(7)), Ok(Applied::Gone));
    let copied = change(&commits, copy_of(1)).unwrap();
    let work = mailbox::meta(store, user, "Work").unwrap().unwrap();
    assert!(
        matches!(copied, Applied::Appended { uid: 1, uidvalidity, .. } if uidvalidity == work.uidvalidity)
    );
    assert_eq!(mailbox::refs(store, &first.id).unwrap(), 2);

    // Flags: a new modseq, and none when nothing changes.
    let seen = Flags {
        system: flag::SEEN,
        keywords: vec!["$Label1".into()],
    };
    let set_flags = |uidvalidity| Change::SetFlags {
        user: user.into(),
        mailbox: "Work".into(),
        uidvalidity,
        uid: 1,
        how: FlagChange::Replace,
        flags: seen.clone(),
        unchanged_since: None,
    };
    let modseq = work.highest_modseq + 1;
    let flagged = Ok(Applied::Flags {
        modseq,
        flags: seen.clone(),
    });
    assert_eq!(change(&commits, set_flags(work.uidvalidity)), flagged);
    assert_eq!(change(&commits, set_flags(work.uidvalidity)), flagged);
    assert_eq!(
        mailbox::row(store, user, work.uidvalidity, 1)
            .unwrap()
            .unwrap()
            .flags,
        seen
    );
    assert_eq!(
        change(&commits, set_flags(work.uidvalidity + 1)),
        Err(StoreError::Refused(Refusal::MailboxReplaced))
    );

    // +FLAGS and -FLAGS apply to the flags as stored: one session adds
    // \Answered, another (which never saw it) removes \Seen; both stay done.
    let flag_change = |how, system| Change::SetFlags {
        user: user.into(),
        mailbox: "Work".into(),
        uidvalidity: work.uidvalidity,
        uid: 1,
        how,
        flags: Flags {
            system,
            keywords: Vec::new(),
        },
        unchanged_since: None,
    };
    let mut both = WriteBatch::new();
    both.change(flag_change(FlagChange::Add, flag::ANSWERED));
    let added = commits.commit_changes_blocking(both).unwrap();
    let mut other = WriteBatch::new();
    other.change(flag_change(FlagChange::Remove, flag::SEEN));
    let second = commits.commit_changes_blocking(other).unwrap();
    let expected = Flags {
        system: flag::ANSWERED,
        keywords: vec!["$Label1".into()],
    };
    assert!(
        matches!(&second[0], Applied::Flags { flags, .. } if *flags == expected),
        "{added:?} {second:?}"
    );
    assert_eq!(
        mailbox::row(store, user, work.uidvalidity, 1)
            .unwrap()
            .unwrap()
            .flags,
        expected
    );
    // UNCHANGEDSINCE: refused when the row changed after it, done otherwise.
    let Applied::Flags { modseq: now, .. } = second[0] else {
        unreachable!()
    };
    let conditional = |since| Change::SetFlags {
        user: user.into(),
        mailbox: "Work".into(),
        uidvalidity: work.uidvalidity,
        uid: 1,
        how: FlagChange::Add,
        flags: Flags {
            system: flag::FLAGGED,
            keywords: Vec::new(),
        },
        unchanged_since: Some(since),
    };
    assert_eq!(
        change(&commits, conditional(now - 1)),
        Ok(Applied::Modified { modseq: now })
    );
    let flagged_at = match change(&commits, conditional(now)) {
        Ok(Applied::Flags { modseq, flags }) if modseq > now && flags.has(flag::FLAGGED) => modseq,
        other => panic!("{other:?}"),
    };
    // An IMAP EXPUNGE removes a row only if it has \Deleted when the
    // writer gets to it (another session may have taken it off).
    let expunge_if_deleted = Change::Expunge {
        user: user.into(),
        mailbox: "Work".into(),
        uidvalidity: work.uidvalidity,
        uid: 1,
        if_deleted: true,
    };
    assert_eq!(
        change(&commits, expunge_if_deleted.clone()),
        Ok(Applied::Modified { modseq: flagged_at })
    );
    assert!(mailbox::row(store, user, work.uidvalidity, 1)
        .unwrap()
        .is_some());

    // Subscribe.
    change(
        &commits,
        Change::Subscribe {
            user: user.into(),
            mailbox: "Work".into(),
            subscribed: true,
        },
    )
    .unwrap();
    assert_eq!(mailbox::subscriptions(store, user).unwrap(), ["Work"]);
    // A name is subscribed whether a mailbox has it or not, and stays so
    // when its mailbox goes (RFC 9051 §6.3.7); a rename takes it along.
    let subscribe = |name: &str, subscribed| Change::Subscribe {
        user: user.into(),
        mailbox: name.into(),
        subscribed,
    };
    change(&commits, subscribe("Gone", true)).unwrap();
    change(&commits, subscribe("Later", true)).unwrap();
    let create = |name: &str| Change::Create {
        user: user.into(),
        mailbox: name.into(),
    };
    change(&commits, create("Later")).unwrap();
    change(
        &commits,
        Change::Delete {
            user: user.into(),
            mailbox: "Later".into(),
        },
    )
    .unwrap();
    change(&commits, create("Moving")).unwrap();
    change(&commits, subscribe("Moving", true)).unwrap();
    change(
        &commits,
        Change::Rename {
            user: user.into(),
            from: "Moving".into(),
            to: "Moved".into(),
        },
    )
    .unwrap();
    assert_eq!(
        mailbox::subscriptions(store, user).unwrap(),
        ["Gone", "Later", "Moved", "Work"]
    );
    change(&commits, subscribe("Gone", false)).unwrap();
    change(&commits, subscribe("Moved", false)).unwrap();
    change(&commits, subscribe("Later", false)).unwrap();
    assert_eq!(mailbox::subscriptions(store, user).unwrap(), ["Work"]);
    change(
        &commits,
        Change::Delete {
            user: user.into(),
            mailbox: "Moved".into(),
        },
    )
    .unwrap();

    // Rename INBOX: its messages move to a new mailbox; INBOX stays, empty,
    // with its UIDVALIDITY (sessions that have it selected see expunges),
    // and records the moved messages as expunged (QRESYNC).
    let old_inbox = inbox(store, user);
    change(
        &commits,
        Change::Rename {
            user: user.into(),
            from: "inbox".into(),
            to: "Old".into(),
        },
    )
    .unwrap();
    assert_eq!(uids(store, user, "Old"), vec![1, 2]);
    let old = mailbox::meta(store, user, "Old").unwrap().unwrap();
    assert!(old.uidvalidity > old_inbox.uidvalidity);
    assert_eq!(
        (old.messages, old.bytes),
        (old_inbox.messages, old_inbox.bytes)
    );
    assert_eq!(old.uidnext, old_inbox.uidnext);
    let after = inbox(store, user);
    assert_eq!(after.uidvalidity, old_inbox.uidvalidity);
    assert_eq!(after.uidnext, old_inbox.uidnext, "UIDs are never reused");
    assert!(after.highest_modseq > old_inbox.highest_modseq);
    assert_eq!((after.messages, after.bytes), (0, 0));
    assert!(uids(store, user, INBOX).is_empty());
    let vanished =
        mailbox::expunged_since(store, user, after.uidvalidity, old_inbox.highest_modseq).unwrap();
    assert_eq!(vanished, Some(vec![1, 2]), "{vanished:?}");
    assert_eq!(
        change(
            &commits,
            Change::Rename {
                user: user.into(),
                from: "Old".into(),
                to: "Work".into()
            }
        ),
        Err(StoreError::Refused(Refusal::MailboxExists))
    );
    let names: Vec<String> = mailbox::list(store, user)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["INBOX", "Old", "Work"]);

    // Delete: INBOX may not go; Old takes its rows (and a body) with it.
    assert_eq!(
        change(
            &commits,
            Change::Delete {
                user: user.into(),
                mailbox: "INBOX".into()
            }
        ),
        Err(StoreError::Refused(Refusal::InboxIsPermanent))
    );
    change(
        &commits,
        Change::Delete {
            user: user.into(),
            mailbox: "Old".into(),
        },
    )
    .unwrap();
    assert!(mailbox::meta(store, user, "Old").unwrap().is_none());
    assert!(
        body_exists(store, &first.id),
        "Work still holds the first message"
    );
    assert_eq!(mailbox::refs(store, &first.id).unwrap(), 1);
    let mut old_rows = 0;
    store
        .scan(Family::Mailboxes, &[], None, &mut |_, _| {
            old_rows += 1;
            true
        })
        .unwrap();
    assert_eq!(old_rows, 1, "only Work's row is left");
    // A name created again gets a new UIDVALIDITY.
    change(&commits, create("Old")).unwrap();
    assert!(
        mailbox::meta(store, user, "Old")
            .unwrap()
            .unwrap()
            .uidvalidity
            > old.uidvalidity
    );
    pipeline.shutdown();
}

/// A failed write hands out nothing: the next delivery reads the store
/// again and gets the UID the failed one would have had.
pub fn mailbox_failed_write_reuses_nothing_seen(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let (pipeline, commits, heard) = start(gated.clone());
    commits
        .commit_blocking(delivery(1, &["a@ours.test"], None).into_batch())
        .unwrap();
    gated.update(|s| s.fail = true);
    assert!(commits
        .commit_blocking(delivery(2, &["a@ours.test"], None).into_batch())
        .is_err());
    gated.update(|s| s.fail = false);
    let applied = commits
        .commit_changes_blocking(delivery(3, &["a@ours.test"], None).into_batch())
        .unwrap();
    assert!(matches!(applied[0], Applied::Appended { uid: 2, .. }));
    assert_eq!(uids(&*gated, "a@ours.test", INBOX), vec![1, 2]);
    wait_until("two notifications", || heard.lock().unwrap().len() == 2);
    pipeline.shutdown();
}

/// An account deleted in the same commit group as a message's arrival
/// (its INBOX row and its queue entry for a remote recipient) leaves the
/// body to the relay: the envelope is in the group, not yet in the store.
pub fn mailbox_deletion_in_the_arrivals_group_keeps_the_queued_body(store: Arc<dyn Store>) {
    let gated = Gated::new(store);
    let (pipeline, commits, _) = start(gated.clone());
    gated.update(|s| s.closed = true);
    let commit = |batch: WriteBatch| {
        let commits = commits.clone();
        std::thread::spawn(move || commits.commit_changes_blocking(batch).map(|_| ()))
    };
    // The writer waits at the gate with a first request; the next two
    // queue behind it and go together.
    let first = commit(delivery(1, &["z@ours.test"], None).into_batch());
    gated.wait_entered(1);
    let message = delivery(2, &["a@ours.test"], Some("far@remote.test"));
    let id = message.id;
    let arrival = commit(message.into_batch());
    wait_until("the arrival queued", || commits.queued() == 1);
    let mut batch = WriteBatch::new();
    crate::users::delete_user(&mut batch, "a@ours.test");
    let deletion = commit(batch);
    wait_until("the deletion queued", || commits.queued() == 2);
    gated.update(|s| s.closed = false);
    for request in [first, arrival, deletion] {
        request.join().unwrap().unwrap();
    }
    assert!(mailbox::list(&*gated, "a@ours.test").unwrap().is_empty());
    assert!(spool::read_envelope(&*gated, &id).unwrap().is_some());
    assert!(body_exists(&*gated, &id), "the relay still needs the body");
    pipeline.shutdown();
}
