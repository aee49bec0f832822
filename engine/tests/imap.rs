//! IMAP end to end: mail delivered over SMTP is read and worked on with
//! Python's imaplib (an independent client), IDLE included; the store then
//! holds what the session left.

mod common;

use common::{add_user, run_python_client, start_server, LineClient};

fn local_config(config: &mut ringpost_engine::Config) {
    config.smtp.local_domains = vec!["ours.test".into()];
    config.imap.auth_failure_delay_secs = 0;
}

#[test]
fn imaplib_works_on_what_smtplib_sent() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    run_python_client(
        "imap_read.py",
        &[
            server.smtp_addr().port().to_string(),
            server.imap_addr().unwrap().port().to_string(),
        ],
    );
    server.shutdown();
}

#[test]
fn bad_input_gets_clear_answers() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, greeting) = LineClient::connect(server.imap_addr().unwrap());
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev2"),
        "{greeting}"
    );
    assert_eq!(c.tagged("a1", "FROB"), ["a1 BAD syntax error\r\n"]);
    assert_eq!(c.tagged("a2", "SELECT INBOX"), ["a2 BAD log in first\r\n"]);
    assert_eq!(
        c.tagged("a3", "LOGIN nobody@ours.test secret"),
        ["a3 NO [AUTHENTICATIONFAILED] invalid credentials\r\n"]
    );
    // A literal larger than the limit is refused before it is sent.
    let reply = c.tagged("a4", "LOGIN {999999999}");
    assert_eq!(reply, ["a4 NO [TOOBIG] literal too big\r\n"]);
    // SASL-IR: AUTHENTICATE PLAIN with the initial response.
    let reply = c.tagged("a5", "AUTHENTICATE PLAIN AGFsaWNlQG91cnMudGVzdABzZWNyZXQ=");
    assert!(reply[0].starts_with("a5 OK"), "{reply:?}");
    assert_eq!(
        c.tagged("a6", "FETCH 1 FLAGS"),
        ["a6 BAD no mailbox selected\r\n"]
    );
    let reply = c.tagged("a7", "SELECT Nowhere");
    assert_eq!(
        reply.last().unwrap(),
        "a7 NO [NONEXISTENT] no such mailbox\r\n"
    );
    // An INBOX that never got mail selects as empty.
    let reply = c.tagged("a8", "SELECT INBOX");
    assert!(reply.contains(&"* 0 EXISTS\r\n".to_string()), "{reply:?}");
    assert!(
        reply.last().unwrap().starts_with("a8 OK [READ-WRITE]"),
        "{reply:?}"
    );
    // A synchronizing literal gets its continuation, then works.
    c.send("a9 CREATE {4}\r\n");
    assert!(c.line().starts_with("+ "));
    c.send("Work\r\n");
    let reply = c.line();
    assert!(reply.starts_with("a9 OK"), "{reply:?}");
    let reply = c.tagged("b1", "CREATE Work");
    assert_eq!(reply, ["b1 NO [ALREADYEXISTS] mailbox exists\r\n"]);
    let reply = c.tagged("b2", "DELETE INBOX");
    assert_eq!(reply, ["b2 NO [CANNOT] INBOX cannot be deleted\r\n"]);
    let reply = c.tagged("b3", "LOGOUT");
    assert_eq!(reply[0], "* BYE logging out\r\n");
    server.shutdown();
}

/// A whole-mailbox FETCH larger than the socket buffers, read by a client
/// that starts late: the server meets a full socket mid-response (bodies
/// are written straight from the store, without a copy) and every message
/// still arrives whole and in order.
#[test]
fn a_late_reader_gets_a_large_fetch_whole() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    assert!(c
        .tagged("a", "LOGIN alice@ours.test secret")
        .last()
        .unwrap()
        .starts_with("a OK"));
    // Sizes around the copy threshold, small ones, and large ones: 7 MB.
    let sizes = [100, 8191, 8192, 8193, 300_000, 2_000, 1_000_000, 50_000];
    let messages: Vec<Vec<u8>> = (0..24)
        .map(|i| {
            let size = sizes[i % sizes.len()];
            let mut body = format!("Subject: m{i}\r\n\r\n").into_bytes();
            while body.len() < size {
                body.extend_from_slice(format!("{i:02} {:070}\r\n", body.len()).as_bytes());
            }
            body
        })
        .collect();
    for (i, body) in messages.iter().enumerate() {
        c.send(&format!("p{i} APPEND INBOX {{{}+}}\r\n", body.len()));
        c.send_bytes(body);
        c.send("\r\n");
        let reply = c.line();
        assert!(reply.starts_with(&format!("p{i} OK")), "{reply}");
    }
    // Bodies in blob files (not the memtable), as a mailbox of any age has.
    server.store().flush().unwrap();
    assert!(c
        .tagged("s", "SELECT INBOX")
        .last()
        .unwrap()
        .starts_with("s OK"));
    c.send("f FETCH 1:* (UID BODY.PEEK[])\r\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (i, body) in messages.iter().enumerate() {
        let head = c.line();
        let expected = format!(
            "* {} FETCH (UID {} BODY[] {{{}}}\r\n",
            i + 1,
            i + 1,
            body.len()
        );
        assert_eq!(head, expected);
        assert!(c.read_exact(body.len()) == *body, "message {i} differs");
        assert_eq!(c.line(), ")\r\n");
    }
    assert!(c.line().starts_with("f OK"));
    // The bodies just read from blob files (4 KiB up to the segment size)
    // are in the body cache now; larger ones, in segment files, are left to
    // the OS page cache.
    let in_blob_files: usize = messages
        .iter()
        .map(Vec::len)
        .filter(|len| (4 << 10..64 << 10).contains(len))
        .sum();
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    let cached: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ringpost_store_body_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("body cache gauge");
    assert!(cached >= in_blob_files as u64, "{cached} < {in_blob_files}");
    assert!(metrics.contains(&format!(
        "ringpost_store_body_cache_capacity_bytes {}",
        256 << 20
    )));
    server.shutdown();
}

/// Log in as alice and select INBOX.
fn alice_in_inbox(server: &ringpost_engine::RunningServer) -> LineClient {
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    assert!(c.tagged("l", "LOGIN alice@ours.test secret")[0].starts_with("l OK"));
    assert!(c
        .tagged("s", "SELECT INBOX")
        .last()
        .unwrap()
        .starts_with("s OK"));
    c
}

#[test]
fn two_sessions_changing_flags_at_once_keep_both_changes() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let append = a.tagged("p", "APPEND INBOX (\\Seen) {12+}\r\nSubject: x\r\n");
    assert!(append.last().unwrap().starts_with("p OK"), "{append:?}");
    let mut b = alice_in_inbox(&server);
    // A adds \Answered; B, which has not heard of that, removes \Seen.
    let reply = a.tagged("a", "STORE 1 +FLAGS (\\Answered)");
    assert!(reply.last().unwrap().starts_with("a OK"), "{reply:?}");
    let reply = b.tagged("b", "STORE 1 -FLAGS (\\Seen)");
    // B's own answer already shows the flags as stored: A's \Answered kept.
    assert!(
        reply.iter().any(|l| l.contains("FLAGS (\\Answered)")),
        "{reply:?}"
    );
    let mut c = alice_in_inbox(&server);
    let fetched = c.tagged("f", "FETCH 1 (FLAGS)");
    assert!(
        fetched
            .iter()
            .any(|l| l == "* 1 FETCH (FLAGS (\\Answered))\r\n"),
        "{fetched:?}"
    );
    server.shutdown();
}

#[test]
fn expunge_copy_and_fetch_act_on_the_mailbox_as_stored_not_as_last_seen() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    for _ in 0..3 {
        append(&mut a, "INBOX", "Subject: x\r\n\r\nbody\r\n");
    }
    assert!(a
        .tagged("s", "STORE 3 +FLAGS.SILENT (\\Deleted)")
        .last()
        .unwrap()
        .starts_with("s OK"));
    let mut b = alice_in_inbox(&server);
    // A takes \Deleted off 3 and puts it on 1; B has heard of neither when
    // it says EXPUNGE: 1 goes, 3 stays.
    a.tagged("u", "STORE 3 -FLAGS.SILENT (\\Deleted)");
    a.tagged("d", "STORE 1 +FLAGS.SILENT (\\Deleted)");
    let expunged = b.tagged("e", "EXPUNGE");
    assert!(expunged.last().unwrap().starts_with("e OK"), "{expunged:?}");
    assert!(
        expunged.contains(&"* 1 EXPUNGE\r\n".to_owned()),
        "{expunged:?}"
    );
    assert!(
        !expunged
            .iter()
            .any(|l| l.starts_with("* 3 EXPUNGE") || l.starts_with("* 2 EXPUNGE")),
        "{expunged:?}"
    );
    let status = a.tagged("n", "STATUS INBOX (MESSAGES)");
    assert!(status[0].contains("MESSAGES 2"), "{status:?}");

    // A expunges UID 2; B, not told yet, copies it: nothing is copied, no
    // row without its body is left in Trash.
    assert!(a
        .tagged("m", "CREATE Trash")
        .last()
        .unwrap()
        .starts_with("m OK"));
    a.tagged("d", "UID STORE 2 +FLAGS.SILENT (\\Deleted)");
    a.tagged("x", "UID EXPUNGE 2");
    let copied = b.tagged("c", "UID COPY 2 Trash");
    assert!(
        copied.last().unwrap().starts_with("c NO [EXPUNGEISSUED]"),
        "{copied:?}"
    );
    let status = a.tagged("t", "STATUS Trash (MESSAGES)");
    assert!(status[0].contains("MESSAGES 0"), "{status:?}");
    // A UID FETCH of it is no error (RFC 9051 §6.4.9).
    let fetched = b.tagged("f", "UID FETCH 2:3 (UID BODY.PEEK[])");
    assert!(fetched.last().unwrap().starts_with("f OK"), "{fetched:?}");

    // SEARCH in a charset it does not match in: NO [BADCHARSET].
    let search = b.tagged("q", "SEARCH CHARSET X-BOGUS TEXT body");
    assert_eq!(
        search.last().unwrap(),
        "q NO [BADCHARSET (US-ASCII UTF-8)] charset not supported\r\n"
    );
    let search = b.tagged("q", "SEARCH CHARSET utf-8 TEXT body");
    assert!(search.last().unwrap().starts_with("q OK"), "{search:?}");
    server.shutdown();
}

#[test]
fn renaming_inbox_moves_its_messages_and_keeps_sessions_on_it() {
    // RFC 9051 §6.3.6: the messages move, INBOX stays (empty). Sessions
    // with INBOX selected, the renaming one too, see them expunged.
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    append(&mut a, "INBOX", "Subject: one\r\n\r\nx\r\n");
    append(&mut a, "INBOX", "Subject: two\r\n\r\nx\r\n");
    let mut b = alice_in_inbox(&server);
    let renamed = a.tagged("r", "RENAME INBOX Archive");
    assert!(renamed.last().unwrap().starts_with("r OK"), "{renamed:?}");
    assert!(
        !renamed.iter().any(|l| l.starts_with("* BYE")),
        "{renamed:?}"
    );
    let noop = b.tagged("n", "NOOP");
    assert!(!noop.iter().any(|l| l.starts_with("* BYE")), "{noop:?}");
    assert_eq!(
        noop.iter().filter(|l| l.ends_with(" EXPUNGE\r\n")).count(),
        2,
        "{noop:?}"
    );
    let status = b.tagged("s", "STATUS Archive (MESSAGES)");
    assert!(status[0].contains("MESSAGES 2"), "{status:?}");
    let status = b.tagged("s", "STATUS INBOX (MESSAGES)");
    assert!(status[0].contains("MESSAGES 0"), "{status:?}");
    // New mail still reaches the INBOX the sessions have selected.
    append(&mut a, "INBOX", "Subject: three\r\n\r\nx\r\n");
    let noop = b.tagged("n", "NOOP");
    assert!(noop.contains(&"* 1 EXISTS\r\n".to_owned()), "{noop:?}");
    server.shutdown();
}

