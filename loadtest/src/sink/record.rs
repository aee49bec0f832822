//! What the sink remembers of accepted messages: a few in memory, each in a
//! dump directory, one line each in the id log. All optional; a sink that
//! records nothing does no work here.
//!
//! - Kept messages ([`Recorder::messages`]) are the first `keep_messages`
//!   by message number, so that in-process tests can inspect them.
//! - The dump directory gets `<n>.eml` (the exact message bytes, unstuffed)
//!   and `<n>.json` (`{"mail_from":..,"rcpt_to":[..],"helo":..}`).
//! - The id log gets `<Message-ID value> <X-Blast-Seq value>\n` per message
//!   ("-" for a missing header), which a crash test joins with the
//!   blaster's ack log. Lines are collected in a per-thread buffer and
//!   appended by the connection in one `O_APPEND` write just before it sends
//!   the replies that acknowledge them: lines of different threads never
//!   interleave, and a client that saw 250 finds its line in the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use memchr::memmem;

use super::session::MessageRef;
use super::ReceivedMessage;

/// Header names looked up for the id log, with their colon.
const MESSAGE_ID: &[u8] = b"message-id:";
const BLAST_SEQ: &[u8] = b"x-blast-seq:";

/// The recording side of a sink, shared by all its threads.
#[derive(Debug)]
pub struct Recorder {
    keep: usize,
    /// (message number, message), sorted on read.
    kept: Mutex<Vec<(u64, ReceivedMessage)>>,
    dump_dir: Option<PathBuf>,
    id_log: Option<File>,
}

impl Recorder {
    /// Creates the dump directory and opens (appends to) the id log, so that
    /// a bad path fails the sink's start rather than its first message.
    pub fn open(
        keep: usize,
        dump_dir: Option<PathBuf>,
        id_log: Option<&std::path::Path>,
    ) -> io::Result<Self> {
        if let Some(dir) = &dump_dir {
            std::fs::create_dir_all(dir)?;
        }
        let id_log = id_log
            .map(|p| OpenOptions::new().create(true).append(true).open(p))
            .transpose()?;
        Ok(Self {
            keep,
            kept: Mutex::new(Vec::new()),
            dump_dir,
            id_log,
        })
    }

    /// Records accepted message number `n`: keeps it, dumps it, and appends
    /// its id line to `id_lines` (the caller's thread buffer, written by
    /// [`flush_ids`](Self::flush_ids)).
    pub fn record(
        &self,
        n: u64,
        msg: &MessageRef<'_>,
        client: std::net::SocketAddr,
        id_lines: &mut Vec<u8>,
    ) -> io::Result<()> {
        if n <= self.keep as u64 {
            let kept = ReceivedMessage {
                client,
                helo: msg.helo.to_owned(),
                mail_from: msg.mail_from.to_owned(),
                recipients: msg.recipients.to_vec(),
                data: msg.data.to_vec(),
            };
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((n, kept));
        }
        if self.id_log.is_some() {
            push_id_line(id_lines, msg.data);
        }
        match &self.dump_dir {
            Some(dir) => dump(dir, n, msg),
            None => Ok(()),
        }
    }

    /// Appends the buffered id lines to the id log in one write and empties
    /// the buffer (also on error: a failed write is reported, not retried).
    pub fn flush_ids(&self, id_lines: &mut Vec<u8>) -> io::Result<()> {
        if id_lines.is_empty() {
            return Ok(());
        }
        let res = match &self.id_log {
            // `&File` writes need no lock: O_APPEND places each write whole
            // at the end of the file.
            Some(file) => {
                let mut file: &File = file;
                file.write_all(id_lines)
            }
            None => Ok(()),
        };
        id_lines.clear();
        res
    }

    /// The kept messages, in message-number order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
        kept.sort_unstable_by_key(|(n, _)| *n);
        kept.into_iter().map(|(_, m)| m).collect()
    }
}

