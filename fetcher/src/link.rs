//! The replicate stream to one writer, reconnected with backoff while the core
//! wants it. Acks go to the core on an unbounded channel: their number is bounded
//! by the in-flight windows, and the writer must never wait on the core.
//!
//! The stream is the `Writer.Replicate` call of `replicate.proto`, but its request
//! is built here rather than by the generated client: tonic's encoder would copy
//! every batch's records into a buffer of its own, where [`BatchBody`] hands them
//! to HTTP/2 as they are (see `kmirror_proto::frame`). The acks are decoded by
//! tonic as usual.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, TE};
use http::HeaderValue;
use http_body::Frame;
use kmirror_common::backoff::doubling;
use kmirror_common::service::{REPLICATE_CONNECTION_WINDOW_BYTES, REPLICATE_STREAM_WINDOW_BYTES};
use kmirror_common::tls::{PeerRole, Transport};
use kmirror_common::MemberId;
use kmirror_proto::frame::{
    BatchFrame, Compression, GRPC_ENCODING_HEADER, MAX_BATCH_MESSAGE_BYTES, REPLICATE_PATH,
};
use kmirror_proto::tonic::client::GrpcService;
use kmirror_proto::tonic::codec::{Codec, Streaming};
use kmirror_proto::tonic::metadata::MetadataMap;
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::{self, Code, Status};
use kmirror_proto::tonic_prost::ProstCodec;
use kmirror_proto::v1::{Batch, BatchAck};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Span};

/// Batches queued to one writer beyond those already on the wire.
const LINK_QUEUE: usize = 1024;
/// Pause before reconnecting to a writer after a stream ended; it doubles with
/// each failed attempt up to [`MAX_RECONNECT_PAUSE`].
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

pub enum LinkEvent {
    Up {
        writer: MemberId,
        address: String,
        batch_tx: mpsc::Sender<Batch>,
    },
    Ack {
        writer: MemberId,
        ack: BatchAck,
    },
    Down {
        writer: MemberId,
        address: String,
    },
}

pub struct Link {
    pub writer: MemberId,
    pub address: String,
    pub events_tx: mpsc::UnboundedSender<LinkEvent>,
    pub cancel: CancellationToken,
    pub compression: Compression,
    pub transport: Transport,
}

impl Link {
    pub async fn run(self) {
        let mut pauses = doubling(FIRST_RECONNECT_PAUSE, MAX_RECONNECT_PAUSE);
        while !self.cancel.is_cancelled() {
            match self.connect_and_stream().await {
                // A stream that ended cleanly starts the pauses over.
                Ok(()) => pauses = doubling(FIRST_RECONNECT_PAUSE, MAX_RECONNECT_PAUSE),
                Err(error) => {
                    warn!(writer = %self.writer, address = %self.address, %error, "replicate stream to writer failed")
                }
            }
            let _ = self.events_tx.send(LinkEvent::Down {
                writer: self.writer.clone(),
                address: self.address.clone(),
            });
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep(pauses.next().unwrap_or(MAX_RECONNECT_PAUSE)) => {}
            }
        }
        debug!(writer = %self.writer, "writer link closed");
    }

    async fn connect_and_stream(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let channel = Endpoint::from_shared(self.address.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_stream_window_size(REPLICATE_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(REPLICATE_CONNECTION_WINDOW_BYTES);
        // Only the connection is TLS: the hand-built request below goes over
        // it as it does over plain TCP.
        let channel = self.transport.connect(channel, &[PeerRole::Writer]).await?;
        let stream_span = crate::telemetry::replicate_stream_span(&self.writer, &self.address);
        let outcome = self.stream(channel, &stream_span).await;
        if let Err(error) = &outcome {
            crate::telemetry::stream_failed(&stream_span, error.as_ref());
        }
        outcome
    }

    /// One replicate stream, under `stream_span`: its trace context goes to the
    /// writer in the request metadata, the writer's comes back in the response's.
    async fn stream(
        &self,
        channel: Channel,
        stream_span: &Span,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (batch_tx, batch_rx) = mpsc::channel(LINK_QUEUE);
        let mut metadata = MetadataMap::new();
        kmirror_common::telemetry::inject_metadata_context(stream_span, &mut metadata);
        let mut acks =
            replicate(channel, metadata, batch_rx, self.compression, stream_span).await?;
        info!(writer = %self.writer, address = %self.address, compression = self.compression.grpc_encoding(), "replicate stream open");
        let _open_stream = kmirror_common::metrics::replicate_stream_opened();
        if self
            .events_tx
            .send(LinkEvent::Up {
                writer: self.writer.clone(),
                address: self.address.clone(),
                batch_tx,
            })
            .is_err()
        {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    // Graceful close: the core dropped its sender already; read the
                    // remaining acks until the writer ends the stream.
                    while let Ok(Some(ack)) = acks.message().await {
                        let _ = self.events_tx.send(LinkEvent::Ack { writer: self.writer.clone(), ack });
                    }
                    return Ok(());
                }
                message = acks.message() => match message? {
                    Some(ack) => {
                        if self.events_tx.send(LinkEvent::Ack { writer: self.writer.clone(), ack }).is_err() {
                            return Ok(());
                        }
                    }
                    None => return Err("writer closed the stream".into()),
                }
            }
        }
    }
}

