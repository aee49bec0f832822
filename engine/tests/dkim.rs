//! DKIM signing end to end: mail a trusted client relays is signed when
//! accepted and arrives at an MX (a sink) with signatures that Python's
//! dkimpy verifies, looking the keys up in a loopback DNS server: RSA and
//! Ed25519, plain, multipart and 8-bit messages, and after a retry.

mod common;
mod support;

use common::{start_server, Client};
use ringpost_engine::config::DkimKeyConfig;
use ringpost_loadtest::sink::{self, Faults, SinkConfig, SinkHandle};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use support::dns::{TestDns, TestRecord};

const SINK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(30);

/// The test's RSA-2048 key (made once with openssl; a test key only).
const RSA_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dkim-rsa2048.pem");

fn sink_on(faults: Faults) -> SinkHandle {
    sink::start(SinkConfig {
        listen: (SINK, 0).into(),
        threads: 1,
        hostname: "sink.test".into(),
        faults,
        keep_messages: 100,
        dump_dir: None,
        id_log: None,
        exit_after: None,
    })
    .expect("sink starts")
}

/// An Ed25519 key in a PEM file under `dir`.
fn ed25519_key(dir: &Path) -> std::path::PathBuf {
    use base64::Engine as _;
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let text = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let path = dir.join("ed25519.pem");
    std::fs::write(
        &path,
        format!("-----BEGIN PRIVATE KEY-----\n{text}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    path
}

/// The TXT record of a key, as `ringpost dkim record` prints it.
fn record(domain: &str, selector: &str, key: &Path) -> TestRecord {
    let loaded = ringpost_engine::dkim::load_key(domain, selector, key).unwrap();
    TestRecord::txt(
        format!("{selector}._domainkey.{domain}"),
        loaded.dns_record(),
    )
}

/// The zones: dest.test's MX (the sink), and in a second zone on its own
/// server, example.com's two keys.
fn zones(ed25519: &Path) -> (TestDns, TestDns) {
    let dns = TestDns::start(
        "test.",
        &[
            TestRecord::mx("dest.test", 10, "mx.dest.test"),
            TestRecord::a("mx.dest.test", SINK),
        ],
    );
    let keys = TestDns::start(
        "example.com.",
        &[
            record("example.com", "rsa1", Path::new(RSA_KEY)),
            record("example.com", "ed1", ed25519),
        ],
    );
    (dns, keys)
}

/// Relay to `sink` for dest.test through `dns`, signing example.com's mail
/// with both keys.
fn signing_relay(
    dns: SocketAddr,
    port: u16,
    ed25519: &Path,
) -> impl FnOnce(&mut ringpost_engine::Config) {
    let ed25519 = ed25519.to_owned();
    move |c| {
        c.relay.enabled = true;
        c.relay.nameservers = vec![dns];
        c.relay.mx_port = port;
        c.relay.dns_timeout_secs = 2;
        c.relay.retry_initial_secs = 1;
        c.relay.retry_max_secs = 2;
        c.relay.idle_connection_secs = 1;
        c.dkim.keys = vec![
            DkimKeyConfig {
                domain: "example.com".into(),
                selector: "rsa1".into(),
                key: RSA_KEY.into(),
            },
            DkimKeyConfig {
                domain: "Example.com".into(),
                selector: "ed1".into(),
                key: ed25519,
            },
        ];
    }
}

fn send(addr: SocketAddr, message: &str) {
    let (mut c, greeting) = Client::connect(addr);
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    assert!(c
        .cmd("MAIL FROM:<a@example.com> BODY=8BITMIME")
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@dest.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd(&format!("{message}."));
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// dkimpy's verdict on `data`: (every signature verified, what it said).
fn verify(dns: &TestDns, data: &[u8]) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dkim_verify.py");
    // Debian's python3-dkim lives with the system's python3.
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(dns.addr().port().to_string())
        .arg(file.path())
        .output()
        .expect("/usr/bin/python3 runs (make test installs python3-dkim)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

const PLAIN: &str = "From: Ann <a@example.com>\r\nTo: x@dest.test\r\nSubject: plain\r\n\
    Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <p1@example.com>\r\n\r\n\
    Hello   there,  \r\n\r\nwith trailing   space and blank lines.\r\n\r\n\r\n";

const MULTIPART: &str = "From: a@example.com\r\nTo: x@dest.test\r\nSubject: parts\r\n\
    MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\
    List-Unsubscribe: <mailto:unsub@example.com>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n\
    --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n\
    --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html part</p>\r\n--b1--\r\n";

const EIGHT_BIT: &str = "From: a@example.com\r\nTo: x@dest.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\
    MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
    Grüße aus Köln, ça va ? 日本語\r\n";

#[test]
fn rsa_and_ed25519_signatures_verify_for_plain_multipart_and_8bit_mail() {
    let dir = tempfile::tempdir().unwrap();
    let ed25519 = ed25519_key(dir.path());
    let sink = sink_on(Faults::default());
    let port = sink.addr().port();
    let (dns, keys) = zones(&ed25519);
    let (server, _data) = start_server(signing_relay(dns.addr(), port, &ed25519));
    for message in [PLAIN, MULTIPART, EIGHT_BIT] {
        send(server.smtp_addr(), message);
    }
    assert!(sink.wait_for_messages(3, WAIT), "all three delivered");
    for received in sink.messages() {
        let text = String::from_utf8_lossy(&received.data);
        assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
        let (ok, said) = verify(&keys, &received.data);
        assert!(ok, "dkimpy: {said}\n{text}");
        assert!(
            said.contains("a=rsa-sha256") && said.contains("a=ed25519-sha256"),
            "{said}"
        );
    }
    // The verifier is no rubber stamp: one changed byte fails both.
    let mut tampered = sink.messages()[0].data.clone();
    let at = tampered.len() - 5;
    tampered[at] ^= 0x20;
    let (ok, said) = verify(&keys, &tampered);
    assert!(!ok && said.matches("fail").count() == 2, "{said}");
    // A message whose From domain has no key goes unsigned.
    send(
        server.smtp_addr(),
        "From: b@other.test\r\nSubject: unsigned\r\n\r\nbody\r\n",
    );
    assert!(sink.wait_for_messages(4, WAIT));
    let last = sink.messages().pop().unwrap();
    assert!(!String::from_utf8_lossy(&last.data).contains("DKIM-Signature"));
    server.shutdown();
}

#[test]
fn a_retried_message_keeps_a_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let ed25519 = ed25519_key(dir.path());
    // The first delivery attempt is refused for now: the retry sends the
    // stored, already signed bytes.
    let sink = sink_on(Faults {
        tempfail_data_first: 1,
        ..Faults::default()
    });
    let (dns, keys) = zones(&ed25519);
    let (server, _data) = start_server(signing_relay(dns.addr(), sink.addr().port(), &ed25519));
    send(server.smtp_addr(), PLAIN);
    assert!(sink.wait_for_messages(1, WAIT), "delivered on the retry");
    assert_eq!(sink.stats().tempfails, 1);
    let (ok, said) = verify(&keys, &sink.messages()[0].data);
    assert!(ok, "dkimpy: {said}");
    server.shutdown();
}

/// Mail from the internet is never signed, whatever its From says: a
/// stranger must not get our signature on a forged From.
#[test]
fn inbound_mail_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ed25519 = ed25519_key(dir.path());
    let (server, _data) = start_server(|c| {
        c.smtp.relay_networks = Vec::new();
        c.smtp.local_domains = vec!["ours.test".into()];
        c.dkim.keys = vec![DkimKeyConfig {
            domain: "example.com".into(),
            selector: "ed1".into(),
            key: ed25519,
        }];
    });
    common::add_user(&server, "ann@ours.test");
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO stranger.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<ceo@example.com>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<ann@ours.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd("From: ceo@example.com\r\nSubject: wire money\r\n\r\nnow\r\n.");
    assert!(reply.starts_with("250"), "{reply}");
    let store = server.store();
    let mut bodies = Vec::new();
    store
        .scan(
            ringpost_storage::Family::Blobs,
            &[],
            None,
            &mut |_, body| {
                bodies.push(body.to_vec());
                true
            },
        )
        .unwrap();
    assert_eq!(bodies.len(), 1);
    let text = String::from_utf8_lossy(&bodies[0]);
    assert!(text.starts_with("Return-Path: <"), "{text}");
    assert!(text.contains("\r\nReceived: "), "{text}");
    assert!(!text.contains("DKIM-Signature"), "{text}");
    server.shutdown();
}

/// Mail injected over the HTTP API is signed like submitted mail: once,
/// before it is stored.
#[test]
fn injected_mail_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ed25519 = ed25519_key(dir.path());
    let sink = sink_on(Faults::default());
    let (dns, keys) = zones(&ed25519);
    let (server, _data) = start_server(|c| {
        signing_relay(dns.addr(), sink.addr().port(), &ed25519)(c);
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let request = serde_json::json!({
        "envelope_sender": "a@example.com",
        "recipients": ["x@dest.test"],
        "content": {
            "from": {"email": "a@example.com", "name": "Ann"},
            "subject": "injected",
            "text_body": "Hello\nfrom the API\n",
            "html_body": "<p>Hello</p>"
        }
    });
    let (status, answer) = common::admin_call(
        &server,
        "POST",
        "/api/v1/inject",
        &request.to_string(),
        true,
    );
    assert_eq!(status, 200, "{answer}");
    assert!(sink.wait_for_messages(1, WAIT), "delivered");
    let data = &sink.messages()[0].data;
    let text = String::from_utf8_lossy(data);
    assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
    let (ok, said) = verify(&keys, data);
    assert!(ok, "dkimpy: {said}");
    server.shutdown();
}

/// Inbound: a message signed by another implementation (dkimpy) passes
/// DKIM and, aligned with its From domain, DMARC; the same message
/// altered on the way fails both, and its domain's p=reject refuses it;
/// an unsigned message from a p=quarantine domain is kept, marked.
#[test]
fn inbound_dkim_and_dmarc_with_an_independent_signer() {
    let dns = TestDns::start(
        "test.",
        &[
            record("signed.test", "rsa1", Path::new(RSA_KEY)),
            TestRecord::txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
            TestRecord::txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
        ],
    );
    let nameserver = dns.addr();
    let (server, _data) = start_server(move |c| {
        c.inbound_auth.enabled = true;
        c.relay.nameservers = vec![nameserver];
        c.relay.dns_timeout_secs = 2;
        // 127.0.0.1 is a stranger here.
        c.smtp.relay_networks = vec!["127.0.0.2/32".parse().unwrap()];
        c.smtp.local_domains = vec!["ours.test".into()];
    });
    common::add_user(&server, "ann@ours.test");
    let sign = |message: &str| -> String {
        let dir = tempfile::tempdir().unwrap();
        let (plain, signed) = (dir.path().join("in"), dir.path().join("out"));
        std::fs::write(&plain, message).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/dkim_sign.py");
        let out = std::process::Command::new("/usr/bin/python3")
            .args([script, RSA_KEY, "signed.test", "rsa1"])
            .arg(&plain)
            .arg(&signed)
            .output()
            .expect("/usr/bin/python3 runs (make test installs python3-dkim)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&signed).unwrap()
    };
    // The final reply to a message from a@bounces.test to ann.
    let deliver = |message: &str| -> String {
        let (mut c, _) = Client::connect(server.smtp_addr());
        assert!(c.cmd("EHLO sender.test").starts_with("250"));
        assert!(c.cmd("MAIL FROM:<a@bounces.test>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<ann@ours.test>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let reply = c.cmd(&format!("{}.", message.replace("\r\n.", "\r\n..")));
        c.cmd("QUIT");
        reply
    };
    let stored = |reply: &str| -> String {
        let id = reply.split_whitespace().last().unwrap();
        let id = ringpost_storage::spool::MessageId::from_hex(id).unwrap();
        let body = ringpost_storage::spool::read_body(&*server.store(), &id)
            .unwrap()
            .unwrap();
        String::from_utf8(body).unwrap()
    };

    let signed = sign("From: Shop <news@signed.test>\r\nTo: ann@ours.test\r\nSubject: signed\r\n\r\nHello Ann,\r\nyour order.\r\n");
    let reply = deliver(&signed);
    assert!(reply.starts_with("250"), "{reply}");
    let kept = stored(&reply);
    assert!(kept.contains("\tdkim=pass (good signature of signed.test) header.d=signed.test header.s=rsa1 header.b="), "{kept}");
    assert!(
        kept.contains("\tdmarc=pass (DKIM aligned with signed.test) header.from=signed.test\r\n"),
        "{kept}"
    );

    let altered = signed.replace("your order", "your bill");
    let refused = deliver(&altered);
    assert!(
        refused.starts_with("550 5.7.1 DMARC policy of signed.test rejects this message"),
        "{refused}"
    );

    // Quarantine: into Junk for bob, who has one; ann has only INBOX.
    common::add_user(&server, "bob@ours.test");
    let mut batch = ringpost_storage::WriteBatch::new();
    ringpost_engine::users::default_mailboxes(&mut batch, "bob@ours.test");
    server.commit_handle().commit_blocking(batch).unwrap();
    let count = |user: &str, mailbox: &str| {
        ringpost_storage::mailbox::meta(&*server.store(), user, mailbox)
            .unwrap()
            .map_or(0, |m| m.messages)
    };
    let (ann_inbox, bob_inbox) = (
        count("ann@ours.test", "INBOX"),
        count("bob@ours.test", "INBOX"),
    );
    let (mut c, _) = Client::connect(server.smtp_addr());
    assert!(c.cmd("EHLO sender.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@bounces.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<ann@ours.test>").starts_with("250"));
    // A success report for quarantined mail would be backscatter.
    assert!(c
        .cmd("RCPT TO:<bob@ours.test> NOTIFY=SUCCESS")
        .starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd("From: q@quarantine.test\r\nSubject: unsigned\r\n\r\nhi\r\n.");
    c.cmd("QUIT");
    assert!(reply.starts_with("250"), "{reply}");
    let kept = stored(&reply);
    assert!(
        kept.contains("\tdkim=none (no signature);\r\n\tdmarc=fail ("),
        "{kept}"
    );
    assert!(
        kept.contains("p=quarantine) header.from=quarantine.test\r\n"),
        "{kept}"
    );
    assert_eq!(
        count("bob@ours.test", "Junk"),
        1,
        "quarantined into bob's Junk"
    );
    assert_eq!(count("bob@ours.test", "INBOX"), bob_inbox);
    assert_eq!(
        count("ann@ours.test", "INBOX"),
        ann_inbox + 1,
        "ann has no Junk: INBOX"
    );
    let queued = ringpost_storage::spool::list_envelopes(&*server.store()).unwrap();
    assert!(queued.is_empty(), "no DSN to the sender: {queued:?}");
    server.shutdown();
}
