//! `ringpost-blast`: command-line entry point of the SMTP load generator.
//!
//! Parses the command line, runs the subcommand and maps the outcome to the
//! exit status. `send`: 0 = clean run, 1 = the run finished with failed
//! messages or errors, 2 = the run could not start. `sink`: 0 = stopped by
//! SIGINT/SIGTERM or `--exit-after` and reported, 2 = it could not start.
//! All the work lives in the library crate.

use std::process::ExitCode;

use clap::Parser;
use ringpost_loadtest::cli::{Cli, Command};
use ringpost_loadtest::{fetch, inject, send, sink};

// The generator must cost the machine as little as possible; mimalloc's
// thread-local heaps keep the few allocations it does make off any lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Send(args) => match send::run(&args) {
            Ok(report) => reported(&report, args.json),
            Err(e) => {
                eprintln!("ringpost-blast send: {e}");
                ExitCode::from(2)
            }
        },
        Command::Sink(args) => match sink::command::run(&args) {
            Ok(stats) => {
                if args.json {
                    println!("{}", stats.to_json());
                } else {
                    print!("{}", stats.to_text());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringpost-blast sink: {e}");
                ExitCode::from(2)
            }
        },
        Command::Inject(args) => match inject::run(&args) {
            Ok(report) => reported(&report, args.json),
            Err(e) => {
                eprintln!("ringpost-blast inject: {e}");
                ExitCode::from(2)
            }
        },
        Command::Fetch(args) => match fetch::run(&args) {
            Ok(report) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string(&report).expect("report serializes")
                    );
                } else {
                    println!(
                        "{}: {} messages, {} bytes in {:.3} s: {:.0} msg/s, {:.1} MB/s",
                        report.protocol,
                        report.messages,
                        report.bytes,
                        report.seconds,
                        report.messages_per_sec,
                        report.mb_per_sec
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringpost-blast fetch: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// Print a `send` or `inject` report; exit 1 when something failed.
fn reported(report: &ringpost_loadtest::stats::Report, json: bool) -> ExitCode {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    match report.has_errors() {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    }
}
