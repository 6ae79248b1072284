//! The `Report` stream's gRPC framing, read straight from the HTTP/2 body.
//!
//! A generic gRPC server decodes each stream into a buffer of its own that
//! grows to the largest message the stream has sent and keeps that size for
//! the stream's life: with thousands of agents that is hundreds of MiB held by
//! connections that are idle between windows. Here a stream holds only the
//! HTTP/2 frames of the message it is reading: it learns the message's length
//! from the 5-byte prefix, reserves that share of the ingest budget, and only
//! then reads the body, so a stream that waits for the budget holds no more
//! than its HTTP/2 window. The frames are decoded where they lie and dropped.
//!
//! The wire format is plain gRPC (identity encoding only, as before): agents
//! and any gRPC client see no difference.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, header};
use http_body::{Body as _, Frame};
use prost::Message as _;
use querypulse_proto::wire::v1 as wire;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::IngestService;

/// The one method this service answers.
const REPORT_PATH: &str = "/querypulse.v1.Ingest/Report";
/// Compressed flag and length ahead of every message.
const PREFIX_BYTES: usize = 5;

/// `querypulse.v1.Ingest` as a tower service for tonic's router.
#[derive(Clone)]
pub(crate) struct IngestGrpc {
    service: Arc<IngestService>,
    max_message_bytes: usize,
}

impl IngestGrpc {
    pub(crate) fn new(service: IngestService, max_message_bytes: usize) -> Self {
        IngestGrpc {
            service: Arc::new(service),
            max_message_bytes,
        }
    }

    fn open(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        if request.uri().path() != REPORT_PATH {
            return Err(Status::unimplemented(format!(
                "{} is not a method of this service",
                request.uri().path()
            )));
        }
        let headers = request.headers();
        if let Some(encoding) = headers.get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(Status::unimplemented(format!(
                "message encoding {encoding:?} is not supported; send identity"
            )));
        }
        let scope = self.service.authorize(headers)?;
        let inbound = MessageReader::new(request.into_body(), self.max_message_bytes);
        let replies = self.service.open_stream(inbound, scope);
        let mut response = http::Response::new(Body::new(ReplyBody {
            replies,
            ending: None,
            done: false,
        }));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        Ok(response)
    }
}

impl NamedService for IngestGrpc {
    const NAME: &'static str = "querypulse.v1.Ingest";
}

impl tower::Service<http::Request<Body>> for IngestGrpc {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        std::future::ready(Ok(self.open(request).unwrap_or_else(Status::into_http)))
    }
}

/// Reads length-prefixed messages from a request body, holding only the
/// frames of the message being read. Every method is cancel-safe: what was
/// read stays in the reader.
pub(crate) struct MessageReader {
    body: Body,
    frames: VecDeque<Bytes>,
    buffered: usize,
    /// The length of the message whose prefix has been read.
    pending: Option<usize>,
    max_message_bytes: usize,
    ended: bool,
}

impl MessageReader {
    pub(crate) fn new(body: Body, max_message_bytes: usize) -> Self {
        MessageReader {
            body,
            frames: VecDeque::new(),
            buffered: 0,
            pending: None,
            max_message_bytes,
            ended: false,
        }
    }

    /// The length of the next message, read from its prefix; `None` when the
    /// agent ended the stream cleanly.
    pub(crate) async fn next_len(&mut self) -> Result<Option<usize>, Status> {
        if let Some(len) = self.pending {
            return Ok(Some(len));
        }
        if !self.fill(PREFIX_BYTES).await? {
            return if self.buffered == 0 {
                Ok(None)
            } else {
                Err(Status::invalid_argument("the stream ended inside a message prefix"))
            };
        }
        let mut prefix = [0u8; PREFIX_BYTES];
        self.take(PREFIX_BYTES).copy_to_slice(&mut prefix);
        if prefix[0] != 0 {
            return Err(Status::invalid_argument(
                "protocol error: a compressed message without a grpc-encoding",
            ));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_message_bytes {
            return Err(Status::resource_exhausted(format!(
                "a message of {len} bytes exceeds the limit of {} bytes",
                self.max_message_bytes
            )));
        }
        self.pending = Some(len);
        Ok(Some(len))
    }

    /// Reads and decodes the message whose length [`Self::next_len`] gave.
    pub(crate) async fn message(&mut self) -> Result<wire::AgentMessage, Status> {
        let Some(len) = self.pending else {
            return Err(Status::internal("a message body was read before its prefix"));
        };
        if !self.fill(len).await? {
            return Err(Status::invalid_argument("the stream ended inside a message"));
        }
        self.pending = None;
        wire::AgentMessage::decode(self.take(len))
            .map_err(|error| Status::invalid_argument(format!("a message does not decode: {error}")))
    }

    /// Reads frames until `bytes` are buffered; `false` if the body ended first.
    async fn fill(&mut self, bytes: usize) -> Result<bool, Status> {
        while self.buffered < bytes {
            if self.ended {
                return Ok(false);
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.buffered += data.len();
                        self.frames.push_back(data);
                    }
                }
                Some(Err(status)) if status.code() == Code::Cancelled => self.ended = true,
                Some(Err(status)) => return Err(status),
                None => self.ended = true,
            }
        }
        Ok(true)
    }

    /// The next `len` buffered bytes as one [`Buf`] over the frames, which
    /// are dropped as it advances.
    fn take(&mut self, len: usize) -> Frames<'_> {
        debug_assert!(len <= self.buffered);
        Frames {
            reader: self,
            remaining: len,
        }
    }
}

