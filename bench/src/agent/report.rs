//! The agent benchmark's output: a markdown table (with the goals of issue #20 beside the
//! figures) and a hand-written SVG plot — start time, agent vs floor, per peer count, and
//! memory vs peers — both for docs/performance.md.

use std::fmt::Write;

use super::{Report, Row};

/// The goals the figures are held against.
pub const GOAL_RATIO: f64 = 1.5;
/// p99 of put → route, ms.
pub const GOAL_P99_MS: f64 = 50.0;
/// VmRSS at 5,000 peers, MiB.
pub const GOAL_RSS_MIB: f64 = 16.0;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Nearest-rank percentile `q` (0..=1) of `v`, `None` when empty.
pub fn percentile(v: &[u64], q: f64) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((s.len() as f64) * q).ceil() as usize;
    s.get(rank.max(1) - 1).copied()
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2}"))
}

/// The startup ratio agent / floor of a row.
pub fn ratio(r: &Row) -> Option<f64> {
    let f = r.floor_us.filter(|&f| f > 0)?;
    Some(r.start_us as f64 / f as f64)
}

/// The markdown table and the lines under it.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| peers | agent start → all programmed (ms, median of {}) | floor: `ip -batch` + `bridge -batch` (ms, median of {}) | ratio (goal ≤ {GOAL_RATIO}x) | routes in the kernel | VmRSS (MiB) | VmHWM (MiB) |",
        r.reps, r.reps
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {} | {} | {:.1} | {:.1} |",
            row.peers,
            ms(row.start_us),
            row.floor_us.map_or("—".into(), |f| format!("{:.1}", ms(f))),
            ratio(row).map_or("—".into(), |x| format!("{x:.2}x")),
            row.routes,
            mib(row.rss_kib),
            mib(row.hwm_kib),
        );
    }
    let e = &r.events;
    let k50 = percentile(&e.kernel_us, 0.5).map(ms);
    let k99 = percentile(&e.kernel_us, 0.99).map(ms);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| event latency, {} lease puts at {} peers | p50 (ms) | p99 (ms, goal ≤ {GOAL_P99_MS}) |",
        e.kernel_us.len(),
        e.peers
    );
    let _ = writeln!(s, "|---|---:|---:|");
    let _ = writeln!(
        s,
        "| put in etcd → route in the node's kernel (polled by the runner) | {} | {} |",
        opt_ms(k50),
        opt_ms(k99)
    );
    let _ = writeln!(
        s,
        "| watch event in the agent → programmed (`flanneld_event_programmed_seconds`, {} observations) | {} | {} |",
        e.agent_count,
        opt_ms(e.agent_p50.map(|v| v * 1000.0)),
        opt_ms(e.agent_p99.map(|v| v * 1000.0))
    );
    let i = &r.idle;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Idle at {} peers: {:.3}% of one core over {:.0} s ({} reconciles).",
        i.peers, i.cpu_percent, i.secs, i.reconciles
    );
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn text(s: &mut String, x: f64, y: f64, anchor: &str, size: u32, t: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{}</text>"#,
        esc(t)
    );
}

fn bar(s: &mut String, x: f64, y: f64, w: f64, h: f64, fill: &str) {
    let _ = writeln!(
        s,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"/>"#
    );
}

/// A panel of bars: groups of (label, [(value, colour)]), a y axis label, an optional goal
/// line; drawn in the box (x0, y0, w, h).
#[allow(clippy::too_many_arguments)]
fn panel(
    s: &mut String,
    (x0, y0, w, h): (f64, f64, f64, f64),
    title: &str,
    unit: &str,
    groups: &[(String, Vec<(f64, &str)>)],
    goal: Option<(f64, &str)>,
) {
    let top = groups
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(x, _)| *x))
        .chain(goal.map(|(g, _)| g))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.15;
    text(s, x0 + w / 2.0, y0 - 8.0, "middle", 13, title);
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
        y0 + h,
        x0 + w,
        y0 + h
    );
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{}" stroke="#333"/>"##,
        y0 + h
    );
    text(s, x0 - 4.0, y0 + 4.0, "end", 10, &format!("{top:.0}"));
    text(s, x0 - 4.0, y0 + h, "end", 10, "0");
    text(s, x0 - 4.0, y0 - 8.0, "end", 10, unit);
    let slot = w / groups.len().max(1) as f64;
    for (g, (label, vals)) in groups.iter().enumerate() {
        let bw = slot * 0.7 / vals.len().max(1) as f64;
        let gx = x0 + slot * g as f64 + slot * 0.15;
        for (b, (v, fill)) in vals.iter().enumerate() {
            let bh = h * v / top;
            let x = gx + bw * b as f64;
            bar(s, x, y0 + h - bh, bw - 2.0, bh, fill);
            text(
                s,
                x + bw / 2.0,
                y0 + h - bh - 3.0,
                "middle",
                10,
                &if *v < 100.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.0}")
                },
            );
        }
        text(s, gx + slot * 0.35, y0 + h + 14.0, "middle", 11, label);
    }
    if let Some((g, what)) = goal {
        let y = y0 + h - h * g / top;
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#c00" stroke-dasharray="4 3"/>"##,
            x0 + w
        );
        text(s, x0 + w, y - 3.0, "end", 10, what);
    }
}

