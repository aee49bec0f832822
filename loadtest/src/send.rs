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
use crate::client::{run_connection, ClientConfig, Envelope, LiveCounts, Tally, TlsSetup};
use crate::message::{MessageSpec, MessageTemplate};
use crate::progress::Progress;
use crate::stats::{Report, RunInfo, ThreadStats};
use crate::timeline::Timeline;

/// Hands out message sequence numbers until the message count or the
/// deadline is reached.
#[derive(Debug)]
pub struct Budget {
    next: AtomicU64,
    /// First sequence number that is not sent (None: unlimited).
    end: Option<u64>,
    deadline: Option<Instant>,
    /// Open loop: message `first + k` is due at `started + k / rate`.
    schedule: Option<Schedule>,
}

#[derive(Debug)]
struct Schedule {
    first: u64,
    started: Instant,
    per_second: f64,
}

impl Budget {
    pub fn new(start: u64, count: Option<u64>, deadline: Option<Instant>) -> Self {
        Self {
            next: AtomicU64::new(start),
            end: count.map(|n| start + n),
            deadline,
            schedule: None,
        }
    }

    /// The same, handing out messages at `per_second` from `started`.
    pub fn at_rate(mut self, per_second: f64, started: Instant) -> Self {
        self.schedule = Some(Schedule {
            first: self.next.load(Ordering::Relaxed),
            started,
            per_second,
        });
        self
    }

    /// When message `seq` is due (open loop); None: at once.
    pub fn due(&self, seq: u64) -> Option<Instant> {
        let s = self.schedule.as_ref()?;
        let offset = seq.saturating_sub(s.first) as f64 / s.per_second;
        Some(s.started + Duration::from_secs_f64(offset))
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
    let tls = tls_setup(args).map_err(SetupError)?;
    let cfg = Arc::new(client_config(args, addr, tls));

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
    let mut budget = Budget::new(args.seq_start, args.message_limit(), deadline);
    if let Some(rate) = args.rate {
        budget = budget.at_rate(rate, started);
    }
    let budget = Arc::new(budget);

    let counts: Vec<Arc<LiveCounts>> = (0..threads).map(|_| Arc::default()).collect();
    let mut handles = Vec::with_capacity(threads);
    for (t, ack) in acks.into_iter().enumerate() {
        // Connection i runs on thread i % threads.
        let conns = (args.connections + threads - 1 - t) / threads;
        let (cfg, budget) = (cfg.clone(), budget.clone());
        let timeline = args.plot.as_ref().map(|_| Timeline::new(started));
        let tally = Tally::new(ack, timeline, counts[t].clone());
        let handle = std::thread::Builder::new()
            .name(format!("blast-{t}"))
            .spawn(move || run_thread(conns, cfg, budget, tally))
            .map_err(|e| SetupError(format!("cannot start a thread: {e}")))?;
        handles.push(handle);
    }
    let progress = Progress::start(
        "sent",
        args.message_limit(),
        args.progress,
        Box::new(move || {
            counts.iter().fold((0, 0), |(ok, failed), c| {
                (
                    ok + c.ok.load(Ordering::Relaxed),
                    failed + c.failed.load(Ordering::Relaxed),
                )
            })
        }),
    );

    let mut total = ThreadStats::default();
    let mut timeline = Timeline::new(started);
    let mut setup_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok((stats, thread_timeline))) => {
                total.merge(&stats);
                if let Some(t) = thread_timeline {
                    timeline.merge(&t);
                }
            }
            Ok(Err(e)) => setup_error = Some(e),
            Err(_) => setup_error = Some(SetupError("a sender thread panicked".into())),
        }
    }
    let elapsed = started.elapsed();
    progress.finish();
    if let Some(e) = setup_error {
        return Err(e);
    }
    let info = RunInfo {
        target: args.to_addr.clone(),
        connections: args.connections,
        threads,
        pipelining: cfg.pipelining,
        size: cfg.mean_size(),
        rcpts: args.rcpts,
        size_mix: args.size.single().is_none().then(|| args.size.to_string()),
        rate: args.rate,
    };
    let report = Report::new(info, &total, elapsed);
    if let Some(path) = &args.plot {
        let title = format!(
            "ringpost-blast send to {}: {} messages, {:.0} msg/s{}",
            args.to_addr,
            report.messages_ok,
            report.msg_per_s,
            args.rate
                .map_or(String::new(), |r| format!(" (open loop at {r} msg/s)"))
        );
        std::fs::write(path, crate::plot::svg(&timeline, &title))
            .map_err(|e| SetupError(format!("cannot write the plot {}: {e}", path.display())))?;
    }
    Ok(report)
}

