//! `ringpost-blast sink`: turns the options into a [`SinkConfig`], runs the
//! sink until SIGINT/SIGTERM or `--exit-after`, and returns its stats for
//! `main` to print.
//!
//! The first line on stdout is `listening on <addr>`, flushed at once, so
//! that a script (or test) that started the sink on port 0 can read where to
//! connect. Signals are taken over before that line is printed: once a
//! script has read it, SIGTERM means "report and exit", never a silent death.

use std::io::Write;
use std::net::ToSocketAddrs;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{start, Faults, SinkConfig, SinkStats};
use crate::cli::SinkArgs;
use crate::progress::Progress;
use crate::send::SetupError;

/// Runs the sink described by `args` until it is told to stop; returns its
/// final stats. Errors mean it could not start (exit status 2).
pub fn run(args: &SinkArgs) -> Result<SinkStats, SetupError> {
    let config = config(args)?;
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| SetupError(format!("cannot install signal handlers: {e}")))?;
    let sink = start(config)
        .map_err(|e| SetupError(format!("cannot start the sink on {}: {e}", args.listen)))?;

    let signals_handle = signals.handle();
    let stopper = sink.stopper();
    let watcher = std::thread::Builder::new()
        .name("sink-signals".into())
        .spawn(move || {
            // Ends when the handle is closed below, or at the first signal.
            if signals.forever().next().is_some() {
                stopper.stop();
            }
        })
        .map_err(|e| SetupError(format!("cannot start a thread: {e}")))?;

    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the sink; the report will fail later.
    let _ = writeln!(stdout, "listening on {}", sink.addr());
    let _ = stdout.flush();
    drop(stdout);

    let progress = Progress::start("received", None, args.progress, sink.progress_reader());
    sink.wait();
    progress.finish();
    signals_handle.close();
    let _ = watcher.join();
    Ok(sink.stop())
}

/// The sink configuration the options describe.
pub fn config(args: &SinkArgs) -> Result<SinkConfig, SetupError> {
    args.validate().map_err(SetupError)?;
    let listen = args
        .listen
        .to_socket_addrs()
        .map_err(|e| SetupError(format!("cannot resolve {}: {e}", args.listen)))?
        .next()
        .ok_or_else(|| SetupError(format!("{} resolves to no address", args.listen)))?;
    let faults = Faults {
        tempfail_rcpt_pct: args.tempfail_rcpt,
        permfail_rcpt_pct: args.permfail_rcpt,
        tempfail_data_pct: args.tempfail_data,
        permfail_data_pct: args.permfail_data,
        tempfail_data_first: args.tempfail_data_first,
        refuse_pct: args.refuse,
        max_connections: args.max_connections,
        latency: Duration::from_millis(args.latency_ms),
        seed: args.seed,
    };
    faults
        .validate()
        .map_err(|e| SetupError(format!("bad fault option: {e}")))?;
    Ok(SinkConfig {
        listen,
        threads: args.threads,
        hostname: args.hostname.clone(),
        faults,
        keep_messages: 0,
        dump_dir: args.dump_dir.clone(),
        id_log: args.id_log.clone(),
        exit_after: args.exit_after,
    })
}
