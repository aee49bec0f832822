//! THREAD (RFC 5256 §4): ORDEREDSUBJECT and REFERENCES, over the sort
//! fields of the matching messages, and the THREAD response.

use super::sort::Sortable;
use std::collections::HashMap;

/// A thread tree: a message (by index into the input), or a dummy that
/// only holds children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Index of the message in the input; `None` for a dummy.
    pub message: Option<usize>,
    /// Its replies, in order.
    pub children: Vec<Node>,
}

/// ORDEREDSUBJECT: messages grouped by base subject, each group a thread
/// whose first message (by sent date) has the others as children; threads
/// in the order of their first message.
pub fn ordered_subject(messages: &[Sortable]) -> Vec<Node> {
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&messages[a], &messages[b]);
        x.fields
            .subject
            .bytes()
            .map(|c| c.to_ascii_uppercase())
            .cmp(y.fields.subject.bytes().map(|c| c.to_ascii_uppercase()))
            .then(date_order(messages, a, b))
    });
    let mut threads: Vec<Node> = Vec::new();
    let mut last_subject: Option<String> = None;
    for index in order {
        let subject = messages[index].fields.subject.to_ascii_uppercase();
        let leaf = Node {
            message: Some(index),
            children: Vec::new(),
        };
        match (&last_subject, threads.last_mut()) {
            (Some(last), Some(thread)) if *last == subject => thread.children.push(leaf),
            _ => {
                threads.push(leaf);
                last_subject = Some(subject);
            }
        }
    }
    threads.sort_by(|a, b| date_order(messages, a.message.unwrap_or(0), b.message.unwrap_or(0)));
    threads
}

/// Sent date, then mailbox order.
fn date_order(messages: &[Sortable], a: usize, b: usize) -> std::cmp::Ordering {
    let (x, y) = (&messages[a], &messages[b]);
    x.fields.date.cmp(&y.fields.date).then(x.seq.cmp(&y.seq))
}

/// The most references of one message that are followed (its last ones:
/// the nearest ancestors). Anyone can mail a References field of 100,000
/// ids; each one followed is a walk up the tree.
const MAX_REFERENCES: usize = 256;

/// The deepest a thread tree goes: replies below this depth hang flat
/// under their ancestor at it. The steps after the first walk the tree
/// recursively, and a chain of replies as long as a mailbox (or as a
/// message's References) must not overflow the stack.
pub const MAX_DEPTH: usize = 256;

/// A container of the REFERENCES algorithm, in an arena.
struct Container {
    message: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// REFERENCES: threads by Message-ID, References and In-Reply-To, then
/// roots with one base subject merged (RFC 5256 §4, steps 1 to 6).
pub fn references(messages: &[Sortable]) -> Vec<Node> {
    let mut arena: Vec<Container> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let new_container = |arena: &mut Vec<Container>, message| {
        arena.push(Container {
            message,
            parent: None,
            children: Vec::new(),
        });
        arena.len() - 1
    };
    // (1) Containers and links.
    for (index, message) in messages.iter().enumerate() {
        let fields = &message.fields;
        // A missing or duplicate Message-ID is a unique one.
        let own = match fields.message_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => match by_id.get(id) {
                Some(&c) if arena[c].message.is_none() => {
                    arena[c].message = Some(index);
                    c
                }
                Some(_) => new_container(&mut arena, Some(index)),
                None => {
                    let c = new_container(&mut arena, Some(index));
                    by_id.insert(id.to_owned(), c);
                    c
                }
            },
            None => new_container(&mut arena, Some(index)),
        };
        // (A) Each reference is the parent of the next, unless linked
        // already or a loop would come of it.
        let mut previous: Option<usize> = None;
        let nearest = fields.references.len().saturating_sub(MAX_REFERENCES);
        for id in &fields.references[nearest..] {
            let c = match by_id.get(id.as_str()) {
                Some(&c) => c,
                None => {
                    let c = new_container(&mut arena, None);
                    by_id.insert(id.clone(), c);
                    c
                }
            };
            if let Some(parent) = previous {
                if arena[c].parent.is_none() && !descends(&arena, parent, c) && parent != c {
                    link(&mut arena, parent, c);
                }
            }
            previous = Some(c);
        }
        // (B) The message's parent is its last reference, whatever was
        // linked before, unless that makes a loop.
        if let Some(old) = arena[own].parent {
            unlink(&mut arena, old, own);
        }
        if let Some(parent) = previous {
            if parent != own && !descends(&arena, parent, own) {
                link(&mut arena, parent, own);
            }
        }
    }
    // (2) The root set; (3) dummies pruned.
    let roots: Vec<usize> = (0..arena.len())
        .filter(|&c| arena[c].parent.is_none())
        .collect();
    flatten_below(&mut arena, &roots, MAX_DEPTH);
    let mut tree: Vec<Node> = roots
        .into_iter()
        .flat_map(|c| prune(&arena, c, true))
        .collect();
    // (4) Roots by sent date (a dummy by its first child, children first).
    for node in &mut tree {
        sort_children(messages, node);
    }
    tree.sort_by(|a, b| date_order(messages, first_message(a), first_message(b)));
    // (5) Roots with one base subject merged.
    let tree = merge_by_subject(messages, tree);
    // (6) Every set of siblings by sent date.
    let mut tree = tree;
    for node in &mut tree {
        sort_children(messages, node);
    }
    tree.sort_by(|a, b| date_order(messages, first_message(a), first_message(b)));
    tree
}

