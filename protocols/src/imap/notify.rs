//! NOTIFY (RFC 5465): the changes a client wants pushed to it without
//! asking, in the selected mailbox and in others. imap-codec does not know
//! the command: [`parse`] reads it into a [`NotifyCommand`].

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::IntoStatic;
use imap_codec::CommandCodec;

use super::lexer::{astring, Lexer};

/// A NOTIFY command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyCommand {
    /// `NOTIFY NONE`: nothing more, until the next NOTIFY SET.
    None,
    /// `NOTIFY SET [STATUS] groups`.
    Set {
        /// STATUS of each watched mailbox now, before any change.
        status: bool,
        /// What to watch where.
        groups: Vec<EventGroup>,
    },
}

/// One `(filter events)` of NOTIFY SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventGroup {
    /// Which mailboxes.
    pub filter: Filter,
    /// Which events (all false: `NONE`).
    pub events: Events,
}

/// The mailboxes an event group is about (RFC 5465 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// The selected mailbox, expunges reported at once.
    Selected,
    /// The selected mailbox, expunges held until a command allows them.
    SelectedDelayed,
    /// The mailboxes mail is delivered to.
    Inboxes,
    /// Every mailbox of the account.
    Personal,
    /// The subscribed mailboxes (as they are when a change happens).
    Subscribed,
    /// These mailboxes and everything below them.
    Subtree(Vec<String>),
    /// Exactly these mailboxes.
    Mailboxes(Vec<String>),
}

impl Filter {
    /// Whether it is about the selected mailbox.
    pub fn is_selected(&self) -> bool {
        matches!(self, Filter::Selected | Filter::SelectedDelayed)
    }
}

/// The events of a group that ringpost can report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// New messages (`MessageNew`).
    pub message_new: bool,
    /// Expunged messages (`MessageExpunge`).
    pub message_expunge: bool,
    /// Flag changes (`FlagChange`).
    pub flag_change: bool,
    /// Mailboxes created, deleted or renamed (`MailboxName`).
    pub mailbox_name: bool,
    /// Subscriptions added or removed (`SubscriptionChange`).
    pub subscription_change: bool,
    /// For `MessageNew` of the selected mailbox: what to FETCH of each new
    /// message.
    pub fetch: Option<MacroOrMessageDataItemNames<'static>>,
    /// Events asked for that ringpost does not report (annotations and
    /// metadata): the command gets `NO [BADEVENT ...]`.
    pub unsupported: Vec<String>,
}

impl Events {
    /// Any event about messages (what a STATUS reports).
    pub fn about_messages(&self) -> bool {
        self.message_new || self.message_expunge || self.flag_change
    }
}

/// The events ringpost reports, for `NO [BADEVENT (...)]`.
pub const SUPPORTED_EVENTS: &str =
    "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange";

/// Why a NOTIFY command is refused with BAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadNotify(pub &'static str);

/// If `command` (whole) is a NOTIFY command: its tag and what it asks, or
/// why it is malformed. `None` for any other command.
pub(crate) fn parse(command: &[u8]) -> Option<Result<(String, NotifyCommand), BadNotify>> {
    let tag_end = command.iter().position(|&b| b == b' ')?;
    let rest = &command[tag_end + 1..];
    if !rest
        .get(..7)
        .is_some_and(|verb| verb.eq_ignore_ascii_case(b"NOTIFY "))
    {
        return None;
    }
    let tag = std::str::from_utf8(&command[..tag_end]).ok()?.to_owned();
    let mut lexer = Lexer {
        bytes: command,
        at: tag_end + 1 + 7,
    };
    Some(arguments(&mut lexer).map(|parsed| (tag, parsed)))
}

const SYNTAX: BadNotify = BadNotify("syntax error");

