//! Server-side SVG charts for the report: line, bar, stacked-bar, histogram
//! and timeline charts with titles, axes with units and legends, as plain
//! strings (no JavaScript, no fonts to fetch: the page opens offline).

use std::fmt::Write;

/// Chart size in pixels.
const W: f64 = 760.0;
const H: f64 = 300.0;
/// Plot margins: left, right, top, bottom.
const ML: f64 = 70.0;
const MR: f64 = 150.0;
const MT: f64 = 36.0;
const MB: f64 = 46.0;

/// A colour-blind-safe palette (Okabe–Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// One named series of (x, y) points.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// How x values are shown.
#[derive(Clone, Copy, PartialEq)]
pub enum XAxis {
    /// Numbers.
    Number,
    /// Milliseconds since the Unix epoch, shown as UTC times.
    TimeMs,
}

/// `s` escaped for HTML and SVG text and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One row of a timeline: its label, and its events as (x, optional end).
pub type Lane = (String, Vec<(f64, Option<f64>)>);

/// "Nice" tick values covering `lo..=hi` (about `n` of them).
// `!(hi > lo)` on purpose: NaN bounds get a single tick too.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(hi > lo) || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    // Bounded: where the step is below the precision of `t` (a range far
    // from zero and narrow), adding it would not move `t`.
    while t <= hi + step * 1e-9 && out.len() <= 4 * n.max(1) + 4 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        let after = t + step;
        if after <= t {
            break;
        }
        t = after;
    }
    out
}

/// A number for an axis label.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `ms` as a UTC `MM-DD HH:MM` (or `HH:MM:SS` when `short`).
pub fn fmt_time(ms: f64, short: bool) -> String {
    let ms = ms as i64;
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (_, m, d) = millrace_operators::parse::civil_from_days(days);
    let (h, mi, s) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60);
    if short {
        format!("{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{m:02}-{d:02} {h:02}:{mi:02}")
    }
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        ML + (x - self.x0) / (self.x1 - self.x0).max(1e-300) * (W - ML - MR)
    }
    fn py(&self, y: f64) -> f64 {
        H - MB - (y - self.y0) / (self.y1 - self.y0).max(1e-300) * (H - MT - MB)
    }
}

fn open(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title><rect width="{W}" height="{H}" fill="white"/><text x="{ML}" y="22" font-size="15" font-weight="bold" font-family="sans-serif">{t}</text>"#,
        t = esc(title)
    );
}

fn axes(out: &mut String, f: &Frame, x: XAxis, x_label: &str, y_label: &str) {
    let (l, r, t, b) = (ML, W - MR, MT, H - MB);
    let _ = write!(
        out,
        r##"<g font-family="sans-serif" font-size="11" fill="#333"><line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#333"/>"##
    );
    for v in ticks(f.y0, f.y1, 5) {
        let y = f.py(v);
        let _ = write!(
            out,
            r##"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            l - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    let span = f.x1 - f.x0;
    for v in ticks(f.x0, f.x1, 6) {
        let xx = f.px(v);
        let label = match x {
            XAxis::Number => fmt_num(v),
            XAxis::TimeMs => fmt_time(v, span < 86_400_000.0),
        };
        let _ = write!(
            out,
            r##"<line x1="{xx:.1}" y1="{b}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            b + 4.0,
            b + 16.0,
            esc(&label)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" font-size="12">{}</text></g>"##,
        (l + r) / 2.0,
        H - 8.0,
        esc(x_label),
        (t + b) / 2.0,
        esc(y_label)
    );
}

fn legend(out: &mut String, names: &[(&str, &str)]) {
    for (i, (name, color)) in names.iter().enumerate() {
        let y = MT + 10.0 + i as f64 * 18.0;
        let x = W - MR + 14.0;
        let _ = write!(
            out,
            r##"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12">{}</text>"##,
            y - 10.0,
            x + 18.0,
            y,
            esc(name)
        );
    }
}

fn bounds(points: impl Iterator<Item = (f64, f64)>, zero: bool) -> Option<Frame> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return None;
    }
    if zero {
        y0 = y0.min(0.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    Some(Frame {
        x0,
        x1,
        y0: if zero && y0 == 0.0 { 0.0 } else { y0 - pad },
        y1: y1 + pad,
    })
}

fn empty(out: &mut String, text: &str) {
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-family="sans-serif" font-size="13" fill="#777">{}</text></svg>"##,
        W / 2.0,
        H / 2.0,
        esc(text)
    );
}

/// A line chart; `marks` are vertical lines at x with a label (e.g. model versions).
#[allow(clippy::too_many_arguments)]
pub fn line_chart(
    id: &str,
    title: &str,
    x: XAxis,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    marks: &[(f64, String)],
    zero: bool,
) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    let Some(f) = bounds(series.iter().flat_map(|s| s.points.iter().copied()), zero) else {
        empty(&mut out, "no data yet");
        return out;
    };
    axes(&mut out, &f, x, x_label, y_label);
    for (mx, label) in marks.iter().filter(|(mx, _)| *mx >= f.x0 && *mx <= f.x1) {
        let xx = f.px(*mx);
        let _ = write!(
            out,
            r##"<line class="mark" x1="{xx:.1}" y1="{MT}" x2="{xx:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="9" fill="#666">{}</text>"##,
            H - MB,
            xx + 2.0,
            MT + 8.0,
            esc(label)
        );
    }
    let mut names = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        names.push((s.name.as_str(), color));
        let mut d = String::new();
        for (j, (px, py)) in s
            .points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .enumerate()
        {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                f.px(*px),
                f.py(*py)
            );
        }
        let _ = write!(
            out,
            r#"<path class="series" data-name="{}" d="{d}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
            esc(&s.name)
        );
    }
    legend(&mut out, &names);
    out.push_str("</svg>");
    out
}

