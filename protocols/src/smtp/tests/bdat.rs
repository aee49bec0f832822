//! BDAT (RFC 3030 CHUNKING): chunks, LAST, sequence errors that still
//! consume the chunk, size limit, and line endings across chunk boundaries.

use super::*;

/// MAIL and one accepted RCPT.
const ENVELOPE: &str = "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n";

fn bdat_codes(input: &str) -> Vec<String> {
    ehlo_codes(input.as_bytes())
}

#[test]
fn chunks_then_last() {
    let run = ehlo_run(
        format!("{ENVELOPE}BDAT 7\r\nline 1\rBDAT 9\r\n\nline 2\r\nBDAT 0 LAST\r\n").as_bytes(),
    );
    assert_eq!(
        run.after_ehlo(),
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "250 2.0.0",
            "250 2.0.0"
        ]
    );
    assert!(run.lines().contains(&"250 2.0.0 7 octets received"));
    assert_eq!(run.lines().last().unwrap(), &"250 2.0.0 Ok: queued as Q1");
    let tx = run.messages()[0];
    assert!(tx.chunked);
    assert_eq!(tx.data, b"line 1\r\nline 2\r\n");
}

#[test]
fn no_dot_stuffing_in_chunks() {
    let run = ehlo_run(format!("{ENVELOPE}BDAT 13 LAST\r\n..\r\n.\r\nDATA\r\nNOOP\r\n").as_bytes());
    assert_eq!(run.messages()[0].data, b"..\r\n.\r\nDATA\r\n");
    assert_eq!(run.after_ehlo()[2..], ["250 2.0.0", "250 2.0.0"]);
}

#[test]
fn bdat_0_last_sends_an_empty_message() {
    let run = ehlo_run(format!("{ENVELOPE}BDAT 0 LAST\r\n").as_bytes());
    assert_eq!(run.after_ehlo(), ["250 2.1.0", "250 2.1.5", "250 2.0.0"]);
    assert!(run.messages()[0].data.is_empty());
}

#[test]
fn a_last_line_without_crlf_gets_one() {
    let run = ehlo_run(format!("{ENVELOPE}BDAT 5 LAST\r\nab\r\nc").as_bytes());
    assert_eq!(run.messages()[0].data, b"ab\r\nc\r\n");
}

#[test]
fn bdat_syntax_errors_consume_nothing_unless_a_size_was_given() {
    assert_eq!(
        bdat_codes(&format!("{ENVELOPE}BDAT\r\nBDAT x\r\nNOOP\r\n"))[2..],
        ["501 5.5.4", "501 5.5.4", "250 2.0.0"]
    );
    // With a size, its octets follow whatever came after it: they are read
    // and dropped, never run as commands, and the transaction is over.
    let run =
        ehlo_run(format!("{ENVELOPE}BDAT 6 MORE\r\nRSET\r\nBDAT 3 LAST\r\nabcNOOP\r\n").as_bytes());
    assert_eq!(
        run.after_ehlo()[2..],
        ["501 5.5.4", "503 5.5.1", "250 2.0.0"]
    );
    assert!(run.messages().is_empty());
}

#[test]
fn bdat_without_mail_still_consumes_the_chunk() {
    assert_eq!(
        bdat_codes("BDAT 6\r\nQUIT\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n"),
        ["503 5.5.1", "503 5.5.1", "250 2.0.0"]
    );
    assert_eq!(
        run(b"BDAT 6\r\nQUIT\r\nNOOP\r\n").codes()[1..],
        ["503 5.5.1", "250 2.0.0"]
    );
}

#[test]
fn bdat_without_recipients() {
    let input =
        "MAIL FROM:<a@b.test>\r\nBDAT 6\r\nQUIT\r\nBDAT 6 LAST\r\nQUIT\r\nRCPT TO:<c@d.test>\r\n";
    assert_eq!(
        bdat_codes(input),
        ["250 2.1.0", "554 5.5.1", "554 5.5.1", "503 5.5.1"]
    );
}

#[test]
fn data_and_rcpt_after_bdat_are_refused() {
    let input =
        format!("{ENVELOPE}BDAT 3\r\nab\nDATA\r\nRCPT TO:<x@d.test>\r\nBDAT 2 LAST\r\n\r\n");
    let codes = bdat_codes(&input);
    assert_eq!(
        codes[2..],
        ["250 2.0.0", "503 5.5.1", "503 5.5.1", "550 5.6.0"]
    );
}

