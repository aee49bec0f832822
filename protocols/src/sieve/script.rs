//! A checked Sieve script: the commands and tests ringpost runs, each
//! with its arguments read and checked (see [`super::parse`]).

/// A script ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Its top-level commands, in order.
    pub commands: Vec<Command>,
}

/// `vacation :days` when the script gives none (RFC 5230 §4.1).
pub const DEFAULT_VACATION_DAYS: u64 = 7;
/// The fewest days between two replies to one sender: a script asking
/// for fewer gets this (§4.1 allows a site minimum).
pub const MIN_VACATION_DAYS: u64 = 1;
/// The most: a longer wait is this.
pub const MAX_VACATION_DAYS: u64 = 365;

/// A command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `if` with its `elsif` branches, then `else`.
    If {
        /// Each test with the block run when it is the first true one.
        branches: Vec<(Test, Vec<Command>)>,
        /// The `else` block.
        otherwise: Option<Vec<Command>>,
    },
    /// `stop`: the script ends here.
    Stop,
    /// `keep` (with imap4flags' `:flags`).
    Keep {
        /// The flags to store it with; `None`: the current flag set.
        flags: Option<Vec<String>>,
    },
    /// `discard`: cancels the implicit keep.
    Discard,
    /// `fileinto` (RFC 5228 §4.1, with `:copy`, `:create` and `:flags`).
    FileInto {
        /// The mailbox name.
        mailbox: String,
        /// `:copy` (RFC 3894): the implicit keep stays.
        copy: bool,
        /// `:create` (RFC 5490): make the mailbox if it is missing.
        create: bool,
        /// As for `keep`.
        flags: Option<Vec<String>>,
    },
    /// `redirect` (with `:copy`).
    Redirect {
        /// Where to.
        address: String,
        /// `:copy`: the implicit keep stays.
        copy: bool,
    },
    /// `reject` or `ereject` (RFC 5429).
    Reject {
        /// The reason given to the sender.
        reason: String,
    },
    /// `vacation` (RFC 5230).
    Vacation(Vacation),
    /// `setflag`, `addflag` or `removeflag` (RFC 5232).
    Flags(FlagOp, Vec<String>),
}

/// What a flag command does to the current flag set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    /// `setflag`: replace it.
    Set,
    /// `addflag`.
    Add,
    /// `removeflag`.
    Remove,
}

/// A `vacation` command's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vacation {
    /// Days before the same sender hears again (within the site bounds).
    pub days: u64,
    /// `:subject`.
    pub subject: Option<String>,
    /// `:from`: the reply's From address.
    pub from: Option<String>,
    /// `:addresses`: the user's other addresses.
    pub addresses: Vec<String>,
    /// `:mime`: the reason is a MIME entity, headers and all.
    pub mime: bool,
    /// `:handle`: replies with the same handle count as one.
    pub handle: Option<String>,
    /// The reply's text.
    pub reason: String,
}

/// A test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `true`.
    True,
    /// `false`.
    False,
    /// `not`.
    Not(Box<Test>),
    /// `allof`.
    AllOf(Vec<Test>),
    /// `anyof`.
    AnyOf(Vec<Test>),
    /// `exists`: every named header field is there.
    Exists(Vec<String>),
    /// `size :over` / `:under`.
    Size {
        /// `:over` (else `:under`).
        over: bool,
        /// Octets.
        limit: u64,
    },
    /// `header`.
    Header {
        /// How values and keys compare.
        matcher: Matcher,
        /// Field names.
        names: Vec<String>,
        /// Keys.
        keys: Vec<String>,
    },
    /// `address`: the addresses in the named fields.
    Address {
        /// Which part of each address.
        part: AddressPart,
        /// How they compare.
        matcher: Matcher,
        /// Field names.
        names: Vec<String>,
        /// Keys.
        keys: Vec<String>,
    },
    /// `envelope` (`from`, `to`).
    Envelope {
        /// Which part of each address.
        part: AddressPart,
        /// How they compare.
        matcher: Matcher,
        /// `from` and/or `to`.
        names: Vec<String>,
        /// Keys.
        keys: Vec<String>,
    },
    /// `hasflag` (RFC 5232): the current flag set.
    HasFlag {
        /// How flags and keys compare.
        matcher: Matcher,
        /// Keys.
        keys: Vec<String>,
    },
    /// `body` (RFC 5173).
    Body {
        /// How the body and keys compare.
        matcher: Matcher,
        /// Which body.
        transform: BodyTransform,
        /// Keys.
        keys: Vec<String>,
    },
}

/// The part of an address a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressPart {
    /// `:all`, the default.
    #[default]
    All,
    /// `:localpart`.
    LocalPart,
    /// `:domain`.
    Domain,
    /// `:user` (RFC 5233): the local part before the detail.
    User,
    /// `:detail`: after the separator (`alice+news` → `news`).
    Detail,
}

/// Which text `body` tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTransform {
    /// `:raw`: the body as stored.
    Raw,
    /// `:text`, the default: the decoded text parts.
    Text,
    /// `:content`: decoded parts of these types (`text`, `text/html`...).
    Content(Vec<String>),
}

/// A match type with its comparator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matcher {
    /// How.
    pub how: How,
    /// Compared with.
    pub comparator: Comparator,
}

/// A match type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum How {
    /// `:is`, the default.
    #[default]
    Is,
    /// `:contains`.
    Contains,
    /// `:matches`: `*` and `?` wildcards, `\` escapes them.
    Matches,
    /// `:value` (RFC 5231): each value against each key.
    Value(Relation),
    /// `:count`: the number of values against each key.
    Count(Relation),
}

/// A relation of RFC 5231.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// `gt`.
    Gt,
    /// `ge`.
    Ge,
    /// `lt`.
    Lt,
    /// `le`.
    Le,
    /// `eq`.
    Eq,
    /// `ne`.
    Ne,
}

impl Relation {
    /// `"gt"`, `"ge"`... in any case.
    pub fn parse(text: &str) -> Option<Relation> {
        Some(match text.to_ascii_lowercase().as_str() {
            "gt" => Relation::Gt,
            "ge" => Relation::Ge,
            "lt" => Relation::Lt,
            "le" => Relation::Le,
            "eq" => Relation::Eq,
            "ne" => Relation::Ne,
            _ => return None,
        })
    }

    /// Whether `order` (value against key) satisfies the relation.
    pub fn holds(self, order: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Relation::Gt => order == Greater,
            Relation::Ge => order != Less,
            Relation::Lt => order == Less,
            Relation::Le => order != Greater,
            Relation::Eq => order == Equal,
            Relation::Ne => order != Equal,
        }
    }
}

/// A comparator (RFC 4790).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Comparator {
    /// `i;ascii-casemap`, the default: ASCII letters in either case.
    #[default]
    AsciiCasemap,
    /// `i;octet`: exact.
    Octet,
    /// `i;ascii-numeric`: by the leading digits' value.
    AsciiNumeric,
}
