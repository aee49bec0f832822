//! From tokens to a checked [`Script`]: first the generic grammar of RFC
//! 5228 §8.2 (commands, arguments, tests, blocks), then each command and
//! test read by its own signature, with the extensions it needs checked
//! against the script's `require`. Everything a script can get wrong is
//! found here, at upload, not when mail arrives.

use super::lexer::{self, Kind, Token};
use super::script::*;
use super::{SieveError, EXTENSIONS};

/// Deepest nesting of blocks and tests: deep enough for any script a
/// person or a filter editor writes, shallow enough for the recursion.
pub const MAX_NESTING: usize = 32;

/// Parse and check `text`.
pub fn parse(text: &str) -> Result<Script, SieveError> {
    let tokens = lexer::tokens(text)?;
    let mut grammar = Grammar {
        tokens: &tokens,
        at: 0,
    };
    let commands = grammar.commands(0)?;
    if let Some(token) = grammar.tokens.get(grammar.at) {
        return Err(SieveError::new(token.line, "unexpected '}'"));
    }
    let mut checker = Checker {
        required: Vec::new(),
        requires_done: false,
    };
    let commands = checker.block(commands)?;
    Ok(Script { commands })
}

/// A command as the grammar sees it, before its signature is checked.
#[derive(Debug)]
struct RawCommand {
    name: String,
    line: usize,
    args: Vec<Arg>,
    tests: Vec<RawTest>,
    block: Option<Vec<RawCommand>>,
}

#[derive(Debug)]
struct RawTest {
    name: String,
    line: usize,
    args: Vec<Arg>,
    tests: Vec<RawTest>,
}

#[derive(Debug, Clone)]
enum Arg {
    Strings(Vec<String>),
    Number(u64),
    Tag(String),
}

struct Grammar<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Grammar<'_> {
    fn peek(&self) -> Option<&Kind> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn line(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |t| t.line)
    }

    fn punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Kind::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn commands(&mut self, depth: usize) -> Result<Vec<RawCommand>, SieveError> {
        if depth > MAX_NESTING {
            return Err(SieveError::new(self.line(), "blocks nest too deep"));
        }
        let mut out = Vec::new();
        while let Some(Kind::Identifier(name)) = self.peek() {
            let name = name.clone();
            let line = self.line();
            self.at += 1;
            let (args, tests) = self.arguments(depth)?;
            let block = if self.punct(';') {
                None
            } else if self.punct('{') {
                let block = self.commands(depth + 1)?;
                if !self.punct('}') {
                    return Err(SieveError::new(
                        self.line(),
                        "expected '}' to end the block",
                    ));
                }
                Some(block)
            } else {
                return Err(SieveError::new(
                    self.line(),
                    format!("expected ';' or a block after {name}"),
                ));
            };
            out.push(RawCommand {
                name,
                line,
                args,
                tests,
                block,
            });
        }
        match self.peek() {
            None | Some(Kind::Punct('}')) => Ok(out),
            Some(_) => Err(SieveError::new(self.line(), "expected a command")),
        }
    }

    /// Arguments, then a test or a parenthesised test list.
    fn arguments(&mut self, depth: usize) -> Result<(Vec<Arg>, Vec<RawTest>), SieveError> {
        let mut args = Vec::new();
        loop {
            match self.peek() {
                Some(Kind::Tag(tag)) => {
                    args.push(Arg::Tag(tag.clone()));
                    self.at += 1;
                }
                Some(Kind::Number(n)) => {
                    args.push(Arg::Number(*n));
                    self.at += 1;
                }
                Some(Kind::String(s)) => {
                    args.push(Arg::Strings(vec![s.clone()]));
                    self.at += 1;
                }
                Some(Kind::Punct('[')) => {
                    self.at += 1;
                    args.push(Arg::Strings(self.string_list()?));
                }
                _ => break,
            }
        }
        let tests = match self.peek() {
            Some(Kind::Identifier(_)) => vec![self.test(depth + 1)?],
            Some(Kind::Punct('(')) => {
                self.at += 1;
                let mut tests = vec![self.test(depth + 1)?];
                while self.punct(',') {
                    tests.push(self.test(depth + 1)?);
                }
                if !self.punct(')') {
                    return Err(SieveError::new(
                        self.line(),
                        "expected ')' to end the tests",
                    ));
                }
                tests
            }
            _ => Vec::new(),
        };
        Ok((args, tests))
    }

    fn string_list(&mut self) -> Result<Vec<String>, SieveError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                Some(Kind::String(s)) => {
                    out.push(s.clone());
                    self.at += 1;
                }
                _ => {
                    return Err(SieveError::new(
                        self.line(),
                        "expected a string in the list",
                    ))
                }
            }
            if self.punct(']') {
                return Ok(out);
            }
            if !self.punct(',') {
                return Err(SieveError::new(
                    self.line(),
                    "expected ',' or ']' in the list",
                ));
            }
        }
    }

    fn test(&mut self, depth: usize) -> Result<RawTest, SieveError> {
        if depth > MAX_NESTING {
            return Err(SieveError::new(self.line(), "tests nest too deep"));
        }
        let line = self.line();
        let Some(Kind::Identifier(name)) = self.peek() else {
            return Err(SieveError::new(line, "expected a test"));
        };
        let name = name.clone();
        self.at += 1;
        let (args, tests) = self.arguments(depth)?;
        Ok(RawTest {
            name,
            line,
            args,
            tests,
        })
    }
}

