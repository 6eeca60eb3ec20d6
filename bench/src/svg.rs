//! A small SVG bar chart of the hit-ratio group: one cluster per trace, one
//! bar per policy.

use std::fmt::Write as _;

use crate::hitratio::{GROUP, IMPLS};
use crate::report::Report;

const COLORS: [&str; 5] = ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#bcbd22"];

/// The chart, or `None` when the group has no records.
pub(crate) fn hit_ratio_chart(report: &Report) -> Option<String> {
    let (workloads, _) = crate::report::axes(report.records.iter().filter(|r| r.group == GROUP));
    if workloads.is_empty() {
        return None;
    }
    let (left, top, plot_h, bar_w, gap) = (50.0, 40.0, 260.0, 14.0, 26.0);
    let cluster = bar_w * IMPLS.len() as f64 + gap;
    let width = left + cluster * workloads.len() as f64 + 20.0;
    let height = top + plot_h + 90.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="18" font-size="14">Hit ratio by trace and policy (2M requests over 1M keys; higher is better)</text>"#
    );
    for tick in 0..=5 {
        let v = tick as f64 * 0.2;
        let y = top + plot_h * (1.0 - v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            width - 20.0,
            left - 4.0,
            y + 4.0
        );
    }
    for (w, workload) in workloads.iter().enumerate() {
        let x0 = left + gap / 2.0 + cluster * w as f64;
        for (i, imp) in IMPLS.iter().enumerate() {
            if let Some(v) = report.value(GROUP, workload, imp) {
                let h = plot_h * v;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{imp}: {v:.4}</title></rect>"#,
                    x0 + bar_w * i as f64,
                    top + plot_h - h,
                    bar_w - 1.0,
                    COLORS[i % COLORS.len()]
                );
            }
        }
        let cx = x0 + bar_w * IMPLS.len() as f64 / 2.0;
        let (trace, cap) = workload.split_once(" cap ").unwrap_or((workload, ""));
        let _ = writeln!(
            svg,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{trace}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle">cap {cap}</text>"#,
            top + plot_h + 14.0,
            top + plot_h + 27.0
        );
    }
    for (i, imp) in IMPLS.iter().enumerate() {
        let x = left + 130.0 * i as f64;
        let y = top + plot_h + 55.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{y:.1}">{imp}</text>"#,
            y - 9.0,
            COLORS[i % COLORS.len()],
            x + 14.0
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}