#[test]
fn under_condstore_an_implicit_seen_comes_with_its_modseq() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    append(&mut a, "INBOX", "Subject: one\r\n\r\nx\r\n");
    assert!(a
        .tagged("e", "ENABLE CONDSTORE")
        .last()
        .unwrap()
        .starts_with("e OK"));
    let before = a.tagged("m", "FETCH 1 (MODSEQ)");
    let modseq_of = |line: &str| -> u64 {
        let at = line.find("MODSEQ (").expect("MODSEQ") + 8;
        line[at..].split(')').next().unwrap().parse().unwrap()
    };
    let old = modseq_of(&before[0]);
    let fetched = a.tagged("f", "FETCH 1 (BODY[])");
    let last_flags = fetched
        .iter()
        .rfind(|l| l.starts_with("* 1 FETCH") && l.contains("\\Seen") && l.contains("MODSEQ"))
        .unwrap_or_else(|| panic!("{fetched:?}"));
    assert!(modseq_of(last_flags) > old, "{fetched:?}");
    let after = a.tagged("m", "FETCH 1 (MODSEQ)");
    assert_eq!(modseq_of(&after[0]), modseq_of(last_flags), "{after:?}");
    server.shutdown();
}

#[test]
fn a_fetch_item_named_many_times_is_answered_once() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    append(&mut a, "INBOX", "Subject: one\r\n\r\nx\r\n");
    let fetched = a.tagged("f", "FETCH 1 (BODY.PEEK[] FLAGS BODY.PEEK[] BODY.PEEK[])");
    assert_eq!(
        fetched.iter().filter(|l| l.contains("BODY[]")).count(),
        1,
        "{fetched:?}"
    );
    assert!(fetched.last().unwrap().starts_with("f OK"), "{fetched:?}");
    let many = vec!["BODY.PEEK[]"; 300].join(" ");
    let refused = a.tagged("g", &format!("FETCH 1 ({many})"));
    assert!(refused.last().unwrap().starts_with("g BAD"), "{refused:?}");
    // Keywords: a message carries at most 128.
    let keywords: Vec<String> = (0..200).map(|n| format!("k{n}")).collect();
    let refused = a.tagged("k", &format!("STORE 1 +FLAGS ({})", keywords.join(" ")));
    assert!(
        refused.last().unwrap().starts_with("k NO [LIMIT]"),
        "{refused:?}"
    );
    let stored = a.tagged(
        "k",
        &format!("STORE 1 +FLAGS ({})", keywords[..100].join(" ")),
    );
    assert!(stored.last().unwrap().starts_with("k OK"), "{stored:?}");
    server.shutdown();
}

#[test]
fn catenated_copies_of_a_large_message_stay_within_the_command_limit() {
    // Each URL is a few bytes, what it names 60 KB: a MULTIAPPEND of
    // CATENATEs is held, all together, to the command limit (100 KB here).
    let (server, _dir) = start_server(|config| {
        local_config(config);
        config.imap.max_command_size = 100 * 1024;
    });
    add_user(&server, "alice@ours.test");
    let mut c = alice_in_inbox(&server);
    append(
        &mut c,
        "INBOX",
        &format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(60 * 1024)),
    );
    let url = "/INBOX/;UID=1";
    let one = c.tagged("a", &format!("APPEND INBOX CATENATE (URL \"{url}\")"));
    assert!(one.last().unwrap().starts_with("a OK"), "{one:?}");
    let many = c.tagged(
        "b",
        &format!("APPEND INBOX CATENATE (URL \"{url}\") CATENATE (URL \"{url}\")"),
    );
    assert!(
        many.last().unwrap().starts_with("b NO [TOOBIG]"),
        "{many:?}"
    );
    let status = c.tagged("s", "STATUS INBOX (MESSAGES)");
    assert!(
        status[0].contains("MESSAGES 2"),
        "nothing of the refused one: {status:?}"
    );
    server.shutdown();
}

#[test]
fn appends_exists_comes_before_its_tagged_ok() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    for n in 1..=20 {
        let reply = a.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
        assert_eq!(
            reply[0],
            format!("* {n} EXISTS\r\n"),
            "append {n}: {reply:?}"
        );
        assert!(reply.last().unwrap().starts_with("p OK [APPENDUID"));
    }
    server.shutdown();
}

#[test]
fn lsub_with_percent_shows_noselect_parents_of_subscribed_children() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    c.tagged("l", "LOGIN alice@ours.test secret");
    for name in ["foo", "foo/bar", "top"] {
        assert!(c
            .tagged("c", &format!("CREATE {name}"))
            .last()
            .unwrap()
            .starts_with("c OK"));
    }
    // foo/bar and top are subscribed, foo is not.
    c.tagged("s1", "SUBSCRIBE foo/bar");
    c.tagged("s2", "SUBSCRIBE top");
    let reply = c.tagged("x", "LSUB \"\" %");
    assert!(
        reply.contains(&"* LSUB (\\HasChildren \\Noselect) \"/\" foo\r\n".to_string()),
        "{reply:?}"
    );
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("* LSUB") && l.ends_with(" top\r\n")),
        "{reply:?}"
    );
    assert!(!reply.iter().any(|l| l.contains("foo/bar")), "{reply:?}");
    // With `*`, the child itself.
    let reply = c.tagged("y", "LSUB \"\" *");
    assert!(
        reply.iter().any(|l| l.ends_with(" foo/bar\r\n")),
        "{reply:?}"
    );
    assert!(!reply.iter().any(|l| l.ends_with(" foo\r\n")), "{reply:?}");
    server.shutdown();
}

#[test]
fn recent_goes_to_one_rev1_session_and_new_keywords_are_announced() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let (mut other, _) = LineClient::connect(server.imap_addr().unwrap());
    other.tagged("l", "LOGIN alice@ours.test secret");
    let append = other.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
    assert!(append.last().unwrap().starts_with("p OK"), "{append:?}");
    // A, selected, hears of it first and takes it as \Recent.
    let noop = a.tagged("n", "NOOP");
    assert_eq!(noop[..2], ["* 1 EXISTS\r\n", "* 1 RECENT\r\n"], "{noop:?}");
    let fetched = a.tagged("f", "FETCH 1 FLAGS");
    assert_eq!(fetched[0], "* 1 FETCH (FLAGS (\\Recent))\r\n");
    assert_eq!(a.tagged("s", "SEARCH NEW")[0], "* SEARCH 1\r\n");
    // B comes later: not recent for it, nor for STATUS.
    let mut b = alice_in_inbox(&server);
    assert_eq!(
        b.tagged("f", "FETCH 1 FLAGS")[0],
        "* 1 FETCH (FLAGS ())\r\n"
    );
    assert_eq!(b.tagged("s", "SEARCH RECENT")[0], "* SEARCH\r\n");
    assert_eq!(b.tagged("o", "SEARCH OLD")[0], "* SEARCH 1\r\n");
    let status = other.tagged("t", "STATUS INBOX (MESSAGES RECENT)");
    assert_eq!(status[0], "* STATUS INBOX (MESSAGES 1 RECENT 0)\r\n");
    // An IMAP4rev2 session is told nothing of \Recent.
    let (mut rev2, _) = LineClient::connect(server.imap_addr().unwrap());
    rev2.tagged("l", "LOGIN alice@ours.test secret");
    assert_eq!(
        rev2.tagged("e", "ENABLE IMAP4rev2")[0],
        "* ENABLED IMAP4rev2\r\n"
    );
    let select = rev2.tagged("s", "SELECT INBOX");
    assert!(!select.iter().any(|l| l.contains("RECENT")), "{select:?}");

    // A new keyword is in FLAGS before any FETCH shows it, in the session
    // that set it and in the others.
    let stored = a.tagged("k", "STORE 1 +FLAGS ($Work)");
    let flags = stored
        .iter()
        .position(|l| l.starts_with("* FLAGS ("))
        .expect("FLAGS");
    let fetch = stored
        .iter()
        .position(|l| l.starts_with("* 1 FETCH"))
        .expect("FETCH");
    assert!(
        flags < fetch && stored[flags].contains("$Work"),
        "{stored:?}"
    );
    let noop = b.tagged("n", "NOOP");
    let flags = noop
        .iter()
        .position(|l| l.starts_with("* FLAGS ("))
        .expect("FLAGS");
    let fetch = noop
        .iter()
        .position(|l| l.starts_with("* 1 FETCH"))
        .expect("FETCH");
    assert!(flags < fetch && noop[flags].contains("$Work"), "{noop:?}");
    assert!(noop[fetch].contains("$Work"), "{noop:?}");
    server.shutdown();
}

#[test]
fn quotas_refuse_new_mail_at_rcpt_append_and_copy_and_imap_reports_them() {
    let (server, _dir) = start_server(|config| {
        local_config(config);
        config.quota.messages = 2;
        config.quota.storage_mb = 1;
    });
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    assert!(a.tagged("c", "CAPABILITY")[0].contains(" QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE"));
    // A message larger than the storage left is refused, whatever the count.
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(1024 * 1024));
    a.send(&format!("b APPEND INBOX {{{}+}}\r\n{big}\r\n", big.len()));
    assert_eq!(a.line(), "b NO [OVERQUOTA] the account is at its quota\r\n");
    for n in 1..=2 {
        let reply = a.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
        assert!(
            reply.last().unwrap().starts_with("p OK"),
            "append {n}: {reply:?}"
        );
    }
    let reply = a.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
    assert_eq!(
        reply.last().unwrap(),
        "p NO [OVERQUOTA] the account is at its quota\r\n"
    );
    assert!(a
        .tagged("m", "CREATE Saved")
        .last()
        .unwrap()
        .starts_with("m OK"));
    let reply = a.tagged("c", "COPY 1 Saved");
    assert_eq!(
        reply.last().unwrap(),
        "c NO [OVERQUOTA] the account is at its quota\r\n"
    );
    // MOVE keeps the account's usage: allowed.
    assert!(a
        .tagged("v", "MOVE 1 Saved")
        .last()
        .unwrap()
        .starts_with("v OK"));
    let reply = a.tagged("q", "GETQUOTAROOT INBOX");
    assert_eq!(
        reply[..2],
        [
            "* QUOTAROOT INBOX \"\"\r\n",
            "* QUOTA \"\" (STORAGE 1 1024 MESSAGE 2 2)\r\n"
        ],
        "{reply:?}"
    );
    assert_eq!(a.tagged("g", "GETQUOTA \"\"")[0], reply[1]);
    // A mailbox that is not there has no quota root; a name sent as a
    // non-synchronizing literal comes back in the server's own form.
    assert_eq!(
        a.tagged("q", "GETQUOTAROOT Nowhere"),
        ["q NO [NONEXISTENT] no such mailbox\r\n"]
    );
    let reply = a.tagged("q", "GETQUOTAROOT {5+}\r\nSaved");
    assert_eq!(reply[0], "* QUOTAROOT Saved \"\"\r\n", "{reply:?}");
    // \Recent is the server's to set (RFC 9051 §2.3.2).
    for command in [
        "STORE 1 +FLAGS (\\Recent)",
        "STORE 1 FLAGS (\\Seen \\Frob)",
        "APPEND INBOX (\\Recent) {12+}\r\nSubject: x\r\n",
    ] {
        let reply = a.tagged("r", command);
        assert!(
            reply.last().unwrap().starts_with("r BAD"),
            "{command}: {reply:?}"
        );
    }
    assert!(a
        .tagged("s", "SETQUOTA \"\" (STORAGE 10)")
        .last()
        .unwrap()
        .starts_with("s NO [NOPERM]"));

    // SMTP: the full account's recipient is refused for now, others not.
    let (mut smtp, _) = common::Client::connect(server.smtp_addr());
    smtp.cmd("EHLO client.test");
    smtp.cmd("MAIL FROM:<x@far.test>");
    assert!(smtp
        .cmd("RCPT TO:<alice@ours.test>")
        .starts_with("452 4.2.2"));
    assert!(smtp
        .cmd("RCPT TO:<postmaster@ours.test>")
        .starts_with("250"));
    // Room again once a message is gone.
    a.tagged("x", "STORE 1 +FLAGS.SILENT (\\Deleted)");
    a.tagged("e", "EXPUNGE");
    assert!(smtp.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    smtp.cmd("QUIT");
    server.shutdown();
}

