//! The `vacation` action's two questions (RFC 5230 §4.5–§5, RFC 3834):
//! whether this message may be answered at all, and what the answer
//! says. How often one sender hears (`:days`) is the engine's to track,
//! under [`tracking_key`].

use super::eval::bare_address;
use super::header::{addresses, fields, text};
use super::script::Vacation;

/// Why a message gets no vacation reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The null sender or one that is not an address.
    NoSender,
    /// Automatic mail: `Auto-Submitted` other than `no` (RFC 3834 §2).
    Automatic,
    /// A list or bulk mail (`List-*`, `Precedence: bulk/list/junk`).
    Bulk,
    /// From a system address (MAILER-DAEMON, `owner-`, `-request`).
    SystemSender,
    /// None of the user's addresses is among the recipients in the header
    /// (§4.5: it came by Bcc, a list, or an alias).
    NotAddressed,
    /// The sender is the user.
    FromSelf,
}

/// Whom the reply goes to (the envelope sender), or why there is none.
/// `user`: the recipient's addresses (the account, the address the mail
/// came to); `vacation.addresses` adds others.
pub fn reply_to(
    message: &[u8],
    envelope_from: &str,
    user: &[&str],
    vacation: &Vacation,
) -> Result<String, Skip> {
    let sender = bare_address(envelope_from).ok_or(Skip::NoSender)?;
    let fields = fields(message);
    let value = |name: &'static str| {
        fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
    };
    if value("auto-submitted").any(|v| !v.starts_with("no")) {
        return Err(Skip::Automatic);
    }
    let listed = fields.iter().any(|(n, _)| {
        let n = n.to_ascii_lowercase();
        n.starts_with("list-") || n == "x-list" || n == "mailing-list"
    });
    if listed || value("precedence").any(|v| ["bulk", "list", "junk"].contains(&v.as_str())) {
        return Err(Skip::Bulk);
    }
    let local = sender
        .rsplit_once('@')
        .map_or("", |(l, _)| l)
        .to_ascii_lowercase();
    if local == "mailer-daemon"
        || local == "postmaster"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.starts_with("bounce")
    {
        return Err(Skip::SystemSender);
    }
    let given: Vec<String> = vacation
        .addresses
        .iter()
        .filter_map(|a| bare_address(a))
        .collect();
    let mine = |address: &str| {
        user.iter()
            .copied()
            .chain(given.iter().map(String::as_str))
            .any(|m| m.trim().eq_ignore_ascii_case(address))
    };
    if mine(&sender) {
        return Err(Skip::FromSelf);
    }
    let addressed = fields
        .iter()
        .filter(|(n, _)| {
            ["to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"]
                .iter()
                .any(|r| n.eq_ignore_ascii_case(r))
        })
        .flat_map(|(_, v)| addresses(v))
        .any(|a| mine(&a));
    if !addressed {
        return Err(Skip::NotAddressed);
    }
    Ok(sender)
}

/// The key under which a reply to `sender` for `user` is remembered:
/// one per handle (§4.2), and a script without one gets one from what
/// the reply says.
pub fn tracking_key(user: &str, sender: &str, vacation: &Vacation) -> String {
    let handle = match &vacation.handle {
        Some(handle) => format!("h:{handle}"),
        None => format!(
            "r:{}\0{}\0{}\0{}",
            vacation.reason,
            vacation.subject.as_deref().unwrap_or(""),
            vacation.from.as_deref().unwrap_or(""),
            vacation.mime
        ),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, handle.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "vacation/{}/{}/{hex}",
        user.to_ascii_lowercase(),
        sender.to_ascii_lowercase()
    )
}

/// What the reply is made of besides the vacation's own arguments.
pub struct Reply<'a> {
    /// The message answered.
    pub original: &'a [u8],
    /// The user's address (the From unless `:from`).
    pub user: &'a str,
    /// Who gets it.
    pub to: &'a str,
    /// The reply's `Message-ID` (without brackets).
    pub message_id: &'a str,
    /// Its `Date` (RFC 5322 form).
    pub date: &'a str,
}

