//! The message template: one realistic RFC 5322 message built once per run
//! and patched in place with each message's sequence number.
//!
//! Building a message per send would make the generator measure its own
//! allocator. Instead every connection keeps one copy of the finished DATA
//! payload (message + terminating `.\r\n`) and overwrites the fixed-width
//! sequence digits before each send. The digits appear in the Subject, the
//! Message-ID (which also carries a per-run id, so ids are unique across
//! runs) and the `X-Blast-Seq` header that crash tests match against the ack
//! log.

use std::time::{SystemTime, UNIX_EPOCH};

/// Width of the zero-padded sequence number wherever it appears.
pub const SEQ_WIDTH: usize = 12;

/// Longest body line, CRLF included (RFC 5322 recommends at most 78 characters
/// before the CRLF; we stay inside that).
const BODY_LINE_MAX: usize = 78;

/// Words the body is made of. All start with a letter, so no body line ever
/// starts with '.' and the payload never needs dot-stuffing.
const WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
];

/// What the template is made from.
#[derive(Debug, Clone)]
pub struct MessageSpec<'a> {
    /// Target size of the message in bytes, without the `.\r\n` terminator.
    pub size: usize,
    pub from: &'a str,
    /// Addresses for the To: header (the envelope recipients).
    pub to: &'a [String],
    /// Right-hand side of the Message-ID.
    pub id_domain: &'a str,
    /// Distinguishes this run's Message-IDs from every other run's.
    pub run_id: &'a str,
}

#[derive(Debug, Clone)]
pub struct MessageTemplate {
    /// The DATA payload: message bytes followed by `.\r\n`.
    payload: Vec<u8>,
    /// Start offsets of every `SEQ_WIDTH`-digit sequence field in `payload`.
    seq_offsets: Vec<usize>,
}

impl MessageTemplate {
    pub fn new(spec: &MessageSpec<'_>) -> Self {
        let placeholder = "0".repeat(SEQ_WIDTH);
        let mut head = String::with_capacity(512);
        let mut seq_offsets = Vec::with_capacity(3);
        let push_seq = |head: &mut String, offsets: &mut Vec<usize>| {
            offsets.push(head.len());
            head.push_str(&placeholder);
        };

        head.push_str("Date: ");
        head.push_str(&rfc5322_date(SystemTime::now()));
        head.push_str("\r\nFrom: <");
        head.push_str(spec.from);
        head.push_str(">\r\nTo: ");
        // Long recipient lists would make the header block outgrow small
        // messages; three addresses are enough to look like real mail.
        for (i, rcpt) in spec.to.iter().take(3).enumerate() {
            if i > 0 {
                head.push_str(",\r\n ");
            }
            head.push('<');
            head.push_str(rcpt);
            head.push('>');
        }
        if spec.to.len() > 3 {
            head.push_str(",\r\n undisclosed-recipients:;");
        }
        head.push_str("\r\nSubject: ringpost-blast test message ");
        push_seq(&mut head, &mut seq_offsets);
        head.push_str("\r\nMessage-ID: <");
        push_seq(&mut head, &mut seq_offsets);
        head.push('.');
        head.push_str(spec.run_id);
        head.push('@');
        head.push_str(spec.id_domain);
        head.push_str(">\r\nX-Blast-Seq: ");
        push_seq(&mut head, &mut seq_offsets);
        head.push_str("\r\nX-Blast-Run: ");
        head.push_str(spec.run_id);
        head.push_str(
            "\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\n",
        );

        let mut payload = Vec::with_capacity(spec.size.max(head.len()) + 8);
        payload.extend_from_slice(head.as_bytes());
        // At least one body line, even when the headers alone exceed --size.
        let body_budget = spec.size.saturating_sub(payload.len()).max(3);
        push_body(&mut payload, body_budget);
        payload.extend_from_slice(b".\r\n");
        Self {
            payload,
            seq_offsets,
        }
    }

    /// A private copy of the payload for one connection to patch and send.
    pub fn instance(&self) -> Vec<u8> {
        self.payload.clone()
    }

    /// Writes `seq` into every sequence field of `payload` (a copy made by
    /// [`instance`](Self::instance)).
    pub fn patch(&self, payload: &mut [u8], seq: u64) {
        let digits = seq_digits(seq);
        for &off in &self.seq_offsets {
            payload[off..off + SEQ_WIDTH].copy_from_slice(&digits);
        }
    }

    /// Message size as counted for MB/s: the payload minus its `.\r\n`.
    pub fn message_len(&self) -> usize {
        self.payload.len() - 3
    }
}

/// `seq` as `SEQ_WIDTH` zero-padded ASCII digits, the form used in the
/// headers and in the ack log. Values wider than the field keep their low
/// digits (the CLI refuses ranges that would get there).
pub fn seq_digits(mut seq: u64) -> [u8; SEQ_WIDTH] {
    let mut out = [b'0'; SEQ_WIDTH];
    for d in out.iter_mut().rev() {
        *d = b'0' + (seq % 10) as u8;
        seq /= 10;
    }
    out
}

