//! IMAP end to end: mail delivered over SMTP is read and worked on with
//! Python's imaplib (an independent client), IDLE included; the store then
//! holds what the session left.

mod common;

use common::{add_user, start_server};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

fn local_config(config: &mut ringpost_engine::Config) {
    config.smtp.local_domains = vec!["ours.test".into()];
    config.imap.auth_failure_delay_secs = 0;
}

#[test]
fn imaplib_works_on_what_smtplib_sent() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/imap_read.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.smtp_addr().port().to_string())
        .arg(server.imap_addr().unwrap().port().to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.shutdown();
}

/// A line client for what imaplib hides: exact responses to bad input.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(addr: std::net::SocketAddr) -> (Raw, String) {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut c = Raw {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = c.line();
        (c, greeting)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap_or(0);
        line
    }

    fn send(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).unwrap();
    }

    /// Send a command; return every line up to and including the tagged one.
    fn cmd(&mut self, tag: &str, line: &str) -> Vec<String> {
        self.send(&format!("{tag} {line}\r\n"));
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line.starts_with(&format!("{tag} ")) || line.is_empty();
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

#[test]
fn bad_input_gets_clear_answers() {
    let (server, _dir) = start_server(local_config);
    add_user(&server, "alice@ours.test");
    let (mut c, greeting) = Raw::connect(server.imap_addr().unwrap());
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev2"),
        "{greeting}"
    );
    assert_eq!(c.cmd("a1", "FROB"), ["a1 BAD syntax error\r\n"]);
    assert_eq!(c.cmd("a2", "SELECT INBOX"), ["a2 BAD log in first\r\n"]);
    assert_eq!(
        c.cmd("a3", "LOGIN nobody@ours.test secret"),
        ["a3 NO [AUTHENTICATIONFAILED] invalid credentials\r\n"]
    );
    // A literal larger than the limit is refused before it is sent.
    let reply = c.cmd("a4", "LOGIN {999999999}");
    assert_eq!(reply, ["a4 NO [TOOBIG] literal too big\r\n"]);
    // SASL-IR: AUTHENTICATE PLAIN with the initial response.
    let reply = c.cmd("a5", "AUTHENTICATE PLAIN AGFsaWNlQG91cnMudGVzdABzZWNyZXQ=");
    assert!(reply[0].starts_with("a5 OK"), "{reply:?}");
    assert_eq!(
        c.cmd("a6", "FETCH 1 FLAGS"),
        ["a6 BAD no mailbox selected\r\n"]
    );
    let reply = c.cmd("a7", "SELECT Nowhere");
    assert_eq!(
        reply.last().unwrap(),
        "a7 NO [NONEXISTENT] no such mailbox\r\n"
    );
    // An INBOX that never got mail selects as empty.
    let reply = c.cmd("a8", "SELECT INBOX");
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
    let reply = c.cmd("b1", "CREATE Work");
    assert_eq!(reply, ["b1 NO [ALREADYEXISTS] mailbox exists\r\n"]);
    let reply = c.cmd("b2", "DELETE INBOX");
    assert_eq!(reply, ["b2 NO [CANNOT] INBOX cannot be deleted\r\n"]);
    let reply = c.cmd("b3", "LOGOUT");
    assert_eq!(reply[0], "* BYE logging out\r\n");
    server.shutdown();
}
