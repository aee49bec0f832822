//! DMARC aggregate reports (RFC 7489 §7.2): the XML feedback document on
//! what a receiver saw of one domain's mail over a period (Appendix C's
//! schema), and the message that carries it, gzipped, to the addresses
//! the domain's `rua=` names (§7.2.1.1).
//!
//! The caller counts, gzips and sends; this module only writes text.

use std::fmt::Write as _;

/// The policy the domain published, as the receiver found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where the record was found: the From domain or its organizational
    /// domain.
    pub domain: String,
    /// `adkim=s`.
    pub strict_dkim: bool,
    /// `aspf=s`.
    pub strict_spf: bool,
    /// `p=`: `none`, `quarantine` or `reject`.
    pub policy: String,
    /// `sp=`, if given.
    pub subdomain_policy: Option<String>,
    /// `pct=`.
    pub percent: u8,
}

/// One DKIM signature's result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DkimResult {
    /// `d=`.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// `pass`, `fail`, `temperror`, ...
    pub result: String,
}

/// The SPF result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpfResult {
    /// The domain checked.
    pub domain: String,
    /// `mfrom` or `helo`.
    pub scope: String,
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, ...
    pub result: String,
}

/// Messages alike in everything reported, and how many there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The connecting client.
    pub source_ip: std::net::IpAddr,
    /// How many messages.
    pub count: u64,
    /// What the receiver did: `none`, `quarantine` or `reject`.
    pub disposition: String,
    /// Why that differs from what the policy asked (Appendix C's
    /// `PolicyOverrideType`: `local_policy`, `sampled_out`, ...).
    pub reason: Option<String>,
    /// DKIM passed for a domain aligned with From.
    pub dkim_aligned: bool,
    /// SPF passed for a domain aligned with From.
    pub spf_aligned: bool,
    /// The From domain.
    pub header_from: String,
    /// Every signature looked at.
    pub dkim: Vec<DkimResult>,
    /// The SPF check.
    pub spf: SpfResult,
}

/// One report: a reporting organization, a period and a domain's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback<'a> {
    /// Who reports (`org_name`).
    pub org_name: &'a str,
    /// Where to write back about the report.
    pub email: &'a str,
    /// Unique for this reporter.
    pub report_id: &'a str,
    /// The period, Unix seconds.
    pub begin: u64,
    /// The end of the period, Unix seconds.
    pub end: u64,
    /// The domain's policy.
    pub published: &'a Published,
    /// What was seen.
    pub rows: &'a [Row],
}

/// The feedback document.
pub fn xml(feedback: &Feedback<'_>) -> String {
    let p = feedback.published;
    let mut out = String::with_capacity(512 + feedback.rows.len() * 512);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n");
    out.push_str("  <report_metadata>\n");
    element(&mut out, 4, "org_name", feedback.org_name);
    element(&mut out, 4, "email", feedback.email);
    element(&mut out, 4, "report_id", feedback.report_id);
    out.push_str("    <date_range>\n");
    element(&mut out, 6, "begin", &feedback.begin.to_string());
    element(&mut out, 6, "end", &feedback.end.to_string());
    out.push_str("    </date_range>\n  </report_metadata>\n  <policy_published>\n");
    element(&mut out, 4, "domain", &p.domain);
    element(&mut out, 4, "adkim", if p.strict_dkim { "s" } else { "r" });
    element(&mut out, 4, "aspf", if p.strict_spf { "s" } else { "r" });
    element(&mut out, 4, "p", &p.policy);
    element(
        &mut out,
        4,
        "sp",
        p.subdomain_policy.as_deref().unwrap_or(&p.policy),
    );
    element(&mut out, 4, "pct", &p.percent.to_string());
    out.push_str("  </policy_published>\n");
    for row in feedback.rows {
        let verdict = |aligned: bool| if aligned { "pass" } else { "fail" };
        out.push_str("  <record>\n    <row>\n");
        element(&mut out, 6, "source_ip", &row.source_ip.to_string());
        element(&mut out, 6, "count", &row.count.to_string());
        out.push_str("      <policy_evaluated>\n");
        element(&mut out, 8, "disposition", &row.disposition);
        element(&mut out, 8, "dkim", verdict(row.dkim_aligned));
        element(&mut out, 8, "spf", verdict(row.spf_aligned));
        if let Some(reason) = &row.reason {
            out.push_str("        <reason>\n");
            element(&mut out, 10, "type", reason);
            out.push_str("        </reason>\n");
        }
        out.push_str("      </policy_evaluated>\n    </row>\n    <identifiers>\n");
        element(&mut out, 6, "header_from", &row.header_from);
        out.push_str("    </identifiers>\n    <auth_results>\n");
        for dkim in &row.dkim {
            out.push_str("      <dkim>\n");
            element(&mut out, 8, "domain", &dkim.domain);
            if !dkim.selector.is_empty() {
                element(&mut out, 8, "selector", &dkim.selector);
            }
            element(&mut out, 8, "result", &dkim.result);
            out.push_str("      </dkim>\n");
        }
        out.push_str("      <spf>\n");
        element(&mut out, 8, "domain", &row.spf.domain);
        element(&mut out, 8, "scope", &row.spf.scope);
        element(&mut out, 8, "result", &row.spf.result);
        out.push_str("      </spf>\n    </auth_results>\n  </record>\n");
    }
    out.push_str("</feedback>\n");
    out
}

