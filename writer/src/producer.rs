//! The destination producer and the per-batch delivery tracking.
//!
//! Each record is produced with an `Arc<BatchTracker>` as its delivery opaque (a
//! reference count, no allocation per record). The tracker counts outstanding
//! deliveries; the last one to finish (a delivery report, or the sender once it has
//! handed over every record) reports the batch's outcome to the stream session.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kmirror_common::cluster_access::{cluster_access, RefusalCause};
use kmirror_common::schema::ClusterSpec;
use kmirror_common::ClusterName;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub type DestinationProducer = ThreadedProducer<DeliveryContext>;

/// Settings the writer's guarantee depends on: nothing the operator gives
/// changes them.
///
/// Idempotence with acks=all keeps each partition's order across retries and
/// writes no duplicate when a produce is retried. One request in flight per
/// broker: with more, a producer new to a partition (a writer's first, or one
/// replacing a failed producer) can lose records when the partition's leader is
/// not ready. The first request is refused ("not leader"), the next one, already
/// in flight, is accepted by the leader once it is ready (a broker takes any
/// sequence from a producer it has no state for), and the producer then counts
/// the refused records as delivered. One request at a time, nothing goes ahead
/// of a refused request.
pub const PRODUCER_REQUIRED: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("max.in.flight.requests.per.connection", "1"),
];

/// Settings every destination producer gets unless the operator sets them.
///
/// `batch.size` is not here: it depends on the destination topic's limit, see
/// [`batch_size_for`]. The queue caps bound the memory a producer holds (librdkafka
/// would buffer up to 1 GiB) while leaving room for a full batch per partition.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("message.max.bytes", "33554432"),
    ("queue.buffering.max.kbytes", "32768"),
    ("queue.buffering.max.messages", "100000"),
    ("message.timeout.ms", "120000"),
    ("compression.type", "none"),
];

/// `batch.size` when the destination topic has Kafka's default limit
/// (`max.message.bytes` 1 048 588) or more: large batches cut the produce requests,
/// and the broker's work, per record.
pub const LARGE_BATCH_BYTES: i64 = 1_000_000;

/// `batch.size` when the destination topic's limit could not be read.
pub const CAUTIOUS_BATCH_BYTES: i64 = 65_536;

/// Room left under a topic's limit for the record batch's framing.
const BATCH_FRAMING_BYTES: i64 = 1_024;

/// The `batch.size` of the producer that writes to a destination topic whose
/// `max.message.bytes` is `limit`: the broker checks that limit against whole
/// record batches, so a batch must never grow past it (a single record larger than
/// `batch.size` still goes alone, and the writer checks records against the limit
/// before producing them).
pub fn batch_size_for(limit: Option<i64>) -> i64 {
    match limit {
        Some(limit) => (limit - BATCH_FRAMING_BYTES).clamp(BATCH_FRAMING_BYTES, LARGE_BATCH_BYTES),
        None => CAUTIOUS_BATCH_BYTES,
    }
}

/// Outcome of one batch, sent to the stream session when its last delivery ends.
#[derive(Debug)]
pub struct Completion {
    pub token: u64,
    pub failure: Option<KafkaError>,
    /// Destination partition and offset of the last record delivered (-1 when
    /// none, or when the batch spread over several partitions).
    pub dest_partition: i32,
    pub dest_offset: i64,
    /// Destination offset of the first record delivered (-1 as above).
    pub dest_first_offset: i64,
    /// Records delivered.
    pub delivered: usize,
}

pub struct BatchTracker {
    token: u64,
    /// Starts at 1, the sender's own hold, released by [`BatchTracker::finish_sending`].
    outstanding: AtomicUsize,
    failure: Mutex<Option<KafkaError>>,
    dest_partition: AtomicI32,
    dest_offset: AtomicI64,
    dest_first_offset: AtomicI64,
    delivered: AtomicUsize,
    spread: AtomicBool,
    completion_tx: mpsc::UnboundedSender<Completion>,
}

impl BatchTracker {
    pub fn new(token: u64, completion_tx: mpsc::UnboundedSender<Completion>) -> Arc<Self> {
        Arc::new(Self {
            token,
            outstanding: AtomicUsize::new(1),
            failure: Mutex::new(None),
            dest_partition: AtomicI32::new(-1),
            dest_offset: AtomicI64::new(-1),
            dest_first_offset: AtomicI64::new(i64::MAX),
            delivered: AtomicUsize::new(0),
            spread: AtomicBool::new(false),
            completion_tx,
        })
    }

