//! The task that owns the outbox and the connection to the collector.
//!
//! It keeps every batch until the collector acknowledges it, resends what is
//! unacknowledged after a reconnect, and reconnects with capped, jittered
//! exponential backoff. Nothing here is on the recording path: the service
//! only ever notices an outage through the agent's counters.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;
use prost::bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use querypulse_proto::wire::v1 as wire;
use querypulse_proto::{AgentMessage, CollectorMessage, Fingerprint, Hello};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;

use crate::outbox::Outbox;
use crate::recorder::Recorder;

/// Largest message the agent accepts from the collector.
const MAX_INBOUND_BYTES: usize = 1 << 20;
/// Batches handed to the gRPC stream ahead of the network.
const IN_FLIGHT: usize = 8;

/// What the aggregator tells the sender.
#[derive(Debug)]
pub(crate) enum ToSender {
    /// A new batch for the outbox.
    Batch(Box<wire::Batch>),
    /// Answer once every batch so far is acknowledged (or at `deadline`), then
    /// stop if `stop` is set.
    Sync {
        deadline: Instant,
        stop: bool,
        reply: oneshot::Sender<usize>,
    },
}

#[derive(Debug)]
pub(crate) struct SenderConfig {
    pub endpoint: Endpoint,
    pub token: Option<AsciiMetadataValue>,
    pub hello: Hello,
    pub outbox_bytes: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

struct PendingSync {
    through_seq: u64,
    deadline: Instant,
    stop: bool,
    reply: oneshot::Sender<usize>,
}

/// What the agent writes on its stream: the hello, or a batch from the
/// outbox with the fingerprint texts this stream has not carried yet.
enum Outgoing {
    Hello(wire::AgentMessage),
    Batch {
        batch: Bytes,
        texts: Vec<wire::FingerprintText>,
    },
}

/// `AgentMessage.batch` and `Batch.fingerprint_texts`, from the schema.
const AGENT_MESSAGE_BATCH: u32 = 2;
const BATCH_FINGERPRINT_TEXTS: u32 = 8;

/// Writes [`Outgoing`] as `AgentMessage`s and reads `CollectorMessage`s. A
/// batch is written from the outbox's encoded bytes, followed by its texts as
/// further `fingerprint_texts` fields, which protobuf appends to the
/// message: the collector decodes exactly the `Batch` it would have decoded
/// from one message built in memory, and the agent never rebuilds or copies
/// the batch to send it.
#[derive(Default)]
struct StreamCodec;

struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = tonic::Status;

    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        match item {
            Outgoing::Hello(hello) => hello
                .encode(buf)
                .map_err(|e| tonic::Status::internal(format!("cannot encode the hello: {e}"))),
            Outgoing::Batch { batch, texts } => {
                write_batch(&batch, &texts, buf);
                Ok(())
            }
        }
    }
}

