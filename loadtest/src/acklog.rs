//! The ack log: one line per message the server accepted, for crash tests.
//!
//! A crash test kills the server mid-run and then checks that every message
//! the server acknowledged with 250 is still there after restart. For that it
//! needs, per acknowledged message, the `X-Blast-Seq` it carried and the
//! server's final reply (which names the queue id). Line format:
//!
//! ```text
//! 000000000042 250 2.0.0 Ok: queued as 4F2A1
//! ```
//!
//! (the 12-digit sequence exactly as in the `X-Blast-Seq` header, one space,
//! the reply text as [`crate::reply::reply_text`] renders it: its lines
//! without line ends, joined with " / ").
//!
//! Each thread owns an [`AckLog`] with its own `O_APPEND` handle to the same
//! file and a private buffer. Buffers are flushed whole lines at a time, and
//! an append write is placed atomically at the end of the file, so lines from
//! different threads never interleave. Buffers are flushed when large, when
//! they have waited [`FLUSH_AFTER`], when an error is seen, and on drop: only
//! a killed blaster loses its tail.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::message::seq_digits;
use crate::reply::push_reply_text;

const FLUSH_BYTES: usize = 64 * 1024;
/// Bounds how stale the file is while the blaster runs.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct AckLog {
    file: File,
    buf: Vec<u8>,
    /// When `buf` received its first unflushed line.
    dirty_since: Option<Instant>,
}

impl AckLog {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file,
            buf: Vec::with_capacity(FLUSH_BYTES + 512),
            dirty_since: None,
        })
    }

    /// Records that message `seq` was accepted with `reply` (the raw reply bytes).
    pub fn record(&mut self, seq: u64, reply: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(&seq_digits(seq));
        self.buf.push(b' ');
        push_reply_text(&mut self.buf, reply);
        self.buf.push(b'\n');
        let since = *self.dirty_since.get_or_insert_with(Instant::now);
        if self.buf.len() >= FLUSH_BYTES || since.elapsed() >= FLUSH_AFTER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes out every buffered line. Called on errors, at the end of the
    /// run, and by `Drop`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.dirty_since = None;
        if self.buf.is_empty() {
            return Ok(());
        }
        // One write call for the whole batch keeps it contiguous in the file.
        let res = self.file.write_all(&self.buf);
        self.buf.clear();
        res
    }
}

impl Drop for AckLog {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            eprintln!("ringpost-blast: writing the ack log failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_two_writers_all_arrive() {
        let path = std::env::temp_dir().join(format!("blast-acklog-{}.txt", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let mut a = AckLog::open(&path).unwrap();
            let mut b = AckLog::open(&path).unwrap();
            for i in 0..1000 {
                a.record(i * 2, b"250 2.0.0 Ok: queued as A\r\n").unwrap();
                b.record(i * 2 + 1, b"250-x\r\n250 queued as B\r\n")
                    .unwrap();
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                let (seq, reply) = l.split_once(' ').unwrap();
                assert!(reply.starts_with("250"));
                assert_eq!(seq.len(), 12);
                seq.parse().unwrap()
            })
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..2000).collect::<Vec<_>>());
    }
}
