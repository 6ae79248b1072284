//! The performance report: top queries, slowest, most failing, regressions
//! versus the previous period, pool summary and alerts in range — as the
//! `/report` page, and as Markdown, standalone HTML or JSON for
//! `querypulse report` and for mailing around.

use askama::Template;
use querypulse_domain::Fingerprint;
use serde::Serialize;

use crate::format::{count, duration_ms, percent, timestamp};
use crate::source::{AlertSummary, PoolSummary, QuerySummary, Source, SourceError, TimeRange};
use crate::{QueryFilter, status, trend};

/// Entries per section.
pub const SECTION_ROWS: usize = 10;
/// Fewer calls than this in a period are too few for a percentile to be
/// called slow or a regression.
pub const MIN_CALLS: u64 = 20;
/// A p95 this much higher than in the previous period is a regression.
pub const REGRESSION: f64 = 0.20;

/// A query whose p95 rose against the previous period.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    /// The query over the report's range.
    pub query: QuerySummary,
    /// Its calls over the previous period.
    pub previous_calls: u64,
    /// Its p95 over the previous period, milliseconds.
    pub previous_p95_ms: f64,
    /// Relative change of the p95 (0.5 for +50 %).
    pub p95_change: f64,
}

/// Totals over the range.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Executions.
    pub calls: u64,
    /// Failed executions.
    pub errors: u64,
    /// Time spent in queries, milliseconds.
    pub total_ms: f64,
    /// Distinct fingerprints that ran.
    pub fingerprints: usize,
    /// Services that ran queries.
    pub services: usize,
}

/// The report. Its JSON form is what `querypulse report --format json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Start of the range, RFC 3339.
    pub from: String,
    /// End of the range, RFC 3339.
    pub to: String,
    /// The previous period regressions compare with.
    pub previous_from: String,
    /// End of the previous period.
    pub previous_to: String,
    /// Only this service, when filtered.
    pub service: Option<String>,
    /// Totals over the range.
    pub totals: Totals,
    /// Most total time.
    pub top_by_total_time: Vec<QuerySummary>,
    /// Highest p99 (with at least [`MIN_CALLS`] calls).
    pub slowest: Vec<QuerySummary>,
    /// Most errors.
    pub most_failing: Vec<QuerySummary>,
    /// p95 up at least [`REGRESSION`] against the previous period.
    pub regressions: Vec<Regression>,
    /// Every pool, closest to exhaustion first.
    pub pools: Vec<PoolSummary>,
    /// Alerts in range; `null` when the dashboard has no alert engine.
    pub alerts: Option<Vec<AlertSummary>>,
}

fn top(
    queries: &[QuerySummary],
    keep: impl Fn(&QuerySummary) -> bool,
    key: impl Fn(&QuerySummary) -> f64,
) -> Vec<QuerySummary> {
    let mut picked: Vec<QuerySummary> = queries.iter().filter(|q| keep(q)).cloned().collect();
    picked.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    picked.truncate(SECTION_ROWS);
    picked
}