#[test]
fn sessions_that_passed_rcpt_together_do_not_overfill_a_mailbox() {
    // Room for two messages: four sessions pass RCPT at once, but at the
    // end of DATA the account is checked again, so two are stored.
    let (server, _dir) = start_server(|config| {
        local_config(config);
        config.quota.messages = 2;
    });
    add_user(&server, "alice@ours.test");
    let replies = common::messages_ended_together(server.smtp_addr(), 4, |c| {
        c.cmd("EHLO client.test");
        assert!(c.cmd("MAIL FROM:<x@far.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@ours.test>").starts_with("250"));
    });
    let stored = common::count_starting(&replies, "250 ");
    let full = common::count_starting(&replies, "452 4.2.2");
    assert_eq!((stored, full), (2, 2), "{replies:?}");
    let mut a = alice_in_inbox(&server);
    let status = a.tagged("s", "STATUS INBOX (MESSAGES)");
    assert!(status[0].contains("MESSAGES 2"), "{status:?}");
    server.shutdown();
}

#[test]
fn list_marks_special_use_mailboxes() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    c.tagged("l", "LOGIN alice@ours.test secret");
    assert!(c.tagged("c", "CAPABILITY")[0].contains(" SPECIAL-USE "));
    for name in ["Sent", "Trash", "Projects"] {
        assert!(c
            .tagged("c", &format!("CREATE {name}"))
            .last()
            .unwrap()
            .starts_with("c OK"));
    }
    let reply = c.tagged("x", "LIST \"\" *");
    assert!(
        reply.contains(&"* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n".to_string()),
        "{reply:?}"
    );
    assert!(
        reply.contains(&"* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\n".to_string()),
        "{reply:?}"
    );
    assert!(
        reply.contains(&"* LIST (\\HasNoChildren) \"/\" Projects\r\n".to_string()),
        "{reply:?}"
    );
    server.shutdown();
}

/// The number in `... (MODSEQ (n))` or `[HIGHESTMODSEQ n]` of a line.
fn modseq_of(line: &str) -> u64 {
    let at = line.find("MODSEQ").expect("a modseq") + "MODSEQ".len();
    line[at..]
        .trim_start_matches([' ', '('])
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn condstore_fetch_changedsince_conditional_store_and_search_modseq() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut a, _) = LineClient::connect(server.imap_addr().unwrap());
    a.tagged("l", "LOGIN alice@ours.test secret");
    assert!(a.tagged("c", "CAPABILITY")[0].contains(" CONDSTORE "));
    a.tagged("e", "ENABLE IMAP4rev2"); // no \Recent in the way
    for _ in 0..3 {
        a.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
    }
    let select = a.tagged("s", "SELECT INBOX (CONDSTORE)");
    let highest = modseq_of(
        select
            .iter()
            .find(|l| l.contains("[HIGHESTMODSEQ "))
            .expect("HIGHESTMODSEQ"),
    );
    // Once on, FETCH FLAGS carries MODSEQ.
    let fetched = a.tagged("f", "FETCH 1 (FLAGS)");
    assert!(
        fetched[0].starts_with("* 1 FETCH (FLAGS () MODSEQ ("),
        "{fetched:?}"
    );

    // Another session changes message 2.
    let mut b = alice_in_inbox(&server);
    b.tagged("b", "STORE 2 +FLAGS (\\Flagged)");
    // Only what changed since `highest` comes back, with its modseq.
    let changed = a.tagged("f", &format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})"));
    let fetches: Vec<_> = changed.iter().filter(|l| l.contains("FETCH (")).collect();
    assert_eq!(fetches.len(), 1, "{changed:?}");
    assert!(
        fetches[0].starts_with("* 2 FETCH (FLAGS (\\Flagged) MODSEQ ("),
        "{changed:?}"
    );
    let flagged = modseq_of(fetches[0]);
    assert!(flagged > highest);

    // A STORE conditional on the old modseq fails for 2, works for 1.
    let reply = a.tagged(
        "u",
        &format!("STORE 1:2 (UNCHANGEDSINCE {highest}) +FLAGS.SILENT (\\Seen)"),
    );
    assert_eq!(
        reply.last().unwrap(),
        "u OK [MODIFIED 2] conditional STORE failed for some messages\r\n",
        "{reply:?}"
    );
    let one = reply
        .iter()
        .find(|l| l.starts_with("* 1 FETCH (MODSEQ ("))
        .expect("1's new modseq");
    assert!(modseq_of(one) > flagged, "{reply:?}");
    let fetched = a.tagged("g", "FETCH 2 (FLAGS)");
    assert!(
        fetched[0].starts_with("* 2 FETCH (FLAGS (\\Flagged) "),
        "unchanged: {fetched:?}"
    );

    // SEARCH MODSEQ: what changed since, and the highest modseq of it.
    // (A is an IMAP4rev2 session: ESEARCH, with MODSEQ at its end.)
    let found = a.tagged("x", &format!("SEARCH MODSEQ {}", flagged + 1));
    assert_eq!(
        found[0],
        format!("* ESEARCH (TAG \"x\") ALL 1 MODSEQ {}\r\n", modseq_of(one))
    );
    let status = b.tagged("t", "STATUS INBOX (HIGHESTMODSEQ)");
    // Turning CONDSTORE on with INBOX selected says its HIGHESTMODSEQ first.
    assert!(status[0].starts_with("* OK [HIGHESTMODSEQ "), "{status:?}");
    assert_eq!(
        status[1],
        format!("* STATUS INBOX (HIGHESTMODSEQ {})\r\n", modseq_of(one))
    );
    // A CONDSTORE session (STATUS HIGHESTMODSEQ turned it on) hears of
    // others' flag changes with their modseq, here after that STATUS.
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("* 1 FETCH (FLAGS (\\Seen") && l.contains(" MODSEQ (")),
        "{status:?}"
    );
    // Turned on by a command while a mailbox is selected: HIGHESTMODSEQ
    // first (RFC 7162 §3.1.1).
    let mut c = alice_in_inbox(&server);
    let fetched = c.tagged("m", "FETCH 1 (MODSEQ)");
    assert!(
        fetched[0].starts_with("* OK [HIGHESTMODSEQ "),
        "{fetched:?}"
    );
    assert!(fetched[1].starts_with("* 1 FETCH (MODSEQ ("), "{fetched:?}");
    // An IMAP4rev1 session's SEARCH MODSEQ answers SEARCH with the modseq.
    let found = b.tagged("x", &format!("SEARCH MODSEQ {}", flagged + 1));
    assert_eq!(
        found[0],
        format!("* SEARCH 1 (MODSEQ {})\r\n", modseq_of(one))
    );
    server.shutdown();
}

#[test]
fn esearch_return_options_and_imap4rev2_searches() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    assert!(a.tagged("c", "CAPABILITY")[0].contains(" ESEARCH "));
    for _ in 0..4 {
        a.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
    }
    a.tagged("s", "STORE 3 +FLAGS (\\Seen)");
    let reply = a.tagged("x1", "SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN");
    assert_eq!(
        reply[0],
        "* ESEARCH (TAG \"x1\") MIN 1 MAX 4 COUNT 3 ALL 1:2,4\r\n"
    );
    let reply = a.tagged("x2", "UID SEARCH RETURN () ALL");
    assert_eq!(reply[0], "* ESEARCH (TAG \"x2\") UID ALL 1:4\r\n");
    let reply = a.tagged("x3", "SEARCH RETURN (COUNT MIN) DELETED");
    assert_eq!(reply[0], "* ESEARCH (TAG \"x3\") COUNT 0\r\n");
    assert_eq!(
        a.tagged("x4", "SEARCH RETURN (SAVE) ALL"),
        ["x4 BAD unknown SEARCH RETURN option\r\n"]
    );
    // Plain SEARCH stays SEARCH for IMAP4rev1; IMAP4rev2 gets ESEARCH.
    assert_eq!(a.tagged("x5", "SEARCH SEEN")[0], "* SEARCH 3\r\n");
    let (mut b, _) = LineClient::connect(server.imap_addr().unwrap());
    b.tagged("l", "LOGIN alice@ours.test secret");
    b.tagged("e", "ENABLE IMAP4rev2");
    b.tagged("s", "SELECT INBOX");
    assert_eq!(
        b.tagged("y", "SEARCH SEEN")[0],
        "* ESEARCH (TAG \"y\") ALL 3\r\n"
    );
    assert_eq!(
        b.tagged("z", "SEARCH DRAFT"),
        ["* ESEARCH (TAG \"z\")\r\n", "z OK SEARCH completed\r\n"]
    );
    server.shutdown();
}

#[test]
fn sort_by_subject_date_and_address() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    assert!(a.tagged("c", "CAPABILITY")[0].contains(" SORT SORT=DISPLAY "));
    for (from, subject, date) in [
        (
            "Zed <z@x.test>",
            "Re: beta",
            "Tue, 2 Jan 2024 10:00:00 +0000",
        ),
        ("amy@x.test", "alpha", "Mon, 1 Jan 2024 10:00:00 +0000"),
        (
            "Bob <b@x.test>",
            "[list] Fwd: Beta (fwd)",
            "Wed, 3 Jan 2024 10:00:00 +0000",
        ),
    ] {
        let message = format!("From: {from}\r\nSubject: {subject}\r\nDate: {date}\r\n\r\nbody\r\n");
        let reply = a.tagged(
            "p",
            &format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()),
        );
        assert!(reply.last().unwrap().starts_with("p OK"), "{reply:?}");
    }
    assert_eq!(
        a.tagged("s1", "SORT (SUBJECT) UTF-8 ALL")[0],
        "* SORT 2 1 3\r\n"
    );
    assert_eq!(
        a.tagged("s2", "SORT (REVERSE DATE) UTF-8 ALL")[0],
        "* SORT 3 1 2\r\n"
    );
    assert_eq!(
        a.tagged("s3", "SORT (FROM) UTF-8 NOT FROM amy")[0],
        "* SORT 3 1\r\n"
    );
    assert_eq!(
        a.tagged("s4", "SORT (DISPLAYFROM) UTF-8 ALL")[0],
        "* SORT 2 3 1\r\n"
    );
    assert_eq!(
        a.tagged("s5", "UID SORT (SIZE) UTF-8 1:2")[0],
        "* SORT 2 1\r\n"
    );
    // ESORT (RFC 5267): the results as ESEARCH, in sort order.
    assert!(a.tagged("c2", "CAPABILITY")[0].contains(" ESORT"));
    assert_eq!(
        a.tagged(
            "e1",
            "SORT RETURN (MIN MAX COUNT ALL) (REVERSE DATE) UTF-8 ALL"
        )[0],
        "* ESEARCH (TAG \"e1\") MIN 3 MAX 2 COUNT 3 ALL 3,1:2\r\n"
    );
    assert_eq!(
        a.tagged("e2", "UID SORT RETURN () (SUBJECT) UTF-8 ALL")[0],
        "* ESEARCH (TAG \"e2\") UID ALL 2,1,3\r\n"
    );
    server.shutdown();
}

