//! Bounce classification: what a refusal means, whoever phrased it. Every
//! 4xx/5xx reply a remote server gives (and every verdict of our own) gets
//! one [`Class`], for the mail log, the metrics and the DSN, so a sender
//! can tell a dead address from a block or a full mailbox across providers
//! that word the same thing differently.
//!
//! Rules are tried in order and the first that matches decides: operators'
//! own rules (from the config) first, then [`default_rules`]: enhanced
//! status codes that say it plainly, then the words the big providers use,
//! then the code's class and subject as a last resort.

/// What a refusal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The mailbox does not exist.
    InvalidRecipient,
    /// The domain does not exist or takes no mail.
    InvalidDomain,
    /// The mailbox is full.
    MailboxFull,
    /// Blocked: reputation, block lists, spam verdicts, policy.
    Policy,
    /// Slow down: too many messages or connections.
    RateLimited,
    /// The content was refused (malware, spam content, size).
    Content,
    /// SPF, DKIM, DMARC or reverse DNS did not pass.
    Authentication,
    /// TLS was missing, refused or failed.
    Tls,
    /// The host could not be reached or the connection broke.
    Network,
    /// None of the above.
    Other,
}

impl Class {
    /// The class's name, as logs, metrics and configs write it.
    pub fn name(self) -> &'static str {
        match self {
            Class::InvalidRecipient => "invalid_recipient",
            Class::InvalidDomain => "invalid_domain",
            Class::MailboxFull => "mailbox_full",
            Class::Policy => "policy",
            Class::RateLimited => "rate_limited",
            Class::Content => "content",
            Class::Authentication => "authentication",
            Class::Tls => "tls",
            Class::Network => "network",
            Class::Other => "other",
        }
    }

    /// The class named `name`.
    pub fn parse(name: &str) -> Option<Class> {
        ALL.iter().copied().find(|c| c.name() == name)
    }

    /// In words, for a person reading a DSN.
    pub fn describe(self) -> &'static str {
        match self {
            Class::InvalidRecipient => "the address does not exist",
            Class::InvalidDomain => "the domain does not exist or accepts no mail",
            Class::MailboxFull => "the mailbox is full",
            Class::Policy => "the receiving system blocked the message (policy or reputation)",
            Class::RateLimited => "the receiving system asked us to slow down",
            Class::Content => "the receiving system refused the message's content",
            Class::Authentication => {
                "the message did not pass sender authentication (SPF, DKIM, DMARC)"
            }
            Class::Tls => "a secure (TLS) connection was required and could not be made",
            Class::Network => "the receiving system could not be reached",
            Class::Other => "the receiving system refused the message",
        }
    }
}

/// Every class.
pub const ALL: [Class; 10] = [
    Class::InvalidRecipient,
    Class::InvalidDomain,
    Class::MailboxFull,
    Class::Policy,
    Class::RateLimited,
    Class::Content,
    Class::Authentication,
    Class::Tls,
    Class::Network,
    Class::Other,
];

/// One rule: every condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The enhanced status code starts with this (`5.7.1`, `5.1.`).
    pub status: Option<String>,
    /// The reply text contains this, ignoring case.
    pub contains: Option<String>,
    /// The class it gives.
    pub class: Class,
}

impl Rule {
    fn new(status: Option<&str>, contains: Option<&str>, class: Class) -> Rule {
        Rule {
            status: status.map(str::to_owned),
            contains: contains.map(str::to_ascii_lowercase),
            class,
        }
    }

    fn matches(&self, status: &str, text_lower: &str) -> bool {
        self.status.as_deref().is_none_or(|s| status.starts_with(s))
            && self
                .contains
                .as_deref()
                .is_none_or(|c| text_lower.contains(c))
    }
}

