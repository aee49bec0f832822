//! One connection's I/O loop: read, let the session handle every complete
//! command, decide the fate of each complete message, write all replies at
//! once.
//!
//! The order within a round is what makes the sink's promises hold: a
//! message is recorded (kept, dumped, its id line buffered) when it is
//! judged; then, before the replies are written, the id lines are appended
//! to the log and the messages counted. So a client that reads 250 finds
//! its message in every record, and a test that sees it counted does too.
//! With `exit_after`, the stop is requested only after the reply to the
//! last message was written.

use std::rc::Rc;

use tokio::time::sleep;
use tokio_uring::buf::BoundedBuf;

use super::faults::{Dice, Verdict};
use super::replies;
use super::server::{Connection, Worker};
use super::session::{Event, Session};
use super::stats::bump;

/// Bytes asked for per read. Large, so that a pipelining client's burst or
/// a big message arrives in few syscalls; a partial command line left over
/// is at most `MAX_LINE`, far below it.
const READ_BUF: usize = 64 * 1024;
/// A read must have at least this much room.
const MIN_READ: usize = 16 * 1024;

/// What the replies of one round (the ones written together) acknowledge.
#[derive(Debug, Default)]
struct Round {
    messages: u64,
    recipients: u64,
    bytes: u64,
    /// The last message before `exit_after` is in this round.
    exit_after_write: bool,
    /// Close the connection after the write (QUIT, or 421).
    close: bool,
}

/// Serves one accepted connection until the client quits or goes away, or
/// the sink stops.
pub(crate) async fn serve(conn: Connection, worker: Rc<Worker>) {
    let shared = &worker.shared;
    let counters = worker.counters();
    bump(&counters.connections, 1);
    // Replies are small and answer requests; Nagle would only delay them.
    let _ = conn.stream.set_nodelay(true);
    let Some(_open) = shared.open_connection() else {
        bump(&counters.throttled, 1);
        let _ = conn.stream.write_all(replies::TOO_MANY).await;
        return;
    };
    let mut dice = shared.connection_dice();
    if dice.chance(shared.faults.refuse_pct) {
        bump(&counters.refused, 1);
        let _ = conn.stream.write_all(replies::REFUSED).await;
        return;
    }

    let mut session = Session::new(shared.profile.clone());
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(shared.profile.greeting());
    let mut input: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut round = Round::default();
    loop {
        if !out.is_empty() {
            worker.flush_ids();
            counters.accepted(
                round.messages,
                round.recipients,
                round.bytes,
                shared.now_ns(),
            );
            let (res, buf) = conn.stream.write_all(out).await;
            out = buf;
            out.clear();
            if round.exit_after_write {
                shared.request_stop();
            }
            if res.is_err() || round.close {
                return;
            }
            round = Round::default();
        }

        if input.capacity() - input.len() < MIN_READ {
            input.reserve(READ_BUF);
        }
        let filled = input.len();
        let (res, slice) = conn.stream.read(input.slice(filled..)).await;
        input = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }

        let mut pos = 0;
        while !round.close {
            let faults = &shared.faults;
            let (used, event) = session.feed(&input[pos..], &mut out, &mut || {
                let verdict = dice.judge(faults.tempfail_rcpt_pct, faults.permfail_rcpt_pct);
                count_fault(&worker, verdict);
                verdict
            });
            pos += used;
            match event {
                Event::NeedMore => break,
                Event::Quit => round.close = true,
                Event::Message => {
                    let peer = conn.peer;
                    end_of_data(&worker, &session, peer, &mut dice, &mut out, &mut round).await;
                }
            }
        }
        // Keep only an incomplete command line for the next read.
        input.drain(..pos);
    }
}

/// Judges the complete message in `session`, records it if accepted, and
/// appends the reply.
async fn end_of_data(
    worker: &Worker,
    session: &Session,
    peer: std::net::SocketAddr,
    dice: &mut Dice,
    out: &mut Vec<u8>,
    round: &mut Round,
) {
    let shared = &worker.shared;
    if !shared.faults.latency.is_zero() {
        sleep(shared.faults.latency).await;
    }
    let verdict = shared.data_verdict(dice);
    count_fault(worker, verdict);
    match verdict {
        Verdict::Tempfail => out.extend_from_slice(replies::DATA_TEMPFAIL),
        Verdict::Permfail => out.extend_from_slice(replies::DATA_PERMFAIL),
        Verdict::Accept => match shared.claim() {
            None => {
                out.extend_from_slice(replies::SHUTTING_DOWN);
                round.close = true;
            }
            Some(n) => {
                let msg = session.message();
                let res = shared
                    .recorder
                    .record(n, &msg, peer, &mut worker.id_lines.borrow_mut());
                if let Err(e) = res {
                    worker.record_failed(&e);
                }
                round.messages += 1;
                round.recipients += msg.recipients.len() as u64;
                round.bytes += msg.data.len() as u64;
                replies::accepted(out, n);
                round.exit_after_write |= shared.exit_after == Some(n);
            }
        },
    }
}

fn count_fault(worker: &Worker, verdict: Verdict) {
    match verdict {
        Verdict::Accept => {}
        Verdict::Tempfail => bump(&worker.counters().tempfails, 1),
        Verdict::Permfail => bump(&worker.counters().permfails, 1),
    }
}
