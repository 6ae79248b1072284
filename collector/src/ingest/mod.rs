//! The gRPC ingest service and the single writer behind it.
//!
//! Each agent stream is served by its own task: it checks the token, takes the
//! `Hello`, validates every batch and hands it to the writer. The writer is one
//! OS thread that owns all writes: it logs whatever batches are queued with
//! one fsync for the whole group, applies them, and only then lets the stream
//! tasks acknowledge them. Acknowledgements go out in the order the batches
//! came in. Between groups (at least once a second) it runs the store's
//! maintenance: retention, sealing, checkpoints, a memtable flush when due.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use querypulse_proto::wire::v1 as wire;
use querypulse_proto::{AgentMessage, Batch, CollectorMessage, Fingerprint, FingerprintText, Hello};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tonic::Status;

use crate::agent_settings::AgentSettings;
use crate::config::ScopedToken;
use querypulse_store::{ApplyOutcome, BatchRequest, Store, StoreError, StoreWriter};
pub(crate) use wire_format::IngestGrpc;
use wire_format::MessageReader;

mod wire_format;

/// Batches applied together before one fsync.
const MAX_GROUP: usize = 512;
/// How often the writer runs a maintenance pass (retention, sealing, and a
/// memtable flush when one is due even without new batches).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);
/// Requests queued for the writer before stream tasks wait.
const WRITER_QUEUE: usize = 1_024;
/// Unacknowledged batches per stream before the stream stops reading.
const PIPELINE: usize = 64;

/// Limits on what the ingest accepts. The oldest window accepted follows the
/// store's raw retention.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// A window may start at most this far ahead of the collector's clock.
    pub max_future: Duration,
    /// Encoded bytes of batches being decoded, queued or written, over all
    /// streams. A stream reserves a message's share before decoding it and
    /// reads nothing more until it has, so thousands of agents sending at
    /// once wait (HTTP/2 flow control holds them back) instead of growing
    /// the collector's memory; decoded, a batch takes several times its
    /// encoded size.
    pub pending_bytes: usize,
    /// Bytes of fingerprint texts one stream may hold until the store has
    /// them (an agent sends each text once per stream, with the first batch
    /// that refers to it, so this is at most about one message's worth); a
    /// stream that sends more gets `RESOURCE_EXHAUSTED`.
    pub stream_text_bytes: usize,
    /// The same over all streams.
    pub text_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_future: Duration::from_secs(300),
            pending_bytes: 8 << 20,
            stream_text_bytes: 16 << 20,
            text_bytes: 256 << 20,
        }
    }
}

/// The fingerprint texts a stream holds until the store has them, counted
/// in bytes against the stream's limit and, through `total`, against the
/// limit of all streams; what a stream held is given back when it ends.
struct StreamTexts {
    texts: HashMap<Fingerprint, String>,
    bytes: usize,
    total: Arc<AtomicUsize>,
}

impl StreamTexts {
    fn new(total: Arc<AtomicUsize>) -> StreamTexts {
        StreamTexts {
            texts: HashMap::new(),
            bytes: 0,
            total,
        }
    }

    fn cost(text: &str) -> usize {
        text.len() + 64
    }

    /// Keeps `text`, or says which limit it would cross.
    fn insert(&mut self, fingerprint: Fingerprint, text: &str, limits: &IngestLimits) -> Result<(), Status> {
        if self.texts.contains_key(&fingerprint) {
            return Ok(());
        }
        let cost = StreamTexts::cost(text);
        if self.bytes + cost > limits.stream_text_bytes {
            return Err(Status::resource_exhausted(format!(
                "this stream holds more than {} bytes of fingerprint texts the store does not have yet; send each text with the first batch that refers to it",
                limits.stream_text_bytes
            )));
        }
        let before = self.total.fetch_add(cost, Ordering::Relaxed);
        if before + cost > limits.text_bytes {
            self.total.fetch_sub(cost, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "the collector holds more than {} bytes of fingerprint texts the store does not have yet; retry later",
                limits.text_bytes
            )));
        }
        self.bytes += cost;
        self.texts.insert(fingerprint, text.to_owned());
        Ok(())
    }

    /// Forgets the texts not in `keep`.
    fn retain(&mut self, keep: &HashSet<Fingerprint>) {
        let mut freed = 0;
        self.texts.retain(|fingerprint, text| {
            let kept = keep.contains(fingerprint);
            if !kept {
                freed += StreamTexts::cost(text);
            }
            kept
        });
        self.bytes -= freed;
        self.total.fetch_sub(freed, Ordering::Relaxed);
    }
}