/// Reads the raw tree by each command's and test's signature.
struct Checker {
    required: Vec<String>,
    requires_done: bool,
}

/// The arguments of one command or test, taken as its signature asks.
struct Args {
    name: String,
    line: usize,
    tagged: Vec<(String, Option<Arg>)>,
    positional: Vec<Arg>,
}

impl Checker {
    fn need(&self, extension: &str, line: usize, what: &str) -> Result<(), SieveError> {
        if self.required.iter().any(|r| r == extension) {
            Ok(())
        } else {
            Err(SieveError::new(
                line,
                format!("{what} needs require \"{extension}\""),
            ))
        }
    }

    fn block(&mut self, raw: Vec<RawCommand>) -> Result<Vec<Command>, SieveError> {
        let mut out: Vec<Command> = Vec::new();
        for command in raw {
            if command.name != "require" {
                self.requires_done = true;
            }
            match command.name.as_str() {
                "elsif" | "else" => {
                    let branch_test = match command.name.as_str() {
                        "elsif" => {
                            Some(self.one_test(&command.name, command.line, command.tests)?)
                        }
                        _ => {
                            if !command.tests.is_empty() {
                                return Err(SieveError::new(command.line, "else takes no test"));
                            }
                            None
                        }
                    };
                    if !command.args.is_empty() {
                        return Err(SieveError::new(
                            command.line,
                            format!("{} takes no arguments", command.name),
                        ));
                    }
                    let Some(body) = command.block else {
                        return Err(SieveError::new(
                            command.line,
                            format!("{} needs a block", command.name),
                        ));
                    };
                    let body = self.block(body)?;
                    let Some(Command::If {
                        branches,
                        otherwise,
                    }) = out.last_mut()
                    else {
                        return Err(SieveError::new(
                            command.line,
                            format!("{} without if", command.name),
                        ));
                    };
                    if otherwise.is_some() {
                        return Err(SieveError::new(
                            command.line,
                            format!("{} after else", command.name),
                        ));
                    }
                    match branch_test {
                        Some(test) => branches.push((test, body)),
                        None => *otherwise = Some(body),
                    }
                }
                "if" => {
                    let test = self.one_test("if", command.line, command.tests)?;
                    if !command.args.is_empty() {
                        return Err(SieveError::new(command.line, "if takes no arguments"));
                    }
                    let Some(body) = command.block else {
                        return Err(SieveError::new(command.line, "if needs a block"));
                    };
                    let body = self.block(body)?;
                    out.push(Command::If {
                        branches: vec![(test, body)],
                        otherwise: None,
                    });
                }
                _ => {
                    if command.block.is_some() {
                        return Err(SieveError::new(
                            command.line,
                            format!("{} takes no block", command.name),
                        ));
                    }
                    if !command.tests.is_empty() {
                        return Err(SieveError::new(
                            command.line,
                            format!("{} takes no test", command.name),
                        ));
                    }
                    let args = Args::split(command.name, command.line, command.args)?;
                    if let Some(action) = self.action(args)? {
                        out.push(action);
                    }
                }
            }
        }
        Ok(out)
    }

    fn one_test(
        &mut self,
        name: &str,
        line: usize,
        mut tests: Vec<RawTest>,
    ) -> Result<Test, SieveError> {
        match (tests.pop(), tests.is_empty()) {
            (Some(test), true) => self.test(test),
            _ => Err(SieveError::new(line, format!("{name} needs one test"))),
        }
    }

