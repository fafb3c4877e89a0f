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

    pub fn get(&self, name: &'static str, labels: &str) -> f64 {
        let v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        v.get(&(name, labels.to_string())).copied().unwrap_or(0.0)
    }

    /// The sum over all label sets of one metric.
    pub fn sum(&self, name: &'static str) -> f64 {
        let v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, x)| x)
            .sum()
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
        assert_eq!(m.sum("payloads_rejected_total"), 3.0);
    }
}