/// Stacked bars at x positions (e.g. the ledger per epoch): one series per layer.
pub fn stacked_bars(
    id: &str,
    title: &str,
    x: XAxis,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    let n = series.first().map_or(0, |s| s.points.len());
    let totals: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            (
                series[0].points[i].0,
                series.iter().map(|s| s.points[i].1).sum(),
            )
        })
        .collect();
    let Some(mut f) = bounds(totals.iter().copied(), true) else {
        empty(&mut out, "no data yet");
        return out;
    };
    let half = if n > 1 {
        (f.x1 - f.x0) / (n as f64 - 1.0) / 2.0
    } else {
        0.5
    };
    f.x0 -= half;
    f.x1 += half;
    axes(&mut out, &f, x, x_label, y_label);
    let bw = ((f.px(f.x0 + 2.0 * half) - f.px(f.x0)) * 0.85).max(1.0);
    let mut names = Vec::new();
    let mut base = vec![0.0; n];
    for (k, s) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        names.push((s.name.as_str(), color));
        let _ = write!(
            out,
            r#"<g class="series" data-name="{}" fill="{color}">"#,
            esc(&s.name)
        );
        for (i, (px, v)) in s.points.iter().enumerate() {
            let (top, bottom) = (f.py(base[i] + v), f.py(base[i]));
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{top:.1}" width="{bw:.1}" height="{:.1}"/>"#,
                f.px(*px) - bw / 2.0,
                (bottom - top).max(0.0)
            );
            base[i] += v;
        }
        out.push_str("</g>");
    }
    legend(&mut out, &names);
    out.push_str("</svg>");
    out
}

/// Horizontal bars for categories (e.g. rejects by reason, top keys).
pub fn bar_chart(id: &str, title: &str, x_label: &str, bars: &[(String, f64)]) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    if bars.is_empty() {
        empty(&mut out, "none");
        return out;
    }
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-300);
    let (l, r) = (170.0, W - 90.0);
    let row = ((H - MT - 20.0) / bars.len() as f64).min(26.0);
    let _ = write!(out, r#"<g font-family="sans-serif" font-size="11">"#);
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = MT + 8.0 + i as f64 * row;
        let w = (r - l) * v / max;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect class="bar" data-name="{}" data-value="{v}" x="{l}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            l - 6.0,
            y + row * 0.6,
            esc(name),
            esc(name),
            row * 0.75,
            PALETTE[0],
            l + w + 4.0,
            y + row * 0.6,
            fmt_num(*v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text></g></svg>"#,
        (l + r) / 2.0,
        H - 8.0,
        esc(x_label)
    );
    out
}