#[test]
fn thread_by_references_and_by_subject() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    assert!(a.tagged("c", "CAPABILITY")[0].contains(" THREAD=ORDEREDSUBJECT THREAD=REFERENCES "));
    for header in [
        "Message-ID: <a@x>\r\nSubject: plan\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000",
        "Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nSubject: Re: plan\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000",
        "Message-ID: <c@x>\r\nSubject: lunch\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000",
        "Message-ID: <d@x>\r\nReferences: <a@x> <b@x>\r\nSubject: Re: plan\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000",
    ] {
        let message = format!("{header}\r\n\r\nbody\r\n");
        a.tagged("p", &format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()));
    }
    assert_eq!(
        a.tagged("t1", "THREAD REFERENCES UTF-8 ALL")[0],
        "* THREAD (3)(1 2 4)\r\n"
    );
    assert_eq!(
        a.tagged("t2", "THREAD ORDEREDSUBJECT UTF-8 ALL")[0],
        "* THREAD (3)(1 (2)(4))\r\n"
    );
    assert_eq!(
        a.tagged("t3", "UID THREAD REFERENCES UTF-8 2:4")[0],
        "* THREAD (3)(2 4)\r\n"
    );
    assert_eq!(
        a.tagged("t4", "THREAD REFERENCES UTF-8 DELETED")[0],
        "* THREAD\r\n"
    );
    server.shutdown();
}

#[test]
fn compress_deflate_carries_the_session_both_ways() {
    use flate2::write::DeflateEncoder;
    use std::io::{BufRead, BufReader, Write};
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let stream = std::net::TcpStream::connect(server.imap_addr().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut plain = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream.try_clone().unwrap();
    let mut line = String::new();
    let mut read_line = |reader: &mut dyn BufRead| {
        line.clear();
        reader.read_line(&mut line).unwrap();
        line.clone()
    };
    assert!(read_line(&mut plain).contains("COMPRESS=DEFLATE"));
    writer
        .write_all(b"l LOGIN alice@ours.test secret\r\n")
        .unwrap();
    assert!(read_line(&mut plain).starts_with("l OK"));
    writer.write_all(b"c COMPRESS DEFLATE\r\n").unwrap();
    assert_eq!(read_line(&mut plain), "c OK DEFLATE active\r\n");
    assert!(plain.buffer().is_empty());

    // From here both directions are raw deflate.
    let mut out = DeflateEncoder::new(writer, flate2::Compression::default());
    let mut stream = plain.into_inner();
    let mut inflate = flate2::Decompress::new(false);
    let mut inflated = Vec::new();
    // Inflate what the server sends until `end` has come.
    let mut until = |end: &str| -> String {
        let mut chunk = vec![0; 64 * 1024];
        while !String::from_utf8_lossy(&inflated).contains(end) {
            let n = std::io::Read::read(&mut stream, &mut chunk).unwrap();
            assert!(n > 0, "closed");
            let mut input = &chunk[..n];
            while !input.is_empty() {
                let (before_in, before_out) = (inflate.total_in(), inflate.total_out());
                let mut room = vec![0; 256 * 1024];
                inflate
                    .decompress(input, &mut room, flate2::FlushDecompress::Sync)
                    .unwrap();
                input = &input[(inflate.total_in() - before_in) as usize..];
                inflated.extend_from_slice(&room[..(inflate.total_out() - before_out) as usize]);
            }
        }
        String::from_utf8(std::mem::take(&mut inflated)).unwrap()
    };
    let body = format!("Subject: big\r\n\r\n{}\r\n", "squeeze me ".repeat(2000));
    write!(out, "p APPEND INBOX {{{}+}}\r\n{body}\r\n", body.len()).unwrap();
    out.flush().unwrap();
    assert!(until("p OK").contains("p OK [APPENDUID"));
    write!(out, "s SELECT INBOX\r\nf FETCH 1 BODY.PEEK[]\r\n").unwrap();
    out.flush().unwrap();
    let fetched = until("f OK FETCH completed\r\n");
    let expected = format!("* 1 FETCH (BODY[] {{{}}}\r\n{body})\r\n", body.len());
    assert!(
        fetched.contains(&expected),
        "{}",
        &fetched[..200.min(fetched.len())]
    );
    write!(out, "c2 COMPRESS DEFLATE\r\n").unwrap();
    out.flush().unwrap();
    assert!(until("c2 ").contains("c2 NO [COMPRESSIONACTIVE]"));
    // A client that ends its compressed stream (a final block) and sends
    // on is cut off: what follows the end would only pile up, unread.
    let mut raw = out.finish().unwrap();
    let junk = vec![b'x'; 256 * 1024];
    let _ = raw.write_all(&junk);
    let mut rest = Vec::new();
    // The end of the stream, or a reset (the junk was left unread): not
    // the read timeout of a connection kept open.
    let read = std::io::Read::read_to_end(&mut stream, &mut rest);
    let closed = match &read {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the server closed the connection: {read:?}");
    server.shutdown();
}

#[test]
fn list_extended_selects_subscriptions_recursively_and_returns_status() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    c.tagged("l", "LOGIN alice@ours.test secret");
    let caps = c.tagged("c", "CAPABILITY")[0].clone();
    assert!(caps.contains(" LIST-EXTENDED ") && caps.contains(" LIST-STATUS "));
    for name in ["Foo", "Foo/Bar", "Baz"] {
        assert!(c
            .tagged("c", &format!("CREATE {name}"))
            .last()
            .unwrap()
            .starts_with("c OK"));
    }
    c.tagged("p", "APPEND Baz {12+}\r\nSubject: x\r\n");
    c.tagged("p", "APPEND Baz (\\Seen) {12+}\r\nSubject: y\r\n");
    // Foo/Bar is subscribed, Foo is not; Old is subscribed and then deleted,
    // which leaves its subscription.
    for name in ["Foo/Bar", "Baz"] {
        c.tagged("s", &format!("SUBSCRIBE {name}"));
    }
    c.tagged("c", "CREATE Old");
    c.tagged("s", "SUBSCRIBE Old");
    assert!(c
        .tagged("d", "DELETE Old")
        .last()
        .unwrap()
        .starts_with("d OK"));

    let reply = c.tagged("a", "LIST (SUBSCRIBED) \"\" *");
    let lists: Vec<&String> = reply.iter().filter(|l| l.starts_with("* LIST")).collect();
    assert!(
        lists.contains(&&"* LIST (\\HasNoChildren \\Subscribed) \"/\" Foo/Bar\r\n".to_string()),
        "{reply:?}"
    );
    assert!(
        lists.contains(
            &&"* LIST (\\NonExistent \\HasNoChildren \\Subscribed) \"/\" Old\r\n".to_string()
        ),
        "{reply:?}"
    );
    assert!(!lists.iter().any(|l| l.ends_with(" Foo\r\n")), "{reply:?}");

    // RECURSIVEMATCH: Foo comes for its subscribed child, with CHILDINFO.
    let reply = c.tagged("b", "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %");
    assert!(
        reply.contains(
            &"* LIST (\\HasChildren) \"/\" Foo (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n".to_string()
        ),
        "{reply:?}"
    );
    assert!(!reply.iter().any(|l| l.contains("Foo/Bar")), "{reply:?}");
    assert_eq!(
        c.tagged("b2", "LIST (RECURSIVEMATCH) \"\" %"),
        ["b2 BAD unknown LIST option\r\n"]
    );

    // Several patterns, \Subscribed returned, and a STATUS per mailbox.
    let reply = c.tagged(
        "d",
        "LIST \"\" (Baz \"Foo\") RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))",
    );
    assert_eq!(
        reply,
        [
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" Baz\r\n",
            "* STATUS Baz (MESSAGES 2 UNSEEN 1)\r\n",
            "* LIST (\\HasChildren) \"/\" Foo\r\n",
            "* STATUS Foo (MESSAGES 0 UNSEEN 0)\r\n",
            "d OK LIST completed\r\n",
        ]
    );

    // SPECIAL-USE selection: only those with a use.
    c.tagged("c", "CREATE Sent");
    let reply = c.tagged("e", "LIST (SPECIAL-USE) \"\" *");
    assert_eq!(
        reply,
        [
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n",
            "e OK LIST completed\r\n"
        ]
    );

    // LSUB still lists the subscribed name whose mailbox is gone.
    let reply = c.tagged("f", "LSUB \"\" Old");
    assert!(
        reply[0].starts_with("* LSUB") && reply[0].ends_with(" Old\r\n"),
        "{reply:?}"
    );
    server.shutdown();
}

#[test]
fn qresync_select_and_fetch_report_what_vanished_and_what_changed() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut a, _) = LineClient::connect(server.imap_addr().unwrap());
    a.tagged("l", "LOGIN alice@ours.test secret");
    assert!(a.tagged("c", "CAPABILITY")[0].contains(" QRESYNC "));
    a.tagged("r", "ENABLE IMAP4rev2"); // no \Recent in the way
    for _ in 0..5 {
        a.tagged("p", "APPEND INBOX {12+}\r\nSubject: x\r\n");
    }
    // Without ENABLE QRESYNC, SELECT (QRESYNC ...) is refused.
    let reply = a.tagged("s0", "SELECT INBOX (QRESYNC (1 1))");
    assert_eq!(reply.last().unwrap(), "s0 BAD QRESYNC is not enabled\r\n");
    assert_eq!(
        a.tagged("e", "ENABLE QRESYNC"),
        ["* ENABLED QRESYNC\r\n", "e OK ENABLE completed\r\n"]
    );
    let select = a.tagged("s", "SELECT INBOX");
    let uidvalidity: u32 = select
        .iter()
        .find_map(|l| l.strip_prefix("* OK [UIDVALIDITY "))
        .and_then(|rest| rest.split(']').next())
        .unwrap()
        .parse()
        .unwrap();
    let highest = modseq_of(
        select
            .iter()
            .find(|l| l.contains("[HIGHESTMODSEQ "))
            .unwrap(),
    );

    // Another session flags UID 2 and expunges UID 4.
    let mut b = alice_in_inbox(&server);
    b.tagged("b1", "UID STORE 2 +FLAGS (\\Flagged)");
    b.tagged("b2", "UID STORE 4 +FLAGS (\\Deleted)");
    b.tagged("b3", "EXPUNGE");
    // A QRESYNC session hears of the expunge as VANISHED, by UID.
    let reply = a.tagged("n", "NOOP");
    assert!(reply.contains(&"* VANISHED 4\r\n".to_string()), "{reply:?}");
    // Every FETCH carries the UID once QRESYNC is on (RFC 7162 §3.2.4).
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("* 2 FETCH (FLAGS (\\Flagged) UID 2 MODSEQ (")),
        "{reply:?}"
    );
    let reply = a.tagged("n2", "FETCH 1 (FLAGS)");
    assert!(
        reply[0].starts_with("* 1 FETCH (UID 1 FLAGS () MODSEQ ("),
        "{reply:?}"
    );
    assert!(!reply.iter().any(|l| l.contains("EXPUNGE")), "{reply:?}");

    // Reselect with what the client knew: VANISHED (EARLIER), then the
    // changed message's flags.
    let reply = a.tagged(
        "q",
        &format!("SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:5))"),
    );
    let vanished = reply.iter().position(|l| l == "* VANISHED (EARLIER) 4\r\n");
    let fetch = reply
        .iter()
        .position(|l| l.starts_with("* 2 FETCH (FLAGS (\\Flagged) UID 2 MODSEQ ("));
    assert!(vanished.is_some() && fetch.is_some(), "{reply:?}");
    assert!(vanished < fetch, "{reply:?}");
    assert_eq!(
        reply.iter().filter(|l| l.contains(" FETCH ")).count(),
        1,
        "{reply:?}"
    );
    // Sequence match data that still holds: nothing below UID 3 gone.
    let reply = a.tagged(
        "q2",
        &format!("EXAMINE INBOX (QRESYNC ({uidvalidity} {highest} 1:5 (1:2 1:2)))"),
    );
    assert!(
        reply.contains(&"* VANISHED (EARLIER) 4\r\n".to_string()),
        "{reply:?}"
    );
    // A client that knew the highest modseq missed nothing: no VANISHED.
    let now = modseq_of(
        reply
            .iter()
            .find(|l| l.contains("[HIGHESTMODSEQ "))
            .unwrap(),
    );
    let reply = a.tagged(
        "q4",
        &format!("SELECT INBOX (QRESYNC ({uidvalidity} {now}))"),
    );
    assert!(
        !reply
            .iter()
            .any(|l| l.contains("VANISHED") || l.contains(" FETCH ")),
        "{reply:?}"
    );
    let reply = a.tagged(
        "f0",
        &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {now} VANISHED)"),
    );
    assert_eq!(reply, ["f0 OK FETCH completed\r\n"]);
    // Another UIDVALIDITY: a plain select, nothing reported.
    let reply = a.tagged(
        "q3",
        &format!("SELECT INBOX (QRESYNC ({} 1))", uidvalidity + 1),
    );
    assert!(
        !reply
            .iter()
            .any(|l| l.contains("VANISHED") || l.contains(" FETCH ")),
        "{reply:?}"
    );

    // UID FETCH ... (CHANGEDSINCE m VANISHED).
    let reply = a.tagged(
        "f",
        &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest} VANISHED)"),
    );
    assert_eq!(reply[0], "* VANISHED (EARLIER) 4\r\n", "{reply:?}");
    assert!(
        reply[1].starts_with("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ("),
        "{reply:?}"
    );
    assert_eq!(
        a.tagged("g", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"),
        ["g BAD VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC\r\n"]
    );
    server.shutdown();
}

