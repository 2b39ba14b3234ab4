//! Batch consumption: librdkafka's `rd_kafka_consume_batch_queue`, which
//! rust-rdkafka does not wrap.
//!
//! rust-rdkafka's `poll` returns one record per call, and each call reads the
//! clock, takes the queue's lock and allocates: on 100-byte records that was a
//! third of the consumer thread. Here each partition's fetched records are routed
//! to a queue of the fetcher's own ([`BatchConsumer::route`]) and taken from it up
//! to a thousand at a time. The consumer's own queue keeps everything else
//! (statistics, errors); `BaseConsumer::poll` still serves it.
//!
//! This is the only module of the fetcher with `unsafe` code: raw librdkafka
//! handles, each owned by one value and released in its `Drop`.

use std::ffi::{c_char, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;

/// A consumer with a queue its routed partitions' records are taken from in
/// batches.
pub struct BatchConsumer<C: ConsumerContext + 'static> {
    // Declared first: the queue is released before the consumer it belongs to.
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    consumer: BaseConsumer<C>,
}

// SAFETY: librdkafka's queues are thread-safe; the queue handle is only released
// in `Drop`.
#[allow(unsafe_code)]
unsafe impl<C: ConsumerContext + 'static> Send for BatchConsumer<C> {}

impl<C: ConsumerContext + 'static> BatchConsumer<C> {
    pub fn new(consumer: BaseConsumer<C>) -> Self {
        // SAFETY: the client pointer is valid while `consumer` lives, and
        // `rd_kafka_queue_new` returns a new queue (never null).
        #[allow(unsafe_code)]
        let raw = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        let queue = NonNull::new(raw).expect("librdkafka creates a queue");
        Self { queue, consumer }
    }

    pub fn consumer(&self) -> &BaseConsumer<C> {
        &self.consumer
    }

    /// Sends the partition's fetched records to the batch queue. Call it before
    /// assigning the partition: librdkafka then never hands them to the consumer's
    /// queue. When the partition's fetching stops (unassigned, or assigned again),
    /// librdkafka undoes the routing and keeps its records on the partition's own
    /// queue until it is routed again, which moves them over in order. False if
    /// librdkafka has no such partition (a producer, a topic name with a NUL).
    pub fn route(&self, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: valid client and queue pointers; the partition queue reference
        // is released right after forwarding it.
        #[allow(unsafe_code)]
        unsafe {
            let partition_queue = rdsys::rd_kafka_queue_get_partition(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            );
            if partition_queue.is_null() {
                return false;
            }
            rdsys::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            rdsys::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// The partition's log start as the last fetch response told it (librdkafka
    /// keeps it; no request is made), or `None` before any.
    pub fn cached_log_start(&self, topic: &str, partition: i32) -> Option<i64> {
        let topic = CString::new(topic).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: valid client pointer, NUL-terminated topic, and out pointers to
        // two live i64s; the call only reads librdkafka's cached offsets.
        #[allow(unsafe_code)]
        let error = unsafe {
            rdsys::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (error == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && low >= 0).then_some(low)
    }

    /// Takes up to `max` records (and partition events, such as the end of a
    /// partition) from the batch queue, waiting up to `timeout` for the first.
    pub fn poll_batch(&self, timeout: Duration, max: usize) -> MessageBatch<'_> {
        let mut batch = MessageBatch {
            messages: Vec::with_capacity(max),
            _consumer: PhantomData,
        };
        // librdkafka's call waits until it has as many as asked for or the timeout
        // is over: a wait for a thousand would hold the first record back. Wait
        // for one, then take what is there.
        if !timeout.is_zero() {
            self.consume_into(&mut batch.messages, timeout, 1);
            if batch.messages.is_empty() {
                return batch;
            }
        }
        self.consume_into(&mut batch.messages, Duration::ZERO, max);
        batch
    }

    /// Appends what librdkafka hands over, until `messages` holds `max` or the
    /// timeout is over.
    fn consume_into(
        &self,
        messages: &mut Vec<*mut rdsys::rd_kafka_message_t>,
        timeout: Duration,
        max: usize,
    ) {
        let room = max.saturating_sub(messages.len());
        if room == 0 {
            return;
        }
        messages.reserve(room);
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: librdkafka writes at most `room` message pointers into the
        // vector's spare capacity (reserved above) and returns how many, or -1.
        #[allow(unsafe_code)]
        unsafe {
            let count = rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                messages.spare_capacity_mut().as_mut_ptr().cast(),
                room,
            );
            let count = usize::try_from(count).unwrap_or(0).min(room);
            messages.set_len(messages.len() + count);
        }
    }
}