fn link(arena: &mut [Container], parent: usize, child: usize) {
    arena[child].parent = Some(parent);
    arena[parent].children.push(child);
}

fn unlink(arena: &mut [Container], parent: usize, child: usize) {
    arena[parent].children.retain(|&c| c != child);
    arena[child].parent = None;
}

/// Whether `node` is `ancestor` or below it.
fn descends(arena: &[Container], node: usize, ancestor: usize) -> bool {
    let mut at = Some(node);
    let mut steps = 0;
    while let Some(c) = at {
        if c == ancestor {
            return true;
        }
        steps += 1;
        if steps > arena.len() {
            return true; // a loop already: refuse
        }
        at = arena[c].parent;
    }
    false
}

/// Hang every container deeper than `depth` directly under its ancestor
/// at that depth, in tree order: no recursion over the tree after this
/// goes deeper than `depth + 1`. Iterative, whatever the tree's depth.
fn flatten_below(arena: &mut [Container], roots: &[usize], depth: usize) {
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&c| (c, 0)).collect();
    while let Some((c, at)) = stack.pop() {
        if at < depth {
            stack.extend(arena[c].children.iter().rev().map(|&child| (child, at + 1)));
            continue;
        }
        // `c` is at the limit: its descendants, in order, become its children.
        let mut below = Vec::new();
        let mut pending: Vec<usize> = arena[c].children.iter().rev().copied().collect();
        while let Some(d) = pending.pop() {
            below.push(d);
            pending.extend(arena[d].children.iter().rev().copied());
            arena[d].children.clear();
        }
        for &d in &below {
            arena[d].parent = Some(c);
        }
        arena[c].children = below;
    }
}

/// Step 3: dummies without children go; a dummy's children take its place,
/// except at the root when there is more than one.
fn prune(arena: &[Container], c: usize, at_root: bool) -> Vec<Node> {
    let children: Vec<Node> = arena[c]
        .children
        .iter()
        .flat_map(|&child| prune(arena, child, false))
        .collect();
    match arena[c].message {
        Some(message) => vec![Node {
            message: Some(message),
            children,
        }],
        None if children.is_empty() => Vec::new(),
        None if !at_root || children.len() == 1 => children,
        None => vec![Node {
            message: None,
            children,
        }],
    }
}

/// Sort the children of `node`, all the way down, by sent date.
fn sort_children(messages: &[Sortable], node: &mut Node) {
    for child in &mut node.children {
        sort_children(messages, child);
    }
    node.children
        .sort_by(|a, b| date_order(messages, first_message(a), first_message(b)));
}