    /// A command other than the control ones; `None` for `require`.
    fn action(&mut self, mut args: Args) -> Result<Option<Command>, SieveError> {
        let line = args.line;
        let command = match args.name.as_str() {
            "require" => {
                if self.requires_done {
                    return Err(SieveError::new(
                        line,
                        "require must come before other commands",
                    ));
                }
                for extension in args.strings()? {
                    // The two comparators every implementation has may be
                    // required too (RFC 5228 §2.7.3).
                    let built_in = ["comparator-i;octet", "comparator-i;ascii-casemap"];
                    if !EXTENSIONS.split(' ').any(|known| known == extension)
                        && !built_in.contains(&extension.as_str())
                    {
                        return Err(SieveError::new(
                            line,
                            format!("extension \"{extension}\" is not supported"),
                        ));
                    }
                    self.required.push(extension);
                }
                args.done()?;
                return Ok(None);
            }
            "stop" => Command::Stop,
            "discard" => Command::Discard,
            "keep" => Command::Keep {
                flags: self.flags_tag(&mut args)?,
            },
            "fileinto" => {
                self.need("fileinto", line, "fileinto")?;
                let copy = self.copy_tag(&mut args)?;
                let create = args.flag("create");
                if create {
                    self.need("mailbox", line, ":create")?;
                }
                let flags = self.flags_tag(&mut args)?;
                Command::FileInto {
                    mailbox: args.string()?,
                    copy,
                    create,
                    flags,
                }
            }
            "redirect" => {
                let copy = self.copy_tag(&mut args)?;
                let address = args.string()?;
                if super::eval::bare_address(&address).is_none() {
                    return Err(SieveError::new(
                        line,
                        format!("redirect to \"{address}\": not an address"),
                    ));
                }
                Command::Redirect { address, copy }
            }
            "reject" | "ereject" => {
                self.need(&args.name.clone(), line, &args.name.clone())?;
                Command::Reject {
                    reason: args.string()?,
                }
            }
            "setflag" | "addflag" | "removeflag" => {
                self.need("imap4flags", line, &args.name.clone())?;
                let op = match args.name.as_str() {
                    "setflag" => FlagOp::Set,
                    "addflag" => FlagOp::Add,
                    _ => FlagOp::Remove,
                };
                Command::Flags(op, args.strings()?)
            }
            "vacation" => {
                self.need("vacation", line, "vacation")?;
                let days = match args.take("days")? {
                    Some(Arg::Number(n)) => n,
                    None => DEFAULT_VACATION_DAYS,
                    Some(_) => return Err(SieveError::new(line, ":days needs a number")),
                };
                let subject = args.tag_string("subject")?;
                let from = args.tag_string("from")?;
                if let Some(from) = &from {
                    // An address, with a display name or without (§4.2).
                    let one = super::header::addresses(from.as_bytes()).len() == 1;
                    if !one || from.chars().any(char::is_control) {
                        return Err(SieveError::new(
                            line,
                            format!(":from \"{from}\": not one address"),
                        ));
                    }
                }
                let addresses = args.tag_strings("addresses")?.unwrap_or_default();
                let mime = args.flag("mime");
                let handle = args.tag_string("handle")?;
                let reason = args.string()?;
                Command::Vacation(Vacation {
                    days: days.clamp(MIN_VACATION_DAYS, MAX_VACATION_DAYS),
                    subject,
                    from,
                    addresses,
                    mime,
                    handle,
                    reason,
                })
            }
            other => return Err(SieveError::new(line, format!("unknown command {other}"))),
        };
        args.done()?;
        Ok(Some(command))
    }

    fn copy_tag(&self, args: &mut Args) -> Result<bool, SieveError> {
        let copy = args.flag("copy");
        if copy {
            self.need("copy", args.line, ":copy")?;
        }
        Ok(copy)
    }

    fn flags_tag(&self, args: &mut Args) -> Result<Option<Vec<String>>, SieveError> {
        let flags = args.tag_strings("flags")?;
        if flags.is_some() {
            self.need("imap4flags", args.line, ":flags")?;
        }
        Ok(flags)
    }

