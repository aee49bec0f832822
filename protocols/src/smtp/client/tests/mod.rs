//! Client session tests. A [`Script`] plays the server and the engine: it
//! feeds replies, calls the session's methods, and checks every byte the
//! client writes and every event it raises, in order.
//!
//! [`Script::run`] plays a script with each server reply fed whole, cut in
//! two at every position, and byte by byte, so every scenario also checks
//! that how the replies are cut never changes what the client does.

use std::collections::VecDeque;
use std::sync::Arc;

use super::reply::ReplyReader;
use super::{ClientConfig, ClientEvent, ClientSession, OutgoingMessage, Phase, RecipientResult};
use super::{Extensions, ServerReply};

mod fuzz_smoke;
mod session;
mod transaction;

/// One step of a script.
enum Op {
    /// The server says this.
    Server(&'static str),
    /// The client must have written exactly this since the last `Client`.
    Client(String),
    /// The next event must be this.
    Event(ClientEvent),
    /// The engine sends a message.
    Send(OutgoingMessage),
    /// The engine calls `quit`.
    Quit,
    /// The engine has handled the last event and reads on.
    Resume,
    /// The engine finished the TLS handshake.
    Tls,
    /// The server closed the connection.
    Eof,
    /// A look at the session (phase, extensions…).
    Inspect(Box<dyn Fn(&ClientSession)>),
}

/// How a run cuts each server reply.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Whole,
    At(usize),
    Bytes,
}

/// A scenario: a fake server and engine, checked step by step.
pub(super) struct Script {
    config: ClientConfig,
    ops: Vec<Op>,
}

impl Script {
    /// A script with the test configuration (see [`config`]).
    fn new() -> Self {
        Script::with_config(config())
    }

    fn with_config(config: ClientConfig) -> Self {
        Script {
            config,
            ops: Vec::new(),
        }
    }

    /// Greeting, `EHLO client.test`, then `ehlo` as the reply (whole
    /// lines), then `Ready`.
    fn greeted(ehlo: &'static str) -> Self {
        let mut script = Script::new();
        script.ehlo(ehlo);
        script
    }

    /// The greeting exchange with `ehlo` as the EHLO reply, then `Ready`.
    fn ehlo(&mut self, ehlo: &'static str) -> &mut Self {
        self.server("220 mx.test ESMTP\r\n")
            .client("EHLO client.test\r\n")
            .server(ehlo)
            .event(ClientEvent::Ready)
    }

    fn server(&mut self, replies: &'static str) -> &mut Self {
        self.ops.push(Op::Server(replies));
        self
    }

