use super::script::*;
use super::*;

const MESSAGE: &[u8] = b"Received: from x by y\r\n\
From: \"Bob Example\" <bob+lists@example.org>\r\n\
To: alice@example.com, =?UTF-8?Q?Caf=C3=A9?= <cafe@example.net>\r\n\
Cc: undisclosed:;\r\n\
Subject: =?UTF-8?Q?Caf=C3=A9_menu?= for\r\n\
\x20Friday\r\n\
Message-ID: <m1@example.org>\r\n\
X-Spam-Score: 7\r\n\
X-Spam-Score: 12\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hello Alice, the caf\xc3\xa9 opens at noon.\r\n";

fn mail() -> Mail<'static> {
    Mail {
        message: MESSAGE,
        envelope_from: "bounce+123@lists.example.org",
        envelope_to: "alice+shop@example.com",
        detail_separator: Some('+'),
    }
}

fn outcome(script: &str) -> Outcome {
    let script = parse(script).unwrap_or_else(|e| panic!("{e}: {script}"));
    run(&script, &mail())
}

fn mailboxes(script: &str) -> Vec<String> {
    outcome(script)
        .filings
        .into_iter()
        .map(|f| f.mailbox)
        .collect()
}

fn filed(script: &str) -> bool {
    let got = mailboxes(&format!(
        "require [\"fileinto\", \"envelope\", \"relational\", \"comparator-i;ascii-numeric\", \"subaddress\", \"body\", \"imap4flags\"];\n\
         if {script} {{ fileinto \"Hit\"; }}"
    ));
    got == ["Hit"]
}

#[test]
fn nothing_said_keeps_in_inbox() {
    assert_eq!(mailboxes(""), ["INBOX"]);
    assert_eq!(mailboxes("# only a comment\n"), ["INBOX"]);
    assert_eq!(mailboxes("stop;"), ["INBOX"]);
}

#[test]
fn fileinto_discard_keep_and_copy() {
    assert_eq!(
        mailboxes("require \"fileinto\"; fileinto \"Work\";"),
        ["Work"]
    );
    assert_eq!(mailboxes("discard;"), Vec::<String>::new());
    assert_eq!(mailboxes("discard; keep;"), ["INBOX"]);
    assert_eq!(
        mailboxes("require [\"fileinto\", \"copy\"]; fileinto :copy \"Work\";"),
        ["Work", "INBOX"]
    );
    // The same mailbox twice is one copy.
    assert_eq!(
        mailboxes("require \"fileinto\"; fileinto \"A\"; fileinto \"A\"; keep; keep;"),
        ["A", "INBOX"]
    );
    // stop ends the script before the second fileinto.
    assert_eq!(
        mailboxes("require \"fileinto\"; fileinto \"A\"; stop; fileinto \"B\";"),
        ["A"]
    );
    let create = outcome("require [\"fileinto\", \"mailbox\"]; fileinto :create \"New/Box\";");
    assert!(create.filings[0].create);
}

#[test]
fn if_elsif_else_take_the_first_true_branch() {
    let script = |test: &str| {
        format!(
            "require \"fileinto\";\nif {test} {{ fileinto \"A\"; }}\n\
             elsif true {{ fileinto \"B\"; }}\nelse {{ fileinto \"C\"; }}"
        )
    };
    assert_eq!(mailboxes(&script("true")), ["A"]);
    assert_eq!(mailboxes(&script("false")), ["B"]);
    assert_eq!(
        mailboxes("require \"fileinto\"; if false { fileinto \"A\"; } else { fileinto \"C\"; }"),
        ["C"]
    );
}

#[test]
fn header_tests_decode_and_unfold() {
    assert!(filed("header :is \"subject\" \"Café menu for Friday\""));
    assert!(filed("header :contains \"Subject\" \"MENU\""));
    assert!(!filed(
        "header :comparator \"i;octet\" :contains \"Subject\" \"MENU\""
    ));
    assert!(filed("header :matches \"subject\" \"caf? *FRIDAY\""));
    assert!(!filed("header :matches \"subject\" \"menu*\""));
    assert!(filed("header :matches \"subject\" \"*\""));
    assert!(filed("header :contains [\"x-none\", \"from\"] \"bob\""));
    assert!(!filed("header :contains \"x-none\" \"\""));
    assert!(filed("exists [\"from\", \"x-spam-score\"]"));
    assert!(!filed("exists [\"from\", \"x-missing\"]"));
    assert!(filed("not exists \"x-missing\""));
}