/// The address of `:from` (`"Name" <a@b>` or `a@b`), if given: the
/// driver decides whether the user may send from it.
pub fn from_address(vacation: &Vacation) -> Option<&str> {
    let from = vacation.from.as_deref()?.trim();
    Some(match from.split_once('<') {
        Some((_, rest)) => rest
            .split_once('>')
            .map_or(rest, |(address, _)| address)
            .trim(),
        None => from,
    })
}

/// The reply message (RFC 5230 §5): from the user to the sender, a
/// subject of `Auto: ` and the original's unless `:subject`, threaded
/// with In-Reply-To and References, marked `Auto-Submitted:
/// auto-replied`; the reason as UTF-8 text, or as the MIME entity it is
/// with `:mime`.
pub fn compose(vacation: &Vacation, reply: &Reply<'_>) -> Vec<u8> {
    let fields = fields(reply.original);
    let text = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| text(v))
    };
    let subject = vacation.subject.clone().unwrap_or_else(|| {
        match text("subject").filter(|s| !s.is_empty()) {
            Some(original) if original.to_ascii_lowercase().starts_with("auto:") => original,
            Some(original) => format!("Auto: {original}"),
            None => "Automated reply".to_owned(),
        }
    });
    // `:from` as written when it has a display name; a bare address in
    // brackets (control characters were refused when the script was read).
    let from = match vacation.from.as_deref().map(str::trim) {
        // A display name in UTF-8 goes in an encoded word, as the subject.
        Some(from) if from.contains('<') => match from.split_once('<') {
            Some((name, address)) if !name.is_ascii() => {
                format!("{} <{address}", encoded_word(name.trim().trim_matches('"')))
            }
            _ => from.to_owned(),
        },
        Some(from) => format!("<{from}>"),
        None => format!("<{}>", reply.user),
    };
    let raw = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| msg_ids(v))
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    field("From", &from);
    field("To", &format!("<{}>", reply.to));
    field("Subject", &encoded_word(&subject));
    field("Date", reply.date);
    field("Message-ID", &format!("<{}>", reply.message_id));
    // Message ids from the raw fields, each checked: a decoded value could
    // carry line ends into the reply's header.
    if let Some(id) = raw("message-id").pop() {
        field("In-Reply-To", &id);
        let mut references = raw("references");
        references.push(id);
        // The last few are enough to thread (RFC 5322 §3.6.4 allows trimming).
        let start = references.len().saturating_sub(10);
        field("References", &references[start..].join(" "));
    }
    field("Auto-Submitted", "auto-replied (vacation)");
    field("MIME-Version", "1.0");
    let mut message = out.into_bytes();
    if vacation.mime {
        let entity = vacation.reason.replace("\r\n", "\n").replace('\n', "\r\n");
        message.extend_from_slice(entity.trim_start_matches(['\r', '\n']).as_bytes());
    } else {
        let body = vacation.reason.replace("\r\n", "\n").replace('\n', "\r\n");
        let encoding = if body.is_ascii() { "7bit" } else { "8bit" };
        message.extend_from_slice(
            format!(
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
            )
            .as_bytes(),
        );
        message.extend_from_slice(body.as_bytes());
    }
    if !message.ends_with(b"\r\n") {
        message.extend_from_slice(b"\r\n");
    }
    message
}

/// Header text: as it is when ASCII, else one RFC 2047 encoded word per
/// 45 octets of UTF-8 (each word then stays under 75 characters).
fn encoded_word(text: &str) -> String {
    use base64::Engine as _;
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    if text.is_ascii() {
        return text;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// The `<id>`s in a Message-ID, In-Reply-To or References value: each
/// printable ASCII without spaces or brackets inside, at most 250 octets.
fn msg_ids(value: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.iter().position(|&b| b == b'<') {
        let after = &rest[open + 1..];
        let Some(close) = after.iter().position(|&b| b == b'>') else {
            break;
        };
        let id = &after[..close];
        let clean = !id.is_empty()
            && id.len() <= 250
            && id.iter().all(|&b| b.is_ascii_graphic() && b != b'<');
        if clean {
            out.push(format!("<{}>", String::from_utf8_lossy(id)));
        }
        rest = &after[close + 1..];
    }
    out
}