/// One untagged FETCH response whose line holds one literal: the text
/// before the literal, its octets, and the rest of the line.
fn fetch_with_literal(c: &mut LineClient) -> (String, Vec<u8>, String) {
    let head = c.line();
    let open = head.rfind('{').expect("a literal");
    let size: usize = head[open + 1..head.len() - 3].parse().unwrap();
    let data = c.read_exact(size);
    (head, data, c.line())
}

#[test]
fn binary_fetches_decoded_parts_and_append_takes_binary_content() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut c = alice_in_inbox(&server);
    let caps = c.tagged("c", "CAPABILITY");
    assert!(caps[0].contains(" BINARY"), "{caps:?}");

    // APPEND of binary content in a literal8 (RFC 3516 §4.4).
    let binary_message: &[u8] = b"From: a@ours.test\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Transfer-Encoding: binary\r\n\r\n\
        \0-\xe4\n\r\n\n";
    c.send(&format!(
        "p APPEND INBOX ~{{{}+}}\r\n",
        binary_message.len()
    ));
    c.send_bytes(binary_message);
    c.send("\r\n");
    let mut reply = vec![c.line()];
    while !reply.last().unwrap().starts_with("p ") {
        reply.push(c.line());
    }
    assert_eq!(reply[0], "* 1 EXISTS\r\n");
    assert!(
        reply.last().unwrap().starts_with("p OK [APPENDUID"),
        "{reply:?}"
    );
    // Stored base64-encoded: BODY[1] carries no NUL to clients without BINARY.
    c.send("f1 FETCH 1 (BODY.PEEK[1])\r\n");
    let (head, data, tail) = fetch_with_literal(&mut c);
    assert_eq!(head, "* 1 FETCH (BODY[1] {14}\r\n");
    assert_eq!(data, b"AC3kCg0KCg==\r\n");
    assert_eq!(tail, ")\r\n");
    assert!(c.line().starts_with("f1 OK"));
    // BINARY gives the octets back, in a literal8 as they hold a NUL.
    c.send("f2 FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n");
    let (head, data, tail) = fetch_with_literal(&mut c);
    assert_eq!(head, "* 1 FETCH (BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n");
    assert_eq!(data, b"\0-\xe4\n\r\n\n");
    assert_eq!(tail, ")\r\n");
    assert!(c.line().starts_with("f2 OK"));

    let multipart = "From: a@ours.test\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n\
        --b\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\r\n\
        hello  \r\nbar=\r\n\r\nfoo=09bar\r\n\
        --b\r\n\
        Content-Transfer-Encoding: x-uuencode\r\n\r\n\
        begin 644 x\r\n\
        --b--\r\n";
    let reply = c.tagged(
        "q",
        &format!("APPEND INBOX {{{}+}}\r\n{multipart}", multipart.len()),
    );
    assert!(reply.last().unwrap().starts_with("q OK"), "{reply:?}");
    // A partial BINARY counts octets of the decoded content and says its
    // origin; a plain literal where there is no NUL.
    c.send("f3 FETCH 2 (BINARY.PEEK[1]<5.10>)\r\n");
    let (head, data, _) = fetch_with_literal(&mut c);
    assert_eq!(head, "* 2 FETCH (BINARY[1]<5> {10}\r\n");
    assert_eq!(data, b"\r\nbar\r\nfoo");
    assert!(c.line().starts_with("f3 OK"));
    // An encoding we cannot remove fails the FETCH.
    let reply = c.tagged("f4", "FETCH 2 (BINARY.SIZE[2])");
    assert!(
        reply.last().unwrap().starts_with("f4 NO [UNKNOWN-CTE]"),
        "{reply:?}"
    );
    // BINARY without .PEEK sets \Seen, like BODY[].
    c.send("f5 FETCH 2 (BINARY[1])\r\n");
    let (head, data, tail) = fetch_with_literal(&mut c);
    assert_eq!(head, "* 2 FETCH (BINARY[1] {19}\r\n");
    assert_eq!(data, b"hello\r\nbar\r\nfoo\tbar");
    assert!(
        tail.starts_with(" FLAGS (") && tail.contains("\\Seen"),
        "{tail}"
    );
    assert!(c.line().starts_with("f5 OK"));
    server.shutdown();
}

#[test]
fn multiappend_appends_every_message_or_none() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut c = alice_in_inbox(&server);
    let caps = c.tagged("c", "CAPABILITY");
    assert!(caps[0].contains(" MULTIAPPEND"), "{caps:?}");
    // Three messages, the second with its own flags and date, the first
    // behind a synchronizing literal the client waits for.
    c.send("m1 APPEND INBOX {12}\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(
        "Subject: 1\r\n (\\Flagged) \"24-Mar-2007 23:00:00 +0200\" {12+}\r\nSubject: 2\r\n {12+}\r\nSubject: 3\r\n\r\n",
    );
    let mut reply = vec![c.line()];
    while !reply.last().unwrap().starts_with("m1 ") {
        reply.push(c.line());
    }
    assert!(reply.iter().any(|l| l == "* 3 EXISTS\r\n"), "{reply:?}");
    let done = reply.last().unwrap();
    assert!(done.starts_with("m1 OK [APPENDUID "), "{reply:?}");
    assert!(done.contains(" 1:3] "), "one UID set for all: {done}");
    let fetched = c.tagged(
        "f",
        "FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
    );
    let text = fetched.concat();
    assert!(text.contains("Subject: 1"), "{text}");
    assert!(text.contains("Subject: 3"), "{text}");
    assert!(
        fetched
            .iter()
            .any(|l| l.starts_with("* 2 FETCH (FLAGS (\\Flagged") && l.contains("24-Mar-2007")),
        "{fetched:?}"
    );
    // All or none: a mailbox that does not exist takes none of them...
    let reply = c.tagged(
        "m2",
        "APPEND Nowhere {12+}\r\nSubject: 4\r\n {12+}\r\nSubject: 5\r\n",
    );
    assert!(
        reply.last().unwrap().starts_with("m2 NO [TRYCREATE]"),
        "{reply:?}"
    );
    // ...nor does INBOX when one of them cannot be stored.
    c.send("m3 APPEND INBOX {12+}\r\nSubject: 6\r\n ~{15+}\r\n");
    c.send_bytes(b"Subject: \0\r\n\r\nx");
    c.send("\r\n");
    let reply = c.line();
    assert!(reply.starts_with("m3 NO [UNKNOWN-CTE]"), "{reply}");
    let status = c.tagged("s", "STATUS INBOX (MESSAGES)");
    assert!(status[0].contains("MESSAGES 3"), "{status:?}");
    server.shutdown();
}