    fn test(&mut self, raw: RawTest) -> Result<Test, SieveError> {
        let line = raw.line;
        let name = raw.name.clone();
        let with_tests = matches!(name.as_str(), "allof" | "anyof" | "not");
        if !with_tests && !raw.tests.is_empty() {
            return Err(SieveError::new(line, format!("{name} takes no test")));
        }
        let mut args = Args::split(raw.name, line, raw.args)?;
        let test = match name.as_str() {
            "true" => Test::True,
            "false" => Test::False,
            "not" => Test::Not(Box::new(self.one_test("not", line, raw.tests)?)),
            "allof" | "anyof" => {
                if raw.tests.is_empty() {
                    return Err(SieveError::new(line, format!("{name} needs tests")));
                }
                let tests = raw
                    .tests
                    .into_iter()
                    .map(|t| self.test(t))
                    .collect::<Result<Vec<_>, _>>()?;
                match name.as_str() {
                    "allof" => Test::AllOf(tests),
                    _ => Test::AnyOf(tests),
                }
            }
            "exists" => Test::Exists(args.strings()?),
            "size" => {
                let over = args.flag("over");
                let under = args.flag("under");
                if over == under {
                    return Err(SieveError::new(line, "size needs one of :over and :under"));
                }
                let limit = match args.positional.first() {
                    Some(Arg::Number(n)) => *n,
                    _ => return Err(SieveError::new(line, "size needs a number")),
                };
                args.positional.remove(0);
                Test::Size { over, limit }
            }
            "header" => {
                let matcher = self.matcher(&mut args)?;
                Test::Header {
                    matcher,
                    names: args.strings()?,
                    keys: args.strings()?,
                }
            }
            "address" | "envelope" => {
                if name == "envelope" {
                    self.need("envelope", line, "envelope")?;
                }
                let part = self.address_part(&mut args)?;
                let matcher = self.matcher(&mut args)?;
                let names = args.strings()?;
                let keys = args.strings()?;
                match name.as_str() {
                    "address" => Test::Address {
                        part,
                        matcher,
                        names,
                        keys,
                    },
                    _ => {
                        for part in &names {
                            if !["from", "to"].contains(&part.to_ascii_lowercase().as_str()) {
                                return Err(SieveError::new(
                                    line,
                                    format!("envelope part \"{part}\" is not supported"),
                                ));
                            }
                        }
                        Test::Envelope {
                            part,
                            matcher,
                            names,
                            keys,
                        }
                    }
                }
            }
            "hasflag" => {
                self.need("imap4flags", line, "hasflag")?;
                let matcher = self.matcher(&mut args)?;
                Test::HasFlag {
                    matcher,
                    keys: args.strings()?,
                }
            }
            "body" => {
                self.need("body", line, "body")?;
                let matcher = self.matcher(&mut args)?;
                let raw = args.flag("raw");
                let text = args.flag("text");
                let content = args.tag_strings("content")?;
                let transform = match (raw, text, content) {
                    (true, false, None) => BodyTransform::Raw,
                    (false, _, None) => BodyTransform::Text,
                    (false, false, Some(types)) => BodyTransform::Content(types),
                    _ => {
                        return Err(SieveError::new(
                            line,
                            "body takes one of :raw, :text, :content",
                        ))
                    }
                };
                Test::Body {
                    matcher,
                    transform,
                    keys: args.strings()?,
                }
            }
            other => return Err(SieveError::new(line, format!("unknown test {other}"))),
        };
        args.done()?;
        Ok(test)
    }

    fn address_part(&self, args: &mut Args) -> Result<AddressPart, SieveError> {
        let mut part = AddressPart::All;
        let mut given = 0;
        for (tag, value) in [
            ("all", AddressPart::All),
            ("localpart", AddressPart::LocalPart),
            ("domain", AddressPart::Domain),
            ("user", AddressPart::User),
            ("detail", AddressPart::Detail),
        ] {
            if args.flag(tag) {
                if matches!(value, AddressPart::User | AddressPart::Detail) {
                    self.need("subaddress", args.line, &format!(":{tag}"))?;
                }
                part = value;
                given += 1;
            }
        }
        if given > 1 {
            return Err(SieveError::new(args.line, "give one address part"));
        }
        Ok(part)
    }

    fn matcher(&self, args: &mut Args) -> Result<Matcher, SieveError> {
        let line = args.line;
        let mut matcher = Matcher::default();
        let mut given = 0;
        for (tag, how) in [
            ("is", How::Is),
            ("contains", How::Contains),
            ("matches", How::Matches),
        ] {
            if args.flag(tag) {
                matcher.how = how;
                given += 1;
            }
        }
        for (tag, count) in [("value", false), ("count", true)] {
            if let Some(relation) = args.tag_string(tag)? {
                self.need("relational", line, &format!(":{tag}"))?;
                let relation = Relation::parse(&relation).ok_or_else(|| {
                    SieveError::new(line, format!("unknown relation \"{relation}\""))
                })?;
                matcher.how = match count {
                    true => How::Count(relation),
                    false => How::Value(relation),
                };
                given += 1;
            }
        }
        if given > 1 {
            return Err(SieveError::new(line, "give one match type"));
        }
        let substring = matches!(matcher.how, How::Contains | How::Matches);
        if let Some(name) = args.tag_string("comparator")? {
            matcher.comparator = match name.to_ascii_lowercase().as_str() {
                "i;ascii-casemap" => Comparator::AsciiCasemap,
                "i;octet" => Comparator::Octet,
                "i;ascii-numeric" => {
                    self.need("comparator-i;ascii-numeric", line, "i;ascii-numeric")?;
                    Comparator::AsciiNumeric
                }
                _ => {
                    return Err(SieveError::new(
                        line,
                        format!("comparator \"{name}\" is not supported"),
                    ))
                }
            };
        }
        if substring && matcher.comparator == Comparator::AsciiNumeric {
            // RFC 4790 §9.1: i;ascii-numeric has no substring operation.
            return Err(SieveError::new(
                line,
                "i;ascii-numeric cannot do :contains or :matches",
            ));
        }
        Ok(matcher)
    }
}