impl Drop for StreamTexts {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

enum WriteRequest {
    Hello {
        hello: Arc<Hello>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Batch {
        request: Box<BatchRequest>,
        reply: oneshot::Sender<Result<ApplyOutcome, StoreError>>,
    },
    Maintain,
}

/// Handle to the writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<WriteRequest>,
}

impl Writer {
    /// Starts the writer thread and its maintenance timer. The thread runs
    /// until every `Writer` clone is gone, then takes a final checkpoint.
    pub(crate) fn spawn(writer: StoreWriter) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let thread = std::thread::Builder::new()
            .name("querypulse-writer".into())
            .spawn(move || write_loop(writer, rx))?;
        let timer = tx.downgrade();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(MAINTENANCE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                let Some(tx) = timer.upgrade() else { break };
                // A full queue means the writer is busy: skip this pass.
                let _ = tx.try_send(WriteRequest::Maintain);
            }
        });
        Ok((Writer { tx }, thread))
    }

    async fn register(&self, hello: Arc<Hello>) -> Result<(), Status> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WriteRequest::Hello { hello, reply })
            .await
            .map_err(|_| Status::unavailable("the collector is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the collector is shutting down"))?
            .map_err(storage_status)
    }
}

fn storage_status(error: StoreError) -> Status {
    match error {
        // The writer logs the condition once, and a summary while it lasts.
        StoreError::DiskFull(message) => Status::unavailable(format!("{message}; retry later")),
        error => {
            tracing::error!(%error, "storage failed while ingesting");
            Status::unavailable("the collector cannot store data right now; retry later")
        }
    }
}

/// How often the writer reports, while the disk stays full, how much it
/// refused.
const DISK_FULL_SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The writer's account of a full disk: logged when it starts, summarized
/// every [`DISK_FULL_SUMMARY_EVERY`] while it lasts, and when it ends.
#[derive(Default)]
struct DiskFullLog {
    since: Option<std::time::Instant>,
    last_summary: Option<std::time::Instant>,
    refused: u64,
    refused_since_summary: u64,
}

impl DiskFullLog {
    fn refused(&mut self, message: &str, requests: u64) {
        let now = std::time::Instant::now();
        if self.since.is_none() {
            tracing::error!("{message}");
            self.since = Some(now);
            self.last_summary = Some(now);
        }
        self.refused += requests;
        self.refused_since_summary += requests;
        if self.last_summary.is_some_and(|at| now - at >= DISK_FULL_SUMMARY_EVERY) {
            tracing::warn!(
                refused = self.refused_since_summary,
                "the disk is still full: {} batches and connections refused in the last {} s",
                self.refused_since_summary,
                DISK_FULL_SUMMARY_EVERY.as_secs()
            );
            self.last_summary = Some(now);
            self.refused_since_summary = 0;
        }
    }

    fn wrote(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                refused = self.refused,
                "disk space is back: ingest resumed after {} s, {} batches and connections refused meanwhile (agents resend them)",
                since.elapsed().as_secs(),
                self.refused
            );
            *self = DiskFullLog::default();
        }
    }
}

fn write_loop(mut writer: StoreWriter, mut rx: mpsc::Receiver<WriteRequest>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut disk = DiskFullLog::default();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut batches = Vec::new();
        let mut replies = Vec::new();
        let mut maintain = false;
        for request in group.drain(..) {
            match request {
                WriteRequest::Hello { hello, reply } => {
                    let registered = writer.register(&hello);
                    match &registered {
                        Err(StoreError::DiskFull(message)) => disk.refused(message, 1),
                        Ok(()) => disk.wrote(),
                        Err(_) => {}
                    }
                    let _ = reply.send(registered);
                }
                WriteRequest::Batch { request, reply } => {
                    batches.push(*request);
                    replies.push(reply);
                }
                WriteRequest::Maintain => maintain = true,
            }
        }
        if !batches.is_empty() {
            // Acknowledge only what is logged on disk: one fsync covers the group.
            match writer.write(batches) {
                Ok(outcomes) => {
                    disk.wrote();
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(StoreError::DiskFull(message)) => {
                    disk.refused(&message, replies.len() as u64);
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::DiskFull(message.clone())));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "writing a group of batches failed; agents will resend");
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Io(error.to_string())));
                    }
                }
            }
        }
        if maintain && let Err(error) = writer.maintain() {
            tracing::error!(%error, "store maintenance failed");
        }
    }
    if let Err(error) = writer.checkpoint() {
        tracing::error!(%error, "final checkpoint failed; the log will be replayed at the next start");
    }
}