/// A [`Buf`] over the first `remaining` bytes of a reader's frames.
struct Frames<'a> {
    reader: &'a mut MessageReader,
    remaining: usize,
}

impl Buf for Frames<'_> {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        match self.reader.frames.front() {
            Some(front) => &front[..front.len().min(self.remaining)],
            None => &[],
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advanced past the end of a message");
        self.remaining -= cnt;
        self.reader.buffered -= cnt;
        while cnt > 0 {
            let front = self.reader.frames.front_mut().expect("buffered bytes are in frames");
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.reader.frames.pop_front();
        }
    }
}

impl Drop for Frames<'_> {
    /// Whatever the decoder left unread still belongs to this message.
    fn drop(&mut self) {
        let rest = self.remaining;
        if rest > 0 {
            self.advance(rest);
        }
    }
}

/// The response: the stream task's messages, each length-prefixed, then the
/// status as trailers. Replies ready together leave in one frame (up to
/// [`REPLY_FRAME_BYTES`]), as a backfill's acknowledgements often are.
struct ReplyBody {
    replies: mpsc::Receiver<Result<wire::CollectorMessage, Status>>,
    /// The status to end with, once the replies before it are out.
    ending: Option<Status>,
    done: bool,
}

/// Reply bytes gathered into one frame at most.
const REPLY_FRAME_BYTES: usize = 32 << 10;

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut data = BytesMut::new();
        while self.ending.is_none() && data.len() < REPLY_FRAME_BYTES {
            match self.replies.poll_recv(cx) {
                Poll::Ready(Some(Ok(message))) => put_framed(&mut data, &message),
                Poll::Ready(Some(Err(status))) => self.ending = Some(status),
                Poll::Ready(None) => self.ending = Some(Status::ok("")),
                Poll::Pending if data.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if !data.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(data.freeze()))));
        }
        let status = self.ending.take().unwrap_or_else(|| Status::ok(""));
        self.done = true;
        let mut trailers = HeaderMap::new();
        if let Err(unencodable) = status.add_header(&mut trailers) {
            trailers.clear();
            let _ = unencodable.add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Appends `message` with its gRPC prefix: uncompressed, then the length.
fn put_framed(out: &mut BytesMut, message: &wire::CollectorMessage) {
    let len = message.encoded_len();
    out.reserve(PREFIX_BYTES + len);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).expect("replies are small"));
    message.encode(out).expect("the buffer was sized for the message");
}

#[cfg(test)]
mod tests {
    use super::*;
    use querypulse_proto::Hello;

