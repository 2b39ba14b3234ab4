//! The `Writer.Replicate` call of `replicate.proto`, served without tonic's codec.
//!
//! tonic's decoder copies every HTTP/2 DATA frame of a request into one buffer
//! before it decodes a message from it: for a batch, all of its records once more.
//! Here the frames are kept as they arrive ([`FrameList`]) and a batch is decoded
//! straight from them, so its records are a slice of the frame that carried them
//! (the fetcher sends a batch's records as a chunk of their own and the writer
//! accepts frames large enough to hold one: see `kmirror_proto::frame`). Acks go
//! back as ordinary gRPC messages, several to a DATA frame when they are ready
//! together, and the call ends with the usual `grpc-status` trailers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use kmirror_common::tls::{PeerInfo, PeerRole};
use kmirror_proto::frame::{
    put_grpc_prefix, Compression, FrameError, GRPC_ENCODING_HEADER, GRPC_PREFIX_BYTES,
    REPLICATE_PATH,
};
use kmirror_proto::prost::Message;
use kmirror_proto::tonic::body::Body;
use kmirror_proto::tonic::codegen::http::header::CONTENT_TYPE;
use kmirror_proto::tonic::codegen::http::{self, HeaderMap, HeaderValue};
use kmirror_proto::tonic::codegen::Service;
use kmirror_proto::tonic::metadata::MetadataMap;
use kmirror_proto::tonic::server::NamedService;
use kmirror_proto::tonic::Status;
use kmirror_proto::v1::{Batch, BatchAck};
use tokio::sync::mpsc;
use tracing::{info, warn};

use kmirror_proto::frame::MAX_BATCH_MESSAGE_BYTES;

use crate::{session, telemetry, WriterShared};

/// Acks waiting to go back to the fetcher; the bound only keeps a stalled reader
/// from growing memory.
const ACK_QUEUE: usize = 1024;
/// Most bytes of acks put in one DATA frame.
const ACK_FRAME_BYTES: usize = 64 * 1024;

/// The `kmirror.v1.Writer` service.
#[derive(Clone)]
pub struct ReplicateService {
    shared: Arc<WriterShared>,
    /// Only fetchers of this fleet may send batches (over TLS).
    fleet: Arc<str>,
}

impl ReplicateService {
    pub(crate) fn new(shared: Arc<WriterShared>, fleet: String) -> Self {
        Self {
            shared,
            fleet: fleet.into(),
        }
    }

    fn respond(&self, request: http::Request<Body>) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        if parts.uri.path() != REPLICATE_PATH {
            return Status::unimplemented(format!("unknown method {}", parts.uri.path()))
                .into_http();
        }
        let compression = match parts.headers.get(GRPC_ENCODING_HEADER) {
            None => Compression::Identity,
            Some(encoding) => match encoding.to_str().ok().and_then(Compression::from_grpc_encoding) {
                Some(compression) => compression,
                None => {
                    return Status::unimplemented(format!(
                        "grpc-encoding {encoding:?} is not accepted: send batches uncompressed or as zstd"
                    ))
                    .into_http()
                }
            },
        };
        // Trace context crosses here once per stream (metadata); each batch's own
        // travels in the batch and its ack.
        // Records reach the destination through this call: fetchers alone may
        // make it (a writer's or an admin's certificate is refused as well).
        let peer_info_opt = parts.extensions.get::<PeerInfo>();
        if let Err(denied) = PeerInfo::authorize(
            peer_info_opt,
            &self.fleet,
            REPLICATE_PATH,
            &[PeerRole::Fetcher],
        ) {
            warn!(peer = ?peer_info_opt.and_then(|peer| peer.remote_addr), %denied, "replicate stream refused");
            return Status::permission_denied(denied.to_string()).into_http();
        }
        let peer = peer_info_opt.and_then(|peer| peer.remote_addr);
        let stream_span = telemetry::stream_span(&MetadataMap::from_headers(parts.headers), peer);
        let mut metadata = MetadataMap::new();
        kmirror_common::telemetry::inject_metadata_context(&stream_span, &mut metadata);
        info!(
            peer = %peer.map_or_else(|| "unknown".to_string(), |peer| peer.to_string()),
            compression = compression.grpc_encoding(),
            "replicate stream accepted"
        );

        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let session = session::Session::new(self.shared.clone(), ack_tx, stream_span);
        tokio::spawn(session.run(BatchStream::new(body, compression, MAX_BATCH_MESSAGE_BYTES)));