    fn client(&mut self, written: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Client(written.into()));
        self
    }

    fn event(&mut self, event: ClientEvent) -> &mut Self {
        self.ops.push(Op::Event(event));
        self
    }

    fn send(&mut self, message: OutgoingMessage) -> &mut Self {
        self.ops.push(Op::Send(message));
        self
    }

    fn quit(&mut self) -> &mut Self {
        self.ops.push(Op::Quit);
        self
    }

    fn resume(&mut self) -> &mut Self {
        self.ops.push(Op::Resume);
        self
    }

    fn tls(&mut self) -> &mut Self {
        self.ops.push(Op::Tls);
        self
    }

    fn eof(&mut self) -> &mut Self {
        self.ops.push(Op::Eof);
        self
    }

    fn inspect(&mut self, look: impl Fn(&ClientSession) + 'static) -> &mut Self {
        self.ops.push(Op::Inspect(Box::new(look)));
        self
    }

    fn phase(&mut self, phase: Phase) -> &mut Self {
        self.inspect(move |session| assert_eq!(session.phase(), phase))
    }

    /// QUIT, 221, `Closed`.
    fn quits(&mut self) -> &mut Self {
        self.quit()
            .client("QUIT\r\n")
            .phase(Phase::Quit)
            .server("221 2.0.0 bye\r\n")
            .event(ClientEvent::Closed)
            .phase(Phase::Closed)
    }

    /// Play the script with every way of cutting the replies.
    fn run(&self) {
        let longest = self
            .ops
            .iter()
            .map(|op| match op {
                Op::Server(replies) => replies.len(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        self.play(Cut::Whole);
        for at in 1..longest {
            self.play(Cut::At(at));
        }
        self.play(Cut::Bytes);
    }

    fn play(&self, cut: Cut) {
        let mut run = Run {
            session: ClientSession::new(Arc::new(self.config.clone())),
            written: Vec::new(),
            events: VecDeque::new(),
            unread: Vec::new(),
            paused: false,
        };
        for (step, op) in self.ops.iter().enumerate() {
            let at = format!("{cut:?}, step {step}");
            match op {
                Op::Server(replies) => {
                    // More bytes arrived: an engine that did not answer
                    // the last event still reads them.
                    run.paused = false;
                    let replies = replies.as_bytes();
                    let pieces: Vec<&[u8]> = match cut {
                        Cut::Whole => vec![replies],
                        Cut::At(n) if n < replies.len() => {
                            let (a, b) = replies.split_at(n);
                            vec![a, b]
                        }
                        Cut::At(_) => vec![replies],
                        Cut::Bytes => replies.chunks(1).collect(),
                    };
                    for piece in pieces {
                        run.unread.extend_from_slice(piece);
                        run.feed();
                    }
                }
                Op::Client(expected) => {
                    let written = String::from_utf8_lossy(&run.written).into_owned();
                    assert_eq!(&written, expected, "{at}: client wrote");
                    run.written.clear();
                }
                Op::Event(expected) => {
                    assert_eq!(run.events.pop_front().as_ref(), Some(expected), "{at}");
                }
                Op::Send(message) => run.act(|s| s.send(message.clone())),
                Op::Quit => run.act(ClientSession::quit),
                Op::Resume => run.act(|_| {}),
                Op::Tls => run.act(ClientSession::tls_established),
                Op::Eof => {
                    run.unread.clear();
                    run.act(ClientSession::eof);
                }
                Op::Inspect(look) => look(&run.session),
            }
        }
        let at = format!("{cut:?}, end");
        assert_eq!(
            String::from_utf8_lossy(&run.written),
            "",
            "{at}: unchecked output"
        );
        assert_eq!(run.events, [], "{at}: unchecked events");
    }
}

/// One play of a script: the session and what it said that the script has
/// not checked yet.
struct Run {
    session: ClientSession,
    written: Vec<u8>,
    events: VecDeque<ClientEvent>,
    /// Server bytes the session has not consumed, as a driver keeps them.
    unread: Vec<u8>,
    /// An event came that the script has not answered: like an engine, the
    /// run feeds nothing more until the script's next call.
    paused: bool,
}

impl Run {
    /// Feed what is unread until the session pauses or wants more.
    fn feed(&mut self) {
        while !self.paused && !self.unread.is_empty() {
            let used = self.session.feed(&self.unread);
            assert!(used <= self.unread.len());
            self.unread.drain(..used);
            self.collect();
            if used == 0 {
                return;
            }
        }
    }

    /// Call the session as the engine would, then feed what was left over.
    fn act(&mut self, call: impl FnOnce(&mut ClientSession)) {
        self.paused = false;
        call(&mut self.session);
        self.collect();
        self.feed();
    }

    fn collect(&mut self) {
        self.written.extend_from_slice(self.session.output());
        self.session.clear_output();
        while let Some(event) = self.session.poll_event() {
            self.events.push_back(event);
            self.paused = true;
        }
    }
}

/// The configuration most tests use.
fn config() -> ClientConfig {
    ClientConfig {
        hostname: "client.test".into(),
        ..ClientConfig::default()
    }
}

/// The reply a server line such as `"550 5.1.1 no such user"` reads as.
fn reply(line: &str) -> ServerReply {
    let wire = format!("{line}\r\n");
    match ReplyReader::default().read(wire.as_bytes(), 1024) {
        (_, Some(Ok(parsed))) => parsed.reply,
        other => panic!("{line:?}: {other:?}"),
    }
}

/// `Finished` with these recipients and replies.
fn finished(results: &[(&str, ServerReply)]) -> ClientEvent {
    ClientEvent::Finished(
        results
            .iter()
            .map(|(recipient, reply)| RecipientResult {
                recipient: (*recipient).to_owned(),
                reply: reply.clone(),
            })
            .collect(),
    )
}

/// A message from `a@b.test` to `recipients`.
fn message(recipients: &[&str], body: &str) -> OutgoingMessage {
    OutgoingMessage {
        mail_from: "a@b.test".into(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        body: body.as_bytes().to_vec(),
        ..OutgoingMessage::default()
    }
}

/// An EHLO reply offering PIPELINING and little else.
const EHLO_PIPELINING: &str = "250-mx.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n";
/// An EHLO reply offering nothing.
const EHLO_PLAIN: &str = "250 mx.test\r\n";