#[test]
fn catenate_builds_a_message_from_text_and_urls() {
    let (server, _dir) = start_server(|c| {
        local_config(c);
        c.imap.max_command_size = 64 * 1024;
    });
    add_user(&server, "alice@ours.test");
    let mut c = alice_in_inbox(&server);
    assert!(c.tagged("c", "CAPABILITY")[0].contains(" CATENATE"));
    assert!(c.tagged("m", "CREATE Drafts")[0].starts_with("m OK"));
    let original = "From: a@x.test\r\nSubject: original\r\n\r\nfirst body\r\n";
    let reply = c.tagged(
        "p",
        &format!("APPEND INBOX {{{}+}}\r\n{original}", original.len()),
    );
    let appenduid = reply.last().unwrap().clone();
    assert!(appenduid.starts_with("p OK [APPENDUID "), "{reply:?}");
    let uidvalidity = appenduid.split_whitespace().nth(3).unwrap();
    // The original's header, then new text: a reply draft, as a mail
    // client composes one on the server (RFC 4469).
    let url = format!("/INBOX;UIDVALIDITY={uidvalidity}/;UID=1/;SECTION=HEADER");
    let reply = c.tagged(
        "a1",
        &format!("APPEND Drafts (\\Draft) CATENATE (URL \"{url}\" TEXT {{9+}}\r\nnew body\n)"),
    );
    assert!(
        reply.last().unwrap().starts_with("a1 OK [APPENDUID "),
        "{reply:?}"
    );
    assert!(c
        .tagged("s", "SELECT Drafts")
        .last()
        .unwrap()
        .starts_with("s OK"));
    c.send("f FETCH 1 (FLAGS BODY.PEEK[])\r\n");
    let head = c.line();
    assert!(head.contains("\\Draft"), "{head}");
    let size: usize = head[head.rfind('{').unwrap() + 1..head.len() - 3]
        .parse()
        .unwrap();
    let body = String::from_utf8(c.read_exact(size)).unwrap();
    // CATENATE's parts are kept octet for octet (a TEXT part may be
    // binary), the bare LF too.
    assert_eq!(
        body,
        "From: a@x.test\r\nSubject: original\r\n\r\nnew body\n"
    );
    c.line();
    assert!(c.line().starts_with("f OK"));

    // A URL naming nothing of this user's: BADURL, nothing appended.
    for (tag, bad) in [
        (
            "b1",
            format!(
                "/INBOX;UIDVALIDITY={}/;UID=1",
                uidvalidity.parse::<u32>().unwrap() + 1
            ),
        ),
        ("b2", "/INBOX/;UID=99".to_owned()),
        ("b3", "/Nowhere/;UID=1".to_owned()),
        ("b4", "imap://mallory@x.test/INBOX/;UID=1".to_owned()),
        ("b5", "/INBOX/;UID=1/;URLAUTH=anonymous".to_owned()),
    ] {
        let reply = c.tagged(tag, &format!("APPEND Drafts CATENATE (URL \"{bad}\")"));
        let last = reply.last().unwrap();
        assert!(
            last.starts_with(&format!("{tag} NO [BADURL \"{bad}\"]")),
            "{last}"
        );
    }
    // To a mailbox that is not there: TRYCREATE first.
    let reply = c.tagged("t", "APPEND Nowhere CATENATE (URL \"/INBOX/;UID=1\")");
    assert!(
        reply.last().unwrap().starts_with("t NO [TRYCREATE]"),
        "{reply:?}"
    );
    // A message that URLs make too big is refused (the command size bounds
    // what CATENATE may assemble, as it bounds a literal).
    let many = vec!["URL \"/INBOX/;UID=1\""; 2000].join(" ");
    let reply = c.tagged("z", &format!("APPEND Drafts CATENATE ({many})"));
    assert!(
        reply.last().unwrap().starts_with("z NO [TOOBIG]"),
        "{reply:?}"
    );
    let status = c.tagged("st", "STATUS Drafts (MESSAGES)");
    assert!(status[0].contains("MESSAGES 1"), "{status:?}");
    server.shutdown();
}

/// `* URLFETCH "url" data` for one URL: the data, or None for NIL.
fn urlfetch(c: &mut LineClient, url: &str) -> Option<Vec<u8>> {
    c.send(&format!("uf URLFETCH \"{url}\"\r\n"));
    let head = c.line();
    assert!(head.starts_with("* URLFETCH "), "{head}");
    let data = if head.ends_with("NIL\r\n") {
        None
    } else {
        let size: usize = head[head.rfind('{').unwrap() + 1..head.len() - 3]
            .parse()
            .unwrap();
        let data = c.read_exact(size);
        assert_eq!(c.line(), "\r\n");
        Some(data)
    };
    assert!(c.line().starts_with("uf OK"));
    data
}

#[test]
fn urlauth_lets_others_fetch_what_a_url_authorizes_until_the_key_is_reset() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    add_user(&server, "bob@ours.test");
    let mut alice = alice_in_inbox(&server);
    assert!(alice.tagged("c", "CAPABILITY")[0].contains(" URLAUTH"));
    let message = "From: a@x.test\r\nSubject: for bob\r\n\r\nthe body\r\n";
    let reply = alice.tagged(
        "p",
        &format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()),
    );
    assert!(reply.last().unwrap().starts_with("p OK"), "{reply:?}");
    let authorize = |c: &mut LineClient, url: &str| -> String {
        let reply = c.tagged("g", &format!("GENURLAUTH \"{url}\" INTERNAL"));
        assert!(reply.last().unwrap().starts_with("g OK"), "{reply:?}");
        let line = &reply[0];
        line["* GENURLAUTH \"".len()..line.len() - 3].to_owned()
    };
    let for_anyone = authorize(
        &mut alice,
        "imap://alice@ours.test/INBOX/;UID=1;URLAUTH=authuser",
    );
    assert!(
        for_anyone.contains(";URLAUTH=authuser:internal:"),
        "{for_anyone}"
    );
    let for_alice = authorize(
        &mut alice,
        "imap://alice@ours.test/INBOX/;UID=1/;SECTION=TEXT;URLAUTH=user+alice@ours.test",
    );

    let (mut bob, _) = LineClient::connect(server.imap_addr().unwrap());
    assert!(bob.tagged("l", "LOGIN bob@ours.test secret")[0].starts_with("l OK"));
    assert_eq!(
        urlfetch(&mut bob, &for_anyone).as_deref(),
        Some(message.as_bytes())
    );
    // Not for bob, a changed token, and alice's own.
    assert_eq!(urlfetch(&mut bob, &for_alice), None);
    let mut forged = for_anyone.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(urlfetch(&mut bob, &forged), None);
    assert_eq!(
        urlfetch(&mut alice, &for_alice).as_deref(),
        Some(&b"the body\r\n"[..])
    );
    // Nobody authorizes another's mail.
    let reply = bob.tagged(
        "g2",
        "GENURLAUTH \"imap://alice@ours.test/INBOX/;UID=1;URLAUTH=anonymous\" INTERNAL",
    );
    assert!(reply.last().unwrap().starts_with("g2 NO"), "{reply:?}");
    // A reset key ends every URL made under it.
    assert!(alice
        .tagged("r", "RESETKEY INBOX")
        .last()
        .unwrap()
        .starts_with("r OK"));
    assert_eq!(urlfetch(&mut bob, &for_anyone), None);
    // Before login, none of it.
    let (mut stranger, _) = LineClient::connect(server.imap_addr().unwrap());
    let reply = stranger.tagged("u", &format!("URLFETCH \"{for_anyone}\""));
    assert!(reply.last().unwrap().starts_with("u BAD"), "{reply:?}");
    server.shutdown();
}

/// A FETCH that stops at a part BINARY cannot decode keeps the \Seen it
/// already reported; items that would copy a message many times over
/// (partials differing only in origin) get NO [LIMIT].
#[test]
fn a_fetch_that_stops_early_keeps_its_seen_and_copies_are_bounded() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut c = alice_in_inbox(&server);
    append(
        &mut c,
        "INBOX",
        "Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n",
    );
    append(
        &mut c,
        "INBOX",
        "Subject: b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n",
    );
    let reply = c.tagged("f", "FETCH 1:2 (BINARY[1])");
    assert!(
        reply.iter().any(|l| l.contains("\\Seen")),
        "message 1's \\Seen is reported: {reply:?}"
    );
    assert!(
        reply.last().unwrap().starts_with("f NO [UNKNOWN-CTE]"),
        "{reply:?}"
    );
    let mut other = alice_in_inbox(&server);
    let flags = other.tagged("g", "FETCH 1 (FLAGS)");
    assert!(flags[0].contains("\\Seen"), "and stored: {flags:?}");

    let big = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(100_000));
    append(&mut c, "INBOX", &big);
    let partials: Vec<String> = (0..8)
        .map(|n| format!("BODY.PEEK[]<{n}.4294967295>"))
        .collect();
    let reply = c.tagged("p", &format!("FETCH 3 ({})", partials.join(" ")));
    assert!(
        reply.last().unwrap().starts_with("p NO [LIMIT]"),
        "{:?}",
        reply.last()
    );
    // What clients ask for together is well inside the bound.
    let reply = c.tagged(
        "q",
        "FETCH 3 (BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<0.1024>)",
    );
    assert!(reply.last().unwrap().starts_with("q OK"), "{reply:?}");
    server.shutdown();
}

/// IMAP4rev2 clients name mailboxes in UTF-8, quoted (RFC 9051).
#[test]
fn a_quoted_utf8_mailbox_name_is_a_name() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
    assert!(c.tagged("l", "LOGIN alice@ours.test secret")[0].starts_with("l OK"));
    assert!(c.tagged("e", "ENABLE IMAP4rev2")[0].contains("IMAP4rev2"));
    let reply = c.tagged("c", "CREATE \"Entwürfe\"");
    assert!(reply.last().unwrap().starts_with("c OK"), "{reply:?}");
    let reply = c.tagged("s", "SELECT \"Entwürfe\"");
    assert!(reply.last().unwrap().starts_with("s OK"), "{reply:?}");
    // An empty mailbox: a script's `1:*` is nothing to do, a number is BAD.
    let reply = c.tagged("d", "STORE 1:* +FLAGS (\\Deleted)");
    assert!(reply.last().unwrap().starts_with("d OK"), "{reply:?}");
    let reply = c.tagged("f", "FETCH 1 (FLAGS)");
    assert!(reply.last().unwrap().starts_with("f BAD"), "{reply:?}");
    server.shutdown();
}

/// Names are kept in UTF-8: an IMAP4rev1 session reads and writes them in
/// modified UTF-7, an IMAP4rev2 one in UTF-8, and both mean one mailbox.
#[test]
fn imap4rev1_sessions_see_names_in_modified_utf7() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let login = || {
        let (mut c, _) = LineClient::connect(server.imap_addr().unwrap());
        assert!(c.tagged("l", "LOGIN alice@ours.test secret")[0].starts_with("l OK"));
        c
    };
    let mut rev1 = login();
    let mut rev2 = login();
    assert!(rev2.tagged("e", "ENABLE IMAP4rev2")[0].contains("IMAP4rev2"));
    let ok = |c: &mut LineClient, command: &str| {
        let reply = c.tagged("t", command);
        assert!(
            reply.last().unwrap().starts_with("t OK"),
            "{command}: {reply:?}"
        );
        reply
    };
    ok(&mut rev1, "CREATE \"Entw&APw-rfe\"");
    ok(&mut rev2, "CREATE \"台北\"");
    ok(&mut rev1, "CREATE \"Tom &- Jerry\"");
    let names = |reply: Vec<String>| -> Vec<String> {
        reply
            .iter()
            .filter(|l| l.starts_with("* LIST"))
            .map(|l| l.rsplit_once(" \"/\" ").unwrap().1.trim_end().to_owned())
            .collect()
    };
    // Non-ASCII names go to an IMAP4rev2 session as literals.
    let seen_by_rev2 = ok(&mut rev2, "LIST \"\" \"*\"");
    let seen_by_rev1 = names(ok(&mut rev1, "LIST \"\" \"*\""));
    for (rev2_name, rev1_name) in [
        ("Entwürfe", "Entw&APw-rfe"),
        ("台北", "&U,BTFw-"),
        ("\"Tom & Jerry\"", "\"Tom &- Jerry\""),
    ] {
        assert!(
            seen_by_rev2
                .iter()
                .any(|l| l.trim_end().ends_with(rev2_name)),
            "{rev2_name} in {seen_by_rev2:?}"
        );
        assert!(
            seen_by_rev1.contains(&rev1_name.to_owned()),
            "{rev1_name} in {seen_by_rev1:?}"
        );
    }
    ok(&mut rev1, "SELECT \"&U,BTFw-\"");
    ok(&mut rev2, "SELECT \"Entwürfe\"");
    let status = ok(&mut rev1, "STATUS \"Entw&APw-rfe\" (MESSAGES)");
    assert_eq!(status[0], "* STATUS Entw&APw-rfe (MESSAGES 0)\r\n");
    // A reference is a prefix as written (RFC 3501 §6.3.8), its "/" kept.
    ok(&mut rev1, "CREATE Work/a");
    ok(&mut rev1, "CREATE Workshop");
    let children = names(ok(&mut rev1, "LIST \"Work/\" \"%\""));
    assert_eq!(children, ["Work/a"]);
    server.shutdown();
}