#[test]
fn size_limit_fails_the_chunk_that_crosses_it() {
    let config = ServerConfig {
        max_message_size: 10,
        ..config()
    };
    let input = format!(
        "EHLO c\r\n{ENVELOPE}BDAT 6\r\n1234\r\nBDAT 6\r\n1234\r\nBDAT 2 LAST\r\n\r\n{ENVELOPE}BDAT 10 LAST\r\n12345678\r\n"
    );
    // The chunk after the failed one finds no transaction (RFC 3030 §4.2);
    // exactly the limit is fine.
    let run = run_with(config, input.as_bytes(), Answers::Accept);
    assert_eq!(
        run.codes()[2..],
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "552 5.3.4",
            "503 5.5.1",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0"
        ]
    );
    assert_eq!(run.messages()[0].data.len(), 10);
}

#[test]
fn chunks_pipelined_behind_a_failed_one_are_not_the_clients_errors() {
    // RFC 3030 §3: after a failed chunk the server reads and discards the
    // chunks already in the pipeline. With two errors allowed, five such
    // chunks do not end the session; stray chunks later still count.
    let config = ServerConfig {
        max_message_size: 10,
        max_errors: 2,
        ..config()
    };
    let behind = "BDAT 4\r\n1234".repeat(5);
    let input = format!(
        "EHLO c\r\n{ENVELOPE}BDAT 12\r\n123456789012{behind}BDAT 2 LAST\r\n\r\nNOOP\r\nBDAT 1\r\nxBDAT 1\r\nx"
    );
    let run = run_with(config, input.as_bytes(), Answers::Accept);
    let mut expected = vec!["250 2.1.0", "250 2.1.5", "552 5.3.4"];
    expected.extend(["503 5.5.1"; 6]);
    expected.extend(["250 2.0.0", "503 5.5.1", "503 5.5.1", "421 4.7.0"]);
    assert_eq!(run.codes()[2..], expected[..], "{:?}", run.lines());
}

#[test]
fn a_huge_chunk_is_counted_out_not_buffered() {
    let config = ServerConfig {
        max_message_size: 100,
        ..config()
    };
    let input = [
        format!("EHLO c\r\n{ENVELOPE}BDAT 100000 LAST\r\n").as_bytes(),
        &[b'x'; 100_000],
        b"NOOP\r\n",
    ]
    .concat();
    let run = run_with(config, &input, Answers::Accept);
    assert_eq!(
        run.codes()[2..],
        ["250 2.1.0", "250 2.1.5", "552 5.3.4", "250 2.0.0"]
    );
}

/// A chunk no message could fit in, many times over (or past what a
/// number holds), is not read for as long as the client likes: the
/// session says why and ends, with or without LAST, good keyword or bad.
#[test]
fn a_chunk_beyond_reading_ends_the_session_at_once() {
    for bdat in [
        "BDAT 99999999999999999999999999999",
        "BDAT 18446744073709551616 LAST",
        "BDAT 300000000 LAST",
        "BDAT 99999999999 MORE",
    ] {
        let input = format!("EHLO c\r\n{ENVELOPE}{bdat}\r\nNOOP\r\n");
        let run = run_with(config(), input.as_bytes(), Answers::Accept);
        assert_eq!(
            run.codes()[2..],
            ["250 2.1.0", "250 2.1.5", "552 5.3.4"],
            "{bdat}: {:?}",
            run.lines()
        );
        assert!(run.0.closed, "{bdat}");
    }
    // Within four times the limit, it is read and refused as before.
    let config = ServerConfig {
        max_message_size: 100 << 20,
        ..config()
    };
    let input = format!("EHLO c\r\n{ENVELOPE}BDAT 400000000 LAST\r\n");
    let run = run_with(config, input.as_bytes(), Answers::Accept);
    assert!(!run.0.closed);
}

#[test]
fn bare_line_endings_across_chunk_boundaries() {
    for chunks in [
        "BDAT 3\r\nab\rBDAT 3 LAST\r\nc\r\n", // a chunk ends in CR, the next starts with "c"
        "BDAT 3\r\nab\nBDAT 3 LAST\r\nc\r\n", // bare LF inside a chunk
        "BDAT 3\r\nab\rBDAT 1\r\n\rBDAT 1 LAST\r\n\n", // CR, then a chunk that is one more CR
        "BDAT 3\r\nab\rBDAT 0 LAST\r\n",      // the message ends in a bare CR
        "BDAT 1\r\n\nBDAT 1 LAST\r\n\n",      // LF starting the message
    ] {
        let codes = bdat_codes(&format!("{ENVELOPE}{chunks}NOOP\r\n"));
        assert_eq!(codes.last().unwrap(), "250 2.0.0", "{chunks:?}");
        assert_eq!(codes[codes.len() - 2], "550 5.6.0", "{chunks:?}");
    }
}