fn arguments(lexer: &mut Lexer<'_>) -> Result<NotifyCommand, BadNotify> {
    let command = if lexer.keyword(b"NONE") {
        NotifyCommand::None
    } else if lexer.keyword(b"SET") {
        let status = lexer.keyword(b" STATUS");
        let mut groups = Vec::new();
        while lexer.keyword(b" ") {
            groups.push(group(lexer)?);
        }
        if groups.is_empty() {
            return Err(SYNTAX);
        }
        if groups.iter().filter(|g| g.filter.is_selected()).count() > 1 {
            return Err(BadNotify("the selected mailbox is named twice"));
        }
        NotifyCommand::Set { status, groups }
    } else {
        return Err(SYNTAX);
    };
    if !lexer.keyword(b"\r\n") || lexer.at != lexer.bytes.len() {
        return Err(SYNTAX);
    }
    Ok(command)
}

/// `(filter SP events)`.
fn group(lexer: &mut Lexer<'_>) -> Result<EventGroup, BadNotify> {
    if lexer.next() != Some(b'(') {
        return Err(SYNTAX);
    }
    let filter = match lexer.word().to_ascii_lowercase().as_slice() {
        b"selected" => Filter::Selected,
        b"selected-delayed" => Filter::SelectedDelayed,
        b"inboxes" => Filter::Inboxes,
        b"personal" => Filter::Personal,
        b"subscribed" => Filter::Subscribed,
        b"subtree" => Filter::Subtree(mailboxes(lexer)?),
        b"mailboxes" => Filter::Mailboxes(mailboxes(lexer)?),
        _ => return Err(SYNTAX),
    };
    lexer.space().map_err(|_| SYNTAX)?;
    let events = events(lexer, filter.is_selected())?;
    if lexer.next() != Some(b')') {
        return Err(SYNTAX);
    }
    Ok(EventGroup { filter, events })
}

/// `SP mailbox` or `SP (mailbox *(SP mailbox))`.
fn mailboxes(lexer: &mut Lexer<'_>) -> Result<Vec<String>, BadNotify> {
    lexer.space().map_err(|_| SYNTAX)?;
    let one = |lexer: &mut Lexer<'_>| {
        let written = lexer.string().map_err(|_| SYNTAX)?;
        let name = astring(written).map_err(|_| SYNTAX)?;
        let name = name.trim_end_matches('/');
        Ok(match name.eq_ignore_ascii_case("INBOX") {
            true => "INBOX".to_owned(),
            false => name.to_owned(),
        })
    };
    if lexer.peek() != Some(b'(') {
        return Ok(vec![one(lexer)?]);
    }
    lexer.next();
    let mut names = vec![one(lexer)?];
    while lexer.keyword(b" ") {
        names.push(one(lexer)?);
    }
    if lexer.next() != Some(b')') {
        return Err(SYNTAX);
    }
    Ok(names)
}

/// `NONE` or `(event *(SP event))`; a fetch list only after MessageNew of
/// the selected mailbox.
fn events(lexer: &mut Lexer<'_>, selected: bool) -> Result<Events, BadNotify> {
    let mut events = Events::default();
    if lexer.keyword(b"NONE") {
        return Ok(events);
    }
    if lexer.next() != Some(b'(') {
        return Err(SYNTAX);
    }
    loop {
        let word = lexer.word();
        match word.to_ascii_lowercase().as_slice() {
            b"messagenew" => {
                events.message_new = true;
                if lexer.bytes.get(lexer.at..lexer.at + 2) == Some(b" (") {
                    if !selected {
                        return Err(BadNotify("a FETCH list is only for the selected mailbox"));
                    }
                    lexer.next();
                    events.fetch = Some(fetch_list(lexer)?);
                }
            }
            b"messageexpunge" => events.message_expunge = true,
            b"flagchange" => events.flag_change = true,
            b"mailboxname" => events.mailbox_name = true,
            b"subscriptionchange" => events.subscription_change = true,
            b"annotationchange" | b"mailboxmetadatachange" | b"servermetadatachange" => {
                events
                    .unsupported
                    .push(String::from_utf8_lossy(word).into_owned());
            }
            _ => return Err(BadNotify("unknown NOTIFY event")),
        }
        match lexer.next() {
            Some(b' ') => continue,
            Some(b')') => break,
            _ => return Err(SYNTAX),
        }
    }
    // RFC 5465 §5 asks clients for MessageNew and MessageExpunge together,
    // and for both with FlagChange; Dovecot 2.3 and the imaptest suite
    // written against it take each alone, and so do we: a STATUS then
    // carries what that event changes (see the engine's `notify`).
    Ok(events)
}

