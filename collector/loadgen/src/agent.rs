//! A simulated agent speaking `querypulse.v1` for real: one `Report` stream,
//! `Hello` first, batches numbered from 1, texts once per stream, a pipeline
//! of unacknowledged batches, and everything unacknowledged resent after a
//! reconnect. Batches are not stored: a window's content is a pure function of
//! (instance, window), so the outbox keeps only sequence numbers and window
//! starts and rebuilds a batch whenever it is (re)sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use querypulse_proto::wire::v1::{self as wire, ingest_client::IngestClient};
use querypulse_proto::{CollectorMessage, Hello};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;

use super::schedule::{Phase, WindowSource};
use super::{Event, Instance, Lane, Plan, ReconnectBackoff};
use querypulse_proto::now_ms;

/// Windows kept for resending before the oldest is dropped (an hour at 10 s),
/// like the agent's bounded outbox.
const OUTBOX_WINDOWS: usize = 360;
/// Largest message accepted from the collector.
const MAX_INBOUND_BYTES: usize = 1 << 20;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every simulated agent shares.
#[derive(Debug)]
pub(crate) struct AgentShared {
    pub plan: Arc<Plan>,
    pub endpoint: Endpoint,
    pub token: Option<AsciiMetadataValue>,
    /// Per service, the text of every fingerprint.
    pub texts: Vec<Vec<wire::FingerprintText>>,
}

struct Entry {
    seq: u64,
    window_start_ms: i64,
    sent_at: Option<Instant>,
}

struct Stream {
    tx: mpsc::Sender<wire::AgentMessage>,
    inbound: tonic::Streaming<wire::CollectorMessage>,
    texts_sent: bool,
}

/// Runs one simulated agent until its windows are delivered or the phase
/// says stop.
pub(crate) async fn run(lane: Lane, shared: Arc<AgentShared>) {
    let Lane {
        instance,
        mut source,
        mut phase,
        events,
    } = lane;
    let plan = &shared.plan;
    let hello = Hello {
        service: plan.services[instance.service].clone(),
        instance_id: instance.id.clone(),
        host: format!("loadgen-host-{:04}", instance.index),
        pid: 10_000 + instance.index,
        agent_version: concat!("loadgen-", env!("CARGO_PKG_VERSION")).to_owned(),
        labels: [("simulated".to_owned(), "true".to_owned())].into(),
        started_at_ms: now_ms(),
        interval_ms: plan.interval.as_millis() as u32,
        ..Hello::default()
    };
    let mut outbox: VecDeque<Entry> = VecDeque::new();
    // Entries before `cursor` have been sent on the current stream.
    let mut cursor = 0usize;
    let mut next_seq = 1u64;
    let mut stream: Option<Stream> = None;
    let mut streams_opened = 0u64;
    let mut backoff = ReconnectBackoff::new();
    let mut retry_at = Instant::now();

    loop {
        let current = *phase.borrow();
        if current == Phase::Stop {
            break;
        }
        // A live agent keeps every window (dropping the oldest when its
        // outbox is full); a backfill creates windows only as acks make room.
        let live = matches!(source, WindowSource::Live { .. });
        let room = |len: usize| live || len < plan.in_flight;
        if current == Phase::Running {
            let now = now_ms();
            while room(outbox.len())
                && let Some(window_start_ms) = source.take_due(now)
            {
                if outbox.len() >= OUTBOX_WINDOWS {
                    outbox.pop_front();
                    cursor = cursor.saturating_sub(1);
                    let _ = events.send(Event::Dropped).await;
                }
                outbox.push_back(Entry {
                    seq: next_seq,
                    window_start_ms,
                    sent_at: None,
                });
                next_seq += 1;
            }
        }
        let producing = current == Phase::Running && source.wait_ms(now_ms()).is_some();
        if !producing && outbox.is_empty() {
            break;
        }
        let next_window = match source.wait_ms(now_ms()) {
            Some(wait) if current == Phase::Running && room(outbox.len()) => {
                Instant::now() + Duration::from_millis(wait)
            }
            // Nothing becomes due, or there is no room: wake on the stream or
            // the phase only.
            _ => Instant::now() + Duration::from_secs(3_600),
        };

        let Some(link) = stream.as_mut() else {
            tokio::select! {
                _ = sleep_until(retry_at) => match connect(&shared, &hello).await {
                    Ok(opened) => {
                        if streams_opened > 0 {
                            let _ = events.send(Event::Reconnected).await;
                        }
                        streams_opened += 1;
                        backoff.reset();
                        cursor = 0;
                        for entry in &mut outbox {
                            entry.sent_at = None;
                        }
                        stream = Some(opened);
                    }
                    Err(status) => {
                        tracing::debug!(%status, instance = %instance.id, "cannot open a stream");
                        let _ = events.send(Event::StreamFailed).await;
                        retry_at = Instant::now() + backoff.next_delay();
                    }
                },
                _ = sleep_until(next_window) => {}
                _ = phase.changed() => {}
            }
            continue;
        };

        let can_send = cursor < outbox.len() && cursor < plan.in_flight;
        let mut broken = false;
        tokio::select! {
            permit = link.tx.reserve(), if can_send => match permit {
                Ok(permit) => {
                    let entry = &mut outbox[cursor];
                    let texts = (!link.texts_sent).then(|| shared.texts[instance.service].clone());
                    link.texts_sent = true;
                    permit.send(build_batch(plan, &instance, entry.seq, entry.window_start_ms, texts));
                    entry.sent_at = Some(Instant::now());
                    cursor += 1;
                }
                Err(_) => broken = true,
            },
            reply = link.inbound.message() => match reply {
                Ok(Some(message)) => {
                    let (seq, outcome) = match CollectorMessage::try_from(message) {
                        Ok(CollectorMessage::Ack { seq, duplicate }) => (seq, Ok(duplicate)),
                        Ok(CollectorMessage::Reject { seq, reason }) => (seq, Err(reason)),
                        Ok(CollectorMessage::Config(_)) => continue,
                        Err(error) => {
                            tracing::warn!(%error, "malformed message from the collector");
                            continue;
                        }
                    };
                    if let Some(at) = outbox.iter().position(|e| e.seq == seq) {
                        let entry = outbox.remove(at).expect("position is in range");
                        if at < cursor {
                            cursor -= 1;
                        }
                        let event = match outcome {
                            Ok(duplicate) => Event::Acked {
                                service: instance.service,
                                instance: instance.index,
                                window_start_ms: entry.window_start_ms,
                                latency: entry.sent_at.map(|t| t.elapsed()).unwrap_or_default(),
                                duplicate,
                            },
                            Err(reason) => Event::Rejected { reason },
                        };
                        let _ = events.send(event).await;
                    }
                }
                Ok(None) => broken = true,
                Err(status) => {
                    tracing::debug!(%status, instance = %instance.id, "stream broke");
                    broken = true;
                }
            },
            _ = sleep_until(next_window) => {}
            _ = phase.changed() => {}
        }
        if broken {
            stream = None;
            let _ = events.send(Event::StreamFailed).await;
            retry_at = Instant::now() + backoff.next_delay();
        }
    }
    let _ = events
        .send(Event::Finished {
            unacked: outbox.len() as u64,
        })
        .await;
}

