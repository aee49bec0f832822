//! The progress line while a run goes (`send`, `sink`): on a terminal, a
//! bar redrawn in place four times a second with the count, the live rate
//! (over the last second), failures and the time left; elsewhere, a plain
//! line every ten seconds, so logs stay readable. On stderr: stdout carries
//! the report (`--json`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::ProgressMode;

/// What a progress line reads: (done, failed) so far.
pub type Reader = Box<dyn Fn() -> (u64, u64) + Send>;

/// The thread drawing the line; [`Progress::finish`] ends it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Show the progress of `what` (`sent`, `received`) towards `total`
    /// (None: open-ended), as `mode` says.
    pub fn start(
        what: &'static str,
        total: Option<u64>,
        mode: ProgressMode,
        read: Reader,
    ) -> Progress {
        let in_place = match mode {
            ProgressMode::Off => {
                return Progress {
                    stop: Arc::new(AtomicBool::new(true)),
                    thread: None,
                }
            }
            ProgressMode::On => true,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw(what, total, in_place, read, &stopped))
            .ok();
        Progress { stop, thread }
    }

    /// Stop drawing (the line is left as it last was, then a newline).
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

fn draw(what: &str, total: Option<u64>, in_place: bool, read: Reader, stop: &AtomicBool) {
    let tick = match in_place {
        true => Duration::from_millis(250),
        false => Duration::from_secs(10),
    };
    let started = Instant::now();
    let mut window: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut next = started + tick;
    let mut drawn = false;
    loop {
        // Sleep in short steps, so the end of a run is seen at once.
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                if in_place && drawn {
                    let (done, failed) = read();
                    let line = line(
                        what,
                        total,
                        done,
                        failed,
                        rate(&window, done),
                        started.elapsed(),
                        true,
                    );
                    eprint!("\r\x1b[2K{line}\n");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        next += tick;
        let (done, failed) = read();
        let now = Instant::now();
        window.push_back((now, done + failed));
        while window.len() > 2 && now.duration_since(window[0].0) > Duration::from_secs(1) {
            window.pop_front();
        }
        let line = line(
            what,
            total,
            done,
            failed,
            rate(&window, done + failed),
            started.elapsed(),
            in_place,
        );
        match in_place {
            true => eprint!("\r\x1b[2K{line}"),
            false => eprintln!("{line}"),
        }
        let _ = std::io::stderr().flush();
        drawn = true;
    }
}

/// Messages a second over the window (the oldest sample to now).
fn rate(window: &std::collections::VecDeque<(Instant, u64)>, now_count: u64) -> f64 {
    match (window.front(), window.back()) {
        (Some(first), Some(last)) if last.0 > first.0 => {
            now_count.saturating_sub(first.1) as f64 / last.0.duration_since(first.0).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// `[#######.............]  7,000/20,000  35%  9,876 msg/s  0 failed  ETA 1s`
fn line(
    what: &str,
    total: Option<u64>,
    done: u64,
    failed: u64,
    rate: f64,
    elapsed: Duration,
    bar: bool,
) -> String {
    let finished = done + failed;
    let mut text = String::new();
    if let (true, Some(total)) = (bar, total) {
        let width = 24;
        let filled = ((finished.min(total) as f64 / total.max(1) as f64) * width as f64) as usize;
        text.push('[');
        text.push_str(&"#".repeat(filled));
        text.push_str(&".".repeat(width - filled));
        text.push_str("]  ");
    }
    text.push_str(&format!("{what} {}", thousands(done)));
    if let Some(total) = total {
        text.push_str(&format!(
            "/{}  {:.0}%",
            thousands(total),
            100.0 * finished as f64 / total.max(1) as f64
        ));
    }
    text.push_str(&format!(
        "  {} msg/s  {} failed",
        thousands(rate as u64),
        thousands(failed)
    ));
    match total {
        Some(total) if rate > 0.0 && finished < total => {
            let left = (total - finished) as f64 / rate;
            text.push_str(&format!("  ETA {}s", left.ceil() as u64));
        }
        _ => text.push_str(&format!("  {:.0}s", elapsed.as_secs_f64())),
    }
    text
}

/// 1234567 as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_count_rate_failures_and_time_left() {
        let text = line(
            "sent",
            Some(20_000),
            7_000,
            0,
            9_876.4,
            Duration::from_secs(1),
            true,
        );
        assert_eq!(
            text,
            "[########................]  sent 7,000/20,000  35%  9,876 msg/s  0 failed  ETA 2s"
        );
        let open = line(
            "received",
            None,
            1_234_567,
            3,
            10.0,
            Duration::from_secs(42),
            false,
        );
        assert_eq!(open, "received 1,234,567  10 msg/s  3 failed  42s");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
