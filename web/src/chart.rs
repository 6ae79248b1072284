//! Charts drawn on the server as inline SVG: no script, no external files,
//! and they print. Every piece of text in them is escaped here.

use std::fmt::Write;

use chrono::TimeZone;

use crate::source::TimeRange;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 22.0;

/// Colours the charts use, readable on white and for most colour-blind eyes.
pub(crate) const BLUE: &str = "#2454c5";
pub(crate) const ORANGE: &str = "#d9730d";
pub(crate) const RED: &str = "#b42318";
pub(crate) const GREY: &str = "#8a94a6";
pub(crate) const GREEN: &str = "#1a7f37";

/// One series of a chart.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Legend text.
    pub name: &'static str,
    /// Stroke or fill colour.
    pub color: &'static str,
    /// (time, value), oldest first.
    pub points: Vec<(i64, f64)>,
}

impl Series {
    pub fn new(name: &'static str, color: &'static str, points: Vec<(i64, f64)>) -> Series {
        Series { name, color, points }
    }
}

/// Escapes text for SVG/HTML content and attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

struct Frame {
    range: TimeRange,
    max: f64,
}

impl Frame {
    fn new(range: TimeRange, series: &[Series], stacked: bool) -> Frame {
        let max = if stacked {
            let mut sums = std::collections::BTreeMap::<i64, f64>::new();
            for s in series {
                for (t, v) in &s.points {
                    *sums.entry(*t).or_default() += v;
                }
            }
            sums.values().copied().fold(0.0, f64::max)
        } else {
            series
                .iter()
                .flat_map(|s| s.points.iter().map(|(_, v)| *v))
                .fold(0.0, f64::max)
        };
        Frame {
            range,
            max: nice_ceiling(max),
        }
    }

    fn x(&self, t: i64) -> f64 {
        let span = self.range.length_ms().max(1) as f64;
        LEFT + (t - self.range.from_ms) as f64 / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - v / self.max * (HEIGHT - TOP - BOTTOM)
    }

    /// Opening tag, grid, axis labels and legend.
    fn open(&self, out: &mut String, label: &str, series: &[Series], unit: fn(f64) -> String) {
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="system-ui,sans-serif">"#,
            escape(label)
        );
        for i in 0..=3 {
            let v = self.max * f64::from(i) / 3.0;
            let y = self.y(v);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e6ec"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#5d6678">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                escape(&unit(v))
            );
        }
        for i in 0..=4 {
            let t = self.range.from_ms + self.range.length_ms() * i / 4;
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" fill="#5d6678">{}</text>"##,
                self.x(t),
                HEIGHT - 6.0,
                escape(&time_label(t, self.range))
            );
        }
        let mut x = LEFT;
        for s in series {
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="6" width="10" height="10" fill="{}"/><text x="{:.1}" y="15" fill="#1d2330">{}</text>"##,
                s.color,
                x + 14.0,
                escape(s.name)
            );
            x += 24.0 + 7.0 * s.name.len() as f64;
        }
    }
}

/// Rounds up to 1, 2, 2.5 or 5 times a power of ten (at least 1e-3).
fn nice_ceiling(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= max)
        .unwrap_or(10.0 * magnitude)
        .max(1e-3)
}

/// An axis label for `t`: finer for short ranges.
fn time_label(t: i64, range: TimeRange) -> String {
    let Some(time) = chrono::Utc.timestamp_millis_opt(t).single() else {
        return String::new();
    };
    let format = match range.length_ms() {
        l if l <= 86_400_000 => "%H:%M",
        l if l <= 8 * 86_400_000 => "%d %b %H:%M",
        _ => "%d %b",
    };
    time.format(format).to_string()
}

/// Line chart of `series` over `range`. Points further apart than
/// `step_ms` are not joined: a gap in the data stays a gap.
pub(crate) fn lines(label: &str, range: TimeRange, step_ms: i64, series: &[Series], unit: fn(f64) -> String) -> String {
    let frame = Frame::new(range, series, false);
    let mut out = String::with_capacity(4_096);
    frame.open(&mut out, label, series, unit);
    for s in series {
        let points: Vec<(f64, f64)> = s.points.iter().map(|(t, v)| (frame.x(*t), frame.y(*v))).collect();
        draw_runs(&mut out, &points, &s.points, step_ms, s.color, 1.6);
    }
    out.push_str("</svg>");
    out
}