#[test]
fn wildcards_escape_and_do_not_blow_up() {
    assert!(filed("header :matches \"message-id\" \"<m1@*>\""));
    assert!(!filed("header :matches \"message-id\" \"\\\\*m1*\""));
    assert!(filed("header :matches \"x-spam-score\" \"1?\""));
    // A pattern built to backtrack is still quick (one star point).
    let long = "*a".repeat(200);
    assert!(!filed(&format!("header :matches \"subject\" \"{long}b\"")));
}

#[test]
fn address_parts_and_subaddresses() {
    assert!(filed("address :is \"from\" \"bob+lists@example.org\""));
    assert!(filed("address :domain :is \"to\" \"EXAMPLE.NET\""));
    assert!(filed("address :localpart :is \"to\" \"cafe\""));
    assert!(filed("address :user :is \"from\" \"bob\""));
    assert!(filed("address :detail :is \"from\" \"lists\""));
    assert!(!filed("address :detail :matches \"to\" \"*\""));
    assert!(filed("address :all :contains \"from\" \"bob\""));
    // Display names are not part of the address.
    assert!(!filed("address :contains \"from\" \"Bob Example\""));
}

#[test]
fn envelope_tests() {
    assert!(filed("envelope :is \"to\" \"alice+shop@example.com\""));
    assert!(filed("envelope :detail \"to\" \"shop\""));
    assert!(filed("envelope :domain :is \"from\" \"lists.example.org\""));
    assert!(!filed("envelope :is \"from\" \"alice@example.com\""));
}

#[test]
fn size_and_relational() {
    assert!(filed("size :over 100"));
    assert!(!filed("size :over 100K"));
    assert!(filed("size :under 1M"));
    assert!(filed(
        "header :value \"ge\" :comparator \"i;ascii-numeric\" \"x-spam-score\" \"10\""
    ));
    assert!(!filed(
        "header :value \"gt\" :comparator \"i;ascii-numeric\" \"x-spam-score\" \"12\""
    ));
    assert!(filed(
        "header :count \"eq\" :comparator \"i;ascii-numeric\" \"x-spam-score\" \"2\""
    ));
    assert!(filed(
        "address :count \"ge\" :comparator \"i;ascii-numeric\" [\"to\", \"cc\"] \"2\""
    ));
    assert!(filed("allof (size :over 10, anyof (false, true))"));
    assert!(!filed("allof (size :over 10, false)"));
}

#[test]
fn body_tests() {
    // i;ascii-casemap folds ASCII letters only: É is not é.
    assert!(!filed("body :contains \"CAFÉ OPENS\""));
    assert!(filed("body :contains \"café OPENS\""));
    assert!(filed("body :contains \"café opens\""));
    assert!(filed("body :raw :contains \"noon\""));
    assert!(filed("body :content \"text\" :contains \"noon\""));
    assert!(!filed("body :content \"image\" :contains \"noon\""));
}

#[test]
fn flags_go_with_the_copies() {
    let got = outcome(
        "require [\"imap4flags\", \"fileinto\"];\n\
         addflag \"\\\\Seen\";\naddflag [\"$Work\", \"\\\\Flagged \\\\Seen\"];\n\
         removeflag \"\\\\Flagged\";\n\
         if hasflag :is \"$work\" { fileinto :flags \"\\\\Answered\" \"Work\"; keep; }\n",
    );
    assert_eq!(got.filings.len(), 2);
    assert_eq!(got.filings[0].mailbox, "Work");
    assert_eq!(got.filings[0].flags, ["\\Answered"]);
    assert_eq!(got.filings[1].mailbox, "INBOX");
    assert_eq!(got.filings[1].flags, ["\\Seen", "$Work"]);
    let set = outcome("require \"imap4flags\"; addflag \"a\"; setflag \"b c\"; keep;");
    assert_eq!(set.filings[0].flags, ["b", "c"]);
}

#[test]
fn redirects_are_bounded_and_cancel_the_keep() {
    let got = outcome("redirect \"carol@example.net\";");
    assert_eq!(got.redirects, ["carol@example.net"]);
    assert!(got.filings.is_empty());
    let copy = outcome("require \"copy\"; redirect :copy \"<carol@example.net>\";");
    assert_eq!(copy.redirects, ["carol@example.net"]);
    assert_eq!(copy.filings.len(), 1);
    let many: String = (0..=MAX_REDIRECTS)
        .map(|i| format!("redirect \"u{i}@example.net\";"))
        .collect();
    let failed = outcome(&many);
    assert!(failed.error.is_some());
    assert!(failed.redirects.is_empty());
    assert_eq!(failed.filings[0].mailbox, "INBOX");
    assert!(parse("redirect \"not an address\";").is_err());
}