/// The built-in rules, in the order they are tried.
pub fn default_rules() -> Vec<Rule> {
    use Class::*;
    let status = |s: &str, class| Rule::new(Some(s), None, class);
    let words = |w: &str, class| Rule::new(None, Some(w), class);
    let mut rules = vec![
        // The sender refused (at MAIL FROM, or its address looked up): it
        // says nothing of the recipient, whose address must not be taken
        // for bad (RFC 3463 puts X.1.7 and X.1.8 on the sender). A reply
        // that names the recipient's address as the problem still does.
        words("recipient address rejected", InvalidRecipient),
        words("sender address rejected", Policy),
        status("5.1.7", Policy),
        status("5.1.8", Policy),
        status("4.1.8", Policy),
        // Codes that say it plainly (RFC 3463, 7372, 7505).
        status("5.1.10", InvalidDomain),
        status("5.1.1", InvalidRecipient),
        status("5.1.2", InvalidDomain),
        status("5.1.6", InvalidRecipient),
        status("4.2.2", MailboxFull),
        status("5.2.2", MailboxFull),
        status("5.7.23", Authentication),
        status("5.7.24", Authentication),
        status("5.7.25", Authentication),
        status("5.7.26", Authentication),
        status("5.7.27", Authentication),
        status("5.7.10", Tls),
        status("5.7.11", Tls),
        status("4.7.5", Tls),
        status("4.4.1", Network),
        status("4.4.2", Network),
        status("5.4.4", InvalidDomain),
        status("4.4.3", Network),
    ];
    // What the big providers write, most specific meaning first.
    for (text, class) in [
        ("dmarc", Authentication),
        ("unauthenticated", Authentication),
        ("spf", Authentication),
        ("dkim", Authentication),
        ("reverse dns", Authentication),
        ("ptr record", Authentication),
        ("starttls", Tls),
        ("tls ", Tls),
        ("rate limit", RateLimited),
        ("rate-limit", RateLimited),
        ("too many", RateLimited),
        ("unexpected volume", RateLimited),
        ("temporarily deferred", RateLimited),
        ("try again later", RateLimited),
        ("over quota", MailboxFull),
        ("quota exceeded", MailboxFull),
        ("mailbox full", MailboxFull),
        ("mailbox is full", MailboxFull),
        ("insufficient storage", MailboxFull),
        ("does not exist", InvalidRecipient),
        ("no such user", InvalidRecipient),
        ("user unknown", InvalidRecipient),
        ("unknown user", InvalidRecipient),
        ("mailbox unavailable", InvalidRecipient),
        ("mailbox not found", InvalidRecipient),
        ("invalid recipient", InvalidRecipient),
        ("recipient address rejected", InvalidRecipient),
        ("no mailbox", InvalidRecipient),
        ("address rejected", InvalidRecipient),
        ("host unknown", InvalidDomain),
        ("domain not found", InvalidDomain),
        ("no such domain", InvalidDomain),
        ("virus", Content),
        ("malware", Content),
        ("content", Content),
        ("message too large", Content),
        ("spam", Policy),
        ("blocked", Policy),
        ("blacklist", Policy),
        ("blocklist", Policy),
        ("block list", Policy),
        ("reputation", Policy),
        ("policy", Policy),
        ("denied", Policy),
    ] {
        rules.push(words(text, class));
    }
    // Last, the code's subject (RFC 3463 §3).
    for (prefix, class) in [
        ("5.1.", InvalidRecipient),
        ("5.2.", MailboxFull),
        ("5.4.", Network),
        ("4.4.", Network),
        ("5.6.", Content),
        ("5.7.", Policy),
        ("4.7.", Policy),
    ] {
        rules.push(status(prefix, class));
    }
    rules
}

/// The class of a refusal with enhanced code `status` (may be empty) and
/// `text`, by `rules`; [`Class::Other`] when none matches.
pub fn classify(rules: &[Rule], status: &str, text: &str) -> Class {
    let lower = text.to_ascii_lowercase();
    rules
        .iter()
        .find(|rule| rule.matches(status, &lower))
        .map_or(Class::Other, |rule| rule.class)
}

