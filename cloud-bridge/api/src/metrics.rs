//! Named counters, rendered in the Prometheus text format.
//!
//! Names end in `_total` (counters) or state their unit. Labels are given
//! as a preformatted `key="value"` string.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<(&'static str, String), f64>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, name: &'static str, labels: &str, n: u64) {
        let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *v.entry((name, labels.to_string())).or_insert(0.0) += n as f64;
    }

    pub fn inc(&self, name: &'static str, labels: &str) {
        self.add(name, labels, 1);
    }

    pub fn set(&self, name: &'static str, labels: &str, value: f64) {
        let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        v.insert((name, labels.to_string()), value);
    }

    pub fn render(&self) -> String {
        let v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), value) in v.iter() {
            if *name != last {
                let kind = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last = name;
            }
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        out
    }
}

/// Reads one metric back from Prometheus text (what [`Metrics::render`]
/// writes): the value of the exact label set, or the sum over all label
/// sets when `labels` is empty.
pub fn read(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, lab) = match key.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            (n == name && (labels.is_empty() || lab == labels))
                .then(|| value.parse::<f64>().unwrap_or(0.0))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_and_without_labels() {
        let m = Metrics::new();
        m.inc("payloads_rejected_total", r#"reason="malformed_json""#);
        m.add("payloads_rejected_total", r#"reason="unknown_device""#, 2);
        m.inc("journal_commits_total", "");
        let text = m.render();
        assert!(text.contains("# TYPE payloads_rejected_total counter"));
        assert!(text.contains(r#"payloads_rejected_total{reason="unknown_device"} 2"#));
        assert!(text.contains("journal_commits_total 1"));
        assert_eq!(read(&text, "payloads_rejected_total", ""), 3.0);
        assert_eq!(
            read(
                &text,
                "payloads_rejected_total",
                r#"reason="unknown_device""#
            ),
            2.0
        );
    }
}