/// Writes an `AgentMessage` carrying the encoded `batch` with `texts` added
/// to its `fingerprint_texts`.
fn write_batch(batch: &[u8], texts: &[wire::FingerprintText], buf: &mut impl BufMut) {
    let text_len = |t: &wire::FingerprintText| {
        let len = t.encoded_len();
        key_len(BATCH_FINGERPRINT_TEXTS) + encoded_len_varint(len as u64) + len
    };
    let len = batch.len() + texts.iter().map(text_len).sum::<usize>();
    encode_key(AGENT_MESSAGE_BATCH, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    buf.put_slice(batch);
    for text in texts {
        prost::encoding::message::encode(BATCH_FINGERPRINT_TEXTS, text, buf);
    }
}

impl Codec for StreamCodec {
    type Encode = Outgoing;
    type Decode = wire::CollectorMessage;
    type Encoder = OutgoingEncoder;
    type Decoder = tonic_prost::ProstDecoder<wire::CollectorMessage>;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct Connected {
    tx: mpsc::Sender<Outgoing>,
    inbound: tonic::Streaming<wire::CollectorMessage>,
    /// Next sequence number to hand to this stream.
    cursor: u64,
    /// Fingerprints whose text this stream has already carried.
    sent_texts: HashSet<Fingerprint>,
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Connected, tonic::Status>> + Send>>;

enum Link {
    Down { retry_at: Instant },
    Connecting(ConnectFuture),
    Up(Box<Connected>),
}

/// Capped exponential backoff with "equal jitter": each delay is uniformly
/// drawn from the upper half of the current step, so a fleet that lost its
/// collector at the same moment does not reconnect in lockstep.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    fn reset(&mut self) {
        self.step = self.initial;
    }
}

pub(crate) async fn run(config: SenderConfig, recorder: Arc<Recorder>, mut rx: mpsc::UnboundedReceiver<ToSender>) {
    let mut outbox = Outbox::new(config.outbox_bytes);
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut syncs: Vec<PendingSync> = Vec::new();
    let mut last_seq = 0u64;
    let mut streams_opened = 0u64;
    let mut link = Link::Connecting(connect(&config));
    let mut inbox_open = true;

    loop {
        let sync_deadline = syncs.iter().map(|s| s.deadline).min();
        let sync_timer = async move {
            match sync_deadline {
                Some(deadline) => sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let mut next_link = None;
        match &mut link {
            Link::Down { retry_at } => {
                tokio::select! {
                    message = rx.recv(), if inbox_open => {
                        inbox_open = accept(message, &mut outbox, &mut syncs, &mut last_seq, &recorder);
                    }
                    _ = sleep_until(*retry_at) => next_link = Some(Link::Connecting(connect(&config))),
                    _ = sync_timer => {}
                }
            }
            Link::Connecting(connecting) => {
                tokio::select! {
                    message = rx.recv(), if inbox_open => {
                        inbox_open = accept(message, &mut outbox, &mut syncs, &mut last_seq, &recorder);
                    }
                    result = connecting => {
                        next_link = Some(match result {
                            Ok(connected) => {
                                streams_opened += 1;
                                if streams_opened > 1 {
                                    recorder.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                                }
                                tracing::debug!(pending = outbox.len(), "querypulse agent connected to the collector");
                                backoff.reset();
                                Link::Up(Box::new(connected))
                            }
                            Err(status) => {
                                recorder.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                                let delay = backoff.next_delay();
                                tracing::debug!(error = %status, retry_in = ?delay, "querypulse agent cannot reach the collector");
                                Link::Down { retry_at: Instant::now() + delay }
                            }
                        });
                    }
                    _ = sync_timer => {}
                }
            }
            Link::Up(connected) => {
                let has_unsent = outbox.first_from(connected.cursor).is_some();
                let Connected {
                    tx,
                    inbound,
                    cursor,
                    sent_texts,
                } = &mut **connected;
                tokio::select! {
                    message = rx.recv(), if inbox_open => {
                        inbox_open = accept(message, &mut outbox, &mut syncs, &mut last_seq, &recorder);
                    }
                    permit = tx.reserve(), if has_unsent => match permit {
                        Ok(permit) => {
                            let entry = outbox.first_from(*cursor).expect("checked before select");
                            *cursor = entry.seq + 1;
                            let texts = unsent_texts(&entry.fingerprints, sent_texts, &recorder);
                            permit.send(Outgoing::Batch { batch: entry.batch.clone(), texts });
                        }
                        Err(_) => next_link = Some(disconnected(&recorder, &mut backoff, "stream closed")),
                    },
                    reply = inbound.message() => match reply {
                        Ok(Some(message)) => handle_reply(message, &mut outbox, &recorder),
                        Ok(None) => next_link = Some(disconnected(&recorder, &mut backoff, "collector ended the stream")),
                        Err(status) => next_link = Some(disconnected(&recorder, &mut backoff, status.message())),
                    },
                    _ = sync_timer => {}
                }
            }
        }
        if let Some(next) = next_link {
            link = next;
        }
        recorder
            .counters
            .outbox_bytes
            .store(outbox.bytes() as u64, Ordering::Relaxed);
        recorder
            .counters
            .outbox_batches
            .store(outbox.len() as u64, Ordering::Relaxed);

        let now = Instant::now();
        let mut stop = false;
        let mut i = 0;
        while i < syncs.len() {
            let pending = outbox.count_through(syncs[i].through_seq);
            if pending == 0 || syncs[i].deadline <= now {
                let sync = syncs.swap_remove(i);
                stop |= sync.stop;
                // The waiter may have given up; nothing to do then.
                let _ = sync.reply.send(pending);
            } else {
                i += 1;
            }
        }
        if stop || (!inbox_open && syncs.is_empty()) {
            break;
        }
    }
}

/// Takes a message from the aggregator; false once the aggregator is gone.
fn accept(
    message: Option<ToSender>,
    outbox: &mut Outbox,
    syncs: &mut Vec<PendingSync>,
    last_seq: &mut u64,
    recorder: &Recorder,
) -> bool {
    match message {
        Some(ToSender::Batch(batch)) => {
            *last_seq = batch.seq;
            let dropped = outbox.push(*batch);
            if dropped > 0 {
                recorder.counters.dropped_batches.fetch_add(dropped, Ordering::Relaxed);
                tracing::warn!(dropped, "querypulse agent outbox is full; dropped the oldest batches");
            }
            true
        }
        Some(ToSender::Sync { deadline, stop, reply }) => {
            syncs.push(PendingSync {
                through_seq: *last_seq,
                deadline,
                stop,
                reply,
            });
            true
        }
        None => false,
    }
}

fn handle_reply(message: wire::CollectorMessage, outbox: &mut Outbox, recorder: &Recorder) {
    match CollectorMessage::try_from(message) {
        Ok(CollectorMessage::Ack { seq, .. }) => {
            if outbox.remove(seq) {
                recorder.counters.acked_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(CollectorMessage::Reject { seq, reason }) => {
            if outbox.remove(seq) {
                recorder.counters.rejected_batches.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(seq, %reason, "querypulse collector rejected a batch; it is dropped");
        }
        Ok(CollectorMessage::Config(update)) => recorder.apply(update),
        Err(error) => tracing::warn!(%error, "querypulse agent ignored a malformed message from the collector"),
    }
}

fn disconnected(recorder: &Recorder, backoff: &mut Backoff, why: &str) -> Link {
    recorder.counters.send_errors.fetch_add(1, Ordering::Relaxed);
    let delay = backoff.next_delay();
    tracing::warn!(reason = why, retry_in = ?delay, "querypulse agent lost the collector; batches are kept and resent");
    Link::Down {
        retry_at: Instant::now() + delay,
    }
}

/// The text of every fingerprint a batch refers to that this stream has not
/// carried yet.
fn unsent_texts(
    fingerprints: &[u64],
    sent: &mut HashSet<Fingerprint>,
    recorder: &Recorder,
) -> Vec<wire::FingerprintText> {
    let mut texts = Vec::new();
    for &raw in fingerprints {
        let fingerprint = Fingerprint::new(raw);
        if sent.insert(fingerprint)
            && let Some(text) = recorder.text(fingerprint)
        {
            texts.push(wire::FingerprintText {
                fingerprint: raw,
                text: text.to_string(),
            });
        }
    }
    texts
}

fn connect(config: &SenderConfig) -> ConnectFuture {
    let endpoint = config.endpoint.clone();
    let token = config.token.clone();
    let hello = AgentMessage::Hello(config.hello.clone());
    Box::pin(async move {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_INBOUND_BYTES);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot reach the collector: {e}")))?;
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        tx.try_send(Outgoing::Hello(wire::AgentMessage::from(&hello)))
            .unwrap_or_else(|_| unreachable!("a new channel has room for the hello"));
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", token);
        }
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("querypulse.v1.Ingest", "Report"));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/querypulse.v1.Ingest/Report");
        let response = grpc.streaming(request, path, StreamCodec).await?;
        Ok(Connected {
            tx,
            inbound: response.into_inner(),
            cursor: 0,
            sent_texts: HashSet::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_from_the_outbox_reaches_the_wire_with_its_texts() {
        let batch = wire::Batch {
            seq: 4,
            window_start_unix_ms: 1_700_000_000_000,
            window_length_ms: 10_000,
            queries: vec![wire::QueryStats {
                fingerprint: 42,
                calls: 3,
                ..Default::default()
            }],
            fingerprint_texts: vec![wire::FingerprintText {
                fingerprint: 7,
                text: "select ?".into(),
            }],
            ..Default::default()
        };
        let texts = vec![
            wire::FingerprintText {
                fingerprint: 42,
                text: "select * from t where id = ?".into(),
            },
            wire::FingerprintText {
                fingerprint: 43,
                text: "delete from t".into(),
            },
        ];
        let mut written = Vec::new();
        write_batch(&batch.encode_to_vec(), &texts, &mut written);
        let message = wire::AgentMessage::decode(&written[..]).expect("one whole message");
        let mut expected = batch.clone();
        expected.fingerprint_texts.extend(texts.clone());
        assert_eq!(message.kind, Some(wire::agent_message::Kind::Batch(expected)));

        let mut alone = Vec::new();
        write_batch(&batch.encode_to_vec(), &[], &mut alone);
        assert_eq!(
            alone,
            wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Batch(batch))
            }
            .encode_to_vec(),
            "without texts, exactly what prost writes"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500), "the step reaches the cap");
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