#[test]
fn reject_stands_alone() {
    let got = outcome("require \"reject\"; reject \"no thanks\";");
    assert_eq!(got.reject.as_deref(), Some("no thanks"));
    assert!(got.filings.is_empty());
    let mixed = outcome("require [\"reject\", \"fileinto\"]; fileinto \"A\"; reject \"no\";");
    assert!(mixed.error.is_some());
    assert!(mixed.reject.is_none());
    assert_eq!(mixed.filings[0].mailbox, "INBOX");
}

#[test]
fn scripts_with_errors_are_refused_with_their_line() {
    for (script, line) in [
        ("fileinto \"A\";", 1),
        ("require \"fileinto\";\nkeep;\nrequire \"copy\";", 3),
        ("require \"variables\";", 1),
        ("keep", 1),
        ("\n\nif true { keep; ", 3),
        ("if true keep;", 1),
        ("frobnicate;", 1),
        ("if frob { keep; }", 1),
        ("else { keep; }", 1),
        ("if true { keep; } else { keep; } else { keep; }", 1),
        ("header :is \"a\" \"b\";", 1),
        ("if header :is \"a\" { keep; }", 1),
        ("if header :is :contains \"a\" \"b\" { keep; }", 1),
        ("if size 10 { keep; }", 1),
        ("if size :over \"x\" { keep; }", 1),
        (
            "if header :comparator \"i;unknown\" \"a\" \"b\" { keep; }",
            1,
        ),
        ("if header :value \"xx\" \"a\" \"b\" { keep; }", 1),
        ("keep :flags \"a\";", 1),
        ("if envelope \"to\" \"a\" { keep; }", 1),
        (
            "require \"envelope\"; if envelope \"auth\" \"a\" { keep; }",
            1,
        ),
        ("if true { stop; } keep \"extra\";", 1),
        ("discard [\"a\" \"b\"];", 1),
        (
            "require \"subaddress\"; if address :user :domain \"to\" \"x\" { keep; }",
            1,
        ),
        ("if anyof () { keep; }", 1),
        ("/* unterminated", 1),
    ] {
        match parse(script) {
            Ok(_) => panic!("accepted: {script}"),
            Err(e) => assert_eq!(e.line, line, "{script}: {e}"),
        }
    }
}

#[test]
fn nesting_and_size_are_bounded() {
    let deep = "if true { ".repeat(MAX_NESTING + 2) + &"}".repeat(MAX_NESTING + 2);
    assert!(parse(&deep).is_err());
    let not = "if ".to_owned() + &"not ".repeat(MAX_NESTING + 2) + "true { keep; }";
    assert!(parse(&not).is_err());
    let fine = "if true { ".repeat(10) + &"}".repeat(10);
    assert!(parse(&fine).is_ok());
    let big = format!("# {}\nkeep;", "x".repeat(MAX_SCRIPT_SIZE));
    assert!(check(big.as_bytes()).is_err());
    assert_eq!(check(b"keep;\n\xff").unwrap_err().line, 2);
}

#[test]
fn what_filter_editors_write_parses() {
    // As Roundcube's managesieve plugin writes it.
    let roundcube = "require [\"fileinto\",\"vacation\",\"imap4flags\"];\r\n\
        # rule:[lists]\r\n\
        if anyof (header :contains \"list-id\" \"dev.example.org\", address :is \"from\" \"bob+lists@example.org\")\r\n\
        {\r\n\tfileinto \"Lists\";\r\n\tstop;\r\n}\r\n\
        # rule:[away]\r\n\
        if true\r\n{\r\n\tvacation :days 7 :addresses [\"alice@example.com\"] :subject \"Away\" text:\r\n\
        I am away until Monday.\r\n.\r\n;\r\n}\r\n";
    let got = outcome(roundcube);
    assert_eq!(got.filings[0].mailbox, "Lists");
    assert!(got.vacation.is_none(), "stop came first");
    let vacation = outcome(
        "require \"vacation\"; vacation :days 0 :subject \"Away\" :handle \"h\" \"Back soon\";",
    )
    .vacation
    .unwrap();
    assert_eq!(vacation.days, MIN_VACATION_DAYS);
    assert_eq!(vacation.reason, "Back soon");
}

mod vacation_replies {
    use super::super::vacation::*;
    use super::*;

