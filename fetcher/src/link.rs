//! The replicate stream to one writer, reconnected with backoff while the core
//! wants it. Acks go to the core on an unbounded channel: their number is bounded
//! by the in-flight windows, and the writer must never wait on the core.

use std::time::Duration;

use kmirror_common::service::{REPLICATE_CONNECTION_WINDOW_BYTES, REPLICATE_STREAM_WINDOW_BYTES};
use kmirror_common::MemberId;
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::Request;
use kmirror_proto::v1::writer_client::WriterClient;
use kmirror_proto::v1::{Batch, BatchAck};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Span};

use crate::MAX_BATCH_MESSAGE_BYTES;

/// Batches queued to one writer beyond those already on the wire.
const LINK_QUEUE: usize = 1024;

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
}

impl Link {
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        while !self.cancel.is_cancelled() {
            match self.connect_and_stream().await {
                Ok(()) => backoff = Duration::from_millis(100),
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
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
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
            .initial_connection_window_size(REPLICATE_CONNECTION_WINDOW_BYTES)
            .connect()
            .await?;
        let client = WriterClient::new(channel)
            .max_decoding_message_size(MAX_BATCH_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_BATCH_MESSAGE_BYTES);
        let stream_span = crate::telemetry::replicate_stream_span(&self.writer, &self.address);
        let outcome = self.stream(client, &stream_span).await;
        if let Err(error) = &outcome {
            crate::telemetry::stream_failed(&stream_span, error.as_ref());
        }
        outcome
    }

    /// One replicate stream, under `stream_span`: its trace context goes to the
    /// writer in the request metadata, the writer's comes back in the response's.
    async fn stream(
        &self,
        mut client: WriterClient<Channel>,
        stream_span: &Span,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (batch_tx, batch_rx) = mpsc::channel(LINK_QUEUE);
        let mut request = Request::new(ReceiverStream::new(batch_rx));
        crate::telemetry::inject_stream_context(stream_span, request.metadata_mut());
        let response = client.replicate(request).await?;
        crate::telemetry::link_writer_stream(stream_span, response.metadata());
        let mut acks = response.into_inner();
        info!(writer = %self.writer, address = %self.address, "replicate stream open");
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