impl<C: ConsumerContext + 'static> Drop for BatchConsumer<C> {
    fn drop(&mut self) {
        // SAFETY: the queue was created by `rd_kafka_queue_new` and is released
        // once; the consumer is still alive (it is dropped after this).
        #[allow(unsafe_code)]
        unsafe {
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr())
        };
    }
}

/// Records taken in one call, released when the batch is dropped. It borrows the
/// consumer, which must outlive its messages.
pub struct MessageBatch<'c> {
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
    _consumer: PhantomData<&'c ()>,
}

impl MessageBatch<'_> {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = RawMessage<'_>> {
        self.messages.iter().map(|&message| RawMessage {
            // SAFETY: librdkafka returned non-null messages that live until the
            // batch is dropped.
            #[allow(unsafe_code)]
            message: unsafe { &*message },
        })
    }
}

impl Drop for MessageBatch<'_> {
    fn drop(&mut self) {
        for &message in &self.messages {
            // SAFETY: each message was returned by `rd_kafka_consume_batch_queue`
            // and is destroyed once.
            #[allow(unsafe_code)]
            unsafe {
                rdsys::rd_kafka_message_destroy(message)
            };
        }
    }
}

/// One record (or partition event) of a [`MessageBatch`].
#[derive(Clone, Copy)]
pub struct RawMessage<'b> {
    message: &'b rdsys::rd_kafka_message_t,
}

impl<'b> RawMessage<'b> {
    /// The event's error, if it is one (the end of a partition, a fetch error)
    /// rather than a record.
    pub fn error(&self) -> Option<RDKafkaErrorCode> {
        match self.message.err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => None,
            error => Some(error.into()),
        }
    }

    pub fn topic(&self) -> &'b str {
        if self.message.rkt.is_null() {
            return "";
        }
        // SAFETY: the topic handle lives as long as the message and its name is a
        // NUL-terminated string.
        #[allow(unsafe_code)]
        let name = unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.message.rkt)) };
        name.to_str().unwrap_or("")
    }

    pub fn partition(&self) -> i32 {
        self.message.partition
    }

    /// Whether `other` is of the same topic and partition (without reading the
    /// topic's name).
    pub fn same_partition(&self, other: &RawMessage<'_>) -> bool {
        self.message.partition == other.message.partition
            && ptr::eq(self.message.rkt, other.message.rkt)
    }

    pub fn offset(&self) -> i64 {
        self.message.offset
    }

    pub fn key(&self) -> Option<&'b [u8]> {
        bytes(self.message.key.cast_const(), self.message.key_len)
    }

    pub fn payload(&self) -> Option<&'b [u8]> {
        bytes(self.message.payload.cast_const(), self.message.len)
    }

    /// CreateTime or LogAppendTime, in milliseconds.
    pub fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message; librdkafka writes the type.
        #[allow(unsafe_code)]
        let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(self.message, &mut kind) };
        match kind {
            rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => None,
            _ => Some(timestamp),
        }
    }

    /// The record's headers in order, as (key, value); a null value is `None`.
    pub fn headers(&self) -> RawHeaders<'b> {
        let mut headers: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
        // SAFETY: a valid message; the headers belong to it (not detached).
        #[allow(unsafe_code)]
        let error = unsafe {
            rdsys::rd_kafka_message_headers(
                self.message as *const rdsys::rd_kafka_message_t,
                &mut headers,
            )
        };
        let headers = match error {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => headers,
            _ => ptr::null_mut(),
        };
        RawHeaders {
            headers,
            index: 0,
            _message: PhantomData,
        }
    }
}

/// Iterator over a [`RawMessage`]'s headers.
#[derive(Clone)]
pub struct RawHeaders<'b> {
    headers: *const rdsys::rd_kafka_headers_t,
    index: usize,
    _message: PhantomData<&'b ()>,
}

impl<'b> Iterator for RawHeaders<'b> {
    type Item = (&'b [u8], Option<&'b [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.headers.is_null() {
            return None;
        }
        let mut name: *const c_char = ptr::null();
        let mut value: *const c_void = ptr::null();
        let mut size = 0usize;
        // SAFETY: the header list lives as long as the message; librdkafka writes
        // the name, value and size of the header at `index`, if there is one.
        #[allow(unsafe_code)]
        let error = unsafe {
            rdsys::rd_kafka_header_get_all(
                self.headers,
                self.index,
                &mut name,
                &mut value,
                &mut size,
            )
        };
        if error != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            return None;
        }
        self.index += 1;
        // SAFETY: header names are NUL-terminated strings owned by the message.
        #[allow(unsafe_code)]
        let key = unsafe { CStr::from_ptr(name) }.to_bytes();
        Some((key, bytes(value, size)))
    }
}