    fn away() -> Vacation {
        Vacation {
            days: 7,
            subject: None,
            from: None,
            addresses: vec!["alice@alias.example.com".into()],
            mime: false,
            handle: None,
            reason: "Away until Monday.\nAlice".into(),
        }
    }

    fn message(extra: &str, to: &str) -> Vec<u8> {
        format!(
            "From: Bob <bob@example.org>\r\nTo: {to}\r\nSubject: Lunch?\r\n\
             Message-ID: <m1@example.org>\r\nReferences: <m0@example.org>\r\n{extra}\r\nHi\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn who_gets_an_answer() {
        let me = "alice@example.com";
        let user: &[&str] = &[me];
        let ok = message("", "Alice <ALICE@example.com>");
        assert_eq!(
            reply_to(&ok, "bob@example.org", user, &away()),
            Ok("bob@example.org".into())
        );
        let alias = message("", "alice@alias.example.com");
        assert!(reply_to(&alias, "bob@example.org", user, &away()).is_ok());
        for (extra, sender, to, why) in [
            ("", "", me, Skip::NoSender),
            (
                "Auto-Submitted: auto-replied\r\n",
                "bob@example.org",
                me,
                Skip::Automatic,
            ),
            (
                "List-Id: <dev.example.org>\r\n",
                "bob@example.org",
                me,
                Skip::Bulk,
            ),
            ("Precedence: bulk\r\n", "bob@example.org", me, Skip::Bulk),
            ("", "MAILER-DAEMON@example.org", me, Skip::SystemSender),
            ("", "dev-request@example.org", me, Skip::SystemSender),
            (
                "",
                "bob@example.org",
                "team@example.com",
                Skip::NotAddressed,
            ),
            ("", "alice@example.com", me, Skip::FromSelf),
        ] {
            assert_eq!(
                reply_to(&message(extra, to), sender, user, &away()),
                Err(why),
                "{extra} {sender} {to}"
            );
        }
        // Mail to the address it came by (a detail, an alias) counts.
        assert!(reply_to(
            &message("", "alice+shop@example.com"),
            "bob@example.org",
            &["alice@example.com", "alice+shop@example.com"],
            &away()
        )
        .is_ok());
        assert!(reply_to(
            &message("Auto-Submitted: no\r\n", me),
            "bob@example.org",
            user,
            &away()
        )
        .is_ok());
    }

    #[test]
    fn the_reply_threads_and_says_it_is_automatic() {
        let original = message("", "alice@example.com");
        let reply = compose(
            &away(),
            &Reply {
                original: &original,
                user: "alice@example.com",
                to: "bob@example.org",
                message_id: "r1@mx.example.com",
                date: "Mon, 7 Dec 2026 10:00:00 +0000",
            },
        );
        let text = String::from_utf8(reply).unwrap();
        assert!(text.starts_with("From: <alice@example.com>\r\nTo: <bob@example.org>\r\n"));
        assert!(text.contains("Subject: Auto: Lunch?\r\n"));
        assert!(text.contains("In-Reply-To: <m1@example.org>\r\n"));
        assert!(text.contains("References: <m0@example.org> <m1@example.org>\r\n"));
        assert!(text.contains("Auto-Submitted: auto-replied"));
        assert!(text.ends_with("\r\n\r\nAway until Monday.\r\nAlice\r\n"));
        let parsed = mail_parser::MessageParser::new()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject(), Some("Auto: Lunch?"));

        let mut french = away();
        french.subject = Some("Absent jusqu'à lundi — réponse automatique très longue".into());
        french.reason = "Je suis absente.".into();
        let reply = compose(
            &french,
            &Reply {
                original: b"From: b@example.org\r\n\r\nx",
                user: "alice@example.com",
                to: "b@example.org",
                message_id: "r2@mx.example.com",
                date: "Mon, 7 Dec 2026 10:00:00 +0000",
            },
        );
        assert!(reply.is_ascii());
        let parsed = mail_parser::MessageParser::new().parse(&reply).unwrap();
        assert_eq!(parsed.subject(), french.subject.as_deref());
        assert!(!String::from_utf8_lossy(&reply).contains("In-Reply-To"));
    }

    #[test]
    fn tracking_keys_follow_the_handle() {
        let a = tracking_key("Alice@example.com", "Bob@example.org", &away());
        assert!(a.starts_with("vacation/alice@example.com/bob@example.org/"));
        let mut other = away();
        other.reason = "Different".into();
        assert_ne!(
            a,
            tracking_key("alice@example.com", "bob@example.org", &other)
        );
        other.handle = Some("h".into());
        let mut same_handle = away();
        same_handle.handle = Some("h".into());
        assert_eq!(
            tracking_key("alice@example.com", "bob@example.org", &other),
            tracking_key("alice@example.com", "bob@example.org", &same_handle)
        );
    }
}