/// Appends exactly `budget` (at least 3) bytes of text lines, each at most
/// [`BODY_LINE_MAX`] bytes with its CRLF.
fn push_body(out: &mut Vec<u8>, budget: usize) {
    debug_assert!(budget >= 3, "a line needs a character and its CRLF");
    let mut remaining = budget;
    let mut word = 0usize;
    let mut line_no = 0usize;
    while remaining > 0 {
        let mut len = remaining.min(BODY_LINE_MAX);
        // Never leave 1 or 2 bytes for a last line that could not hold a
        // character: shorten this one instead.
        if matches!(remaining - len, 1 | 2) {
            len -= 3;
        }
        let text_len = len - 2;
        // Rotate the starting word so that lines differ (some servers and
        // compressors treat identical lines specially).
        word = (word + line_no * 7) % WORDS.len();
        let start = out.len();
        while out.len() - start < text_len {
            if out.len() > start {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[word].as_bytes());
            word = (word + 1) % WORDS.len();
        }
        out.truncate(start + text_len);
        // A truncated line may end in a space; that is harmless but looks
        // odd, so make the last character a letter.
        if let Some(last) = out.last_mut() {
            if *last == b' ' {
                *last = b'x';
            }
        }
        out.extend_from_slice(b"\r\n");
        remaining -= len;
        line_no += 1;
    }
}

/// An RFC 5322 date in UTC, e.g. `Sun, 23 Nov 2026 00:13:05 +0000`.
fn rfc5322_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    fn template(size: usize, rcpts: usize) -> MessageTemplate {
        let to: Vec<String> = (1..=rcpts)
            .map(|k| format!("user{k}@example.test"))
            .collect();
        MessageTemplate::new(&MessageSpec {
            size,
            from: "blast@example.test",
            to: &to,
            id_domain: "blast.example.test",
            run_id: "0123456789abcdef",
        })
    }

    fn lines(payload: &[u8]) -> Vec<&[u8]> {
        let body = payload.strip_suffix(b".\r\n").expect("terminator");
        assert!(body.ends_with(b"\r\n"));
        body[..body.len() - 2].split(|&b| b == b'\n').collect()
    }

    #[test]
    fn size_is_exact_for_every_size_above_the_headers() {
        // Size 0 gives the headers plus the shortest body line (3 bytes).
        let header_len = template(0, 1).message_len() - 3;
        for size in header_len..header_len + 400 {
            let got = template(size, 1).message_len();
            if size < header_len + 3 {
                // Less than one line of room: one short line (spec: ±1 line).
                assert_eq!(got, header_len + 3);
            } else {
                assert_eq!(got, size, "size {size}");
            }
        }
        for size in [1024, 2048, 10_000, 100_000, 1_000_000] {
            assert_eq!(template(size, 3).message_len(), size);
        }
    }

    #[test]
    fn tiny_sizes_give_headers_and_one_line() {
        let t = template(10, 1);
        let payload = t.instance();
        let text = std::str::from_utf8(&payload).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").expect("header/body separator");
        assert_eq!(body.len(), 3 + 3, "one 3-byte line, then the terminator");
    }

    #[test]
    fn crlf_only_short_lines_and_no_leading_dot() {
        for size in [300, 2048, 5000, 65_536] {
            let t = template(size, 5);
            let mut p = t.instance();
            t.patch(&mut p, 42);
            for (i, &b) in p.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(p[i - 1], b'\r', "bare LF at {i}");
                }
                if b == b'\r' {
                    assert_eq!(p.get(i + 1), Some(&b'\n'), "bare CR at {i}");
                }
                assert!(b.is_ascii() && b != 0);
            }
            let ls = lines(&p);
            let blank = ls.iter().position(|l| *l == b"\r").expect("blank line");
            for l in &ls[blank + 1..] {
                // `l` keeps its CR; the LF makes the full line length.
                assert!(l.len() < BODY_LINE_MAX, "line too long: {}", l.len());
                assert!(!l.starts_with(b"."), "leading dot");
            }
            for l in &ls {
                assert!(!l.starts_with(b"."));
            }
        }
    }

    #[test]
    fn patched_ids_are_unique_and_headers_carry_the_seq() {
        let t = template(2048, 1);
        let mut p = t.instance();
        let mut ids = HashSet::new();
        for seq in [0u64, 1, 2, 9, 10, 12_345, 999_999_999_999] {
            t.patch(&mut p, seq);
            let text = std::str::from_utf8(&p).unwrap();
            let digits = format!("{seq:012}");
            assert!(text.contains(&format!("\r\nX-Blast-Seq: {digits}\r\n")));
            let id = text
                .split("\r\n")
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap()
                .to_owned();
            assert!(id.starts_with(&format!("<{digits}.")) && id.ends_with('>'));
            assert!(ids.insert(id), "duplicate Message-ID");
            assert_eq!(p.len(), t.message_len() + 3, "patching keeps the size");
        }
    }

    #[test]
    fn seq_digits_pad_and_wrap() {
        assert_eq!(&seq_digits(0), b"000000000000");
        assert_eq!(&seq_digits(42), b"000000000042");
        assert_eq!(&seq_digits(1_000_000_000_007), b"000000000007");
    }

    #[test]
    fn dates_are_rfc5322() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_392_785); // 2026-11-23 00:13:05 UTC
        assert_eq!(rfc5322_date(t), "Mon, 23 Nov 2026 00:13:05 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
