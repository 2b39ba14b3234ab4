//! Fault injection at the writer: a destination that stops answering, simulated
//! with librdkafka's mock cluster (the only place a mock Kafka is used), against a
//! real etcd (the local stack's, on `KMIRROR_ETCD_PORT` like the stack script).
//!
//! Pins the contract the fetcher's checkpointing relies on: a batch whose delivery
//! fails is acknowledged with an error and no committed offset, later batches of
//! the partition are refused unproduced until the partition is restarted, and the
//! restarted partition goes through a fresh producer with nothing lost or reordered.
//! A malformed batch is refused whole and halts its partition the same way.

use std::time::Duration;

use kmirror_common::member_config::MemberConfig;
use kmirror_proto::packed::PackedBuilder;
use kmirror_proto::v1::writer_client::WriterClient;
use kmirror_proto::v1::{Batch, BatchAck, ErrorKind, SourcePartition};
use kmirror_test_support::local_stack::etcd_endpoint;
use kmirror_test_support::unique_name;
use kmirror_writer::{Writer, WriterConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

fn batch(seq: u64, epoch: u64, restart: bool, offsets: std::ops::Range<i64>) -> Batch {
    let mut records = PackedBuilder::default();
    for offset in offsets.clone() {
        let header_value = [0, 1, offset as u8];
        records
            .push(
                offset,
                Some(format!("key-{offset}").as_bytes()),
                Some(format!("value-{offset}").as_bytes()),
                [("h", Some(&header_value[..]))],
                Some(1_700_000_000_000 + offset),
            )
            .expect("offsets increase");
    }
    let records = records.finish();
    Batch {
        source: Some(SourcePartition {
            flow: "flow".to_string(),
            topic: "orders".to_string(),
            partition: 0,
        }),
        dest_topic: "orders".to_string(),
        epoch,
        seq,
        restart,
        next_offset: offsets.end,
        records: records.records,
        base_offset: records.base_offset,
        record_count: records.record_count,
        trace_context: Default::default(),
        source_partition_count: 1,
        dest_partition_count: 1,
        read_from: Some(offsets.start),
    }
}

async fn next_ack(acks: &mut tonic::Streaming<BatchAck>) -> BatchAck {
    tokio::time::timeout(Duration::from_secs(30), acks.message())
        .await
        .expect("an ack within 30s")
        .expect("stream healthy")
        .expect("stream open")
}

fn kind(ack: &BatchAck) -> Option<ErrorKind> {
    ack.error
        .as_ref()
        .map(|error| ErrorKind::try_from(error.kind).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_is_not_acknowledged_and_the_restart_goes_through_a_fresh_producer() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic("orders", 1, 1).expect("mock topic");
    let bootstrap = mock.bootstrap_servers();

    let fleet = unique_name("writer-fault");
    let mut etcd = kmirror_test_support::etcd::connect().await;
    let root = format!("/kmirror/{fleet}");
    etcd.put(
        format!("{root}/clusters/mock"),
        format!(r#"{{"name":"mock","bootstrap_servers":"{bootstrap}"}}"#),
        None,
    )
    .await
    .unwrap();
    etcd.put(
        format!("{root}/flows/flow"),
        r#"{"name":"flow","source_cluster":"src","dest_cluster":"mock","include":"orders","created_ms":0}"#,
        None,
    )
    .await
    .unwrap();

    let config = WriterConfig {
        member: MemberConfig {
            etcd: vec![etcd_endpoint()],
            fleet: fleet.clone(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            // The writer's delivery, not its transport (fleet_tls covers that).
            insecure: true,
            ..MemberConfig::default()
        },
        producer_properties: vec![("message.timeout.ms".to_string(), "2000".to_string())],
    };
    let writer = Writer::build(config).await.expect("writer starts");
    let address = format!("http://{}", writer.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let writer_task = tokio::spawn(writer.run(shutdown.clone()));

    let mut client = WriterClient::connect(address).await.unwrap();
    let (batch_tx, batch_rx) = mpsc::channel(16);
    let mut acks = client
        .replicate(ReceiverStream::new(batch_rx))
        .await
        .unwrap()
        .into_inner();

    batch_tx.send(batch(1, 3, true, 0..10)).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.seq, kind(&ack), ack.committed_offset), (1, None, 10));
    assert_eq!((ack.dest_partition, ack.dest_offset), (0, 9));

    // The destination stops answering: the delivery times out.
    mock.broker_down(1).unwrap();
    batch_tx.send(batch(2, 3, false, 10..20)).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.seq, 2);
    assert_eq!(kind(&ack), Some(ErrorKind::DeliveryFailed));
    assert_eq!(
        ack.committed_offset, -1,
        "nothing of a failed batch counts as written"
    );
    mock.broker_up(1).unwrap();

    // Without a restart nothing more of the partition is produced.
    batch_tx.send(batch(3, 3, false, 20..30)).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.seq, kind(&ack)), (3, Some(ErrorKind::PartitionHalted)));

    // An older epoch is refused whatever its flags.
    batch_tx.send(batch(4, 2, true, 10..20)).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.seq, kind(&ack)), (4, Some(ErrorKind::StaleEpoch)));

    // The fetcher restarts from its checkpoint (offset 10).
    batch_tx.send(batch(5, 3, true, 10..20)).await.unwrap();
    batch_tx.send(batch(6, 3, false, 20..30)).await.unwrap();
    let first = next_ack(&mut acks).await;
    let second = next_ack(&mut acks).await;
    assert_eq!(
        (first.seq, kind(&first), first.committed_offset),
        (5, None, 20)
    );
    assert_eq!(
        (second.seq, kind(&second), second.committed_offset),
        (6, None, 30)
    );

    // A batch whose packed records are cut short is refused whole, and halts the
    // partition like a failed delivery.
    let mut malformed = batch(7, 3, false, 30..40);
    malformed.records.truncate(malformed.records.len() - 1);
    batch_tx.send(malformed).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!(
        (ack.seq, kind(&ack), ack.committed_offset),
        (7, Some(ErrorKind::Rejected), -1)
    );
    let message = &ack.error.as_ref().unwrap().message;
    assert!(
        message.contains("flow:orders/0") && message.contains("record 9"),
        "{message}"
    );
    batch_tx.send(batch(8, 3, false, 30..40)).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.seq, kind(&ack)), (8, Some(ErrorKind::PartitionHalted)));
    batch_tx.send(batch(9, 3, true, 30..40)).await.unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.seq, kind(&ack), ack.committed_offset), (9, None, 40));

    drop(batch_tx);
    assert!(
        next_ack_or_end(&mut acks).await.is_none(),
        "stream ends after the last ack"
    );
    shutdown.cancel();
    writer_task.await.unwrap().unwrap();

    // Every record exactly once, in order, with key, value, headers and timestamp.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("orders", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 40 && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let header = message
                .headers()
                .map(|headers| headers.get(0).value.map(<[u8]>::to_vec));
            seen.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().map(<[u8]>::to_vec),
                header,
                message.timestamp().to_millis(),
            ));
        }
    }
    let expected: Vec<_> = (0..40i64)
        .map(|offset| {
            (
                Some(format!("key-{offset}").into_bytes()),
                Some(format!("value-{offset}").into_bytes()),
                Some(Some(vec![0, 1, offset as u8])),
                Some(1_700_000_000_000 + offset),
            )
        })
        .collect();
    assert_eq!(seen, expected);
}

async fn next_ack_or_end(acks: &mut tonic::Streaming<BatchAck>) -> Option<BatchAck> {
    tokio::time::timeout(Duration::from_secs(30), acks.message())
        .await
        .expect("stream ends within 30s")
        .expect("stream healthy")
}