#[test]
fn keep_uses_the_flags_of_its_moment_and_is_the_only_copy() {
    let got = outcome("require \"imap4flags\"; addflag \"\\\\Flagged\"; keep :flags \"\\\\Seen\";");
    assert_eq!(got.filings.len(), 1);
    assert_eq!(got.filings[0].flags, ["\\Seen"]);
    let got = outcome("require \"imap4flags\"; keep; setflag \"\\\\Seen\";");
    assert_eq!(got.filings.len(), 1);
    assert!(got.filings[0].flags.is_empty(), "{got:?}");
}

#[test]
fn built_in_comparators_may_be_required_and_numeric_has_no_substrings() {
    assert!(
        parse("require [\"comparator-i;octet\", \"comparator-i;ascii-casemap\"]; keep;").is_ok()
    );
    assert!(parse(
        "require \"comparator-i;ascii-numeric\";\n\
         if header :contains :comparator \"i;ascii-numeric\" \"x\" \"1\" { keep; }"
    )
    .is_err());
}

#[test]
fn a_script_that_would_take_too_long_keeps_the_message() {
    let big = "x".repeat(200_000);
    let message = format!("Subject: {big}\r\n\r\nbody\r\n");
    let pattern = "*a".repeat(300) + "b";
    let tests: String = (0..40)
        .map(|i| format!("if header :matches \"subject\" \"{pattern}{i}\" {{ discard; }}\n"))
        .collect();
    let script = parse(&tests).unwrap();
    let mail = Mail {
        message: message.as_bytes(),
        envelope_from: "",
        envelope_to: "a@b.test",
        detail_separator: None,
    };
    let got = run(&script, &mail);
    assert_eq!(got.error.as_deref(), Some("the script took too long"));
    assert_eq!(got.filings[0].mailbox, "INBOX");
}

mod vacation_headers {
    use super::super::vacation::*;
    use super::*;

    fn compose_for(original: &[u8], from: Option<&str>) -> String {
        let vacation = Vacation {
            days: 7,
            subject: None,
            from: from.map(str::to_owned),
            addresses: Vec::new(),
            mime: false,
            handle: None,
            reason: "away".into(),
        };
        let reply = compose(
            &vacation,
            &Reply {
                original,
                user: "alice@example.com",
                to: "bob@example.org",
                message_id: "r@mx",
                date: "Mon, 7 Dec 2026 10:00:00 +0000",
            },
        );
        String::from_utf8(reply).unwrap()
    }

    #[test]
    fn encoded_line_ends_in_message_ids_never_reach_the_reply() {
        let original = b"Message-ID: <x=?utf-8?q?=0D=0ABcc:_v@e=0D=0A=0D=0Aspam?=y>\r\n\
            References: <a@b> junk <c\x01d> <e@f>\r\nSubject: hi\r\n\r\nbody\r\n";
        let reply = compose_for(original, None);
        let header = &reply[..reply.find("\r\n\r\n").unwrap()];
        assert!(!header.contains("\r\nBcc"), "{reply}");
        assert!(
            header.contains("\r\nIn-Reply-To: <x=?utf-8?q?=0D=0ABcc:_v@e=0D=0A=0D=0Aspam?=y>\r\n"),
            "kept as the raw, printable id: {reply}"
        );
        assert!(
            header.contains("\r\nReferences: <a@b> <e@f> <x=?utf-8"),
            "{reply}"
        );
    }

    #[test]
    fn from_may_carry_a_display_name() {
        let script = parse(
            "require \"vacation\"; vacation :from \"Alice Example <alice@example.com>\" \"away\";",
        );
        assert!(script.is_ok(), "{script:?}");
        assert!(parse("require \"vacation\"; vacation :from \"a@b, c@d\" \"away\";").is_err());
        let reply = compose_for(
            b"Subject: hi\r\n\r\n",
            Some("Alice Example <alice@example.com>"),
        );
        assert!(
            reply.starts_with("From: Alice Example <alice@example.com>\r\n"),
            "{reply}"
        );
        let reply = compose_for(b"Subject: hi\r\n\r\n", Some("<alice@example.com>"));
        assert!(
            reply.starts_with("From: <alice@example.com>\r\n"),
            "{reply}"
        );
    }
}
