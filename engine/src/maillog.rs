//! The mail log: one line per accepted message, one per recipient of each
//! delivery attempt. What an operator greps by queue id and a log shipper
//! forwards, as Postfix's maillog is.
//!
//! By default the lines are `tracing` events (target `ringpost::mail`, at
//! info), so they go wherever the other logs go, as text or JSON
//! (`--log-format`). With `log.mail_log` set they go to that file instead,
//! written by a thread of their own (a bounded channel: a shard never waits
//! on the disk for a log line; a line that finds the channel full is
//! dropped and counted), one line each, as Postfix-like text or JSON
//! (`log.mail_log_format`). SIGHUP reopens the file, for logrotate.

use crate::config::{MailLogConfig, MailLogFormat};
use serde_json::{json, Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Lines waiting for the writer; more are dropped (and counted).
const BACKLOG: usize = 64 * 1024;

/// What the writer thread is handed, in order. It blocks on its queue with
/// no timeout: every wake is one of these, so nothing depends on timing.
enum Queued {
    Line(String),
    /// Look at the reopen flag now (the writer may be idle).
    Reopen,
    /// Write what came before, then end.
    Stop,
}

/// A message taken (250 said).
pub struct Accepted<'a> {
    /// Its queue id.
    pub queue_id: &'a str,
    /// Shard that took it.
    pub shard: usize,
    /// The client's address.
    pub client: IpAddr,
    /// What the client called itself (EHLO/HELO).
    pub helo: &'a str,
    /// The account it authenticated as.
    pub user: Option<&'a str>,
    /// Over TLS.
    pub tls: bool,
    /// Envelope sender ("" for the null sender).
    pub sender: &'a str,
    /// Envelope recipients.
    pub recipients: usize,
    /// Bytes stored.
    pub size: u64,
    /// DKIM signatures added.
    pub dkim: usize,
}

impl Accepted<'_> {
    /// Its fields as JSON: the mail log's line and the reception event.
    pub fn fields(&self) -> Map<String, Value> {
        let fields = json!({
            "shard": self.shard,
            "queue_id": self.queue_id,
            "client": self.client.to_string(),
            "helo": self.helo,
            "user": self.user,
            "tls": self.tls,
            "from": self.sender,
            "nrcpt": self.recipients,
            "size": self.size,
            "dkim": self.dkim,
        });
        into_map(fields)
    }
}

impl Attempt<'_> {
    /// Its fields as JSON: the mail log's line and the delivery event.
    pub fn fields(&self) -> Map<String, Value> {
        let fields = json!({
            "shard": self.shard,
            "queue_id": self.queue_id,
            "to": self.recipient,
            "domain": self.domain,
            "host": self.host,
            "site": self.site,
            "addr": self.addr.map(|a| a.to_string()),
            "tls": self.tls,
            "attempt": self.attempt,
            "delay": self.delay,
            "size": self.size,
            "dsn": self.status,
            "status": self.result.name(),
            "class": self.class,
            "reply": self.reply,
        });
        into_map(fields)
    }
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A JSON log line: the time, what happened, and its fields.
fn json_line(event: &str, mut fields: Map<String, Value>) -> String {
    fields.insert("ts".into(), timestamp().into());
    fields.insert("event".into(), event.into());
    Value::Object(fields).to_string()
}

/// How one recipient's attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Taken by the remote host.
    Delivered,
    /// To be tried again.
    Deferred,
    /// Failed for good; a DSN goes to the sender.
    Bounced,
}

impl Disposition {
    /// As logs and metrics write it.
    pub fn name(self) -> &'static str {
        match self {
            Disposition::Delivered => "delivered",
            Disposition::Deferred => "deferred",
            Disposition::Bounced => "bounced",
        }
    }
}