/// Opens the replicate call: `batches` become the request's messages, the acks the
/// returned stream. `metadata` goes with the request; the response's initial
/// metadata links `stream_span` to the writer's span for the stream.
async fn replicate(
    mut channel: Channel,
    metadata: MetadataMap,
    batches: mpsc::Receiver<Batch>,
    compression: Compression,
    stream_span: &Span,
) -> Result<Streaming<BatchAck>, Box<dyn std::error::Error + Send + Sync>> {
    let body = BatchBody {
        batches,
        compression,
        records: None,
    };
    let mut request = http::Request::new(tonic::body::Body::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static(REPLICATE_PATH);
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = metadata.into_headers();
    let headers = request.headers_mut();
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if compression != Compression::Identity {
        headers.insert(
            GRPC_ENCODING_HEADER,
            HeaderValue::from_static(compression.grpc_encoding()),
        );
    }

    poll_fn(|cx| GrpcService::poll_ready(&mut channel, cx)).await?;
    let response = GrpcService::call(&mut channel, request).await?;
    let (parts, body) = response.into_parts();
    // A status in the headers is a trailers-only response: the call ended at once.
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return Err(if status.code() == Code::Ok {
            "writer ended the stream without reading it".into()
        } else {
            status.into()
        });
    }
    crate::telemetry::link_writer_stream(stream_span, &MetadataMap::from_headers(parts.headers));
    let decoder = ProstCodec::<Batch, BatchAck>::default().decoder();
    Ok(Streaming::new_response(
        decoder,
        body,
        parts.status,
        None,
        Some(MAX_BATCH_MESSAGE_BYTES),
    ))
}

/// The request body of a replicate stream: each batch from the core is one gRPC
/// message sent as two chunks, its framing and then its packed records, which
/// HTTP/2 writes to the socket without copying them (or, compressed, as one).
struct BatchBody {
    batches: mpsc::Receiver<Batch>,
    compression: Compression,
    /// The records of the batch whose head was the last chunk.
    records: Option<Bytes>,
}

impl http_body::Body for BatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(records) = this.records.take() {
            return Poll::Ready(Some(Ok(Frame::data(records))));
        }
        let Some(batch) = ready!(this.batches.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        Poll::Ready(Some(
            match BatchFrame::encode(batch, MAX_BATCH_MESSAGE_BYTES, this.compression) {
                Ok(frame) => {
                    this.records = (!frame.records.is_empty()).then_some(frame.records);
                    Ok(Frame::data(frame.head))
                }
                Err(error) => Err(Status::resource_exhausted(error.to_string())),
            },
        ))
    }
}
