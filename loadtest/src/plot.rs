//! `--plot FILE.svg`: the run drawn as two panels sharing the time axis:
//! throughput (messages accepted, and failed, per second) above, latency
//! percentiles (p50, p90, p99 per second) below. Plain SVG written by
//! hand, one `<g>` per panel (`id="throughput"`, `id="latency"`), so any
//! browser shows it and a test can parse it.

use crate::timeline::Timeline;
use std::fmt::Write as _;

const WIDTH: f64 = 960.0;
const PANEL: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const GAP: f64 = 70.0;

/// The SVG of `timeline`, titled `title`.
pub fn svg(timeline: &Timeline, title: &str) -> String {
    let seconds = timeline.seconds();
    let n = seconds.len().max(1);
    let height = TOP + PANEL + GAP + PANEL + 50.0;
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="24" font-size="16" text-anchor="middle">{title}</text>
"##,
        x = WIDTH / 2.0,
        title = escape(title)
    );
    let ok: Vec<f64> = seconds.iter().map(|s| s.ok as f64).collect();
    let failed: Vec<f64> = seconds.iter().map(|s| s.failed as f64).collect();
    panel(
        &mut out,
        "throughput",
        "messages per second",
        TOP,
        n,
        &[("accepted", "#1f77b4", &ok), ("failed", "#d62728", &failed)],
    );
    let quantile = |q: f64| -> Vec<f64> {
        seconds
            .iter()
            .map(|s| s.quantile(q).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0))
            .collect()
    };
    let (p50, p90, p99) = (quantile(0.5), quantile(0.9), quantile(0.99));
    panel(
        &mut out,
        "latency",
        "latency, ms",
        TOP + PANEL + GAP,
        n,
        &[
            ("p50", "#2ca02c", &p50),
            ("p90", "#ff7f0e", &p90),
            ("p99", "#9467bd", &p99),
        ],
    );
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="middle">seconds since the start</text>"#,
        x = LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        y = height - 12.0
    );
    out.push_str("</svg>\n");
    out
}

/// One panel: axes, grid, a line per series (NaN: no point), a legend.
fn panel(
    out: &mut String,
    id: &str,
    label: &str,
    top: f64,
    n: usize,
    series: &[(&str, &str, &[f64])],
) {
    let plot_width = WIDTH - LEFT - RIGHT;
    let max = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top_value = nice_ceiling(max);
    let x = |i: f64| LEFT + plot_width * i / (n.max(2) - 1) as f64;
    let y = |v: f64| top + PANEL - PANEL * v / top_value;
    let _ = writeln!(out, r#"<g id="{id}">"#);
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL}" fill="none" stroke="black"/>"#
    );
    for tick in 0..=5 {
        let value = top_value * f64::from(tick) / 5.0;
        let ty = y(value);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{x2}" y2="{ty:.1}" stroke="#ddd"/><text x="{tx}" y="{ly:.1}" text-anchor="end">{value}</text>"##,
            x2 = LEFT + plot_width,
            tx = LEFT - 6.0,
            ly = ty + 4.0,
            value = short(value)
        );
    }
    let step = (n / 10).max(1);
    for i in (0..n).step_by(step) {
        let tx = x(i as f64);
        let _ = writeln!(
            out,
            r#"<text x="{tx:.1}" y="{y:.1}" text-anchor="middle">{i}</text>"#,
            y = top + PANEL + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {cy}) rotate(-90)" text-anchor="middle">{label}</text>"#,
        cy = top + PANEL / 2.0
    );
    for (k, (name, colour, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline class="series" data-name="{name}" fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let lx = LEFT + 10.0 + 90.0 * k as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{lx2}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{tx}" y="{ty}">{name}</text>"#,
            ly = top - 8.0,
            lx2 = lx + 20.0,
            tx = lx + 24.0,
            ty = top - 4.0
        );
    }
    out.push_str("</g>\n");
}

/// 1, 2 or 5 times a power of ten, at least `v` (and at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * power)
}

/// A tick label: 12, 1.5, 20k, 3M.
fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", trim(v / 1e6)),
        v if v >= 1e4 => format!("{}k", trim(v / 1e3)),
        v => trim(v),
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn two_panels_with_their_series() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        for s in 0..5u64 {
            for k in 0..(100 * (s + 1)) {
                t.ok(
                    start + Duration::from_secs(s),
                    Duration::from_micros(200 + k),
                );
            }
        }
        t.failed(start + Duration::from_secs(3));
        let svg = svg(&t, "a <test> run");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(r#"<g id="throughput">"#) && svg.contains(r#"<g id="latency">"#));
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("a &lt;test&gt; run"));
        assert_eq!(nice_ceiling(430.0), 500.0);
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(short(20_000.0), "20k");
        assert_eq!(short(1.5), "1.5");
    }
}