impl Report {
    /// Builds the report over `range` (widened to whole hours or minutes like
    /// every summary), for one service or all.
    pub fn build(source: &dyn Source, range: TimeRange, service: Option<String>) -> Result<Report, SourceError> {
        let range = range.for_summary();
        let previous = range.previous();
        let queries = source.queries(&QueryFilter {
            service: service.clone(),
            range,
        })?;
        let before = source.queries(&QueryFilter {
            service: service.clone(),
            range: previous,
        })?;
        let mut pools = source.pools(range)?;
        pools.retain(|p| service.as_ref().is_none_or(|s| *s == p.service));
        pools.sort_by(|a, b| {
            b.peak_utilization
                .total_cmp(&a.peak_utilization)
                .then_with(|| b.timeouts.cmp(&a.timeouts))
                .then_with(|| (&a.service, &a.instance_id, &a.pool).cmp(&(&b.service, &b.instance_id, &b.pool)))
        });
        let alerts = source.alerts(range)?.map(|mut all| {
            all.retain(|a| service.is_none() || a.service.is_none() || a.service == service);
            all
        });

        let previous_by: std::collections::HashMap<(Fingerprint, &str), &QuerySummary> = before
            .iter()
            .map(|q| ((q.fingerprint, q.service.as_str()), q))
            .collect();
        let mut regressions: Vec<Regression> = queries
            .iter()
            .filter(|q| q.calls >= MIN_CALLS)
            .filter_map(|q| {
                let was = previous_by.get(&(q.fingerprint, q.service.as_str()))?;
                if was.calls < MIN_CALLS || was.p95_ms <= 0.0 {
                    return None;
                }
                let change = (q.p95_ms - was.p95_ms) / was.p95_ms;
                (change >= REGRESSION).then(|| Regression {
                    query: q.clone(),
                    previous_calls: was.calls,
                    previous_p95_ms: was.p95_ms,
                    p95_change: change,
                })
            })
            .collect();
        regressions.sort_by(|a, b| {
            b.p95_change
                .total_cmp(&a.p95_change)
                .then_with(|| a.query.fingerprint.cmp(&b.query.fingerprint))
        });
        regressions.truncate(SECTION_ROWS);

        let mut services: Vec<&str> = queries.iter().map(|q| q.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let totals = Totals {
            calls: queries.iter().map(|q| q.calls).sum(),
            errors: queries.iter().map(|q| q.errors).sum(),
            total_ms: queries.iter().map(|q| q.total_ms).sum(),
            fingerprints: queries.len(),
            services: services.len(),
        };
        Ok(Report {
            from: crate::view::rfc3339(range.from_ms),
            to: crate::view::rfc3339(range.to_ms),
            previous_from: crate::view::rfc3339(previous.from_ms),
            previous_to: crate::view::rfc3339(previous.to_ms),
            service,
            totals,
            top_by_total_time: top(&queries, |_| true, |q| q.total_ms),
            slowest: top(&queries, |q| q.calls >= MIN_CALLS, |q| q.p99_ms),
            most_failing: top(&queries, |q| q.errors > 0, |q| q.errors as f64),
            regressions,
            pools,
            alerts,
        })
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let view = ReportView::new(self, "");
        let mut out = String::new();
        out.push_str(&format!("# {}\n\n{}\n\n", markdown_text(&view.title), view.subtitle));
        out.push_str(&format!("{}\n\n", view.totals_line));
        for section in &view.sections {
            out.push_str(&format!("## {}\n\n", section.title));
            if section.rows.is_empty() {
                out.push_str(&format!("{}\n\n", section.empty));
                continue;
            }
            out.push_str("| Fingerprint | Query | Service | Calls | Errors | Error rate | Total | Mean | p95 | p99 |");
            out.push_str(if section.note.is_empty() { "\n" } else { " Change |\n" });
            out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|");
            out.push_str(if section.note.is_empty() { "\n" } else { "---|\n" });
            for r in &section.rows {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.fingerprint,
                    markdown_code(&r.text),
                    markdown_text(&r.service),
                    r.calls,
                    r.errors,
                    r.error_rate,
                    r.total,
                    r.mean,
                    r.p95,
                    r.p99
                ));
                if section.note.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(&format!(" {} |\n", markdown_text(&r.change)));
                }
            }
            out.push('\n');
        }
        out.push_str("## Pools\n\n");
        if view.pools.is_empty() {
            out.push_str("No pool statistics in this range.\n\n");
        } else {
            out.push_str("| Pool | Status | Max | Peak in use | Peak waiting | Acquire wait p99 | Timeouts | Errors | Health checks ok |\n");
            out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
            for p in &view.pools {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    markdown_text(&p.name),
                    markdown_text(&p.status),
                    p.max_size,
                    p.peak_in_use,
                    p.peak_waiting,
                    p.wait_p99,
                    p.timeouts,
                    p.errors,
                    p.health
                ));
            }
            out.push('\n');
        }
        out.push_str("## Alerts\n\n");
        match &view.alerts {
            None => out.push_str(&format!("{}\n", ALERTS_NOT_YET)),
            Some(alerts) if alerts.is_empty() => out.push_str("No alert was active in this range.\n"),
            Some(alerts) => {
                out.push_str("| Rule | Severity | State | What | Started | Resolved |\n|---|---|---|---|---|---|\n");
                for a in alerts {
                    out.push_str(&format!(
                        "| {} | {} | {} | {} | {} | {} |\n",
                        markdown_text(&a.rule),
                        a.severity,
                        a.state,
                        markdown_text(&a.summary),
                        a.started,
                        a.resolved
                    ));
                }
            }
        }
        out
    }

    /// The report as one self-contained HTML document; links to query pages
    /// start with `link_base` (the dashboard's address, e.g.
    /// `http://127.0.0.1:7070`).
    pub fn to_html(&self, link_base: &str) -> Result<String, askama::Error> {
        ReportDocument {
            report: ReportView::new(self, link_base.trim_end_matches('/')),
        }
        .render()
    }
}