/// The `querypulse.v1.Ingest` service.
pub(crate) struct IngestService {
    writer: Writer,
    store: Store,
    token: Option<String>,
    scoped: Vec<Arc<ScopedToken>>,
    limits: IngestLimits,
    settings: watch::Receiver<AgentSettings>,
    shutdown: watch::Receiver<bool>,
    budget: Arc<Semaphore>,
    /// Bytes of fingerprint texts all streams hold.
    text_bytes: Arc<AtomicUsize>,
}

impl IngestService {
    pub(crate) fn new(
        writer: Writer,
        store: Store,
        token: Option<String>,
        scoped: Vec<ScopedToken>,
        limits: IngestLimits,
        settings: watch::Receiver<AgentSettings>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        IngestService {
            writer,
            store,
            token,
            scoped: scoped.into_iter().map(Arc::new).collect(),
            budget: Arc::new(Semaphore::new(limits.pending_bytes.clamp(1, Semaphore::MAX_PERMITS))),
            text_bytes: Arc::new(AtomicUsize::new(0)),
            limits,
            settings,
            shutdown,
        }
    }

    /// Checks the stream's bearer token; returns the services it may
    /// report for (`None`: any).
    pub(crate) fn authorize(&self, headers: &http::HeaderMap) -> Result<Option<Arc<ScopedToken>>, Status> {
        if self.token.is_none() && self.scoped.is_empty() {
            return Ok(None);
        }
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let matches = |expected: &str| querypulse_domain::token::tokens_match(presented, expected);
        if self.token.as_deref().is_some_and(matches) {
            return Ok(None);
        }
        match self.scoped.iter().find(|scoped| matches(&scoped.token)) {
            Some(scoped) => Ok(Some(scoped.clone())),
            None => Err(Status::unauthenticated("the bearer token is not valid")),
        }
    }

    /// Serves one `Report` stream from its own task; the receiver carries
    /// the replies, ending with an error status if the stream fails.
    fn open_stream(
        &self,
        inbound: MessageReader,
        scope: Option<Arc<ScopedToken>>,
    ) -> mpsc::Receiver<Result<wire::CollectorMessage, Status>> {
        let (out, rx) = mpsc::channel(PIPELINE);
        let stream = StreamTask {
            inbound,
            scope,
            out,
            writer: self.writer.clone(),
            store: self.store.clone(),
            limits: self.limits,
            settings: self.settings.clone(),
            shutdown: self.shutdown.clone(),
            budget: self.budget.clone(),
            text_bytes: self.text_bytes.clone(),
        };
        tokio::spawn(stream.run());
        rx
    }
}

type Outbound = mpsc::Sender<Result<wire::CollectorMessage, Status>>;

/// An acknowledgement in the making, kept in arrival order.
enum Pending {
    Ready(CollectorMessage),
    /// The stream ends with this status.
    Fail(Status),
    Write {
        seq: u64,
        answer: oneshot::Receiver<Result<ApplyOutcome, StoreError>>,
        /// The batch's share of the ingest budget, returned once it is
        /// written.
        _reserved: OwnedSemaphorePermit,
    },
}

struct StreamTask {
    inbound: MessageReader,
    /// The services the stream's token may report for (`None`: any).
    scope: Option<Arc<ScopedToken>>,
    out: Outbound,
    writer: Writer,
    store: Store,
    limits: IngestLimits,
    settings: watch::Receiver<AgentSettings>,
    shutdown: watch::Receiver<bool>,
    budget: Arc<Semaphore>,
    text_bytes: Arc<AtomicUsize>,
}

/// Reads the next message once its share of the ingest budget is reserved
/// (all of the budget at most, so one huge message still passes alone): a
/// stream waiting for the budget has read no more than the message's prefix.
/// `None` when the agent ended the stream. Cancel-safe: an interrupted read
/// resumes where it stopped and reserves again.
async fn read_message(
    inbound: &mut MessageReader,
    budget: &Arc<Semaphore>,
    limits: &IngestLimits,
) -> Result<Option<(wire::AgentMessage, OwnedSemaphorePermit)>, Status> {
    let Some(len) = inbound.next_len().await? else {
        return Ok(None);
    };
    let total = limits.pending_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let permits = u32::try_from(len.clamp(1, total)).unwrap_or(u32::MAX);
    let permit = budget
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| Status::unavailable("the collector is shutting down"))?;
    Ok(Some((inbound.message().await?, permit)))
}