/// Draws `xy` (the positions of `points`) as lines through neighbouring
/// steps; a point without a neighbour is a dot, so a gap in the data stays a
/// gap and a lone value still shows.
fn draw_runs(out: &mut String, xy: &[(f64, f64)], points: &[(i64, f64)], step_ms: i64, color: &str, width: f64) {
    let mut start = 0;
    for end in 1..=points.len() {
        if end < points.len() && points[end].0 - points[end - 1].0 <= step_ms {
            continue;
        }
        let run = &xy[start..end];
        if let [(x, y)] = run {
            let _ = write!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{:.1}" fill="{color}"/>"#,
                width * 1.3
            );
        } else {
            out.push_str(r#"<path d=""#);
            for (i, (x, y)) in run.iter().enumerate() {
                let _ = write!(out, "{}{x:.1} {y:.1}", if i == 0 { 'M' } else { 'L' });
            }
            let _ = write!(
                out,
                r#"" fill="none" stroke="{color}" stroke-width="{width}" stroke-linejoin="round"/>"#
            );
        }
        start = end;
    }
}

/// Bar chart, one bar per step, `series` stacked bottom to top.
pub(crate) fn bars(label: &str, range: TimeRange, step_ms: i64, series: &[Series], unit: fn(f64) -> String) -> String {
    let frame = Frame::new(range, series, true);
    let mut out = String::with_capacity(8_192);
    frame.open(&mut out, label, series, unit);
    let width = ((frame.x(range.from_ms + step_ms) - frame.x(range.from_ms)) - 1.0).max(1.0);
    let mut base = std::collections::BTreeMap::<i64, f64>::new();
    for s in series {
        for (t, v) in s.points.iter().filter(|(_, v)| *v > 0.0) {
            let below = base.entry(*t).or_default();
            let (top, bottom) = (frame.y(*below + v), frame.y(*below));
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{top:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                frame.x(*t).max(LEFT),
                (bottom - top).max(0.5),
                s.color,
                escape(&crate::format::timestamp(*t)),
                escape(s.name),
                escape(&unit(*v))
            );
            *below += v;
        }
    }
    out.push_str("</svg>");
    out
}

/// A small line without axes, for a table row; empty when there is nothing
/// to draw.
pub(crate) fn sparkline(range: TimeRange, step_ms: i64, points: &[(i64, f64)], color: &str) -> String {
    const W: f64 = 110.0;
    const H: f64 = 22.0;
    if points.is_empty() {
        return String::new();
    }
    let max = points
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let span = range.length_ms().max(1) as f64;
    let x = |t: i64| ((t - range.from_ms) as f64 / span * W).clamp(0.0, W);
    let y = |v: f64| H - 1.0 - v / max * (H - 2.0);
    let mut path = String::new();
    let xy: Vec<(f64, f64)> = points.iter().map(|(t, v)| (x(*t), y(*v))).collect();
    draw_runs(&mut path, &xy, points, step_ms, color, 1.4);
    format!(
        r#"<svg class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" aria-hidden="true" xmlns="http://www.w3.org/2000/svg">{path}</svg>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: Vec<(i64, f64)>) -> Series {
        Series {
            name: "p95 <ms>",
            color: BLUE,
            points,
        }
    }

    #[test]
    fn gaps_stay_gaps_and_text_is_escaped() {
        let range = TimeRange {
            from_ms: 0,
            to_ms: 100_000,
        };
        let svg = lines(
            "a <b>",
            range,
            10_000,
            &[series(vec![(0, 1.0), (10_000, 2.0), (50_000, 3.0), (60_000, 1.0)])],
            |v| format!("{v}"),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2, "two runs: {svg}");
        let lone = lines("x", range, 10_000, &[series(vec![(0, 1.0), (50_000, 2.0)])], |v| {
            format!("{v}")
        });
        assert_eq!(lone.matches("<circle").count(), 2, "lone points are dots: {lone}");
        assert!(svg.contains("p95 &lt;ms&gt;") && svg.contains(r#"aria-label="a &lt;b&gt;""#));
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn bars_stack_and_scales_are_round() {
        let range = TimeRange {
            from_ms: 0,
            to_ms: 40_000,
        };
        let svg = bars(
            "calls",
            range,
            10_000,
            &[series(vec![(0, 3.0), (10_000, 0.0)]), series(vec![(0, 1.0)])],
            |v| format!("{v:.0}"),
        );
        assert_eq!(svg.matches("<rect").count(), 2 + 2, "two legend boxes, two bars: {svg}");
        assert_eq!(nice_ceiling(3.7), 5.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(120.0), 150.0);
        assert!(sparkline(range, 10_000, &[], BLUE).is_empty());
        assert!(sparkline(range, 10_000, &[(0, 1.0), (10_000, 2.0)], BLUE).contains("L"));
    }
}