#[test]
fn crlf_split_across_chunks_is_fine() {
    let run =
        ehlo_run(format!("{ENVELOPE}BDAT 2\r\na\rBDAT 1\r\n\nBDAT 3 LAST\r\nb\r\n").as_bytes());
    assert_eq!(run.messages()[0].data, b"a\r\nb\r\n");
}

#[test]
fn bdat_smuggling_has_no_effect() {
    // The old DATA terminator inside a chunk is just content.
    let run = ehlo_run(
        format!("{ENVELOPE}BDAT 18 LAST\r\nx\r\n.\r\nRSET\r\nQUIT\r\nNOOP\r\n").as_bytes(),
    );
    assert_eq!(run.messages()[0].data, b"x\r\n.\r\nRSET\r\nQUIT\r\n");
    assert_eq!(run.after_ehlo()[2..], ["250 2.0.0", "250 2.0.0"]);
}

#[test]
fn one_session_mixes_data_and_bdat_messages() {
    let input = [
        transaction("c@d.test", "one\r\n.\r\n"),
        format!("{ENVELOPE}BDAT 5 LAST\r\ntwo\r\n").into_bytes(),
        transaction("c@d.test", "three\r\n.\r\n"),
    ]
    .concat();
    let run = ehlo_run(&input);
    let data: Vec<&[u8]> = run.messages().iter().map(|tx| &tx.data[..]).collect();
    assert_eq!(data, [&b"one\r\n"[..], b"two\r\n", b"three\r\n"]);
    assert_eq!(
        run.messages()
            .iter()
            .map(|tx| tx.chunked)
            .collect::<Vec<_>>(),
        [false, true, false]
    );
}

/// Found by the fuzzer: with a bare LF *and* too many octets in one chunk,
/// which fault was noticed first depended on where the input was cut.
/// Both are tracked exactly now, and size is reported.
#[test]
fn bare_line_ending_and_size_together_do_not_depend_on_cuts() {
    let config = ServerConfig {
        max_message_size: 4,
        ..config()
    };
    let input = format!("EHLO c\r\n{ENVELOPE}BDAT 8 LAST\r\nab\ncdefgMAIL FROM:<>\r\n");
    assert_split_invariant(config.clone(), input.as_bytes(), Answers::Accept);
    let run = run_with(config, input.as_bytes(), Answers::Accept);
    assert_eq!(
        run.codes()[2..],
        ["250 2.1.0", "250 2.1.5", "552 5.3.4", "250 2.1.0"]
    );
}

#[test]
fn a_strangers_size_claim_reserves_little() {
    use crate::session::Session;
    // `BDAT 52428000` and a hundred bytes must not pin megabytes per
    // connection (a thousand such connections would be gigabytes); the
    // buffer grows with the bytes that really come.
    let mut session = crate::smtp::ServerSession::new(std::sync::Arc::new(config()));
    let setup = b"EHLO c\r\nMAIL FROM:<a@b.test> SIZE=52428000\r\nRCPT TO:<c@d.test>\r\n";
    assert_eq!(session.feed(setup), setup.len());
    session.accept_recipient();
    let chunk = [b"BDAT 52428000 LAST\r\n".as_slice(), &[b'x'; 100]].concat();
    assert_eq!(session.feed(&chunk), chunk.len());
    assert!(session.buffered() <= 128 * 1024, "{}", session.buffered());
    // A trusted client's claim is taken at its word (up to the usual cap).
    let mut trusted = crate::smtp::ServerSession::with_peer(
        std::sync::Arc::new(config()),
        crate::smtp::Peer {
            trusted: true,
            ..crate::smtp::Peer::default()
        },
    );
    assert_eq!(trusted.feed(setup), setup.len());
    trusted.accept_recipient();
    assert_eq!(trusted.feed(&chunk), chunk.len());
    assert!(trusted.buffered() >= 1024 * 1024, "{}", trusted.buffered());
}