/// `(fetch-att *(SP fetch-att))`, read by imap-codec as a FETCH's.
fn fetch_list(lexer: &mut Lexer<'_>) -> Result<MacroOrMessageDataItemNames<'static>, BadNotify> {
    let start = lexer.at;
    let mut depth = 0usize;
    loop {
        match lexer.next() {
            Some(b'(' | b'[') => depth += 1,
            Some(b')' | b']') => {
                depth = depth.checked_sub(1).ok_or(SYNTAX)?;
                if depth == 0 {
                    break;
                }
            }
            Some(b'\r' | b'\n') | None => return Err(SYNTAX),
            Some(_) => {}
        }
    }
    let mut command = b"n FETCH 1 ".to_vec();
    command.extend_from_slice(&lexer.bytes[start..lexer.at]);
    command.extend_from_slice(b"\r\n");
    match CommandCodec::default().decode(&command) {
        Ok((_, decoded)) => match decoded.body {
            CommandBody::Fetch {
                macro_or_item_names,
                ..
            } => Ok(macro_or_item_names.into_static()),
            _ => Err(SYNTAX),
        },
        Err(_) => Err(BadNotify("bad FETCH attribute in MessageNew")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> Result<NotifyCommand, BadNotify> {
        parse(format!("t NOTIFY {text}\r\n").as_bytes())
            .expect("a NOTIFY command")
            .map(|(_, command)| command)
    }

    fn groups(text: &str) -> Vec<EventGroup> {
        match set(text) {
            Ok(NotifyCommand::Set { groups, .. }) => groups,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn filters_and_events() {
        assert_eq!(set("NONE"), Ok(NotifyCommand::None));
        assert_eq!(parse(b"t NOOP\r\n"), None);
        let parsed = groups(
            "SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange)) \
             (subtree (Work \"Old mail\") (MessageNew MessageExpunge)) \
             (mailboxes inbox NONE) (personal (MailboxName SubscriptionChange))",
        );
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].filter, Filter::Selected);
        assert!(parsed[0].events.flag_change && parsed[0].events.fetch.is_some());
        assert_eq!(
            parsed[1].filter,
            Filter::Subtree(vec!["Work".into(), "Old mail".into()])
        );
        assert!(parsed[1].events.about_messages() && !parsed[1].events.flag_change);
        assert_eq!(parsed[2].filter, Filter::Mailboxes(vec!["INBOX".into()]));
        assert_eq!(parsed[2].events, Events::default());
        assert!(parsed[3].events.mailbox_name && parsed[3].events.subscription_change);
        match set("SET STATUS (inboxes (MessageNew MessageExpunge))") {
            Ok(NotifyCommand::Set {
                status: true,
                groups,
            }) => {
                assert_eq!(groups[0].filter, Filter::Inboxes)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_commands_and_unsupported_events() {
        // Taken alone, as Dovecot 2.3 takes them (RFC 5465 §5 wants pairs).
        for alone in ["MessageNew", "MessageExpunge", "FlagChange"] {
            assert!(set(&format!("SET (personal ({alone}))")).is_ok(), "{alone}");
        }
        assert!(set("SET (personal (MessageNew (UID) MessageExpunge))").is_err());
        assert!(set("SET (selected NONE) (selected-delayed NONE)").is_err());
        assert!(set("SET (personal (Bogus))").is_err());
        assert!(set("SET").is_err());
        assert!(set("SET (personal)").is_err());
        let odd = groups("SET (personal (MessageNew MessageExpunge AnnotationChange))");
        assert_eq!(odd[0].events.unsupported, ["AnnotationChange"]);
    }
}
