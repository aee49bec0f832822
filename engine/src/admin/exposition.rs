//! `/metrics` in the format the scraper asks for.
//!
//! The registry writes OpenMetrics 1.0 text: counters are declared by
//! their family name (`# TYPE x counter`) and sampled as `x_total`, there
//! are `# UNIT` lines, and the text ends with `# EOF`. A scraper that asks
//! for OpenMetrics (`Accept: application/openmetrics-text`, as Prometheus
//! does) gets that as it is. Everyone else (curl, promtool, older
//! scrapers) gets the classic text format 0.0.4, where a counter's
//! metadata names the sample (`# TYPE x_total counter`) and there is no
//! `# EOF`, no `# UNIT`, no `info` type.

use std::collections::HashSet;

/// Content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic text format.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// OpenMetrics text rewritten as the classic text format.
pub fn classic(openmetrics: &str) -> String {
    let mut counters = HashSet::new();
    let mut infos = HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => counters.insert(name),
                Some((name, "info")) => infos.insert(name),
                _ => false,
            };
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match meta.and_then(|(prefix, rest)| Some((prefix, rest.split_once(' ')?))) {
            Some((prefix, (name, rest))) if counters.contains(name) => {
                out.push_str(&format!("{prefix}{name}_total {rest}"));
            }
            Some((prefix, (name, rest))) if infos.contains(name) => {
                let rest = if prefix == "# TYPE " { "gauge" } else { rest };
                out.push_str(&format!("{prefix}{name}_info {rest}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0"
        )));
    }

    #[test]
    fn counters_and_infos_are_renamed_and_eof_goes() {
        let open = "# HELP ringpost_a Things.\n# TYPE ringpost_a counter\n\
                    ringpost_a_total{shard=\"0\"} 3\n\
                    # HELP ringpost_b_bytes Size.\n# TYPE ringpost_b_bytes gauge\n# UNIT ringpost_b_bytes bytes\n\
                    ringpost_b_bytes 7\n\
                    # HELP ringpost_build Build.\n# TYPE ringpost_build info\nringpost_build_info{version=\"1\"} 1\n\
                    # EOF\n";
        assert_eq!(
            classic(open),
            "# HELP ringpost_a_total Things.\n# TYPE ringpost_a_total counter\n\
             ringpost_a_total{shard=\"0\"} 3\n\
             # HELP ringpost_b_bytes Size.\n# TYPE ringpost_b_bytes gauge\nringpost_b_bytes 7\n\
             # HELP ringpost_build_info Build.\n# TYPE ringpost_build_info gauge\nringpost_build_info{version=\"1\"} 1\n"
        );
    }
}
