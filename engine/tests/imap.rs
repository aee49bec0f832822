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