/// URLFETCH builds its answer whole: asking for a large message many times
/// over gets NO [LIMIT] past one command's worth, not memory without end.
/// STATUS SIZE, and BAD for message numbers past the last, on the way.
#[test]
fn urlfetch_is_bounded_status_has_size_and_numbers_past_the_end_are_bad() {
    let (server, _dir) = start_server(|c| {
        local_config(c);
        c.imap.max_command_size = 64 * 1024;
    });
    add_user(&server, "alice@ours.test");
    let mut alice = alice_in_inbox(&server);
    let message = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(30_000));
    append(&mut alice, "INBOX", &message);
    let url = "imap://alice@ours.test/INBOX/;UID=1";
    assert_eq!(
        urlfetch(&mut alice, url).as_deref(),
        Some(message.as_bytes())
    );
    // A number past the last message is BAD (RFC 9051 §9); a UID is not.
    for command in [
        "FETCH 2 (FLAGS)",
        "FETCH 1:3 (FLAGS)",
        "STORE 2 +FLAGS (x)",
        "COPY 5 INBOX",
    ] {
        let reply = alice.tagged("r", command);
        assert!(
            reply.last().unwrap().starts_with("r BAD"),
            "{command}: {reply:?}"
        );
    }
    let reply = alice.tagged("u", "UID FETCH 1:99 (FLAGS)");
    assert!(reply.last().unwrap().starts_with("u OK"), "{reply:?}");
    // `N:*` past the end is how clients poll: let through.
    for command in ["FETCH 1:* (FLAGS)", "FETCH 5:* (FLAGS)"] {
        let reply = alice.tagged("v", command);
        assert!(
            reply.last().unwrap().starts_with("v OK"),
            "{command}: {reply:?}"
        );
    }
    // STATUS SIZE (RFC 9051 §6.3.11): the mailbox's octets.
    let status = alice.tagged("s", "STATUS INBOX (MESSAGES SIZE)");
    assert_eq!(
        status[0],
        format!("* STATUS INBOX (MESSAGES 1 SIZE {})\r\n", message.len())
    );
    // DELETED and DELETED-STORAGE (RFC 9208): what EXPUNGE would free, in KiB.
    let status = alice.tagged("d", "STATUS INBOX (DELETED DELETED-STORAGE)");
    assert_eq!(
        status[0],
        "* STATUS INBOX (DELETED 0 DELETED-STORAGE 0)\r\n"
    );
    alice.tagged("f", "STORE 1 +FLAGS.SILENT (\\Deleted)");
    let status = alice.tagged("d", "STATUS INBOX (DELETED DELETED-STORAGE)");
    assert_eq!(
        status[0],
        format!(
            "* STATUS INBOX (DELETED 1 DELETED-STORAGE {})\r\n",
            message.len().div_ceil(1024)
        )
    );
    let many = vec![format!("\"{url}\""); 100].join(" ");
    let reply = alice.tagged("m", &format!("URLFETCH {many}"));
    assert!(
        reply.last().unwrap().starts_with("m NO [LIMIT]"),
        "{:?}",
        reply.last()
    );
    assert!(alice
        .tagged("n", "NOOP")
        .last()
        .unwrap()
        .starts_with("n OK"));
    server.shutdown();
}

/// APPEND `message` to `mailbox` (with its flags, if any, after the name),
/// which must succeed.
fn append(c: &mut LineClient, mailbox: &str, message: &str) {
    let reply = c.tagged(
        "p",
        &format!("APPEND {mailbox} {{{}+}}\r\n{message}", message.len()),
    );
    assert!(reply.last().unwrap().starts_with("p OK"), "{reply:?}");
}

/// The next line `c` receives, within a few seconds, with no command sent.
fn pushed(c: &mut LineClient) -> String {
    c.line()
}

/// NOTIFY (RFC 5465): with no command outstanding, a session hears of
/// another session's changes to the mailboxes it watches (STATUS), of
/// mailboxes created, renamed and deleted and subscriptions changed (LIST),
/// and of new mail in its selected mailbox; the rules on which events go
/// together are enforced, and NOTIFY NONE stops it all.
#[test]
fn notify_pushes_changes_of_other_mailboxes_and_the_selected_one() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let mut b = alice_in_inbox(&server);
    assert!(b.tagged("c", "CREATE Work")[0].starts_with("c OK"));
    append(&mut b, "Work", "Subject: x\r\n");

    let bad = a.tagged("n1", "NOTIFY SET (personal (MessageNew (UID)))");
    assert!(bad[0].starts_with("n1 BAD"), "{bad:?}");
    let bad = a.tagged("n2", "NOTIFY SET (personal (Bogus))");
    assert!(bad[0].starts_with("n2 BAD"), "{bad:?}");
    // Each event alone brings the STATUS items it changes.
    let set = a.tagged("n2", "NOTIFY SET STATUS (personal (MessageExpunge))");
    assert_eq!(set[0], "* STATUS Work (MESSAGES 1)\r\n", "{set:?}");
    let set = a.tagged("n2", "NOTIFY SET STATUS (personal (FlagChange))");
    assert!(set[0].starts_with("* STATUS Work (UIDVALIDITY "), "{set:?}");
    assert!(set[0].contains(" HIGHESTMODSEQ "), "{set:?}");
    let no = a.tagged(
        "n3",
        "NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))",
    );
    assert!(no[0].starts_with("n3 NO [BADEVENT ("), "{no:?}");

    let set = a.tagged(
        "n4",
        "NOTIFY SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge)) \
         (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
    );
    let status = set.iter().find(|l| l.starts_with("* STATUS Work"));
    let status = status.unwrap_or_else(|| panic!("{set:?}"));
    assert!(status.starts_with("* STATUS Work (MESSAGES 1 UIDNEXT 2 UIDVALIDITY "));
    assert!(
        !set.iter().any(|l| l.starts_with("* STATUS INBOX")),
        "not the selected one"
    );
    assert!(set.last().unwrap().starts_with("n4 OK"), "{set:?}");

    append(&mut b, "Work", "Subject: y\r\n");
    assert!(
        pushed(&mut a).starts_with("* STATUS Work (MESSAGES 2 UIDNEXT 3 UIDVALIDITY "),
        "new mail elsewhere"
    );
    assert!(b.tagged("c", "CREATE Archive")[0].starts_with("c OK"));
    assert_eq!(pushed(&mut a), "* LIST () \"/\" Archive\r\n");
    assert!(b.tagged("r", "RENAME Archive Old")[0].starts_with("r OK"));
    assert_eq!(
        pushed(&mut a),
        "* LIST () \"/\" Old (\"OLDNAME\" (\"Archive\"))\r\n"
    );
    assert!(b.tagged("u", "SUBSCRIBE Old")[0].starts_with("u OK"));
    assert_eq!(pushed(&mut a), "* LIST (\\Subscribed) \"/\" Old\r\n");
    assert!(b.tagged("u", "UNSUBSCRIBE Old")[0].starts_with("u OK"));
    assert_eq!(pushed(&mut a), "* LIST () \"/\" Old\r\n");
    assert!(b.tagged("d", "DELETE Old")[0].starts_with("d OK"));
    assert_eq!(pushed(&mut a), "* LIST (\\NonExistent) \"/\" Old\r\n");

    // The selected mailbox: EXISTS and the FETCH asked for, unprompted.
    append(&mut b, "INBOX (\\Flagged)", "Subject: z\r\n");
    assert_eq!(pushed(&mut a), "* 1 EXISTS\r\n");
    let mut next = pushed(&mut a);
    if next.starts_with("* 1 RECENT") {
        next = pushed(&mut a);
    }
    // \Recent too, when this session (not B) claimed the message.
    let flags = [
        "* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n",
        "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n",
    ];
    assert!(flags.contains(&next.as_str()), "{next}");

    // NOTIFY NONE: nothing more is pushed, nor reported at the next command.
    assert!(a.tagged("n5", "NOTIFY NONE")[0].starts_with("n5 OK"));
    append(&mut b, "Work", "Subject: w\r\n");
    let noop = a.tagged("o", "NOOP");
    assert_eq!(noop.len(), 1, "{noop:?}");
    assert!(noop[0].starts_with("o OK"));
    server.shutdown();
}

/// CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267): PARTIAL windows, and
/// UPDATE results kept current as another session changes the mailbox:
/// ADDTO and REMOVEFROM at the next command, positions in sort order for
/// SORT, a REMOVEFROM before an expunged message's EXPUNGE; CANCELUPDATE
/// stops it, and past the limit a search gets NOUPDATE.
#[test]
fn context_search_and_sort_keep_update_results_current() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let mut b = alice_in_inbox(&server);
    // Sizes 60, 30, 50: a SORT by SIZE puts them 2, 3, 1.
    for size in [60usize, 30, 50] {
        let body = format!("Subject: s\r\n\r\n{}", "x".repeat(size - 15));
        append(&mut b, "INBOX", &body);
    }
    let noop = a.tagged("n", "NOOP");
    assert!(noop.contains(&"* 3 EXISTS\r\n".to_string()), "{noop:?}");

    let partial = a.tagged("p1", "SEARCH RETURN (PARTIAL 3:2) ALL");
    assert_eq!(partial[0], "* ESEARCH (TAG \"p1\") PARTIAL (2:3 2:3)\r\n");
    let partial = a.tagged("p2", "SORT RETURN (PARTIAL 1:2) (SIZE) UTF-8 ALL");
    assert_eq!(partial[0], "* ESEARCH (TAG \"p2\") PARTIAL (1:2 2:3)\r\n");
    let bad = a.tagged("p3", "SEARCH RETURN (PARTIAL 1:*) ALL");
    assert!(bad[0].starts_with("p3 BAD"), "{bad:?}");

    let search = a.tagged("u1", "UID SEARCH RETURN (UPDATE) FLAGGED");
    assert_eq!(search[0], "* ESEARCH (TAG \"u1\") UID\r\n");
    let sort = a.tagged("u2", "SORT RETURN (UPDATE ALL) (SIZE) UTF-8 UNSEEN");
    assert_eq!(sort[0], "* ESEARCH (TAG \"u2\") ALL 2:3,1\r\n");

    // Another session flags 1 and 3 and reads 3: A hears at its next command.
    assert!(b
        .tagged("f", "STORE 1,3 +FLAGS (\\Flagged)")
        .last()
        .unwrap()
        .starts_with("f OK"));
    assert!(b
        .tagged("f", "STORE 3 +FLAGS (\\Seen)")
        .last()
        .unwrap()
        .starts_with("f OK"));
    let noop = a.tagged("n", "NOOP");
    assert!(
        noop.contains(&"* ESEARCH (TAG \"u1\") UID ADDTO (0 1,3)\r\n".to_string()),
        "{noop:?}"
    );
    assert!(
        noop.contains(&"* ESEARCH (TAG \"u2\") REMOVEFROM (2 3)\r\n".to_string()),
        "{noop:?}"
    );
    // A new message of size 40 goes between 2 (30) and 1 (60).
    let body = format!("Subject: s\r\n\r\n{}", "x".repeat(25));
    append(&mut b, "INBOX", &body);
    let noop = a.tagged("n", "NOOP");
    assert!(
        noop.contains(&"* ESEARCH (TAG \"u2\") ADDTO (2 4)\r\n".to_string()),
        "{noop:?}"
    );
    // An expunge: the REMOVEFROM comes before the EXPUNGE, by its number.
    assert!(b
        .tagged("d", "STORE 1 +FLAGS (\\Deleted)")
        .last()
        .unwrap()
        .starts_with("d OK"));
    assert!(b.tagged("e", "EXPUNGE").last().unwrap().starts_with("e OK"));
    let noop = a.tagged("n", "NOOP");
    let removed = noop
        .iter()
        .position(|l| l == "* ESEARCH (TAG \"u2\") REMOVEFROM (3 1)\r\n");
    let expunge = noop.iter().position(|l| l == "* 1 EXPUNGE\r\n");
    assert!(removed.is_some() && removed < expunge, "{noop:?}");
    assert!(
        noop.contains(&"* ESEARCH (TAG \"u1\") UID REMOVEFROM (0 1)\r\n".to_string()),
        "{noop:?}"
    );

    // CANCELUPDATE: no more updates for u1.
    assert!(a.tagged("c", "CANCELUPDATE \"u1\"")[0].starts_with("c OK"));
    assert!(b
        .tagged("f", "STORE 1 +FLAGS (\\Flagged)")
        .last()
        .unwrap()
        .starts_with("f OK"));
    let noop = a.tagged("n", "NOOP");
    assert!(!noop.iter().any(|l| l.contains("\"u1\"")), "{noop:?}");
    // At most 8 kept at once (u2 and seven more); the ninth is told so.
    for n in 0..7 {
        let reply = a.tagged(&format!("k{n}"), "SEARCH RETURN (UPDATE) SEEN");
        assert!(
            reply.last().unwrap().starts_with(&format!("k{n} OK")),
            "{reply:?}"
        );
    }
    let reply = a.tagged("k9", "SEARCH RETURN (UPDATE) SEEN");
    assert!(
        reply
            .iter()
            .any(|l| l.starts_with("* NO [NOUPDATE \"k9\"]")),
        "{reply:?}"
    );
    assert!(reply.last().unwrap().starts_with("k9 OK"));
    server.shutdown();
}