impl Args {
    /// Tags (with the value that follows those that take one) apart from
    /// the positional arguments, which come after every tag.
    fn split(name: String, line: usize, raw: Vec<Arg>) -> Result<Args, SieveError> {
        const WITH_VALUE: &[&str] = &[
            "comparator",
            "value",
            "count",
            "flags",
            "days",
            "subject",
            "from",
            "addresses",
            "handle",
            "content",
        ];
        let mut tagged: Vec<(String, Option<Arg>)> = Vec::new();
        let mut positional = Vec::new();
        let mut raw = raw.into_iter().peekable();
        while let Some(arg) = raw.next() {
            match arg {
                Arg::Tag(tag) => {
                    if !positional.is_empty() {
                        return Err(SieveError::new(
                            line,
                            format!(":{tag} must come before {name}'s other arguments"),
                        ));
                    }
                    if tagged.iter().any(|(t, _)| *t == tag) {
                        return Err(SieveError::new(line, format!(":{tag} given twice")));
                    }
                    let value = match WITH_VALUE.contains(&tag.as_str()) {
                        true => match raw.next() {
                            Some(Arg::Tag(_)) | None => {
                                return Err(SieveError::new(line, format!(":{tag} needs a value")))
                            }
                            value => value,
                        },
                        false => None,
                    };
                    tagged.push((tag, value));
                }
                other => positional.push(other),
            }
        }
        Ok(Args {
            name,
            line,
            tagged,
            positional,
        })
    }

    fn flag(&mut self, tag: &str) -> bool {
        match self
            .tagged
            .iter()
            .position(|(t, v)| t == tag && v.is_none())
        {
            Some(i) => {
                self.tagged.remove(i);
                true
            }
            None => false,
        }
    }

    fn take(&mut self, tag: &str) -> Result<Option<Arg>, SieveError> {
        Ok(self
            .tagged
            .iter()
            .position(|(t, _)| t == tag)
            .and_then(|i| self.tagged.remove(i).1))
    }

    fn tag_strings(&mut self, tag: &str) -> Result<Option<Vec<String>>, SieveError> {
        match self.take(tag)? {
            None => Ok(None),
            Some(Arg::Strings(list)) => Ok(Some(list)),
            Some(_) => Err(SieveError::new(self.line, format!(":{tag} needs a string"))),
        }
    }

    fn tag_string(&mut self, tag: &str) -> Result<Option<String>, SieveError> {
        match self.tag_strings(tag)? {
            None => Ok(None),
            Some(mut list) if list.len() == 1 => Ok(list.pop()),
            Some(_) => Err(SieveError::new(
                self.line,
                format!(":{tag} takes one string"),
            )),
        }
    }

    /// The next positional argument, a string list.
    fn strings(&mut self) -> Result<Vec<String>, SieveError> {
        if self.positional.is_empty() {
            return Err(SieveError::new(
                self.line,
                format!("{} is missing an argument", self.name),
            ));
        }
        match self.positional.remove(0) {
            Arg::Strings(list) => Ok(list),
            _ => Err(SieveError::new(
                self.line,
                format!("{} expects a string here", self.name),
            )),
        }
    }

    /// The next positional argument, one string.
    fn string(&mut self) -> Result<String, SieveError> {
        let mut list = self.strings()?;
        match list.len() {
            1 => Ok(list.pop().unwrap_or_default()),
            _ => Err(SieveError::new(
                self.line,
                format!("{} expects one string, not a list", self.name),
            )),
        }
    }

    /// Nothing may be left over.
    fn done(&self) -> Result<(), SieveError> {
        if let Some((tag, _)) = self.tagged.first() {
            return Err(SieveError::new(
                self.line,
                format!("{} does not take :{tag}", self.name),
            ));
        }
        if !self.positional.is_empty() {
            return Err(SieveError::new(
                self.line,
                format!("{} has too many arguments", self.name),
            ));
        }
        Ok(())
    }
}