/// A rule from a config entry: a class name and at least one condition.
pub fn rule(class: &str, status: Option<&str>, contains: Option<&str>) -> Result<Rule, String> {
    let class = Class::parse(class).ok_or_else(|| {
        let names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
        format!("`{class}` is none of {}", names.join(", "))
    })?;
    if status.is_none() && contains.is_none() {
        return Err("a rule needs `status`, `contains` or both".into());
    }
    Ok(Rule::new(status, contains, class))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies as the big providers send them (enhanced code, then text,
    /// multi-line replies joined), and what they mean.
    const REAL_WORLD: &[(&str, &str, Class)] = &[
        // Gmail
        ("5.1.1", "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces.", Class::InvalidRecipient),
        ("4.2.2", "The recipient's inbox is out of storage space. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp", Class::MailboxFull),
        ("5.2.2", "The recipient's inbox is out of storage space and inactive.", Class::MailboxFull),
        ("4.7.28", "Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.", Class::RateLimited),
        ("5.7.26", "This mail is unauthenticated, which poses a security risk to the sender and Gmail users, and has been blocked. The sender must authenticate with at least one of SPF or DKIM.", Class::Authentication),
        ("5.7.1", "Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", Class::Policy),
        ("5.7.0", "This message was blocked because its content presents a potential security issue.", Class::Content),
        ("4.7.0", "TLS required by the recipient", Class::Tls),
        // Microsoft 365 / Outlook.com
        ("5.5.0", "Requested action not taken: mailbox unavailable (S2017062302)", Class::InvalidRecipient),
        ("5.4.1", "Recipient address rejected: Access denied. AS(201806281)", Class::InvalidRecipient),
        ("5.7.1", "Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.", Class::Policy),
        ("4.7.650", "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", Class::RateLimited),
        ("5.7.606", "Access denied, banned sending IP [192.0.2.1].", Class::Policy),
        ("5.7.509", "Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.", Class::Authentication),
        ("5.2.2", "mailbox full; Quota exceeded", Class::MailboxFull),
        // Yahoo / AOL
        ("4.7.0", "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", Class::RateLimited),
        ("5.7.9", "Message not accepted for policy reasons.", Class::Policy),
        ("", "1 Requested mail action aborted, mailbox not found", Class::InvalidRecipient),
        ("5.7.27", "This mail has been rejected because the sending domain does not publish an SPF record", Class::Authentication),
        // Common MTAs
        ("5.1.1", "<bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table", Class::InvalidRecipient),
        ("4.2.2", "Mailbox full", Class::MailboxFull),
        ("5.6.0", "Message content rejected", Class::Content),
        ("5.7.1", "Relay access denied", Class::Policy),
        ("5.7.0", "Must issue a STARTTLS command first", Class::Tls),
        ("4.7.1", "Greylisted, please try again later", Class::RateLimited),
        // Ours
        ("5.1.2", "gone.example: no such domain", Class::InvalidDomain),
        ("5.1.10", "nullmx.example accepts no mail (null MX)", Class::InvalidDomain),
        ("4.4.1", "cannot connect to 192.0.2.7:25: connection refused", Class::Network),
        ("4.7.5", "TLS is required for this destination (relay.tls_policy), but mx offered no STARTTLS", Class::Tls),
        ("5.0.0", "delivery cancelled by the mail administrator", Class::Other),
        // Refusals of the sender, not the recipient (Postfix's words).
        ("5.1.7", "Bad sender address syntax", Class::Policy),
        ("5.1.8", "<x@a.example>: Sender address rejected: Domain not found", Class::Policy),
        ("5.1.0", "<x@a.example>: Sender address rejected: User unknown in local recipient table", Class::Policy),
        ("5.1.1", "<x@a.example>: Sender address rejected: undeliverable address", Class::Policy),
        ("5.7.1", "<x@a.example>: Sender address rejected: Access denied", Class::Policy),
        // Both named: the recipient's refusal decides.
        ("5.1.1", "<bob@b.example>: Recipient address rejected: user unknown (sender address rejected too)", Class::InvalidRecipient),
        ("5.7.26", "Unauthenticated email from the sender domain a.example is not accepted due to its DMARC policy", Class::Authentication),
    ];

    #[test]
    fn real_world_replies_are_classified() {
        let rules = default_rules();
        for &(status, text, class) in REAL_WORLD {
            assert_eq!(classify(&rules, status, text), class, "{status} {text}");
        }
    }

    #[test]
    fn operators_rules_come_first() {
        let mut rules = vec![rule("rate_limited", None, Some("Greylisted")).unwrap()];
        rules.extend(default_rules());
        assert_eq!(
            classify(&rules, "4.7.1", "greylisted, retry later"),
            Class::RateLimited
        );
        let mut rules = vec![rule("other", Some("5.7.1"), Some("relay access")).unwrap()];
        rules.extend(default_rules());
        assert_eq!(
            classify(&rules, "5.7.1", "Relay access denied"),
            Class::Other
        );
        assert!(rule("nonsense", Some("5."), None).is_err());
        assert!(rule("policy", None, None).is_err());
        for class in ALL {
            assert_eq!(Class::parse(class.name()), Some(class));
        }
    }
}