impl StreamTask {
    async fn run(mut self) {
        let hello = match read_message(&mut self.inbound, &self.budget, &self.limits).await {
            Err(status) => return self.fail(status).await,
            Ok(None) => return,
            Ok(Some((message, _permit))) => match AgentMessage::try_from(message) {
                Ok(AgentMessage::Hello(hello)) => Arc::new(hello),
                Ok(AgentMessage::Batch(_)) => {
                    return self
                        .fail(Status::invalid_argument(
                            "the first message of a stream must be a hello",
                        ))
                        .await;
                }
                Err(error) => return self.fail(Status::invalid_argument(error.to_string())).await,
            },
        };
        if let Some(scope) = self.scope.clone()
            && !scope.allows(&hello.service)
        {
            return self
                .fail(Status::permission_denied(format!(
                    "this ingest token may report only for the services {:?}, not {:?}",
                    scope.services, hello.service
                )))
                .await;
        }
        if let Err(status) = self.writer.register(hello.clone()).await {
            return self.fail(status).await;
        }
        tracing::info!(service = %hello.service, instance = %hello.instance_id, host = %hello.host, "agent connected");

        let (pending_tx, pending_rx) = mpsc::channel(PIPELINE);
        // Settings set through the API reach the agent now and on every change.
        let settings = *self.settings.borrow_and_update();
        if !settings.is_empty() {
            let _ = pending_tx
                .send(Pending::Ready(CollectorMessage::Config(settings.to_update())))
                .await;
        }
        let acker = tokio::spawn(acknowledge(pending_rx, self.out.clone()));
        let mut texts = StreamTexts::new(self.text_bytes.clone());
        loop {
            let message = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => break,
                Ok(()) = self.settings.changed() => None,
                message = read_message(&mut self.inbound, &self.budget, &self.limits) => Some(message),
            };
            let Some(message) = message else {
                let settings = *self.settings.borrow_and_update();
                if pending_tx
                    .send(Pending::Ready(CollectorMessage::Config(settings.to_update())))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            };
            let (message, permit) = match message {
                Ok(Some(read)) => read,
                Ok(None) => break,
                Err(status) => {
                    tracing::warn!(%status, service = %hello.service, instance = %hello.instance_id, "agent stream ended with an error");
                    // After the acknowledgements already due, the agent
                    // learns why (if it is still there to hear it).
                    let _ = pending_tx.send(Pending::Fail(status)).await;
                    break;
                }
            };
            let seq = match &message.kind {
                Some(wire::agent_message::Kind::Batch(batch)) => batch.seq,
                _ => 0,
            };
            let pending = match AgentMessage::try_from(message) {
                Err(error) => reject(&hello, seq, error.to_string()),
                Ok(AgentMessage::Hello(_)) => {
                    // The acknowledgements already due go out first.
                    tracing::warn!(service = %hello.service, instance = %hello.instance_id, "hello sent twice on one stream");
                    let _ = pending_tx
                        .send(Pending::Fail(Status::invalid_argument(
                            "hello sent twice on one stream",
                        )))
                        .await;
                    break;
                }
                Ok(AgentMessage::Batch(batch)) => match self.check_time(&batch) {
                    Err(reason) => reject(&hello, seq, reason),
                    Ok(()) => {
                        // A text is kept until the store has it: then the
                        // stream needs it no more (thousands of streams would
                        // otherwise each hold every text of their service).
                        if !texts.texts.is_empty() {
                            let lacking: HashSet<Fingerprint> = self
                                .store
                                .lacking_texts(texts.texts.keys().copied())
                                .into_iter()
                                .collect();
                            texts.retain(&lacking);
                        }
                        let new_texts: HashSet<Fingerprint> = self
                            .store
                            .lacking_texts(batch.texts.iter().map(|t| t.fingerprint))
                            .into_iter()
                            .collect();
                        let kept = batch
                            .texts
                            .iter()
                            .filter(|t| new_texts.contains(&t.fingerprint))
                            .try_for_each(|t| texts.insert(t.fingerprint, &t.text, &self.limits));
                        if let Err(status) = kept {
                            // Nothing of this batch is applied; the
                            // acknowledgements owed go out first.
                            tracing::warn!(service = %hello.service, instance = %hello.instance_id, %status, "refused a stream's fingerprint texts");
                            let _ = pending_tx.send(Pending::Fail(status)).await;
                            break;
                        }
                        // Only the texts the store lacks travel on: after
                        // the first windows that is none.
                        let mut offered: Vec<FingerprintText> = self
                            .store
                            .lacking_texts(batch.referenced_fingerprints())
                            .into_iter()
                            .filter_map(|fp| {
                                texts.texts.get(&fp).map(|text| FingerprintText {
                                    fingerprint: fp,
                                    text: text.clone(),
                                })
                            })
                            .collect();
                        offered.sort_by_key(|t| t.fingerprint);
                        offered.dedup_by_key(|t| t.fingerprint);
                        let (reply, answer) = oneshot::channel();
                        let request = BatchRequest {
                            hello: hello.clone(),
                            batch,
                            texts: offered,
                        };
                        let request = WriteRequest::Batch {
                            request: Box::new(request),
                            reply,
                        };
                        if self.writer.tx.send(request).await.is_err() {
                            break;
                        }
                        Pending::Write {
                            seq,
                            answer,
                            _reserved: permit,
                        }
                    }
                },
            };
            if pending_tx.send(pending).await.is_err() {
                break;
            }
        }
        // Let every batch already taken be acknowledged before the stream ends.
        drop(pending_tx);
        let _ = acker.await;
        tracing::info!(service = %hello.service, instance = %hello.instance_id, "agent disconnected");
    }

    fn check_time(&self, batch: &Batch) -> Result<(), String> {
        let now = self.store.now_ms();
        let max_future_ms = self.limits.max_future.as_millis() as i64;
        let future_ms = batch.window.start_ms.saturating_sub(now);
        if future_ms > max_future_ms {
            return Err(format!(
                "window starts {future_ms} ms in the future; check the agent host's clock"
            ));
        }
        // A window that has begun may be sent before it ends (an agent
        // flushing as it stops); one that has not begun comes from a clock
        // running ahead, and must have ended by that clock.
        let end_ahead_ms = batch.window.end_ms().saturating_sub(now);
        if future_ms > 0 && end_ahead_ms > max_future_ms {
            return Err(format!(
                "window starts {future_ms} ms in the future and ends {end_ahead_ms} ms in the future; check the agent host's clock"
            ));
        }
        let age_ms = now.saturating_sub(batch.window.end_ms());
        let max_age_ms = self.store.retention().raw().as_millis() as i64;
        if age_ms > max_age_ms {
            return Err(format!(
                "window ended {age_ms} ms ago, beyond the raw retention of {max_age_ms} ms"
            ));
        }
        Ok(())
    }

    async fn fail(self, status: Status) {
        // Refusals for a condition the writer reports (a full disk) would
        // otherwise be logged once per agent and retry.
        if status.code() == tonic::Code::Unavailable {
            tracing::debug!(%status, "refused an agent stream");
        } else {
            tracing::warn!(%status, "refused an agent stream");
        }
        let _ = self.out.send(Err(status)).await;
    }
}