/// A librdkafka (pointer, length) pair as a slice; null is `None`.
fn bytes<'b>(data: *const c_void, len: usize) -> Option<&'b [u8]> {
    if data.is_null() {
        return None;
    }
    // SAFETY: librdkafka's pointer and length describe bytes owned by the
    // message, which outlives `'b`.
    #[allow(unsafe_code)]
    Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::*;

    type Seen = (
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
        Option<i64>,
    );

    const TIMESTAMP: i64 = 1_700_000_000_000;

    /// Record `index` of the test: partition `index % 2`, offset `index / 2`;
    /// record 6 has neither key nor value.
    fn expected(index: i64) -> Seen {
        let (key, value) = if index == 6 {
            (None, None)
        } else {
            (
                Some(format!("key-{index}").into_bytes()),
                Some(format!("value-{index}").into_bytes()),
            )
        };
        let headers = vec![
            (b"trace".to_vec(), Some(format!("h-{index}").into_bytes())),
            (b"empty".to_vec(), Some(Vec::new())),
            (b"null".to_vec(), None),
        ];
        (index / 2, key, value, headers, Some(TIMESTAMP + index))
    }

    #[test]
    fn routed_partitions_hand_over_every_record_in_order_then_their_end() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("events", 2, 1).expect("mock topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .expect("producer");
        for index in 0..60 {
            let (_, key, value, headers, timestamp) = expected(index);
            let headers = headers
                .iter()
                .fold(OwnedHeaders::new(), |all, (key, value)| {
                    all.insert(Header {
                        key: std::str::from_utf8(key).expect("UTF-8 key"),
                        value: value.as_deref(),
                    })
                });
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to("events")
                .partition(i32::try_from(index % 2).expect("small"))
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(value) = &value {
                record = record.payload(value);
            }
            if let Some(timestamp) = timestamp {
                record = record.timestamp(timestamp);
            }
            producer
                .send(record)
                .map_err(|(error, _)| error)
                .expect("sent");
        }
        producer.flush(Duration::from_secs(10)).expect("delivered");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "batch-poll-test")
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let consumer = BatchConsumer::new(consumer);
        let mut list = TopicPartitionList::new();
        for partition in 0..2 {
            assert!(consumer.route("events", partition));
            list.add_partition_offset("events", partition, Offset::Beginning)
                .expect("valid offset");
        }
        consumer.consumer().assign(&list).expect("assigned");

        let mut seen: [Vec<Seen>; 2] = [Vec::new(), Vec::new()];
        let mut ends: [Option<i64>; 2] = [None, None];
        let deadline = Instant::now() + Duration::from_secs(30);
        while ends.iter().any(Option::is_none) {
            assert!(
                Instant::now() < deadline,
                "timed out: ends {ends:?}, seen {seen:?}"
            );
            if let Some(Ok(message)) = consumer.consumer().poll(Duration::ZERO) {
                panic!("a record bypassed the batch queue: {message:?}");
            }
            // A batch is handed over as soon as a record is there, not when the
            // batch is full or the wait is over.
            let polled_at = Instant::now();
            let batch = consumer.poll_batch(Duration::from_secs(20), 16);
            assert!(
                polled_at.elapsed() < Duration::from_secs(10),
                "waited {:?} for a batch of {}",
                polled_at.elapsed(),
                batch.len()
            );
            assert!(batch.len() <= 16);
            for message in batch.iter() {
                assert_eq!(message.topic(), "events");
                let partition = usize::try_from(message.partition()).expect("0 or 1");
                match message.error() {
                    None => seen[partition].push((
                        message.offset(),
                        message.key().map(<[u8]>::to_vec),
                        message.payload().map(<[u8]>::to_vec),
                        message
                            .headers()
                            .map(|(key, value)| (key.to_vec(), value.map(<[u8]>::to_vec)))
                            .collect(),
                        message.timestamp_ms(),
                    )),
                    Some(RDKafkaErrorCode::PartitionEOF) => {
                        ends[partition] = Some(message.offset())
                    }
                    Some(error) => panic!("unexpected consumer error {error:?}"),
                }
            }
        }
        for partition in 0..2 {
            let wanted: Vec<Seen> = (0..60)
                .filter(|index| index % 2 == i64::try_from(partition).expect("small"))
                .map(expected)
                .collect();
            assert_eq!(seen[partition], wanted, "partition {partition}");
            assert_eq!(ends[partition], Some(30), "end of partition {partition}");
        }
    }
}