        let mut response = http::Response::new(Body::new(AckBody {
            acks: ack_rx,
            end: None,
            done: false,
        }));
        *response.headers_mut() = metadata.into_headers();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    }
}

impl NamedService for ReplicateService {
    const NAME: &'static str = "kmirror.v1.Writer";
}

impl Service<http::Request<Body>> for ReplicateService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        ready(Ok(self.respond(request)))
    }
}

/// The DATA frames of a request not yet decoded, as received.
#[derive(Debug, Default)]
pub struct FrameList {
    frames: VecDeque<Bytes>,
    remaining: usize,
}

impl FrameList {
    pub fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.remaining += frame.len();
            self.frames.push_back(frame);
        }
    }
}

impl Buf for FrameList {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.frames.front().map_or(&[], |frame| frame)
    }

    fn advance(&mut self, mut count: usize) {
        assert!(count <= self.remaining, "advanced past the frames received");
        self.remaining -= count;
        while count > 0 {
            let front = self.frames.front_mut().expect("counted bytes are held");
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.frames.pop_front();
        }
    }

    /// A slice of the front frame when it holds all `len` bytes (no copy);
    /// otherwise the bytes gathered from the frames they span.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.remaining, "read past the frames received");
        match self.frames.front_mut() {
            Some(front) if front.len() >= len => {
                let bytes = front.split_to(len);
                if front.is_empty() {
                    self.frames.pop_front();
                }
                self.remaining -= len;
                bytes
            }
            _ => {
                let mut gathered = BytesMut::with_capacity(len);
                gathered.put((&mut *self).take(len));
                gathered.freeze()
            }
        }
    }
}

/// The batches of a replicate request, decoded from its body's frames.
pub struct BatchStream<B> {
    body: B,
    frames: FrameList,
    /// The request's `grpc-encoding`: how a message flagged compressed is.
    compression: Compression,
    /// Length of the message whose prefix was read and whether it is compressed,
    /// while its bytes come.
    message: Option<(usize, bool)>,
    max_message_bytes: usize,
    ended: bool,
}

impl<B> BatchStream<B> {
    pub fn new(body: B, compression: Compression, max_message_bytes: usize) -> Self {
        Self {
            body,
            frames: FrameList::default(),
            compression,
            message: None,
            max_message_bytes,
            ended: false,
        }
    }

    /// The next whole message of the frames received, if there is one.
    fn decode(&mut self) -> Option<Result<Batch, Status>> {
        if self.message.is_none() && self.frames.remaining() >= GRPC_PREFIX_BYTES {
            let compressed = self.frames.get_u8() != 0;
            let len = self.frames.get_u32() as usize;
            if compressed && self.compression == Compression::Identity {
                return Some(Err(Status::internal(
                    "compressed batch message on a stream without a grpc-encoding",
                )));
            }
            if len > self.max_message_bytes {
                return Some(Err(Status::resource_exhausted(format!(
                    "batch message of {len} bytes is larger than the {} bytes a writer accepts",
                    self.max_message_bytes
                ))));
            }
            self.message = Some((len, compressed));
        }
        let (len, compressed) = self
            .message
            .filter(|&(len, _)| self.frames.remaining() >= len)?;
        self.message = None;
        let decoded = if compressed {
            let data = self.frames.copy_to_bytes(len);
            self.compression
                .decompress(&data, self.max_message_bytes)
                .map_err(|error| match error {
                    FrameError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
                    _ => Status::internal(error.to_string()),
                })
                .and_then(|message| Batch::decode(message).map_err(decode_error))
        } else {
            Batch::decode((&mut self.frames).take(len)).map_err(decode_error)
        };
        Some(decoded)
    }
}

fn decode_error(error: kmirror_proto::prost::DecodeError) -> Status {
    Status::internal(format!("cannot decode batch message: {error}"))
}

impl<B> Stream for BatchStream<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Batch, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(outcome) = this.decode() {
                // A message that cannot be read ends the stream: what follows it
                // cannot be framed either.
                this.ended = outcome.is_err();
                return Poll::Ready(Some(outcome));
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers carry nothing for this call.
                    if let Ok(data) = frame.into_data() {
                        this.frames.push(data);
                    }
                }
                Some(Err(error)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(Status::from_error(error.into()))));
                }
                None => {
                    this.ended = true;
                    if this.message.is_none() && this.frames.remaining() == 0 {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Status::internal(
                        "replicate stream ended inside a batch message",
                    ))));
                }
            }
        }
    }
}

/// The response body: the session's acks as gRPC messages, then the trailers
/// with the call's status.
struct AckBody {
    acks: mpsc::Receiver<Result<BatchAck, Status>>,
    /// The call's status, once known, until its trailers are sent.
    end: Option<Status>,
    done: bool,
}