/// What the report says when the dashboard is mounted without an alert
/// engine.
pub const ALERTS_NOT_YET: &str =
    "This dashboard is mounted without the collector's alert engine, so the alerts active in the range are not listed.";

/// Text from agents (service, instance and pool names, error classes, and
/// the sentences made of them) in Markdown: on one line, with every ASCII
/// punctuation character backslash-escaped, so nothing in it becomes a
/// link, an image, HTML, emphasis or a table column.
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// SQL in a Markdown table cell: a code span (so it shows verbatim) whose
/// fence is longer than any run of backticks in it, on one line, with
/// pipes escaped as tables require.
fn markdown_code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ").replace('|', "\\|");
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    format!("{fence} {text} {fence}")
}

/// A query line, formatted.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub href: String,
    pub fingerprint: String,
    pub text: String,
    pub service: String,
    pub calls: String,
    pub errors: String,
    pub error_rate: String,
    pub total: String,
    pub mean: String,
    pub p95: String,
    pub p99: String,
    pub change: String,
    pub failing: bool,
}

impl Line {
    fn new(q: &QuerySummary, link_base: &str, change: String) -> Line {
        Line {
            href: format!("{link_base}/queries/{}", q.fingerprint),
            fingerprint: q.fingerprint.to_string(),
            text: q.text.clone(),
            service: q.service.clone(),
            calls: count(q.calls),
            errors: count(q.errors),
            error_rate: percent(q.error_rate()),
            total: duration_ms(q.total_ms),
            mean: duration_ms(q.mean_ms),
            p95: duration_ms(q.p95_ms),
            p99: duration_ms(q.p99_ms),
            change,
            failing: q.errors > 0,
        }
    }
}

/// A section of query lines.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub title: &'static str,
    pub note: &'static str,
    pub empty: &'static str,
    pub rows: Vec<Line>,
}

/// A pool line, formatted.
#[derive(Debug, Clone)]
pub(crate) struct PoolLine {
    pub name: String,
    pub status: String,
    pub class: &'static str,
    pub max_size: u32,
    pub peak_in_use: u32,
    pub peak_utilization: String,
    pub peak_waiting: u32,
    pub wait_p99: String,
    pub timeouts: String,
    pub errors: String,
    pub health: String,
}

/// An alert line, formatted.
#[derive(Debug, Clone)]
pub(crate) struct AlertLine {
    pub rule: String,
    pub severity: String,
    pub state: String,
    pub summary: String,
    pub started: String,
    pub resolved: String,
}

/// The report formatted for reading (HTML and Markdown share it).
#[derive(Debug, Clone)]
pub(crate) struct ReportView {
    pub title: String,
    pub subtitle: String,
    pub totals_line: String,
    pub sections: Vec<Section>,
    pub pools: Vec<PoolLine>,
    pub alerts: Option<Vec<AlertLine>>,
    pub alerts_not_yet: &'static str,
}

fn parse_rfc3339(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text).map_or(0, |t| t.timestamp_millis())
}