/// `<name>text</name>` on a line of its own, the text escaped.
fn element(out: &mut String, indent: usize, name: &str, text: &str) {
    let _ = write!(out, "{:indent$}<{name}>", "");
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "</{name}>");
}

/// The file name §7.2.1.1 asks for: `receiver!policy-domain!begin!end`
/// and a unique id, `.xml.gz`.
pub fn file_name(receiver: &str, feedback: &Feedback<'_>) -> String {
    format!(
        "{receiver}!{}!{}!{}!{}.xml.gz",
        feedback.published.domain, feedback.begin, feedback.end, feedback.report_id
    )
}

/// Who a report message is from and to, and its own fields.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Our name: the receiver in the file name, the submitter in the
    /// subject (both domain names, §7.2.1.1).
    pub receiver: &'a str,
    /// `From:`.
    pub from: &'a str,
    /// `To:`: one `rua=` address (each gets its own message, so no
    /// destination learns another's).
    pub to: &'a str,
    /// `Date:`, RFC 5322.
    pub date: &'a str,
    /// `Message-ID:`, without brackets.
    pub message_id: &'a str,
}

/// The message that carries `feedback`, its document gzipped (`gzipped`):
/// a short text part and the report as an `application/gzip` attachment
/// (§7.2.1.1), CRLF lines.
pub fn compose(feedback: &Feedback<'_>, envelope: &Envelope<'_>, gzipped: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let domain = &feedback.published.domain;
    let name = file_name(envelope.receiver, feedback);
    let boundary = format!("=_dmarc_{}", feedback.report_id);
    let mut out = String::with_capacity(1024 + gzipped.len() * 4 / 3);
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line(&format!("From: {}", envelope.from));
    line(&format!("To: {}", envelope.to));
    line(&format!(
        "Subject: Report Domain: {domain} Submitter: {} Report-ID: <{}>",
        envelope.receiver, feedback.report_id
    ));
    line(&format!("Date: {}", envelope.date));
    line(&format!("Message-ID: <{}>", envelope.message_id));
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\""
    ));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=us-ascii");
    line("Content-Transfer-Encoding: 7bit");
    line("");
    line(&format!(
        "This is a DMARC aggregate report (RFC 7489) from {} for {domain},",
        feedback.org_name
    ));
    line(&format!(
        "covering {} to {} (Unix time). The report is attached.",
        feedback.begin, feedback.end
    ));
    line("");
    line(&format!("--{boundary}"));
    line(&format!("Content-Type: application/gzip; name=\"{name}\""));
    line("Content-Transfer-Encoding: base64");
    line(&format!(
        "Content-Disposition: attachment; filename=\"{name}\""
    ));
    line("");
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzipped);
    for chunk in encoded.as_bytes().chunks(76) {
        line(std::str::from_utf8(chunk).unwrap_or_default());
    }
    line(&format!("--{boundary}--"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Published {
        Published {
            domain: "example.com".into(),
            strict_dkim: false,
            strict_spf: true,
            policy: "quarantine".into(),
            subdomain_policy: None,
            percent: 100,
        }
    }

    fn row() -> Row {
        Row {
            source_ip: "192.0.2.7".parse().unwrap(),
            count: 3,
            disposition: "quarantine".into(),
            reason: Some("local_policy".into()),
            dkim_aligned: false,
            spf_aligned: true,
            header_from: "example.com".into(),
            dkim: vec![DkimResult {
                domain: "other.test".into(),
                selector: "s1".into(),
                result: "pass".into(),
            }],
            spf: SpfResult {
                domain: "example.com".into(),
                scope: "mfrom".into(),
                result: "pass".into(),
            },
        }
    }

    fn feedback<'a>(published: &'a Published, rows: &'a [Row]) -> Feedback<'a> {
        Feedback {
            org_name: "mx.ours.test",
            email: "dmarc-noreply@mx.ours.test",
            report_id: "r1",
            begin: 100,
            end: 200,
            published,
            rows,
        }
    }

    #[test]
    fn the_document_holds_the_policy_and_each_row() {
        let (published, rows) = (published(), [row()]);
        let feedback = feedback(&published, &rows);
        let xml = xml(&feedback);
        for expected in [
            "<org_name>mx.ours.test</org_name>",
            "<begin>100</begin>",
            "<domain>example.com</domain>",
            "<adkim>r</adkim>",
            "<aspf>s</aspf>",
            "<p>quarantine</p>",
            "<sp>quarantine</sp>",
            "<source_ip>192.0.2.7</source_ip>",
            "<count>3</count>",
            "<disposition>quarantine</disposition>",
            "<dkim>fail</dkim>",
            "<spf>pass</spf>",
            "<reason>\n          <type>local_policy</type>\n        </reason>",
            "<header_from>example.com</header_from>",
            "<selector>s1</selector>",
            "<scope>mfrom</scope>",
        ] {
            assert!(xml.contains(expected), "{expected}: {xml}");
        }
        assert_eq!(
            file_name("mx.ours.test", &feedback),
            "mx.ours.test!example.com!100!200!r1.xml.gz"
        );
    }

    #[test]
    fn text_is_escaped() {
        let mut out = String::new();
        element(&mut out, 0, "x", "a<b>&\"'\u{1}");
        assert_eq!(out, "<x>a&lt;b&gt;&amp;&quot;&apos; </x>\n");
    }

    #[test]
    fn the_message_carries_the_report_as_a_gzip_attachment() {
        let (published, rows) = (published(), [row()]);
        let feedback = feedback(&published, &rows);
        let to = "d@example.com";
        let message = compose(
            &feedback,
            &Envelope {
                receiver: "mx.ours.test",
                from: "dmarc-noreply@mx.ours.test",
                to,
                date: "Mon, 7 Dec 2026 00:00:00 +0000",
                message_id: "r1@mx.ours.test",
            },
            &[0x1f, 0x8b, 0, 1, 2],
        );
        let text = String::from_utf8(message).unwrap();
        assert!(text.contains(
            "\r\nSubject: Report Domain: example.com Submitter: mx.ours.test Report-ID: <r1>\r\n"
        ));
        assert!(text.contains(
            "Content-Type: application/gzip; name=\"mx.ours.test!example.com!100!200!r1.xml.gz\""
        ));
        assert!(text.contains("\r\nH4sAAQI=\r\n"), "{text}");
        assert!(text.ends_with("--=_dmarc_r1--\r\n"));
    }
}