/// The message a node is dated by: its own, or a dummy's first child's.
fn first_message(node: &Node) -> usize {
    match node.message {
        Some(message) => message,
        None => node.children.first().map_or(0, first_message),
    }
}

/// Step 5 of RFC 5256 §4: roots whose base subjects are the same become
/// one thread.
fn merge_by_subject(messages: &[Sortable], roots: Vec<Node>) -> Vec<Node> {
    let subject_of = |node: &Node| {
        messages[first_message(node)]
            .fields
            .subject
            .to_ascii_uppercase()
    };
    let is_reply = |node: &Node| node.message.is_some_and(|m| messages[m].fields.is_reply);
    // (A) Which root stands for each subject.
    let mut table: HashMap<String, usize> = HashMap::new();
    for (i, root) in roots.iter().enumerate() {
        let subject = subject_of(root);
        if subject.is_empty() {
            continue;
        }
        match table.get(&subject) {
            None => {
                table.insert(subject, i);
            }
            Some(&held) => {
                let held_node = &roots[held];
                if held_node.message.is_some()
                    && (root.message.is_none() || (is_reply(held_node) && !is_reply(root)))
                {
                    table.insert(subject, i);
                }
            }
        }
    }
    // (B) Merge each root into the one standing for its subject.
    let mut slots: Vec<Option<Node>> = roots.into_iter().map(Some).collect();
    let mut stand: HashMap<String, usize> = table;
    for i in 0..slots.len() {
        let Some(current) = slots[i].as_ref() else {
            continue;
        };
        let subject = subject_of(current);
        let Some(&held) = stand.get(&subject) else {
            continue;
        };
        if subject.is_empty() || held == i {
            continue;
        }
        let current = slots[i].take().expect("checked");
        let mut table_node = slots[held].take().expect("the table's roots stay");
        let merged = match (table_node.message.is_none(), current.message.is_none()) {
            (true, true) => {
                table_node.children.extend(current.children);
                table_node
            }
            (true, false) => {
                table_node.children.push(current);
                table_node
            }
            _ if is_reply(&current) && !is_reply(&table_node) => {
                table_node.children.push(current);
                table_node
            }
            _ => Node {
                message: None,
                children: vec![table_node, current],
            },
        };
        slots[held] = Some(merged);
        stand.insert(subject, held);
    }
    slots.into_iter().flatten().collect()
}

/// The THREAD response (without `* `): `(1 2 (3)(4))(5)`, by sequence
/// number or by the UID `number` gives.
pub fn response(threads: &[Node], number: impl Fn(usize) -> u32) -> String {
    let mut line = String::from("THREAD");
    if !threads.is_empty() {
        line.push(' ');
    }
    for thread in threads {
        line.push('(');
        write_node(&mut line, thread, &number);
        line.push(')');
    }
    line
}