fn reject(hello: &Hello, seq: u64, reason: String) -> Pending {
    tracing::warn!(service = %hello.service, instance = %hello.instance_id, seq, %reason, "rejected a batch");
    Pending::Ready(CollectorMessage::Reject { seq, reason })
}

async fn acknowledge(mut pending: mpsc::Receiver<Pending>, out: Outbound) {
    while let Some(next) = pending.recv().await {
        let message = match next {
            Pending::Ready(message) => Ok(message),
            Pending::Fail(status) => Err(status),
            Pending::Write { seq, answer, .. } => match answer.await {
                Ok(Ok(ApplyOutcome::Applied)) => Ok(CollectorMessage::Ack { seq, duplicate: false }),
                Ok(Ok(ApplyOutcome::Duplicate)) => Ok(CollectorMessage::Ack { seq, duplicate: true }),
                Ok(Ok(ApplyOutcome::Rejected(reason))) => {
                    tracing::warn!(seq, %reason, "rejected a batch");
                    Ok(CollectorMessage::Reject { seq, reason })
                }
                Ok(Err(error)) => Err(storage_status(error)),
                Err(_) => Err(Status::unavailable("the collector is shutting down")),
            },
        };
        let failed = message.is_err();
        if out
            .send(message.map(|m| wire::CollectorMessage::from(&m)))
            .await
            .is_err()
            || failed
        {
            // The agent is gone, or the stream ends with an error: the agent
            // resends whatever was not acknowledged.
            break;
        }
    }
}