/// URLAUTH=BINARY (RFC 5524): the extended URLFETCH gives a part decoded
/// (a literal8 when it holds NUL), its structure (describing the decoded
/// data when BINARY comes too), each as an item of its own; a part whose
/// encoding cannot be removed gives `(BINARY NIL)`.
#[test]
fn urlfetch_binary_and_bodypartstructure() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut c = alice_in_inbox(&server);
    let message = "Subject: parts\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        aGkAdGhlcmU=\r\n\
        --b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-secret\r\n\r\nhidden\r\n\
        --b--\r\n";
    append(&mut c, "INBOX", message);
    let mut url = |section: u32| {
        let rump = format!(
            "imap://alice@ours.test/INBOX/;uid=1/;section={section};urlauth=user+alice@ours.test"
        );
        let reply = c.tagged("g", &format!("GENURLAUTH \"{rump}\" INTERNAL"));
        let line = &reply[0];
        line["* GENURLAUTH \"".len()..line.len() - 3].to_owned()
    };
    let (one, two) = (url(1), url(2));

    c.send(&format!(
        "f1 URLFETCH (\"{one}\" BINARY BODYPARTSTRUCTURE)\r\n"
    ));
    let head = c.line();
    let expected = format!(
        "* URLFETCH \"{one}\" (BODYPARTSTRUCTURE (\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"binary\" 8 NIL NIL NIL NIL)) (BINARY ~{{8}}\r\n"
    );
    assert_eq!(head, expected);
    assert_eq!(c.read_exact(8), b"hi\0there");
    assert_eq!(c.line(), ")\r\n");
    assert!(c.line().starts_with("f1 OK"));

    // The structure alone is the part as stored.
    let reply = c.tagged("f2", &format!("URLFETCH (\"{one}\" BODYPARTSTRUCTURE)"));
    assert!(
        reply[0].to_ascii_lowercase().contains("\"base64\" 12 nil"),
        "{reply:?}"
    );
    // An encoding that cannot be removed: the structure as is, no data.
    let reply = c.tagged(
        "f3",
        &format!("URLFETCH (\"{two}\" BODYPARTSTRUCTURE BINARY)"),
    );
    let lower = reply[0].to_ascii_lowercase();
    assert!(
        lower.contains("\"x-secret\" 6 1 nil nil nil nil)) (binary nil)"),
        "{reply:?}"
    );
    // Not both BODY and BINARY; and the plain form is unchanged.
    let bad = c.tagged("f4", &format!("URLFETCH (\"{one}\" BODY BINARY)"));
    assert!(bad[0].starts_with("f4 BAD"), "{bad:?}");
    assert_eq!(urlfetch(&mut c, &two).unwrap(), b"hidden");
    server.shutdown();
}

/// An UPDATE search by sequence numbers is tried whole after a change: an
/// expunge moves message 3 into `1:2`, though its modseq did not change.
#[test]
fn update_searches_by_sequence_number_follow_expunges() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let mut b = alice_in_inbox(&server);
    for _ in 0..3 {
        append(&mut b, "INBOX", "Subject: s\r\n");
    }
    assert!(a
        .tagged("n", "NOOP")
        .contains(&"* 3 EXISTS\r\n".to_string()));
    let search = a.tagged("u", "UID SEARCH RETURN (UPDATE) 1:2");
    assert_eq!(search[0], "* ESEARCH (TAG \"u\") UID ALL 1:2\r\n");
    assert!(b
        .tagged("d", "STORE 1 +FLAGS (\\Deleted)")
        .last()
        .unwrap()
        .starts_with("d OK"));
    assert!(b.tagged("e", "EXPUNGE").last().unwrap().starts_with("e OK"));
    let noop = a.tagged("n", "NOOP");
    assert!(
        noop.contains(&"* ESEARCH (TAG \"u\") UID REMOVEFROM (0 1)\r\n".to_string()),
        "{noop:?}"
    );
    assert!(
        noop.contains(&"* ESEARCH (TAG \"u\") UID ADDTO (0 3)\r\n".to_string()),
        "{noop:?}"
    );
    server.shutdown();
}

/// NOTIFY keeps a little of every mailbox it watches: an account with more
/// mailboxes than it keeps track of gets NOTIFICATIONOVERFLOW, not a
/// session that grows without bound.
#[test]
fn notify_refuses_more_mailboxes_than_it_keeps_track_of() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let fine = a.tagged("n1", "NOTIFY SET (personal (MessageNew MessageExpunge))");
    assert!(fine[0].starts_with("n1 OK"), "{fine:?}");
    // One more than the 2,000 a session watches (INBOX makes it two more).
    let creates: String = (0..2_001)
        .map(|n| format!("c{n} CREATE box{n}\r\n"))
        .collect();
    a.send(&creates);
    let mut overflow = false;
    for n in 0..2_001 {
        let mut line = a.line();
        while line.starts_with('*') {
            overflow |= line.starts_with("* OK [NOTIFICATIONOVERFLOW]");
            line = a.line();
        }
        assert!(line.starts_with(&format!("c{n} OK")), "{line}");
    }
    let noop = a.tagged("o", "NOOP");
    overflow |= noop
        .iter()
        .any(|l| l.starts_with("* OK [NOTIFICATIONOVERFLOW]"));
    assert!(overflow, "told that NOTIFY ended");
    let refused = a.tagged("n2", "NOTIFY SET (personal (MessageNew MessageExpunge))");
    assert!(
        refused[0].starts_with("n2 NO [NOTIFICATIONOVERFLOW]"),
        "{refused:?}"
    );
    server.shutdown();
}

/// Sessions of one shard on one mailbox share the rows they read: after a
/// change, most of them take the rows another read (and it is counted).
#[test]
fn sessions_on_one_mailbox_share_the_rows_they_read() {
    let (server, _dir) = start_server(|c| {
        local_config(c);
        c.shards = 1;
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    });
    add_user(&server, "alice@ours.test");
    let mut sessions: Vec<LineClient> = (0..4).map(|_| alice_in_inbox(&server)).collect();
    append(&mut sessions[0], "INBOX", "Subject: x\r\n");
    // The first had its EXISTS with its APPEND.
    for (n, c) in sessions.iter_mut().enumerate().skip(1) {
        let noop = c.tagged("n", "NOOP");
        assert!(
            noop.contains(&"* 1 EXISTS\r\n".to_string()),
            "session {n}: {noop:?}"
        );
    }
    let metrics = common::http_get(server.metrics_addr().unwrap(), "/metrics");
    let shared: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("ringpost_imap_mailbox_reads_total") && l.contains("from=\"shared\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(shared >= 3.0, "{shared} shared reads:\n{metrics}");
    server.shutdown();
}

/// WITHIN (RFC 5032): OLDER and YOUNGER count seconds back from now by
/// INTERNALDATE, as the APPENDs set it.
#[test]
fn search_older_and_younger_by_internal_date() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let caps = a.tagged("c", "CAPABILITY");
    assert!(caps[0].contains(" WITHIN"), "{caps:?}");
    let old = a.tagged(
        "p",
        "APPEND INBOX \"01-Jan-2020 10:00:00 +0000\" {12+}\r\nSubject: x\r\n",
    );
    assert!(old.last().unwrap().starts_with("p OK"), "{old:?}");
    append(&mut a, "INBOX", "Subject: y\r\n");
    let older = a.tagged("s", "UID SEARCH OLDER 86400");
    assert_eq!(older[0], "* SEARCH 1\r\n", "{older:?}");
    let younger = a.tagged("s", "UID SEARCH YOUNGER 86400");
    assert_eq!(younger[0], "* SEARCH 2\r\n", "{younger:?}");
    let bad = a.tagged("s", "SEARCH YOUNGER 0");
    assert!(bad.last().unwrap().starts_with("s BAD"), "{bad:?}");
    server.shutdown();
}

/// A URL the client sent with a line end in it comes back harmless: never
/// a response line of its own (`* BYE ...`).
#[test]
fn line_ends_in_urls_are_not_echoed_as_responses() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let mut a = alice_in_inbox(&server);
    let url = "imap://x\r\n* BYE [ALERT] injected";
    let reply = a.tagged(
        "p",
        &format!("APPEND INBOX CATENATE (URL {{{}+}}\r\n{url})", url.len()),
    );
    assert!(
        reply.iter().all(|line| !line.starts_with("* BYE")),
        "{reply:?}"
    );
    assert!(
        reply.last().unwrap().starts_with("p NO [BADURL "),
        "{reply:?}"
    );
    // URLFETCH names the URL back: as a literal, which holds the line end.
    let fetched = a.tagged("u", &format!("URLFETCH {{{}+}}\r\n{url}", url.len()));
    assert_eq!(
        fetched[0],
        format!("* URLFETCH {{{}}}\r\n", url.len()),
        "{fetched:?}"
    );
    assert!(fetched.last().unwrap().starts_with("u OK"), "{fetched:?}");
    server.shutdown();
}