/// Writes `<n>.eml` and `<n>.json` into `dir`.
fn dump(dir: &std::path::Path, n: u64, msg: &MessageRef<'_>) -> io::Result<()> {
    std::fs::write(dir.join(format!("{n}.eml")), msg.data)?;
    let envelope = serde_json::json!({
        "mail_from": msg.mail_from,
        "rcpt_to": msg.recipients,
        "helo": msg.helo,
    });
    std::fs::write(dir.join(format!("{n}.json")), envelope.to_string())
}

/// Appends `<Message-ID> <X-Blast-Seq>\n` for `data` to `out`.
pub fn push_id_line(out: &mut Vec<u8>, data: &[u8]) {
    let headers = header_block(data);
    for (i, name) in [MESSAGE_ID, BLAST_SEQ].into_iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        match header_value(headers, name) {
            // Spaces inside would break the two-column format.
            Some(v) if !v.is_empty() => {
                out.extend(v.iter().map(|&b| if b == b' ' { b'_' } else { b }))
            }
            _ => out.push(b'-'),
        }
    }
    out.push(b'\n');
}

/// The header section: everything before the first empty line.
fn header_block(data: &[u8]) -> &[u8] {
    if data.starts_with(b"\r\n") {
        return &[];
    }
    match memmem::find(data, b"\r\n\r\n") {
        Some(end) => &data[..end + 2],
        None => data,
    }
}

/// The value of the first `name` header (name given lower-case, with its
/// colon), trimmed, folded continuation lines dropped (the ids we look for
/// are never folded in practice, and a best effort is enough for a log).
fn header_value<'a>(headers: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    headers
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let head = line.get(..name.len())?;
            head.eq_ignore_ascii_case(name).then(|| &line[name.len()..])
        })
        .map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_line(data: &[u8]) -> String {
        let mut out = Vec::new();
        push_id_line(&mut out, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn id_lines() {
        assert_eq!(
            id_line(
                b"Subject: a\r\nMessage-ID: <1.x@h>\r\nX-Blast-Seq: 000000000007\r\n\r\nbody\r\n"
            ),
            "<1.x@h> 000000000007\n"
        );
        assert_eq!(
            id_line(b"message-id:<2@h>\r\n\r\nX-Blast-Seq: 9\r\n"),
            "<2@h> -\n"
        );
        assert_eq!(id_line(b"\r\nMessage-ID: <3@h>\r\n"), "- -\n");
        assert_eq!(id_line(b""), "- -\n");
        assert_eq!(id_line(b"Message-ID: <a b>\r\n"), "<a_b> -\n");
    }

    #[test]
    fn keeps_the_first_n_in_order_and_dumps() {
        let dir = std::env::temp_dir().join(format!("sink-record-{}", std::process::id()));
        let log = dir.join("ids.log");
        let rec = Recorder::open(2, Some(dir.clone()), Some(&log)).unwrap();
        let rcpts = vec!["b@y".to_owned()];
        let msg = |data: &'static [u8]| MessageRef {
            helo: "h",
            mail_from: "a@x",
            recipients: &rcpts,
            data,
        };
        let mut ids = Vec::new();
        for (n, data) in [(2, &b"Message-ID: <2>\r\n\r\n"[..]), (1, b"x"), (3, b"y")] {
            rec.record(n, &msg(data), "127.0.0.1:1".parse().unwrap(), &mut ids)
                .unwrap();
        }
        rec.flush_ids(&mut ids).unwrap();
        assert!(ids.is_empty());
        let kept = rec.messages();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].data, b"x");
        assert_eq!(kept[1].data, b"Message-ID: <2>\r\n\r\n");
        assert_eq!(std::fs::read(dir.join("3.eml")).unwrap(), b"y");
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("3.json")).unwrap()).unwrap();
        assert_eq!(
            env,
            serde_json::json!({"mail_from": "a@x", "rcpt_to": ["b@y"], "helo": "h"})
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "<2> -\n- -\n- -\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