    /// Called before handing a record to the producer.
    pub fn record_sent(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// A record the producer refused synchronously is not outstanding.
    pub fn record_not_sent(&self) {
        self.release();
    }

    /// Called once every record of the batch was handed over (or the rest dropped).
    pub fn finish_sending(&self) {
        self.release();
    }

    fn delivered(&self, partition: i32, offset: i64) {
        if offset < 0 {
            // The destination did not say where it wrote the record: counted as
            // written only because a later request succeeded, it may not be.
            // The batch fails and is sent again from the checkpoint.
            warn!(partition, "the destination confirmed a record without its offset; treating the batch as not delivered");
            self.failed(KafkaError::MessageProduction(
                RDKafkaErrorCode::Inconsistent,
            ));
            return;
        }
        let previous = self.dest_partition.swap(partition, Ordering::AcqRel);
        if previous != -1 && previous != partition {
            self.spread.store(true, Ordering::Release);
        }
        self.dest_offset.fetch_max(offset, Ordering::AcqRel);
        self.dest_first_offset.fetch_min(offset, Ordering::AcqRel);
        self.delivered.fetch_add(1, Ordering::AcqRel);
        self.release();
    }

    fn failed(&self, error: KafkaError) {
        {
            let mut failure = self.failure.lock().expect("tracker lock poisoned");
            failure.get_or_insert(error);
        }
        self.release();
    }

    fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let failure = self.failure.lock().expect("tracker lock poisoned").take();
        let spread = self.spread.load(Ordering::Acquire);
        let delivered = self.delivered.load(Ordering::Acquire);
        let (dest_partition, dest_offset, dest_first_offset) = if spread || delivered == 0 {
            (-1, -1, -1)
        } else {
            (
                self.dest_partition.load(Ordering::Acquire),
                self.dest_offset.load(Ordering::Acquire),
                self.dest_first_offset.load(Ordering::Acquire),
            )
        };
        // The session may be gone (stream closed); the outcome then has no reader.
        let _ = self.completion_tx.send(Completion {
            token: self.token,
            failure,
            dest_partition,
            dest_offset,
            dest_first_offset,
            delivered,
        });
    }
}

/// The settings a producer is built from: its cluster's stored spec, hashed. A
/// changed spec (a fixed CA, a new password) makes new producers, and tells the
/// ones built before it apart.
pub fn settings_of(cluster: &ClusterSpec) -> u64 {
    let mut hasher = DefaultHasher::new();
    cluster.hash(&mut hasher);
    hasher.finish()
}

/// Routes delivery reports to their batch trackers, and records the cluster's
/// refusals of the producer's logins and handshakes.
pub struct DeliveryContext {
    cluster: ClusterName,
    settings: u64,
    /// Set when the cluster refused this producer's login or handshake, cleared
    /// by a delivery: while set, nothing the producer holds reached the cluster
    /// through a connection it refused.
    refused: AtomicBool,
}

impl DeliveryContext {
    pub fn new(cluster: &ClusterSpec) -> Self {
        Self {
            cluster: cluster.name.clone(),
            settings: settings_of(cluster),
            refused: AtomicBool::new(false),
        }
    }

    /// The [`settings_of`] the producer was built from.
    pub fn settings(&self) -> u64 {
        self.settings
    }

    /// Whether the cluster refuses the producer's connections (see `refused`).
    pub fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // "1/1 brokers are down" follows every connection failure.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            debug!(cluster = %self.cluster, %error, reason, "destination client error");
            return;
        }
        warn!(cluster = %self.cluster, %error, reason, "destination client error");
        if let Some(cause) = RefusalCause::of(&error) {
            if cause.refuses_the_cluster() {
                self.refused.store(true, Ordering::Release);
            }
            cluster_access().record(&self.cluster, cause, Instant::now());
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<BatchTracker>;

    fn delivery(&self, result: &DeliveryResult<'_>, tracker: Arc<BatchTracker>) {
        match result {
            Ok(message) => {
                if self.refused.load(Ordering::Relaxed) {
                    self.refused.store(false, Ordering::Release);
                }
                tracker.delivered(message.partition(), message.offset())
            }
            Err((error, _message)) => tracker.failed(error.clone()),
        }
    }
}

/// What a produce error means for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The producer queue is full: wait and send the same record again.
    QueueFull,
    /// The record exceeds a size limit: the partition stops at it.
    RecordTooLarge,
    /// The destination topic or partition does not exist.
    DestinationMissing,
    /// The destination refuses the record (authorization, policy, invalid record).
    Rejected,
    /// Timeout, broker or producer failure: resend from the checkpoint with a fresh producer.
    DeliveryFailed,
}

