//! One SMTP connection: drives the sans-IO [`ServerSession`] over a socket.
//!
//! The loop is: feed what we have read, answer the session's questions
//! (recipient policy and account lookup, durable commit), write its replies,
//! read more. Replies to pipelined commands go out in one write. The `250`
//! for a message is written only after its commit is on disk.

use crate::intake::{self, Origin};
use crate::shard::{Shard, ShutdownSignal};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use ringpost_protocols::smtp::{replies, Event, ServerSession};
use ringpost_storage::{users, StoreError};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes read from the socket at a time; the session buffers partial lines
/// itself, so this only bounds one read.
const READ_BUFFER: usize = 64 * 1024;

enum Wake {
    Read(io::Result<usize>),
    Shutdown,
}

/// Run one SMTP session over `stream` until it ends.
pub(crate) async fn drive(
    shard: &Shard,
    stream: &mut TcpStream,
    peer: SocketAddr,
    shutdown: ShutdownSignal,
) -> io::Result<()> {
    let mut smtp = ServerSession::new(shard.smtp.clone());
    let may_relay = shard.config.may_relay(peer.ip());
    let is_local = |domain: &str| shard.config.is_local_domain(domain);
    let origin = Origin {
        ip: peer.ip(),
        hostname: &shard.config.hostname,
        is_local: &is_local,
    };
    let mut buf = vec![0u8; READ_BUFFER];
    let (mut start, mut end) = (0usize, 0usize);
    let mut stopping = false;

    loop {
        // Feed until the session neither consumes input nor asks anything.
        loop {
            start += smtp.feed(&buf[start..end]);
            let mut asked = false;
            while let Some(event) = smtp.poll_event() {
                asked = true;
                match event {
                    Event::Recipient { address } => {
                        match intake::check_recipient(
                            &address,
                            may_relay,
                            |d| shard.config.is_local_domain(d),
                            |name| account_exists(shard, name),
                        ) {
                            Ok(()) => smtp.accept_recipient(),
                            Err(reply) => smtp.reject_recipient(reply),
                        }
                    }
                    Event::Message(tx) => accept_message(shard, &mut smtp, tx, &origin).await,
                }
            }
            if !asked {
                break;
            }
        }
        if start == end {
            (start, end) = (0, 0);
        }
        if stopping && !smtp.in_transaction() && !smtp.is_closed() {
            smtp.shutdown();
        }
        if !smtp.output().is_empty() {
            stream.write_all(smtp.output()).await?;
            smtp.clear_output();
        }
        if smtp.is_closed() {
            return Ok(());
        }
        if end == buf.len() {
            // Only unconsumed bytes remain; make room behind them.
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }

        let timeout = if smtp.in_data() {
            shard.config.data_timeout()
        } else {
            shard.config.command_timeout()
        };
        stream.set_read_timeout(Some(timeout))?;
        let read = async { Wake::Read(stream.read(&mut buf[end..]).await) };
        let wake = if stopping {
            read.await
        } else {
            let stop = async {
                shutdown.clone().await.ok();
                Wake::Shutdown
            };
            read.or(stop).await
        };
        match wake {
            Wake::Shutdown => stopping = true,
            // The client vanished: an open transaction is dropped, nothing was promised.
            Wake::Read(Ok(0)) => return Ok(()),
            Wake::Read(Ok(n)) => end += n,
            Wake::Read(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
                shard.metrics.timeouts.inc();
                tracing::debug!(shard = shard.id, %peer, "session timed out");
                smtp.timed_out();
                stream.write_all(smtp.output()).await?;
                return Ok(());
            }
            Wake::Read(Err(e)) => return Err(e),
        }
    }
}

/// Whether a local recipient is an account: one point read of the `users`
/// family, run right here on the shard's executor. The family is small and
/// hot (memtable, block cache, bloom filter), so the read takes microseconds;
/// should it ever show in RCPT latency, it moves to the blocking pool like
/// the relay's reads.
fn account_exists(shard: &Shard, name: &str) -> Result<bool, StoreError> {
    users::user_exists(&*shard.store, name).inspect_err(|e| {
        shard.metrics.store_failures.inc();
        tracing::error!(shard = shard.id, error = %e, "recipient lookup failed; answered 451");
    })
}

/// Make the message durable, then let the session say 250 (or 451).
async fn accept_message(
    shard: &Shard,
    smtp: &mut ServerSession,
    tx: ringpost_protocols::smtp::Transaction,
    origin: &Origin<'_>,
) {
    let now = intake::unix_micros();
    let id = shard.next_id(now);
    let recipients = tx.recipients.len();
    let message = intake::new_message(id, &tx, origin, now);
    smtp.recycle(tx.data);
    let size = message.body.len() as u64;
    let local = message.mailboxes.len();
    // The owners of the entries hear of them once they are durable.
    let queue = shard.hub.is_some().then(|| message.queue.clone());
    let started = Instant::now();
    match shard.commits.commit(message.into_batch()).await {
        Ok(()) => {
            if let (Some(hub), Some(queue)) = (&shard.hub, queue) {
                hub.route(queue);
            }
            shard
                .metrics
                .commit_wait
                .observe(started.elapsed().as_secs_f64());
            shard.metrics.messages.inc();
            shard.metrics.bytes.inc_by(size);
            shard.metrics.local_deliveries.inc_by(local as u64);
            let queue_id = id.to_hex();
            tracing::debug!(shard = shard.id, %queue_id, size, recipients, local, "message accepted");
            smtp.message_stored(&queue_id);
        }
        Err(e) => {
            shard.metrics.store_failures.inc();
            tracing::error!(shard = shard.id, error = %e, "could not store message; answered 451");
            smtp.message_failed(replies::STORAGE_FAILED);
        }
    }
}