    fn hello_message(service: &str) -> wire::AgentMessage {
        let hello = Hello {
            service: service.into(),
            instance_id: "i-1".into(),
            ..Hello::default()
        };
        wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello((&hello).into())),
        }
    }

    fn prefixed(message: &wire::AgentMessage) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
        out.extend_from_slice(&message.encode_to_vec());
        out
    }

    /// A body that delivers `bytes` in frames of the given sizes, cycling.
    fn body(bytes: Vec<u8>, frame_sizes: &[usize]) -> Body {
        let mut frames = Vec::new();
        let mut at = 0;
        for size in frame_sizes.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let end = (at + size).min(bytes.len());
            frames.push(Ok::<_, Status>(Frame::data(Bytes::copy_from_slice(&bytes[at..end]))));
            at = end;
        }
        Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    async fn read_all(reader: &mut MessageReader) -> Result<Vec<wire::AgentMessage>, Status> {
        let mut messages = Vec::new();
        while reader.next_len().await?.is_some() {
            messages.push(reader.message().await?);
        }
        Ok(messages)
    }

    #[tokio::test]
    async fn messages_decode_whatever_the_frames_cut_them_into() {
        let sent: Vec<_> = ["billing", "ledger", "checkout"].map(hello_message).into();
        let bytes: Vec<u8> = sent.iter().flat_map(prefixed).collect();
        for sizes in [&[1][..], &[3, 7], &[4096], &[5, 2, 11]] {
            let mut reader = MessageReader::new(body(bytes.clone(), sizes), 1 << 20);
            let got = read_all(&mut reader).await.unwrap();
            assert_eq!(got, sent, "frames of {sizes:?}");
            assert_eq!(
                (reader.buffered, reader.frames.len()),
                (0, 0),
                "nothing is kept after the last message"
            );
        }
    }

    #[tokio::test]
    async fn the_length_is_known_before_the_body_is_read() {
        let message = hello_message("billing");
        let bytes = prefixed(&message);
        let mut reader = MessageReader::new(body(bytes, &[PREFIX_BYTES]), 1 << 20);
        assert_eq!(reader.next_len().await.unwrap(), Some(message.encoded_len()));
        assert_eq!(reader.buffered, 0, "only the prefix was read");
        assert_eq!(
            reader.next_len().await.unwrap(),
            Some(message.encoded_len()),
            "asking again reads nothing"
        );
        assert_eq!(reader.message().await.unwrap(), message);
        assert_eq!(reader.next_len().await.unwrap(), None);
    }

    #[tokio::test]
    async fn malformed_streams_get_a_clear_status() {
        let good = prefixed(&hello_message("billing"));
        let oversized = {
            let mut bytes = vec![0];
            bytes.extend_from_slice(&(2u32 << 20).to_be_bytes());
            bytes
        };
        let mut compressed = good.clone();
        compressed[0] = 1;
        let garbage = {
            let mut bytes = vec![0, 0, 0, 0, 4];
            bytes.extend_from_slice(&[0xff; 4]);
            bytes
        };
        let cases: [(&str, Vec<u8>, Code, &str); 5] = [
            ("oversized", oversized, Code::ResourceExhausted, "exceeds the limit"),
            ("compressed", compressed, Code::InvalidArgument, "compressed"),
            ("garbage", garbage, Code::InvalidArgument, "does not decode"),
            ("cut in the prefix", good[..3].to_vec(), Code::InvalidArgument, "prefix"),
            (
                "cut in the body",
                good[..good.len() - 1].to_vec(),
                Code::InvalidArgument,
                "inside a message",
            ),
        ];
        for (name, bytes, code, needle) in cases {
            let mut reader = MessageReader::new(body(bytes, &[2]), 1 << 20);
            let error = read_all(&mut reader).await.expect_err(name);
            assert_eq!(error.code(), code, "{name}: {error:?}");
            assert!(error.message().contains(needle), "{name}: {}", error.message());
        }
    }

    #[tokio::test]
    async fn replies_are_prefixed_and_end_with_the_status() {
        let (tx, replies) = mpsc::channel(4);
        let ack = wire::CollectorMessage {
            kind: Some(wire::collector_message::Kind::Ack(wire::Ack {
                seq: 7,
                duplicate: false,
            })),
        };
        tx.send(Ok(ack.clone())).await.unwrap();
        tx.send(Ok(ack.clone())).await.unwrap();
        tx.send(Err(Status::unavailable("the disk is full"))).await.unwrap();
        let mut body = ReplyBody {
            replies,
            ending: None,
            done: false,
        };
        let next = |body: &mut ReplyBody| {
            let waker = std::task::Waker::noop();
            match Pin::new(body).poll_frame(&mut Context::from_waker(waker)) {
                Poll::Ready(frame) => frame,
                Poll::Pending => panic!("a frame is ready"),
            }
        };
        // Both ready replies leave in one frame, each with its prefix.
        let mut data = next(&mut body).unwrap().unwrap().into_data().unwrap();
        for _ in 0..2 {
            assert_eq!(data[0], 0);
            let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
            assert_eq!(wire::CollectorMessage::decode(&data[5..5 + len]).unwrap(), ack);
            data = data.slice(5 + len..);
        }
        assert!(data.is_empty());
        let trailers = next(&mut body).unwrap().unwrap().into_trailers().unwrap();
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unavailable, "the disk is full")
        );
        assert!(body.is_end_stream());
        assert!(next(&mut body).is_none());
    }
}