/// Sorts every produce error into what the writer does about it.
pub fn classify(error: &KafkaError) -> FailureClass {
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return FailureClass::DeliveryFailed,
    };
    use RDKafkaErrorCode as Code;
    match code {
        Code::QueueFull => FailureClass::QueueFull,
        Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::MessageBatchTooLarge => {
            FailureClass::RecordTooLarge
        }
        Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::UnknownPartition => {
            FailureClass::DestinationMissing
        }
        Code::TopicAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed
        | Code::SaslAuthenticationFailed
        | Code::Authentication
        | Code::PolicyViolation
        | Code::InvalidRecord
        | Code::InvalidMessage
        | Code::InvalidRequiredAcks
        | Code::InvalidTimestamp
        | Code::UnsupportedForMessageFormat
        | Code::UnsupportedCompressionType
        | Code::InvalidArgument => FailureClass::Rejected,
        _ => FailureClass::DeliveryFailed,
    }
}

/// Upper bound of the bytes a record takes in a Kafka record batch (v2 format),
/// counting the batch header, as the broker compares it with `max.message.bytes`.
/// `header_bytes` are the bytes of the header keys and values.
pub fn record_batch_size_estimate(
    key_len: usize,
    value_len: usize,
    header_count: usize,
    header_bytes: usize,
) -> usize {
    const BATCH_HEADER: usize = 61;
    const RECORD_FIXED: usize = 1 + 10 + 5 + 5; // attributes, timestamp delta, offset delta, length
    const VARINT: usize = 5;
    // Each header: its key's and its value's length varints, then their bytes.
    BATCH_HEADER
        + RECORD_FIXED
        + VARINT
        + key_len
        + VARINT
        + value_len
        + VARINT
        + header_count * 2 * VARINT
        + header_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_never_outgrow_the_destination_topics_limit() {
        assert_eq!(batch_size_for(Some(1_048_588)), LARGE_BATCH_BYTES);
        assert_eq!(batch_size_for(Some(100_000)), 98_976);
        assert_eq!(batch_size_for(Some(10)), 1_024);
        assert_eq!(batch_size_for(None), CAUTIOUS_BATCH_BYTES);
    }

    #[test]
    fn produce_errors_are_sorted_by_what_the_partition_must_do() {
        let error = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            classify(&error(RDKafkaErrorCode::QueueFull)),
            FailureClass::QueueFull
        );
        assert_eq!(
            classify(&error(RDKafkaErrorCode::MessageSizeTooLarge)),
            FailureClass::RecordTooLarge
        );
        assert_eq!(
            classify(&error(RDKafkaErrorCode::UnknownTopicOrPartition)),
            FailureClass::DestinationMissing
        );
        assert_eq!(
            classify(&error(RDKafkaErrorCode::TopicAuthorizationFailed)),
            FailureClass::Rejected
        );
        assert_eq!(
            classify(&error(RDKafkaErrorCode::MessageTimedOut)),
            FailureClass::DeliveryFailed
        );
        assert_eq!(
            classify(&KafkaError::Canceled),
            FailureClass::DeliveryFailed
        );
    }

    #[tokio::test]
    async fn a_batch_completes_once_after_sending_and_every_delivery() {
        let (completion_tx, mut completion_rx) = mpsc::unbounded_channel();
        let tracker = BatchTracker::new(7, completion_tx);
        tracker.record_sent();
        tracker.record_sent();
        tracker.delivered(3, 10);
        tracker.delivered(3, 11);
        assert!(completion_rx.try_recv().is_err(), "still sending");
        tracker.finish_sending();
        let completion = completion_rx.try_recv().unwrap();
        assert_eq!(
            (
                completion.token,
                completion.dest_partition,
                completion.dest_offset
            ),
            (7, 3, 11)
        );
        assert_eq!(
            (completion.dest_first_offset, completion.delivered),
            (10, 2)
        );
        assert!(completion.failure.is_none());
        assert!(completion_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_failed_delivery_is_reported_and_spread_batches_have_no_single_offset() {
        let (completion_tx, mut completion_rx) = mpsc::unbounded_channel();
        let tracker = BatchTracker::new(1, completion_tx);
        tracker.record_sent();
        tracker.record_sent();
        tracker.record_sent();
        tracker.finish_sending();
        tracker.delivered(0, 5);
        tracker.delivered(1, 9);
        tracker.failed(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        ));
        let completion = completion_rx.try_recv().unwrap();
        assert_eq!(
            (completion.dest_partition, completion.dest_offset),
            (-1, -1)
        );
        assert!(completion.failure.is_some());
    }

    #[tokio::test]
    async fn a_record_confirmed_without_its_offset_fails_the_batch() {
        let (completion_tx, mut completion_rx) = mpsc::unbounded_channel();
        let tracker = BatchTracker::new(2, completion_tx);
        tracker.record_sent();
        tracker.record_sent();
        tracker.finish_sending();
        // Counted as written only because a later request succeeded.
        tracker.delivered(4, -1);
        tracker.delivered(4, 12);
        let completion = completion_rx.try_recv().unwrap();
        let failure = completion.failure.expect("the batch fails");
        assert_eq!(classify(&failure), FailureClass::DeliveryFailed);
    }
}
