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
        let mut path = String::new();
        let mut previous: Option<i64> = None;
        for (t, v) in &s.points {
            let command = if previous.is_some_and(|p| t - p <= step_ms) {
                'L'
            } else {
                'M'
            };
            let _ = write!(path, "{command}{:.1} {:.1}", frame.x(*t), frame.y(*v));
            previous = Some(*t);
        }
        if s.points.len() == 1 {
            let (t, v) = s.points[0];
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                frame.x(t),
                frame.y(v),
                s.color
            );
        } else if !path.is_empty() {
            let _ = write!(
                out,
                r#"<path d="{path}" fill="none" stroke="{}" stroke-width="1.6" stroke-linejoin="round"/>"#,
                s.color
            );
        }
    }
    out.push_str("</svg>");
    out
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
    let mut previous: Option<i64> = None;
    for (t, v) in points {
        let command = if previous.is_some_and(|p| t - p <= step_ms) {
            'L'
        } else {
            'M'
        };
        let _ = write!(path, "{command}{:.1} {:.1}", x(*t), y(*v));
        previous = Some(*t);
    }
    if points.len() == 1 {
        let _ = write!(path, "h2");
    }
    format!(
        r#"<svg class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" aria-hidden="true" xmlns="http://www.w3.org/2000/svg"><path d="{path}" fill="none" stroke="{color}" stroke-width="1.4"/></svg>"#
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
        assert_eq!(svg.matches('M').count(), 2, "{svg}");
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