/// One recipient of one delivery attempt.
pub struct Attempt<'a> {
    /// The message's queue id.
    pub queue_id: &'a str,
    /// Shard that made the attempt.
    pub shard: usize,
    /// The recipient.
    pub recipient: &'a str,
    /// Its domain.
    pub domain: &'a str,
    /// The host that answered, if one was reached.
    pub host: Option<&'a str>,
    /// The MX site the attempt went to (its hosts), when it got that far.
    pub site: Option<&'a str>,
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// The TLS version of the connection, if TLS was used.
    pub tls: Option<&'a str>,
    /// Which attempt this was (1 for the first).
    pub attempt: u32,
    /// How it ended.
    pub result: Disposition,
    /// The enhanced status code.
    pub status: &'a str,
    /// What a refusal means (its bounce class); None when accepted.
    pub class: Option<&'a str>,
    /// The reply (or our verdict) in full.
    pub reply: &'a str,
    /// Seconds since the message arrived.
    pub delay: f64,
    /// Message size, when known.
    pub size: Option<u64>,
}

/// Where the lines go.
pub struct MailLog {
    file: Option<FileSink>,
}

struct FileSink {
    lines: flume::Sender<Queued>,
    format: MailLogFormat,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
}

/// The writer thread of a mail log file: dropping it writes what is
/// queued and ends the thread.
pub struct MailLogWriter {
    queue: flume::Sender<Queued>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MailLogWriter {
    fn drop(&mut self) {
        // Behind every line queued so far (waiting for room if it must).
        let _ = self.queue.send(Queued::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl MailLog {
    /// Lines as `tracing` events.
    pub fn to_tracing() -> MailLog {
        MailLog { file: None }
    }

    /// The log `config` asks for, and its writer thread (when it is a file).
    pub fn open(config: &MailLogConfig) -> io::Result<(MailLog, Option<MailLogWriter>)> {
        let Some(path) = &config.mail_log else {
            return Ok((MailLog::to_tracing(), None));
        };
        let file = open_append(path)?;
        let (lines, queued) = flume::bounded::<Queued>(BACKLOG);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = {
            let (path, reopen) = (path.clone(), reopen.clone());
            std::thread::Builder::new()
                .name("ringpost-maillog".into())
                .spawn(move || write_lines(path, file, queued, reopen))?
        };
        let queue = lines.clone();
        let log = MailLog {
            file: Some(FileSink {
                lines,
                format: config.mail_log_format,
                dropped: AtomicU64::new(0),
                reopen,
            }),
        };
        Ok((
            log,
            Some(MailLogWriter {
                queue,
                thread: Some(writer),
            }),
        ))
    }

    /// Open the file again at the next line (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(file) = &self.file {
            file.reopen.store(true, Ordering::Release);
            // A full queue means a busy writer, which checks the flag anyway.
            let _ = file.lines.try_send(Queued::Reopen);
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |f| f.dropped.load(Ordering::Relaxed))
    }

    /// A message was taken.
    pub fn accepted(&self, a: &Accepted<'_>) {
        let Some(file) = &self.file else {
            tracing::info!(
                target: "ringpost::mail",
                shard = a.shard,
                queue_id = a.queue_id,
                client = %a.client,
                helo = a.helo,
                user = a.user.unwrap_or("-"),
                tls = a.tls,
                from = a.sender,
                nrcpt = a.recipients,
                size = a.size,
                dkim = a.dkim,
                "accepted"
            );
            return;
        };
        file.send(match file.format {
            MailLogFormat::Text => format!(
                "{} ringpost[shard{}] {}: accepted client=[{}] helo={} user={} tls={} from=<{}> nrcpt={} size={} dkim={}",
                timestamp(),
                a.shard,
                a.queue_id,
                a.client,
                a.helo,
                a.user.unwrap_or("-"),
                if a.tls { "yes" } else { "no" },
                a.sender,
                a.recipients,
                a.size,
                a.dkim
            ),
            MailLogFormat::Json => json_line("accepted", a.fields()),
        });
    }

    /// One recipient of a delivery attempt ended.
    pub fn attempt(&self, a: &Attempt<'_>) {
        let relay = match (a.host, a.addr) {
            (Some(host), Some(addr)) => format!("{host}[{}]:{}", addr.ip(), addr.port()),
            (Some(host), None) => host.to_owned(),
            _ => "none".to_owned(),
        };
        let Some(file) = &self.file else {
            tracing::info!(
                target: "ringpost::mail",
                shard = a.shard,
                queue_id = a.queue_id,
                to = a.recipient,
                domain = a.domain,
                relay = %relay,
                site = a.site,
                tls = a.tls.unwrap_or("none"),
                attempt = a.attempt,
                delay = format!("{:.1}", a.delay),
                size = a.size,
                dsn = a.status,
                status = a.result.name(),
                class = a.class,
                reply = a.reply,
                "delivery"
            );
            return;
        };
        file.send(match file.format {
            MailLogFormat::Text => format!(
                "{} ringpost[shard{}] {}: to=<{}> domain={} relay={} tls={} attempt={} delay={:.1} size={} dsn={} status={}{} ({})",
                timestamp(),
                a.shard,
                a.queue_id,
                a.recipient,
                a.domain,
                relay,
                a.tls.unwrap_or("none"),
                a.attempt,
                a.delay,
                a.size.map_or("-".to_owned(), |s| s.to_string()),
                a.status,
                a.result.name(),
                a.class.map_or(String::new(), |c| format!(" class={c}")),
                a.reply.replace(['\r', '\n'], " ")
            ),
            MailLogFormat::Json => json_line("delivery", a.fields()),
        });
    }
}

impl FileSink {
    fn send(&self, line: String) {
        // Client-chosen text (a HELO name, a reply) may hold control
        // characters: in a text log they would be terminal escapes, or a
        // CR that hides the fields before it. JSON escapes its own.
        let line = match line.contains(char::is_control) {
            true => line.replace(char::is_control, "?"),
            false => line,
        };
        if self.lines.try_send(Queued::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer: lines as they come, flushed whenever the channel is empty,
/// the file opened again when asked; ends when told to (once the channel
/// is empty) or when every sender is gone.
fn write_lines(
    path: PathBuf,
    file: File,
    queued: flume::Receiver<Queued>,
    reopen: Arc<AtomicBool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    loop {
        let next = match queued.try_recv() {
            Ok(next) => next,
            // Idle: what was written reaches the file before the wait.
            Err(flume::TryRecvError::Empty) => {
                let _ = out.flush();
                match queued.recv() {
                    Ok(next) => next,
                    Err(flume::RecvError::Disconnected) => break,
                }
            }
            Err(flume::TryRecvError::Disconnected) => break,
        };
        if reopen.swap(false, Ordering::AcqRel) {
            out = reopened(&path, out);
        }
        match next {
            Queued::Line(line) => {
                if let Err(e) = writeln!(out, "{line}") {
                    tracing::error!(file = %path.display(), error = %e, "mail log write failed");
                }
            }
            Queued::Reopen => {}
            Queued::Stop => break,
        }
    }
    let _ = out.flush();
}

fn reopened(path: &PathBuf, mut old: BufWriter<File>) -> BufWriter<File> {
    let _ = old.flush();
    match open_append(path) {
        Ok(file) => BufWriter::with_capacity(64 * 1024, file),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot reopen the mail log; keeping the old file");
            old
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_after_a_rotation_writes_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.log");
        let config = MailLogConfig {
            mail_log: Some(path.clone()),
            mail_log_format: MailLogFormat::Text,
        };
        let (log, writer) = MailLog::open(&config).unwrap();
        let accepted = |queue_id| Accepted {
            queue_id,
            shard: 0,
            client: "127.0.0.2".parse().unwrap(),
            helo: "client.test",
            user: None,
            tls: false,
            sender: "a@b.test",
            recipients: 1,
            size: 10,
            dkim: 0,
        };
        log.accepted(&accepted("before"));
        // Wait for the writer to reach the file, as logrotate would find it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let rotated = dir.path().join("mail.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.accepted(&accepted("after"));
        drop(log);
        drop(writer);
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.contains(" before: accepted") && !old.contains("after"),
            "{old}"
        );
        assert!(
            new.contains(" after: accepted") && !new.contains("before"),
            "{new}"
        );
    }

    /// A client's control characters (terminal escapes, a CR that hides
    /// what precedes it) never reach the text log raw.
    #[test]
    fn client_text_cannot_write_control_characters_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.log");
        let config = MailLogConfig {
            mail_log: Some(path.clone()),
            mail_log_format: MailLogFormat::Text,
        };
        let (log, writer) = MailLog::open(&config).unwrap();
        log.accepted(&Accepted {
            queue_id: "q1",
            shard: 0,
            client: "127.0.0.2".parse().unwrap(),
            helo: "\u{1b}]0;pwned\u{7}\u{1b}[2J\rfake",
            user: None,
            tls: false,
            sender: "a@b.test",
            recipients: 1,
            size: 1,
            dkim: 0,
        });
        drop(log);
        drop(writer);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        let line = text.trim_end_matches('\n');
        assert!(!line.contains(char::is_control), "{line:?}");
        assert!(line.contains("helo=?]0;pwned??[2J?fake"), "{line:?}");
    }

    #[test]
    fn text_and_json_lines_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for format in [MailLogFormat::Text, MailLogFormat::Json] {
            let path = dir.path().join(format!("{format:?}.log"));
            let config = MailLogConfig {
                mail_log: Some(path.clone()),
                mail_log_format: format,
            };
            let (log, writer) = MailLog::open(&config).unwrap();
            log.accepted(&Accepted {
                queue_id: "q1",
                shard: 0,
                client: "127.0.0.2".parse().unwrap(),
                helo: "client.test",
                user: Some("ann@ours.test"),
                tls: true,
                sender: "ann@ours.test",
                recipients: 2,
                size: 1234,
                dkim: 1,
            });
            log.attempt(&Attempt {
                queue_id: "q1",
                shard: 1,
                recipient: "bob@far.test",
                domain: "far.test",
                host: Some("mx.far.test"),
                site: Some("mx.far.test"),
                addr: Some("127.0.0.3:25".parse().unwrap()),
                tls: Some("TLSv1.3"),
                attempt: 1,
                result: Disposition::Delivered,
                status: "2.0.0",
                class: None,
                reply: "250 2.0.0 Ok",
                delay: 0.25,
                size: Some(1234),
            });
            log.attempt(&Attempt {
                queue_id: "q1",
                shard: 1,
                recipient: "gone@far.test",
                domain: "far.test",
                host: Some("mx.far.test"),
                site: None,
                addr: None,
                tls: None,
                attempt: 1,
                result: Disposition::Bounced,
                status: "5.1.1",
                class: Some("invalid_recipient"),
                reply: "550 5.1.1 no such user",
                delay: 0.25,
                size: None,
            });
            drop(log);
            drop(writer);
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "{text}");
            match format {
                MailLogFormat::Text => {
                    assert!(lines[0].ends_with(" ringpost[shard0] q1: accepted client=[127.0.0.2] helo=client.test user=ann@ours.test tls=yes from=<ann@ours.test> nrcpt=2 size=1234 dkim=1"), "{}", lines[0]);
                    assert!(lines[1].ends_with(" ringpost[shard1] q1: to=<bob@far.test> domain=far.test relay=mx.far.test[127.0.0.3]:25 tls=TLSv1.3 attempt=1 delay=0.2 size=1234 dsn=2.0.0 status=delivered (250 2.0.0 Ok)"), "{}", lines[1]);
                    assert!(lines[2].ends_with(" q1: to=<gone@far.test> domain=far.test relay=mx.far.test tls=none attempt=1 delay=0.2 size=- dsn=5.1.1 status=bounced class=invalid_recipient (550 5.1.1 no such user)"), "{}", lines[2]);
                }
                MailLogFormat::Json => {
                    let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                    assert_eq!(first["event"], "accepted");
                    assert_eq!(first["nrcpt"], 2);
                    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
                    assert_eq!(second["status"], "delivered");
                    assert_eq!(second["addr"], "127.0.0.3:25");
                    assert_eq!(second["class"], serde_json::Value::Null);
                    let third: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
                    assert_eq!(third["class"], "invalid_recipient");
                }
            }
        }
    }
}