/// The plot: start time agent vs floor per peer count, and memory vs peers.
pub fn svg(r: &Report) -> String {
    let (agent, floor, rss, hwm) = ("#3465a4", "#999999", "#4e9a06", "#8ae234");
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="330" font-family="sans-serif">"#
    );
    bar(&mut s, 0.0, 0.0, 760.0, 330.0, "white");
    let start: Vec<(String, Vec<(f64, &str)>)> = r
        .rows
        .iter()
        .filter(|row| row.floor_us.is_some())
        .map(|row| {
            (
                format!("{} peers", row.peers),
                vec![
                    (ms(row.start_us), agent),
                    (row.floor_us.map_or(0.0, ms), floor),
                ],
            )
        })
        .collect();
    panel(
        &mut s,
        (60.0, 40.0, 280.0, 230.0),
        "start → all peers programmed",
        "ms",
        &start,
        None,
    );
    let mem: Vec<(String, Vec<(f64, &str)>)> = r
        .rows
        .iter()
        .map(|row| {
            (
                format!("{} peers", row.peers),
                vec![(mib(row.rss_kib), rss), (mib(row.hwm_kib), hwm)],
            )
        })
        .collect();
    panel(
        &mut s,
        (440.0, 40.0, 290.0, 230.0),
        "flanneld memory",
        "MiB",
        &mem,
        Some((GOAL_RSS_MIB, "goal 16 MiB")),
    );
    for (i, (fill, what)) in [
        (agent, "flanneld"),
        (floor, "floor: ip/bridge -batch"),
        (rss, "VmRSS"),
        (hwm, "VmHWM"),
    ]
    .iter()
    .enumerate()
    {
        let x = 60.0 + 170.0 * i as f64;
        bar(&mut s, x, 305.0, 12.0, 12.0, fill);
        text(&mut s, x + 16.0, 315.0, "start", 11, what);
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::super::{Events, Idle};
    use super::*;

    fn report() -> Report {
        Report {
            reps: 3,
            rows: vec![
                Row {
                    peers: 0,
                    start_us: 50_000,
                    floor_us: None,
                    routes: 0,
                    rss_kib: 4096,
                    hwm_kib: 5120,
                },
                Row {
                    peers: 1000,
                    start_us: 300_000,
                    floor_us: Some(200_000),
                    routes: 1000,
                    rss_kib: 6144,
                    hwm_kib: 7168,
                },
            ],
            events: Events {
                peers: 1000,
                kernel_us: vec![1000, 2000, 3000, 40_000],
                agent_count: 4.0,
                agent_p50: Some(0.0005),
                agent_p99: Some(0.002),
            },
            idle: Idle {
                peers: 1004,
                secs: 20.0,
                cpu_percent: 0.25,
                reconciles: 4.0,
            },
        }
    }

    #[test]
    fn table_and_plot() {
        let r = report();
        let md = markdown(&r);
        assert!(
            md.contains("| 1000 | 300.0 | 200.0 | 1.50x | 1000 | 6.0 | 7.0 |"),
            "{md}"
        );
        assert!(md.contains("| 0 | 50.0 | — | — | 0 | 4.0 | 5.0 |"), "{md}");
        assert!(md.contains("| 2.00 | 40.00 |"), "{md}");
        assert!(md.contains("| 0.50 | 2.00 |"), "{md}");
        assert!(
            md.contains("0.250% of one core over 20 s (4 reconciles)"),
            "{md}"
        );
        let svg = svg(&r);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 4 + 4, "{svg}");
        assert!(svg.contains(">1000 peers<"));
    }

    #[test]
    fn percentiles_by_rank() {
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&v, 0.5), Some(100));
        assert_eq!(percentile(&v, 0.99), Some(198));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.99), Some(7));
    }
}
