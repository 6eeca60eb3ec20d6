//! Results: one record per cell, printed as tables with ratios and written
//! as JSON lines.

use std::fmt::Write as _;

use serde::Serialize;

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    pub(crate) group: String,
    pub(crate) workload: String,
    #[serde(rename = "impl")]
    pub(crate) imp: String,
    pub(crate) metric: &'static str,
    pub(crate) value: f64,
}

/// Every record of the run, in order.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) records: Vec<Record>,
    /// Notes printed under a group's table: (group, text).
    pub(crate) notes: Vec<(String, String)>,
    /// Cells whose figures are not what they claim (a get cell whose gets
    /// missed): counted in the goals' summary, and the run exits non-zero.
    pub(crate) errors: Vec<String>,
}

/// The workloads and the impls of `records`, each in first-seen order:
/// a table's rows and columns.
pub(crate) fn axes<'a>(
    records: impl IntoIterator<Item = &'a Record>,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut workloads: Vec<&str> = Vec::new();
    let mut impls: Vec<&str> = Vec::new();
    for r in records {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
        if !impls.contains(&r.imp.as_str()) {
            impls.push(&r.imp);
        }
    }
    (workloads, impls)
}

impl Report {
    pub(crate) fn add(
        &mut self,
        group: &str,
        workload: &str,
        imp: &str,
        metric: &'static str,
        value: f64,
    ) {
        self.records.push(Record {
            group: group.to_owned(),
            workload: workload.to_owned(),
            imp: imp.to_owned(),
            metric,
            value,
        });
    }

    pub(crate) fn note(&mut self, group: &str, text: impl Into<String>) {
        self.notes.push((group.to_owned(), text.into()));
    }

    /// A cell's figure in its group's own metric (that of the group's first
    /// record: a group adds its main figures first, then per-cell extras
    /// such as latencies or paired ratios, which are read by their metric).
    pub(crate) fn value(&self, group: &str, workload: &str, imp: &str) -> Option<f64> {
        let metric = self.records.iter().find(|r| r.group == group)?.metric;
        self.value_of(group, workload, imp, metric)
    }

    /// A cell's figure in `metric`.
    pub(crate) fn value_of(
        &self,
        group: &str,
        workload: &str,
        imp: &str,
        metric: &str,
    ) -> Option<f64> {
        self.records
            .iter()
            .find(|r| {
                r.group == group && r.metric == metric && r.workload == workload && r.imp == imp
            })
            .map(|r| r.value)
    }

    /// A table of `group`: one row per workload, one column per impl (in
    /// first-seen order), then the ratio of each impl to `baseline`.
    pub(crate) fn table(&self, group: &str, baseline: &str) -> String {
        let rows: Vec<&Record> = self.records.iter().filter(|r| r.group == group).collect();
        let (workloads, impls) = axes(rows.iter().copied());
        let metric = rows.first().map_or("", |r| r.metric);
        let mut out = String::new();
        if rows.is_empty() {
            return out;
        }
        let _ = writeln!(out, "\n== {group} ({metric}; ratio = impl / {baseline}) ==");
        let wl_width = workloads.iter().map(|w| w.len()).max().unwrap_or(8).max(8);
        let _ = write!(out, "{:<wl_width$}", "workload");
        for imp in &impls {
            let _ = write!(out, " | {imp:>w$}", w = imp.len().max(12));
        }
        out.push('\n');
        for wl in &workloads {
            let base = self.value(group, wl, baseline);
            let _ = write!(out, "{wl:<wl_width$}");
            for imp in &impls {
                let w = imp.len().max(12);
                let cell = match self.value(group, wl, imp) {
                    Some(v) => {
                        let ratio = base.filter(|b| *b != 0.0).map(|b| v / b);
                        match ratio {
                            Some(ratio) if *imp != baseline => {
                                format!("{} ({ratio:.2}x)", fmt_value(metric, v))
                            }
                            _ => fmt_value(metric, v),
                        }
                    }
                    None => "-".to_owned(),
                };
                let _ = write!(out, " | {cell:>w$}");
            }
            out.push('\n');
        }
        for (g, text) in &self.notes {
            if g == group {
                let _ = writeln!(out, "  note: {text}");
            }
        }
        out
    }

    pub(crate) fn json_lines(&self) -> String {
        let mut out = String::new();
        for r in &self.records {
            out.push_str(&serde_json::to_string(r).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

fn fmt_value(metric: &str, v: f64) -> String {
    match metric {
        "ops_per_sec" if v >= 1e6 => format!("{:.2}M", v / 1e6),
        "ops_per_sec" => format!("{:.1}k", v / 1e3),
        "hit_ratio" => format!("{v:.4}"),
        "ratio" => format!("{v:.2}x"),
        "ns_per_op" if v >= 1e4 => format!("{:.1}us", v / 1e3),
        "ns_per_op" => format!("{v:.1}ns"),
        _ => format!("{v:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_of_the_groups_own_metric() {
        let mut report = Report::default();
        report.add("redis", "GET, 1 task", "other client", "ops_per_sec", 10.0);
        // An extra of a cell recorded before the cell's main figure.
        report.add("redis", "GET, 1 task", "raw", "p50_us", 70.0);
        report.add("redis", "GET, 1 task", "raw", "ops_per_sec", 12.0);
        assert_eq!(report.value("redis", "GET, 1 task", "raw"), Some(12.0));
        assert_eq!(report.value("redis", "GET, 2 tasks", "raw"), None);
        assert_eq!(report.value("tiered", "GET, 1 task", "raw"), None);
    }
}