/// Two distributions over the same bins, side by side (e.g. scores now vs the reference window).
pub fn histogram_compare(
    id: &str,
    title: &str,
    x_label: &str,
    edges: &[f64],
    a: (&str, &[f64]),
    b: (&str, &[f64]),
) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    let share = |v: &[f64]| {
        let t: f64 = v.iter().sum::<f64>().max(1e-300);
        v.iter().map(|x| x / t).collect::<Vec<f64>>()
    };
    let (sa, sb) = (share(a.1), share(b.1));
    let top = sa.iter().chain(&sb).fold(0.0f64, |m, v| m.max(*v));
    if edges.len() < 2 || top <= 0.0 {
        empty(&mut out, "no data yet");
        return out;
    }
    let f = Frame {
        x0: edges[0],
        x1: *edges.last().unwrap(),
        y0: 0.0,
        y1: top * 1.05,
    };
    axes(&mut out, &f, XAxis::Number, x_label, "share of records");
    for (k, (name, s)) in [(a.0, &sa), (b.0, &sb)].iter().enumerate() {
        let color = PALETTE[k];
        let _ = write!(
            out,
            r#"<g class="series" data-name="{}" fill="{color}" fill-opacity="0.75">"#,
            esc(name)
        );
        for (i, v) in s.iter().enumerate() {
            let (x0, x1) = (f.px(edges[i]), f.px(edges[i + 1]));
            let w = (x1 - x0) / 2.0;
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
                x0 + k as f64 * w,
                f.py(*v),
                (w - 0.5).max(0.5),
                f.py(0.0) - f.py(*v)
            );
        }
        out.push_str("</g>");
    }
    legend(&mut out, &[(a.0, PALETTE[0]), (b.0, PALETTE[1])]);
    out.push_str("</svg>");
    out
}

/// One row per rule: firing periods as bars (open ones run to the end), resolved ends marked.
pub fn timeline(id: &str, title: &str, rows: &[Lane], x0: f64, x1: f64) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    if rows.is_empty() {
        empty(&mut out, "no alerts");
        return out;
    }
    let f = Frame {
        x0,
        x1: if x1 > x0 { x1 } else { x0 + 1.0 },
        y0: 0.0,
        y1: 1.0,
    };
    axes_x_only(&mut out, &f);
    let l = 170.0;
    let row = ((H - MT - MB) / rows.len() as f64).min(26.0);
    let px = |x: f64| l + (x - f.x0) / (f.x1 - f.x0) * (W - MR - l);
    for (i, (rule, spans)) in rows.iter().enumerate() {
        let y = MT + 4.0 + i as f64 * row;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-family="sans-serif" font-size="11">{}</text>"##,
            l - 6.0,
            y + row * 0.6,
            esc(rule)
        );
        for (s, e) in spans {
            let (a, b) = (px(*s), px(e.unwrap_or(f.x1)));
            let color = if e.is_some() { PALETTE[1] } else { PALETTE[3] };
            let _ = write!(
                out,
                r#"<rect class="alert" data-rule="{}" data-state="{}" x="{a:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                esc(rule),
                if e.is_some() { "resolved" } else { "firing" },
                (b - a).max(3.0),
                row * 0.7
            );
        }
    }
    legend(
        &mut out,
        &[
            ("fired, then resolved", PALETTE[1]),
            ("still firing", PALETTE[3]),
        ],
    );
    out.push_str("</svg>");
    out
}

fn axes_x_only(out: &mut String, f: &Frame) {
    let (l, r, b) = (170.0, W - MR, H - MB);
    let _ = write!(
        out,
        r##"<g font-family="sans-serif" font-size="11" fill="#333"><line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/>"##
    );
    let span = f.x1 - f.x0;
    for v in ticks(f.x0, f.x1, 5) {
        let xx = l + (v - f.x0) / span * (r - l);
        let _ = write!(
            out,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            b + 16.0,
            esc(&fmt_time(v, span < 86_400_000.0))
        );
    }
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">event time (UTC)</text></g>"##,
        (l + r) / 2.0,
        H - 8.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!(t
            .iter()
            .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            .all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(ticks(0.0, 100.0, 4), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        // A narrow range far from zero: the step is below the precision of the values.
        let far = ticks(1e20, 1e20 + 1000.0, 5);
        assert!(!far.is_empty() && far.len() <= 24, "{far:?}");
        assert_eq!(ticks(-1e300, 1e300, 4).len(), 5);
        assert_eq!(
            fmt_time(1_767_225_600_000.0 + 3_723_000.0, true),
            "01:02:03"
        );
    }

    #[test]
    fn charts_have_titles_axes_legends_and_series() {
        let s = line_chart(
            "c",
            "Accuracy <over> time",
            XAxis::Number,
            "epoch",
            "accuracy",
            &[Series {
                name: "v1".into(),
                points: vec![(0.0, 0.5), (1.0, 0.9)],
            }],
            &[(0.5, "v2".into())],
            false,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(
            s.contains("Accuracy &lt;over&gt; time")
                && s.contains(r#"data-name="v1""#)
                && s.contains("class=\"mark\"")
        );
        assert!(
            line_chart("e", "t", XAxis::Number, "x", "y", &[], &[], true).contains("no data yet")
        );
    }
}
