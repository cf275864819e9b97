//! Metrics exposition formats: the nodes keep their metrics as OpenMetrics text (what
//! Prometheus asks for), and answer a scraper that does not accept OpenMetrics with the
//! Prometheus text format 0.0.4, which names a counter's metadata after its `_total` sample.
//! Pure text processing.

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header value asks for OpenMetrics.
pub fn accepts_openmetrics(accept: &str) -> bool {
    accept.contains("application/openmetrics-text")
}

/// OpenMetrics text as the Prometheus text format 0.0.4: `# EOF` and `# UNIT` lines dropped,
/// a counter family's `# HELP` and `# TYPE` named after its `_total` sample.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_units_and_eof_dropped_the_rest_kept() {
        let om = "# HELP urbis_fsyncs Synced writes.\n# TYPE urbis_fsyncs counter\nurbis_fsyncs_total 3\n# HELP urbis_height Height.\n# TYPE urbis_height gauge\nurbis_height 7\n# HELP urbis_seal_seconds Seal.\n# TYPE urbis_seal_seconds histogram\n# UNIT urbis_seal_seconds seconds\nurbis_seal_seconds_count 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP urbis_fsyncs_total Synced writes.\n# TYPE urbis_fsyncs_total counter\nurbis_fsyncs_total 3\n# HELP urbis_height Height.\n# TYPE urbis_height gauge\nurbis_height 7\n# HELP urbis_seal_seconds Seal.\n# TYPE urbis_seal_seconds histogram\nurbis_seal_seconds_count 1\n"
        );
        assert!(accepts_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"));
        assert!(!accepts_openmetrics("*/*"));
    }
}
