//! `/agents`: every agent instance — version, host, last report, and the
//! agent's own counters (drops, overflow, reconnects, outbox) — and how far
//! each remote-write destination has got.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::{Layout, PageError, Request, html, read};
use crate::Dashboard;
use crate::format::{ago, bytes, count, timestamp};
use crate::status::agent_drops;

struct Row {
    service: String,
    instance: String,
    host: String,
    pid: u32,
    version: String,
    db_system: String,
    labels: String,
    started: String,
    last_seen: String,
    last_seen_at: String,
    interval: String,
    batches: String,
    silent: bool,
    dropping: bool,
    dropped_batches: String,
    rejected_batches: String,
    dropped_records: String,
    dropped_samples: String,
    overflow: String,
    reconnects: String,
    outbox: String,
}

/// One remote-write destination.
struct Destination {
    name: String,
    sent_until: String,
    sent_until_at: String,
    behind: bool,
    histograms: String,
    requests: String,
    retries: String,
    dropped: String,
    late_calls: String,
    last_error: String,
}

/// A destination counts as behind when its last interval is older than this.
const BEHIND_AFTER_MS: i64 = 5 * 60_000;

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    layout: Layout,
    rows: Vec<Row>,
    destinations: Vec<Destination>,
    silent: usize,
    dropping: usize,
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let service = request.view.service.clone();
    let source = dashboard.source.clone();
    let (services, mut agents, remote_write) =
        read(move || Ok((source.services()?, source.agents()?, source.remote_write()?))).await?;
    let destinations = remote_write
        .iter()
        .map(|d| Destination {
            name: d.name.clone(),
            sent_until: ago(request.now, d.sent_until_ms),
            sent_until_at: timestamp(d.sent_until_ms),
            behind: d.last_error.is_some() || request.now - d.sent_until_ms > BEHIND_AFTER_MS,
            histograms: count(d.histograms_sent),
            requests: format!("{} ({})", count(d.requests), bytes(d.bytes_sent)),
            retries: count(d.retries),
            dropped: count(d.dropped_requests),
            late_calls: count(d.late_calls),
            last_error: d.last_error.clone().unwrap_or_default(),
        })
        .collect();
    agents.retain(|a| service.as_ref().is_none_or(|s| *s == a.service));
    agents.sort_by(|a, b| (b.silent, &a.service, b.last_seen_ms).cmp(&(a.silent, &b.service, a.last_seen_ms)));
    let rows: Vec<Row> = agents
        .iter()
        .map(|a| {
            let c = &a.counters;
            Row {
                service: a.service.clone(),
                instance: a.instance_id.clone(),
                host: a.host.clone(),
                pid: a.pid,
                version: a.agent_version.clone(),
                db_system: a.db_system.clone(),
                labels: a
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                started: ago(request.now, a.started_at_ms),
                last_seen: ago(request.now, a.last_seen_ms),
                last_seen_at: timestamp(a.last_seen_ms),
                interval: format!("{} s", f64::from(a.interval_ms) / 1_000.0),
                batches: count(a.batches),
                silent: a.silent,
                dropping: agent_drops(a) > 0,
                dropped_batches: count(c.dropped_batches),
                rejected_batches: count(c.rejected_batches),
                dropped_records: count(c.dropped_records),
                dropped_samples: count(c.dropped_samples),
                overflow: format!("{} ({} calls)", count(c.overflow_fingerprints), count(c.overflow_calls)),
                reconnects: count(c.reconnects),
                outbox: format!("{} in {} batches", bytes(c.outbox_bytes), count(c.outbox_batches)),
            }
        })
        .collect();
    let layout = request.layout("Agents", "agents", "/agents", &services);
    html(AgentsPage {
        layout,
        destinations,
        silent: rows.iter().filter(|r| r.silent).count(),
        dropping: rows.iter().filter(|r| r.dropping).count(),
        rows,
    })
}