/// Body of one sender thread: a runtime running `conns` connection tasks.
fn run_thread(
    conns: usize,
    cfg: Arc<ClientConfig>,
    budget: Arc<Budget>,
    tally: Tally,
) -> Result<(ThreadStats, Option<Timeline>), SetupError> {
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())
        .map_err(|e| SetupError(format!("cannot create an io_uring runtime: {e}")))?;
    let tally = rt.block_on(async move {
        let tally = Rc::new(tally);
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
    Ok((tally.stats.into_inner(), tally.timeline.into_inner()))
}

fn resolve(target: &str) -> Result<SocketAddr, SetupError> {
    target
        .to_socket_addrs()
        .map_err(|e| SetupError(format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| SetupError(format!("{target} resolves to no address")))
}

/// Builds the per-run constants: commands, envelopes and message template.
/// They live for the whole process, so they are leaked into `&'static`
/// slices, which tokio-uring can write without copying or refcounting.
fn client_config(args: &SendArgs, addr: SocketAddr, tls: Option<TlsSetup>) -> ClientConfig {
    let leak = |s: String| -> &'static [u8] { Box::leak(s.into_bytes().into_boxed_slice()) };
    // The To: header names the base domain whatever the envelope says, so
    // that every message has the same size.
    let rcpts = recipients(args.rcpts, &args.rcpt_domain);
    let envelopes = (0..args.domains)
        .map(|d| {
            let domain = recipient_domain(&args.rcpt_domain, d, args.domains);
            build_envelope(&args.from, &recipients(args.rcpts, &domain), leak)
        })
        .collect();

    let run_id = run_id();
    let templates = args
        .size
        .0
        .iter()
        .map(|&(size, _)| {
            MessageTemplate::new(&MessageSpec {
                size,
                from: &args.from,
                to: &rcpts,
                id_domain: &args.helo,
                run_id: &run_id,
            })
        })
        .collect();
    let weights = args
        .size
        .0
        .iter()
        .scan(0u32, |sum, &(_, weight)| {
            *sum = sum.saturating_add(weight);
            Some(*sum)
        })
        .collect();
    ClientConfig {
        addr,
        ehlo: leak(format!("EHLO {}\r\n", args.helo)),
        helo: leak(format!("HELO {}\r\n", args.helo)),
        envelopes,
        templates,
        weights,
        pipelining: args.pipelining == OnOff::On,
        chain: args.pipelining == OnOff::On && args.chain == OnOff::On && args.rate.is_none(),
        messages_per_connection: args.messages_per_connection,
        io_timeout: Duration::from_secs_f64(args.read_timeout),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        max_connect_failures: args.max_connect_failures,
        tls,
        auth: args.auth.as_ref().map(|auth| {
            use base64::Engine as _;
            let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
            let plain =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            leak(format!("AUTH PLAIN {plain}\r\n"))
        }),
    }
}

/// How connections get TLS, from `--starttls`/`--tls`, `--ca-file`,
/// `--insecure` and `--tls-name`.
fn tls_setup(args: &SendArgs) -> Result<Option<TlsSetup>, String> {
    if !args.starttls && !args.tls {
        return Ok(None);
    }
    let config = crate::tls::client_config(&args.trust)?;
    let host = match &args.tls_name {
        Some(name) => name.clone(),
        None => args
            .to_addr
            .rsplit_once(':')
            .map_or(args.to_addr.clone(), |(h, _)| {
                h.trim_matches(['[', ']']).to_owned()
            }),
    };
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| format!("`{host}` is not a name TLS can check (--tls-name)"))?;
    Ok(Some(TlsSetup {
        starttls: args.starttls,
        config,
        name,
    }))
}

/// `user1@DOMAIN` .. `userN@DOMAIN`.
fn recipients(n: usize, domain: &str) -> Vec<String> {
    (1..=n).map(|k| format!("user{k}@{domain}")).collect()
}

/// Recipient domain number `d` of `domains`: the base domain itself when
/// there is only one, else `d<d>.<base>`.
fn recipient_domain(base: &str, d: u32, domains: u32) -> String {
    if domains <= 1 {
        base.to_owned()
    } else {
        format!("d{d}.{base}")
    }
}

/// MAIL, one RCPT per recipient and DATA, as one pipelined write and as the
/// separate commands (slices of the same leaked bytes).
fn build_envelope(
    from: &str,
    rcpts: &[String],
    leak: impl Fn(String) -> &'static [u8],
) -> Envelope {
    let mut envelope = format!("MAIL FROM:<{from}>\r\n");
    let mut bounds = vec![0, envelope.len()];
    for r in rcpts {
        envelope.push_str(&format!("RCPT TO:<{r}>\r\n"));
        bounds.push(envelope.len());
    }
    envelope.push_str("DATA\r\n");
    bounds.push(envelope.len());
    let pipelined = leak(envelope);
    let commands = bounds.windows(2).map(|w| &pipelined[w[0]..w[1]]).collect();
    Envelope {
        pipelined,
        commands,
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

    fn send_args(extra: &[&str]) -> SendArgs {
        use clap::Parser;
        let argv = ["ringpost-blast", "send"].iter().chain(extra);
        match crate::cli::Cli::try_parse_from(argv)
            .expect("valid arguments")
            .command
        {
            crate::cli::Command::Send(a) => a,
            other => panic!("not send: {other:?}"),
        }
    }

    fn config(extra: &[&str]) -> ClientConfig {
        let args = send_args(extra);
        args.validate().expect("valid");
        client_config(&args, "127.0.0.1:25".parse().unwrap(), None)
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn one_domain_keeps_the_plain_envelope() {
        let cfg = config(&["--rcpts", "2"]);
        assert_eq!(cfg.envelopes.len(), 1);
        let want = "MAIL FROM:<blast@example.test>\r\n\
                    RCPT TO:<user1@example.test>\r\n\
                    RCPT TO:<user2@example.test>\r\n\
                    DATA\r\n";
        for seq in [0, 1, 7, 999_999] {
            assert_eq!(text(cfg.envelope(seq).pipelined), want);
        }
        let cmds: Vec<&str> = cfg.envelope(0).commands.iter().map(|c| text(c)).collect();
        assert_eq!(
            cmds,
            [
                "MAIL FROM:<blast@example.test>\r\n",
                "RCPT TO:<user1@example.test>\r\n",
                "RCPT TO:<user2@example.test>\r\n",
                "DATA\r\n"
            ]
        );
    }

    #[test]
    fn domains_spread_messages_by_seq() {
        let cfg = config(&["--domains", "3", "--rcpts", "2", "--rcpt-domain", "r.test"]);
        assert_eq!(cfg.envelopes.len(), 3);
        for seq in 0..10u64 {
            let d = format!("d{}.r.test", seq % 3);
            let env = cfg.envelope(seq);
            assert_eq!(
                text(env.pipelined),
                format!(
                    "MAIL FROM:<blast@example.test>\r\n\
                     RCPT TO:<user1@{d}>\r\nRCPT TO:<user2@{d}>\r\nDATA\r\n"
                )
            );
            // The lock-step commands are the same bytes, split per command.
            assert_eq!(env.commands.len(), 4);
            assert_eq!(env.commands.concat(), env.pipelined);
            assert_eq!(text(env.commands[2]), format!("RCPT TO:<user2@{d}>\r\n"));
        }
        // seq_start does not matter: the domain follows the seq itself.
        assert!(text(cfg.envelope(1_000_001).pipelined).contains("@d2.r.test>"));
        // The message (and so its size) is the same whatever the domain.
        let body = text(&cfg.templates[0].instance()).to_owned();
        assert!(
            body.contains("To: <user1@r.test>,\r\n <user2@r.test>\r\n"),
            "{body}"
        );
    }

    #[test]
    fn domains_are_validated() {
        assert!(send_args(&["--domains", "0"]).validate().is_err());
        assert!(send_args(&["--domains", "100001"]).validate().is_err());
        assert!(send_args(&["--domains", "100000"]).validate().is_ok());
        assert_eq!(send_args(&[]).domains, 1);
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
