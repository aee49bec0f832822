//! `ringpost-blast send`: turns the options into a run and runs it.
//!
//! One OS thread per `--threads`, each with its own tokio-uring runtime (one
//! io_uring instance, no cross-thread wakeups), and the connections dealt
//! round-robin over them. The only thing the threads share while running is
//! the [`Budget`], an atomic counter that hands out sequence numbers, so the
//! total is exact however fast each connection goes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::acklog::AckLog;
use crate::cli::{OnOff, SendArgs};
use crate::client::{run_connection, ClientConfig, Tally};
use crate::message::{MessageSpec, MessageTemplate};
use crate::stats::{Report, RunInfo, ThreadStats};

/// Hands out message sequence numbers until the message count or the
/// deadline is reached.
#[derive(Debug)]
pub struct Budget {
    next: AtomicU64,
    /// First sequence number that is not sent (None: unlimited).
    end: Option<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    pub fn new(start: u64, count: Option<u64>, deadline: Option<Instant>) -> Self {
        Self {
            next: AtomicU64::new(start),
            end: count.map(|n| start + n),
            deadline,
        }
    }

    /// The next message to send, or None when the run is over.
    pub fn claim(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        // The counter may run past `end`; only values below it are used.
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        match self.end {
            Some(end) if seq >= end => None,
            _ => Some(seq),
        }
    }

    /// True once no further message will be handed out (so connections do
    /// not reconnect for nothing).
    pub fn exhausted(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
            || self
                .end
                .is_some_and(|end| self.next.load(Ordering::Relaxed) >= end)
    }
}

/// An error that prevents the run from starting (exit status 2).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// Runs the load described by `args` and reports on it.
pub fn run(args: &SendArgs) -> Result<Report, SetupError> {
    args.validate().map_err(SetupError)?;
    let addr = resolve(&args.to_addr)?;
    let threads = args.threads();
    let cfg = Arc::new(client_config(args, addr));

    // Open the ack log once up front so that a bad path is a setup error,
    // not a per-thread surprise.
    let open_ack = || -> Result<Option<AckLog>, SetupError> {
        args.ack_log
            .as_deref()
            .map(|p| {
                AckLog::open(p)
                    .map_err(|e| SetupError(format!("cannot open ack log {}: {e}", p.display())))
            })
            .transpose()
    };
    let mut acks: Vec<Option<AckLog>> = Vec::with_capacity(threads);
    for _ in 0..threads {
        acks.push(open_ack()?);
    }

    let started = Instant::now();
    let deadline = args.run_duration().map(|d| started + d);
    let budget = Arc::new(Budget::new(args.seq_start, args.message_limit(), deadline));

    let mut handles = Vec::with_capacity(threads);
    for (t, ack) in acks.into_iter().enumerate() {
        // Connection i runs on thread i % threads.
        let conns = (args.connections + threads - 1 - t) / threads;
        let (cfg, budget) = (cfg.clone(), budget.clone());
        let handle = std::thread::Builder::new()
            .name(format!("blast-{t}"))
            .spawn(move || run_thread(conns, cfg, budget, ack))
            .map_err(|e| SetupError(format!("cannot start a thread: {e}")))?;
        handles.push(handle);
    }

    let mut total = ThreadStats::default();
    let mut setup_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => setup_error = Some(e),
            Err(_) => setup_error = Some(SetupError("a sender thread panicked".into())),
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = setup_error {
        return Err(e);
    }
    let info = RunInfo {
        target: args.to_addr.clone(),
        connections: args.connections,
        threads,
        pipelining: cfg.pipelining,
        size: cfg.template.message_len(),
        rcpts: args.rcpts,
    };
    Ok(Report::new(info, &total, elapsed))
}

/// Body of one sender thread: a runtime running `conns` connection tasks.
fn run_thread(
    conns: usize,
    cfg: Arc<ClientConfig>,
    budget: Arc<Budget>,
    ack: Option<AckLog>,
) -> Result<ThreadStats, SetupError> {
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())
        .map_err(|e| SetupError(format!("cannot create an io_uring runtime: {e}")))?;
    let tally = rt.block_on(async move {
        let tally = Rc::new(Tally::new(ack));
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio_uring::spawn(run_connection(cfg.clone(), budget.clone(), tally.clone())))
            .collect();
        for task in tasks {
            // A panicking connection task is a bug; surface it as a
            // thread panic rather than a silently smaller count.
            if let Err(e) = task.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        tally
    });
    let tally = Rc::try_unwrap(tally).expect("all connection tasks finished");
    // Dropping the ack log flushes it; do it explicitly to see errors.
    if let Some(mut log) = tally.ack.into_inner() {
        if let Err(e) = log.flush() {
            eprintln!("ringpost-blast: writing the ack log failed: {e}");
            tally.stats.borrow_mut().record_error("ack-log");
        }
    }
    Ok(tally.stats.into_inner())
}

fn resolve(target: &str) -> Result<SocketAddr, SetupError> {
    target
        .to_socket_addrs()
        .map_err(|e| SetupError(format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| SetupError(format!("{target} resolves to no address")))
}

/// Builds the per-run constants: commands, envelope and message template.
/// They live for the whole process, so they are leaked into `&'static`
/// slices, which tokio-uring can write without copying or refcounting.
fn client_config(args: &SendArgs, addr: SocketAddr) -> ClientConfig {
    let leak = |s: String| -> &'static [u8] { Box::leak(s.into_bytes().into_boxed_slice()) };
    let rcpts: Vec<String> = (1..=args.rcpts)
        .map(|k| format!("user{k}@{}", args.rcpt_domain))
        .collect();

    let mut envelope = format!("MAIL FROM:<{}>\r\n", args.from);
    let mut bounds = vec![0, envelope.len()];
    for r in &rcpts {
        envelope.push_str(&format!("RCPT TO:<{r}>\r\n"));
        bounds.push(envelope.len());
    }
    envelope.push_str("DATA\r\n");
    bounds.push(envelope.len());
    let envelope = leak(envelope);
    let commands = bounds.windows(2).map(|w| &envelope[w[0]..w[1]]).collect();

    let template = MessageTemplate::new(&MessageSpec {
        size: args.size,
        from: &args.from,
        to: &rcpts,
        id_domain: &args.helo,
        run_id: &run_id(),
    });
    ClientConfig {
        addr,
        ehlo: leak(format!("EHLO {}\r\n", args.helo)),
        helo: leak(format!("HELO {}\r\n", args.helo)),
        envelope,
        commands,
        template,
        pipelining: args.pipelining == OnOff::On,
        messages_per_connection: args.messages_per_connection,
        io_timeout: Duration::from_secs_f64(args.read_timeout),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        max_connect_failures: args.max_connect_failures,
    }
}

/// 16 hex digits from the clock and the pid: distinct for every run, so
/// Message-IDs never repeat across runs.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}", nanos ^ (u64::from(std::process::id()) << 40))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_hands_out_exactly_n() {
        let b = Budget::new(100, Some(5), None);
        let got: Vec<_> = std::iter::from_fn(|| b.claim()).collect();
        assert_eq!(got, [100, 101, 102, 103, 104]);
        assert!(b.exhausted());
        assert_eq!(b.claim(), None);
    }

    #[test]
    fn budget_stops_at_the_deadline() {
        let b = Budget::new(0, None, Some(Instant::now()));
        assert!(b.exhausted());
        assert_eq!(b.claim(), None);
        let open = Budget::new(0, None, Some(Instant::now() + Duration::from_secs(60)));
        assert_eq!(open.claim(), Some(0));
        assert!(!open.exhausted());
    }
}