fn write_node(out: &mut String, node: &Node, number: &impl Fn(usize) -> u32) {
    if let Some(message) = node.message {
        out.push_str(&number(message).to_string());
        match node.children.as_slice() {
            [] => return,
            [only] => {
                out.push(' ');
                return write_node(out, only, number);
            }
            _ => out.push(' '),
        }
    }
    for child in &node.children {
        out.push('(');
        write_node(out, child, number);
        out.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::super::sort::SortFields;
    use super::*;

    fn message(seq: u32, header: &str) -> Sortable {
        Sortable {
            seq,
            arrival: i64::from(seq),
            size: 0,
            fields: SortFields::of(header.as_bytes(), i64::from(seq)),
        }
    }

    fn by_seq(messages: &[Sortable]) -> impl Fn(usize) -> u32 + '_ {
        |i| messages[i].seq
    }

    #[test]
    fn references_builds_the_tree_and_merges_subjects() {
        let messages = [
            message(1, "Message-ID: <a>\r\nSubject: plan\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"),
            message(2, "Message-ID: <b>\r\nReferences: <a>\r\nSubject: Re: plan\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000\r\n\r\n"),
            message(3, "Message-ID: <c>\r\nReferences: <a> <b>\r\nSubject: Re: plan\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000\r\n\r\n"),
            message(4, "Message-ID: <d>\r\nIn-Reply-To: <a>\r\nSubject: Re: plan\r\nDate: Mon, 1 Jan 2024 13:00:00 +0000\r\n\r\n"),
            message(5, "Message-ID: <e>\r\nSubject: other\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000\r\n\r\n"),
            // Its parent is missing; its subject joins it to "plan".
            message(6, "Message-ID: <f>\r\nReferences: <gone>\r\nSubject: Re: plan\r\nDate: Mon, 1 Jan 2024 14:00:00 +0000\r\n\r\n"),
        ];
        let threads = references(&messages);
        assert_eq!(
            response(&threads, by_seq(&messages)),
            "THREAD (5)(1 (2 3)(4)(6))"
        );
    }

    /// Depth of the deepest node (iteratively, as the tree may be deep).
    fn depth(threads: &[Node]) -> usize {
        let mut deepest = 0;
        let mut stack: Vec<(&Node, usize)> = threads.iter().map(|n| (n, 1)).collect();
        while let Some((node, at)) = stack.pop() {
            deepest = deepest.max(at);
            stack.extend(node.children.iter().map(|c| (c, at + 1)));
        }
        deepest
    }

    #[test]
    fn a_chain_of_replies_as_long_as_a_mailbox_does_not_overflow_the_stack() {
        // Each message answers the one before: one thread, 20,000 deep as
        // written. Each step of the algorithm recursed once per level.
        let n = 20_000;
        let messages: Vec<Sortable> = (1..=n)
            .map(|i| {
                let parent = match i {
                    1 => String::new(),
                    _ => format!("In-Reply-To: <m{}>\r\n", i - 1),
                };
                message(
                    i,
                    &format!("Message-ID: <m{i}>\r\n{parent}Subject: s\r\n\r\n"),
                )
            })
            .collect();
        let threads = references(&messages);
        assert_eq!(threads.len(), 1);
        assert!(depth(&threads) <= MAX_DEPTH + 2, "{}", depth(&threads));
        let line = response(&threads, by_seq(&messages));
        // Every message is in it, in order down the chain.
        assert!(line.starts_with("THREAD (1 2 3 4 "), "{:.60}", line);
        let numbers: Vec<&str> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(numbers.len(), n as usize);
        assert_eq!(numbers.last(), Some(&"20000"));

        // One message whose References name 100,000 ancestors.
        let ids: Vec<String> = (0..100_000).map(|i| format!("<r{i}@x>")).collect();
        let header = format!(
            "Message-ID: <last@x>\r\nReferences: {}\r\nSubject: s\r\n\r\n",
            ids.join(" ")
        );
        let messages = [message(1, &header)];
        let threads = references(&messages);
        assert_eq!(response(&threads, by_seq(&messages)), "THREAD (1)");
    }

    #[test]
    fn ordered_subject_groups_by_base_subject() {
        let messages = [
            message(
                1,
                "Subject: b\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n",
            ),
            message(
                2,
                "Subject: a\r\nDate: Mon, 1 Jan 2024 11:00:00 +0000\r\n\r\n",
            ),
            message(
                3,
                "Subject: Re: b\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000\r\n\r\n",
            ),
            message(
                4,
                "Subject: re: a\r\nDate: Mon, 1 Jan 2024 09:00:00 +0000\r\n\r\n",
            ),
            message(
                5,
                "Subject: Fwd: b\r\nDate: Mon, 1 Jan 2024 13:00:00 +0000\r\n\r\n",
            ),
        ];
        let threads = ordered_subject(&messages);
        assert_eq!(
            response(&threads, by_seq(&messages)),
            "THREAD (4 2)(1 (3)(5))"
        );
        assert_eq!(response(&[], by_seq(&messages)), "THREAD");
    }
}