impl ReportView {
    /// `link_base` prefixes links to query pages (empty on the dashboard).
    pub fn new(report: &Report, link_base: &str) -> ReportView {
        let line = |q: &QuerySummary| Line::new(q, link_base, String::new());
        let t = &report.totals;
        ReportView {
            title: match &report.service {
                Some(s) => format!("querypulse report: {s}"),
                None => "querypulse report".to_owned(),
            },
            subtitle: format!(
                "{} – {} UTC, compared with {} – {} UTC",
                timestamp(parse_rfc3339(&report.from)),
                timestamp(parse_rfc3339(&report.to)),
                timestamp(parse_rfc3339(&report.previous_from)),
                timestamp(parse_rfc3339(&report.previous_to)),
            ),
            totals_line: format!(
                "{} calls, {} errors ({}), {} in queries, {} fingerprints in {} services.",
                count(t.calls),
                count(t.errors),
                percent(if t.calls == 0 {
                    0.0
                } else {
                    t.errors as f64 / t.calls as f64
                }),
                duration_ms(t.total_ms),
                count(t.fingerprints as u64),
                t.services
            ),
            sections: vec![
                Section {
                    title: "Top queries by total time",
                    note: "",
                    empty: "No query ran in this range.",
                    rows: report.top_by_total_time.iter().map(line).collect(),
                },
                Section {
                    title: "Slowest queries (p99)",
                    note: "",
                    empty: "No query ran often enough in this range to rank by p99.",
                    rows: report.slowest.iter().map(line).collect(),
                },
                Section {
                    title: "Most failing queries",
                    note: "",
                    empty: "No query failed in this range.",
                    rows: report.most_failing.iter().map(line).collect(),
                },
                Section {
                    title: "Regressions versus the previous period (p95)",
                    note: "change",
                    empty: "No query got slower by 20 % or more at the 95th percentile.",
                    rows: report
                        .regressions
                        .iter()
                        .map(|r| {
                            let t = trend::compare(r.query.p95_ms, r.previous_p95_ms, true);
                            Line::new(
                                &r.query,
                                link_base,
                                format!("{} (p95 was {})", t.text(), duration_ms(r.previous_p95_ms)),
                            )
                        })
                        .collect(),
                },
            ],
            pools: report
                .pools
                .iter()
                .map(|p| {
                    let assessment = status::pool(p);
                    PoolLine {
                        name: format!("{} / {} / {}", p.service, p.instance_id, p.pool),
                        status: if assessment.reasons.is_empty() {
                            assessment.class().to_owned()
                        } else {
                            format!("{}: {}", assessment.class(), assessment.summary())
                        },
                        class: assessment.class(),
                        max_size: p.max_size,
                        peak_in_use: p.in_use.peak,
                        peak_utilization: percent(p.peak_utilization),
                        peak_waiting: p.waiting.peak,
                        wait_p99: duration_ms(p.acquire_wait_p99_ms),
                        timeouts: count(p.timeouts),
                        errors: count(p.errors),
                        health: p.health.as_ref().map_or("–".to_owned(), |h| percent(h.success_rate)),
                    }
                })
                .collect(),
            alerts: report.alerts.as_ref().map(|alerts| {
                alerts
                    .iter()
                    .map(|a| AlertLine {
                        rule: a.rule.clone(),
                        severity: format!("{:?}", a.severity).to_lowercase(),
                        state: format!("{:?}", a.state).to_lowercase(),
                        summary: a.summary.clone(),
                        started: timestamp(a.started_ms),
                        resolved: a.resolved_ms.map(timestamp).unwrap_or_default(),
                    })
                    .collect()
            }),
            alerts_not_yet: ALERTS_NOT_YET,
        }
    }
}

#[derive(Template)]
#[template(path = "report_document.html")]
struct ReportDocument {
    report: ReportView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_are_plain_text_in_markdown() {
        assert_eq!(markdown_text("a | b\nc `x`"), "a \\| b c \\`x\\`");
        assert_eq!(
            markdown_text("[click](http://evil.example) <img src=x> **b**"),
            "\\[click\\]\\(http\\:\\/\\/evil\\.example\\) \\<img src\\=x\\> \\*\\*b\\*\\*"
        );
        assert_eq!(markdown_text("checkout-1 ünïcode"), "checkout\\-1 ünïcode");
    }

    #[test]
    fn sql_is_a_code_span_in_its_column() {
        assert_eq!(markdown_code("select 1"), "` select 1 `");
        assert_eq!(markdown_code("select `a` | b\nfrom t"), "`` select `a` \\| b from t ``");
        assert_eq!(markdown_code("x ``` y"), "```` x ``` y ````");
    }
}