impl AckBody {
    fn put(frame: &mut BytesMut, ack: &BatchAck) {
        let len = ack.encoded_len();
        frame.reserve(GRPC_PREFIX_BYTES + len);
        put_grpc_prefix(frame, false, len as u32);
        ack.encode(frame).expect("the frame was sized for the ack");
    }

    fn trailers(status: &Status) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
        }
        trailers
    }
}

impl http_body::Body for AckBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.end.is_none() {
            let mut frame = BytesMut::new();
            match ready!(this.acks.poll_recv(cx)) {
                Some(Ok(ack)) => Self::put(&mut frame, &ack),
                Some(Err(status)) => this.end = Some(status),
                None => this.end = Some(Status::ok("")),
            }
            // Acks ready together go in one frame.
            while this.end.is_none() && frame.len() < ACK_FRAME_BYTES {
                match this.acks.try_recv() {
                    Ok(Ok(ack)) => Self::put(&mut frame, &ack),
                    Ok(Err(status)) => this.end = Some(status),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => this.end = Some(Status::ok("")),
                }
            }
            if !frame.is_empty() {
                // The trailers, if the call ended too, follow in the next poll.
                return Poll::Ready(Some(Ok(http_body::Frame::data(frame.freeze()))));
            }
        }
        this.done = true;
        let status = this.end.take().expect("the call ended");
        Poll::Ready(Some(Ok(http_body::Frame::trailers(Self::trailers(
            &status,
        )))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use kmirror_proto::frame::BatchFrame;
    use kmirror_proto::packed::PackedBuilder;
    use kmirror_proto::tonic::Code;
    use kmirror_proto::v1::SourcePartition;

    use super::*;

    fn batch(seq: u64, record_count: usize) -> Batch {
        let mut builder = PackedBuilder::default();
        for index in 0..record_count {
            let value = format!("value-{seq}-{index}");
            builder
                .push(
                    index as i64,
                    Some(b"key".as_slice()),
                    Some(value.as_bytes()),
                    [("seq", Some(b"12345678".as_slice()))],
                    Some(1_700_000_000_000 + index as i64),
                )
                .unwrap();
        }
        let packed = builder.finish();
        Batch {
            source: Some(SourcePartition {
                flow: "orders".into(),
                topic: "orders.eu".into(),
                partition: 3,
            }),
            dest_topic: "orders.eu".into(),
            epoch: 7,
            seq,
            next_offset: record_count as i64,
            records: packed.records,
            trace_context: HashMap::from([("traceparent".into(), "00-abc-def-01".into())]),
            base_offset: packed.base_offset,
            record_count: packed.record_count,
            ..Default::default()
        }
    }

    fn body(
        frames: Vec<Bytes>,
    ) -> StreamBody<impl Stream<Item = Result<http_body::Frame<Bytes>, Infallible>>> {
        StreamBody::new(futures::stream::iter(
            frames
                .into_iter()
                .map(|frame| Ok(http_body::Frame::data(frame))),
        ))
    }

    async fn decode_all(frames: Vec<Bytes>) -> Vec<Result<Batch, Status>> {
        BatchStream::new(body(frames), Compression::Identity, 1 << 20)
            .collect()
            .await
    }

    fn wire(batches: &[Batch]) -> Vec<u8> {
        let mut wire = Vec::new();
        for batch in batches {
            let frame =
                BatchFrame::encode(batch.clone(), usize::MAX, Compression::Identity).unwrap();
            wire.extend_from_slice(&frame.head);
            wire.extend_from_slice(&frame.records);
        }
        wire
    }

    #[tokio::test]
    async fn batches_decode_whatever_the_frames_and_keep_the_records_frame() {
        let batches = vec![batch(1, 3), batch(2, 0), batch(3, 40)];
        // As the fetcher sends them: each batch's head, then its records.
        let mut frames = Vec::new();
        for batch in &batches {
            let frame =
                BatchFrame::encode(batch.clone(), usize::MAX, Compression::Identity).unwrap();
            frames.push(frame.head);
            frames.push(frame.records);
        }
        let records_frame = frames[5].clone();
        let decoded = decode_all(frames).await;
        let decoded: Vec<Batch> = decoded.into_iter().map(Result::unwrap).collect();
        assert_eq!(decoded, batches);
        assert_eq!(
            decoded[2].records.as_ptr(),
            records_frame.as_ptr(),
            "records decoded as a slice of their frame"
        );

        // Cut anywhere, and in one frame.
        let wire = Bytes::from(wire(&batches));
        for cut in 1..wire.len() {
            let frames = vec![wire.slice(..cut), wire.slice(cut..)];
            let decoded: Vec<Batch> = decode_all(frames)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(decoded, batches, "cut at {cut}");
        }
        let single: Vec<Batch> = decode_all(vec![wire.clone()])
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(single, batches);
    }

    #[tokio::test]
    async fn bad_messages_end_the_stream_with_a_status_naming_the_problem() {
        let mut compressed = wire(&[batch(1, 2)]);
        compressed[0] = 1;
        let outcome = decode_all(vec![compressed.into()]).await;
        assert_eq!(outcome.len(), 1);
        let status = outcome[0].as_ref().unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status.message().contains("without a grpc-encoding"),
            "{status}"
        );

        let large = wire(&[batch(1, 2)]);
        let outcome: Vec<_> = BatchStream::new(
            body(vec![large.clone().into()]),
            Compression::Identity,
            large.len() - 6,
        )
        .collect()
        .await;
        let status = outcome[0].as_ref().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains(&format!("{} bytes", large.len() - 5)),
            "{status}"
        );

        let mut truncated = wire(&[batch(1, 2), batch(2, 2)]);
        truncated.pop();
        let outcome = decode_all(vec![truncated.into()]).await;
        assert_eq!(outcome.len(), 2);
        assert_eq!(outcome[0].as_ref().unwrap(), &batch(1, 2));
        let status = outcome[1].as_ref().unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status.message().contains("ended inside a batch"),
            "{status}"
        );

        let garbage = vec![0, 0, 0, 0, 2, 0xff, 0xff];
        let outcome = decode_all(vec![garbage.into()]).await;
        assert_eq!(outcome.len(), 1);
        assert_eq!(outcome[0].as_ref().unwrap_err().code(), Code::Internal);
    }

    #[tokio::test]
    async fn zstd_batches_decode_on_a_zstd_stream() {
        let batches = vec![batch(1, 30), batch(2, 0), batch(3, 300)];
        let mut wire = Vec::new();
        for batch in &batches {
            let frame = BatchFrame::encode(batch.clone(), usize::MAX, Compression::Zstd).unwrap();
            assert!(frame.records.is_empty());
            wire.extend_from_slice(&frame.head);
        }
        // Plain messages may come on a compressed stream too.
        wire.extend_from_slice(&super::tests::wire(&batches[..1]));
        let wire = Bytes::from(wire);
        let frames = vec![wire.slice(..7), wire.slice(7..)];
        let decoded: Vec<Batch> = BatchStream::new(body(frames), Compression::Zstd, 1 << 20)
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(decoded[..3], batches[..]);
        assert_eq!(decoded[3], batches[0]);

        // Larger than the writer accepts once decompressed.
        let big = BatchFrame::encode(batches[2].clone(), usize::MAX, Compression::Zstd).unwrap();
        let limit = batches[2].encoded_len() - 1;
        let outcome: Vec<_> = BatchStream::new(body(vec![big.head]), Compression::Zstd, limit)
            .collect()
            .await;
        assert_eq!(outcome.len(), 1);
        assert_eq!(
            outcome[0].as_ref().unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    fn ack(seq: u64) -> BatchAck {
        BatchAck {
            seq,
            committed_offset: seq as i64 * 10,
            ..Default::default()
        }
    }

    /// The acks and the trailers of an ack body fed `items`.
    async fn ack_body(items: Vec<Result<BatchAck, Status>>) -> (Vec<Bytes>, HeaderMap) {
        let (ack_tx, acks) = mpsc::channel(16);
        for item in items {
            ack_tx.send(item).await.unwrap();
        }
        drop(ack_tx);
        let mut body = AckBody {
            acks,
            end: None,
            done: false,
        };
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            assert!(trailers.is_none(), "nothing after the trailers");
            match frame.into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => trailers = Some(frame.into_trailers().unwrap()),
            }
        }
        (data, trailers.expect("trailers end the body"))
    }

    fn decode_acks(mut data: Bytes) -> Vec<BatchAck> {
        let mut acks = Vec::new();
        while data.has_remaining() {
            assert_eq!(data.get_u8(), 0);
            let len = data.get_u32() as usize;
            acks.push(BatchAck::decode(data.split_to(len)).unwrap());
        }
        acks
    }

    #[tokio::test]
    async fn acks_ready_together_share_a_frame_and_the_call_ends_with_its_status() {
        let (data, trailers) = ack_body(vec![Ok(ack(1)), Ok(ack(2)), Ok(ack(3))]).await;
        assert_eq!(data.len(), 1, "one frame");
        assert_eq!(decode_acks(data[0].clone()), vec![ack(1), ack(2), ack(3)]);
        assert_eq!(trailers["grpc-status"], "0");

        let (data, trailers) = ack_body(vec![
            Ok(ack(1)),
            Err(Status::failed_precondition("stale epoch")),
        ])
        .await;
        assert_eq!(decode_acks(data[0].clone()), vec![ack(1)]);
        assert_eq!(
            trailers["grpc-status"],
            (Code::FailedPrecondition as i32).to_string()
        );
        assert_eq!(trailers["grpc-message"], "stale%20epoch");

        let (data, trailers) = ack_body(Vec::new()).await;
        assert!(data.is_empty());
        assert_eq!(trailers["grpc-status"], "0");
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        /// Every outcome of a stream fed `frames`, and whether it ended on an error.
        fn decode_frames(
            frames: Vec<Bytes>,
            compression: Compression,
        ) -> Vec<Result<Batch, Status>> {
            futures::executor::block_on(
                BatchStream::new(body(frames), compression, 1 << 20).collect(),
            )
        }

        /// `wire` split at `cuts` (sorted, deduplicated) into frames.
        fn split(wire: &Bytes, cuts: &[prop::sample::Index]) -> Vec<Bytes> {
            let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut frames = Vec::new();
            let mut start = 0;
            for end in at.into_iter().chain([wire.len()]) {
                frames.push(wire.slice(start..end));
                start = end;
            }
            frames
        }

        fn assert_only_last_is_an_error(outcome: &[Result<Batch, Status>]) {
            if let Some(position) = outcome.iter().position(Result::is_err) {
                assert_eq!(position, outcome.len() - 1, "nothing follows an error");
            }
        }

        fn compression() -> impl Strategy<Value = Compression> {
            prop_oneof![Just(Compression::Identity), Just(Compression::Zstd)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_the_replicate_request_decoder(
                data in prop::collection::vec(any::<u8>(), 0..300),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
                compression in compression(),
            ) {
                let outcome = decode_frames(split(&Bytes::from(data), &cuts), compression);
                assert_only_last_is_an_error(&outcome);
                for batch in outcome.iter().flatten() {
                    let _ = batch.packed().validate();
                }
            }

            #[test]
            fn replicate_requests_decode_whatever_the_frames_or_fail_with_a_status(
                record_counts in prop::collection::vec(0..12usize, 1..4),
                compression in compression(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
                truncate in prop::option::of(any::<prop::sample::Index>()),
                damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            ) {
                let batches: Vec<Batch> = record_counts
                    .iter()
                    .enumerate()
                    .map(|(seq, count)| batch(seq as u64, *count))
                    .collect();
                let mut wire = Vec::new();
                let mut boundaries = vec![0];
                for batch in &batches {
                    let frame = BatchFrame::encode(batch.clone(), usize::MAX, compression).unwrap();
                    wire.extend_from_slice(&frame.head);
                    wire.extend_from_slice(&frame.records);
                    boundaries.push(wire.len());
                }
                let whole = Bytes::from(wire.clone());
                let decoded: Vec<Batch> = decode_frames(split(&whole, &cuts), compression)
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
                prop_assert_eq!(&decoded, &batches);

                // Cut short: every whole batch before the cut, then an error.
                if let Some(truncate) = truncate {
                    let cut = truncate.index(wire.len());
                    let outcome = decode_frames(split(&whole.slice(..cut), &cuts), compression);
                    assert_only_last_is_an_error(&outcome);
                    let whole_batches = boundaries.iter().filter(|end| **end <= cut).count() - 1;
                    prop_assert_eq!(
                        outcome.iter().filter(|batch| batch.is_ok()).count(),
                        whole_batches
                    );
                    if !boundaries.contains(&cut) {
                        let status = outcome.last().unwrap().as_ref().unwrap_err();
                        prop_assert!(
                            status.message().contains("ended inside a batch"),
                            "{}", status
                        );
                    }
                }

                // Damaged: whatever comes out, nothing panics.
                for (at, byte) in damage {
                    let at = at.index(wire.len());
                    wire[at] = byte;
                }
                let outcome = decode_frames(split(&Bytes::from(wire), &cuts), compression);
                assert_only_last_is_an_error(&outcome);
                for batch in outcome.iter().flatten() {
                    let _ = batch.packed().validate();
                }
            }
        }
    }
}