async fn connect(shared: &AgentShared, hello: &Hello) -> Result<Stream, tonic::Status> {
    let opening = async {
        let channel = shared
            .endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
        let mut client = IngestClient::new(channel).max_decoding_message_size(MAX_INBOUND_BYTES);
        let (tx, rx) = mpsc::channel(shared.plan.in_flight.max(1));
        tx.try_send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello(wire::Hello::from(hello))),
        })
        .expect("a new channel has room for the hello");
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &shared.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        let response = client.report(request).await?;
        Ok(Stream {
            tx,
            inbound: response.into_inner(),
            texts_sent: false,
        })
    };
    tokio::select! {
        result = opening => result,
        _ = sleep(CONNECT_TIMEOUT) => Err(tonic::Status::deadline_exceeded("connecting took too long")),
    }
}

/// The batch `instance` reports for one window, from the pre-encoded variants.
fn build_batch(
    plan: &Plan,
    instance: &Instance,
    seq: u64,
    window_start_ms: i64,
    texts: Option<Vec<wire::FingerprintText>>,
) -> wire::AgentMessage {
    let fingerprints = &plan.fingerprints[instance.service];
    let queries = fingerprints
        .iter()
        .enumerate()
        .map(|(index, fingerprint)| {
            let v = plan.workload.variant(instance.index, window_start_ms, index);
            wire::QueryStats {
                fingerprint: fingerprint.get(),
                calls: v.calls,
                errors: v.errors,
                error_classes: if v.errors > 0 {
                    vec![wire::ErrorClassCount {
                        class: v.error_class.to_owned(),
                        count: v.errors,
                    }]
                } else {
                    Vec::new()
                },
                rows: v.rows,
                sum_us: v.sum_us,
                sum_squares_us: v.sum_squares_us,
                min_us: v.min_us,
                max_us: v.max_us,
                latency_histogram: v.histogram.clone(),
                outliers: 0,
            }
        })
        .collect();
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(wire::Batch {
            seq,
            window_start_unix_ms: window_start_ms,
            window_length_ms: plan.interval.as_millis() as u32,
            queries,
            fingerprint_texts: texts.unwrap_or_default(),
            counters: Some(wire::AgentCounters::default()),
            ..wire::Batch::default()
        })),
    }
}
