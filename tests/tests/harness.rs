//! The harness checked against the real stack, without a fleet: producing,
//! reading back, transactions, kcat, topic configs and watermarks must be right
//! before any mirroring test can be believed.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::{fidelity_records, KeyedRecords};
use kmirror_tests::kafka::{
    self, assert_partition_holds, create_topic, produce, produce_transactions, read_all,
    record_count, Cluster, OutRecord, Transaction, WatermarkReader,
};
use kmirror_tests::{kcat, now_ms, stack, unique_name};

#[tokio::test(flavor = "multi_thread")]
async fn stack_servers_answer() {
    let stack = stack();
    assert!(stack.etcd_endpoint.starts_with("http://127.0.0.1:"));
    let reader = WatermarkReader::new(Cluster::Dest).unwrap();
    let missing = unique_name("harness-missing");
    assert_eq!(reader.offset_count(&missing).await.unwrap(), 0);
    assert_eq!(
        kafka::partition_count(Cluster::Dest, &missing)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn produced_records_read_back_exactly_per_partition() -> Result<()> {
    let topic = unique_name("harness-roundtrip");
    create_topic(Cluster::Source, &topic, 3, &[]).await?;
    let mut records = KeyedRecords::new(3_000, 3).generate();
    records.extend(fidelity_records(1, now_ms()));
    let delivered = produce(Cluster::Source, &topic, records.clone()).await?;

    for partition in 0..3 {
        let offsets: Vec<i64> = delivered
            .iter()
            .filter(|delivery| delivery.partition == partition)
            .map(|delivery| delivery.offset)
            .collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition}: offsets in produce order"
        );
    }
    let read = read_all(Cluster::Source, &topic).await?;
    assert_eq!(record_count(&read), records.len());
    for (partition, partition_records) in &read {
        let produced: Vec<&OutRecord> = records
            .iter()
            .filter(|record| record.partition == Some(*partition))
            .collect();
        assert_partition_holds(partition_records, &produced);
    }
    let reader = WatermarkReader::new(Cluster::Source)?;
    assert_eq!(reader.offset_count(&topic).await?, records.len() as i64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn only_committed_transactions_are_read() -> Result<()> {
    let topic = unique_name("harness-transactions");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    let batch = |first: u64, count: u64| {
        KeyedRecords {
            first_sequence: first,
            ..KeyedRecords::new(count, 2)
        }
        .generate()
    };
    let transactions = vec![
        Transaction {
            records: batch(0, 10),
            commit: true,
        },
        Transaction {
            records: batch(10, 10),
            commit: false,
        },
        Transaction {
            records: batch(20, 10),
            commit: true,
        },
        Transaction {
            records: batch(30, 5),
            commit: false,
        },
    ];
    let committed: Vec<OutRecord> = transactions
        .iter()
        .filter(|transaction| transaction.commit)
        .flat_map(|transaction| transaction.records.clone())
        .collect();
    let results = produce_transactions(Cluster::Source, &topic, transactions).await?;
    assert_eq!(
        results.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10, 0, 10, 0]
    );

    let read = read_all(Cluster::Source, &topic).await?;
    assert_eq!(record_count(&read), committed.len());
    for (partition, partition_records) in &read {
        let expected: Vec<&OutRecord> = committed
            .iter()
            .filter(|record| record.partition == Some(*partition))
            .collect();
        assert_partition_holds(partition_records, &expected);
    }
    // Aborted records and transaction markers still take offsets.
    let offsets = WatermarkReader::new(Cluster::Source)?
        .offset_count(&topic)
        .await?;
    assert!(
        offsets > committed.len() as i64 + 15,
        "{offsets} offsets for {} committed records",
        committed.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kcat_reads_what_rdkafka_reads() -> Result<()> {
    let topic = unique_name("harness-kcat");
    create_topic(Cluster::Source, &topic, 3, &[]).await?;
    let mut records = KeyedRecords::new(2_000, 3).generate();
    // Binary keys and values, null and empty ones: kcat's output carries lengths.
    for record in fidelity_records(2, now_ms()) {
        let text_headers_only = record.headers.iter().all(|(name, value)| {
            value.as_ref().is_some_and(|bytes| {
                !bytes
                    .iter()
                    .any(|byte| matches!(byte, b',' | b'=' | b'\n' | b'\t'))
                    && bytes.is_ascii()
            }) && !name.contains([',', '='])
        });
        if text_headers_only {
            records.push(record);
        } else {
            records.push(OutRecord {
                headers: Vec::new(),
                ..record
            });
        }
    }
    produce(Cluster::Source, &topic, records).await?;

    let with_rdkafka = read_all(Cluster::Source, &topic).await?;
    let with_kcat = kcat::read_topic(Cluster::Source, &topic, None).await?;
    kafka::assert_same_partitions(&with_rdkafka, &with_kcat);
    for (partition, records) in &with_rdkafka {
        let offsets: Vec<i64> = records.iter().map(|record| record.offset).collect();
        let kcat_offsets: Vec<i64> = with_kcat[partition]
            .iter()
            .map(|record| record.offset)
            .collect();
        assert_eq!(offsets, kcat_offsets, "partition {partition}");
    }
    let only_partition_two = kcat::read_topic(Cluster::Source, &topic, Some(2)).await?;
    assert_eq!(
        only_partition_two.keys().copied().collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(only_partition_two[&2], with_kcat[&2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_limits_reject_big_records_until_raised() -> Result<()> {
    let topic = unique_name("harness-limits");
    create_topic(Cluster::Dest, &topic, 1, &[("max.message.bytes", "100000")]).await?;
    assert_eq!(
        kafka::topic_config(Cluster::Dest, &topic, "max.message.bytes")
            .await?
            .as_deref(),
        Some("100000")
    );
    let big = OutRecord {
        partition: Some(0),
        key: Some(b"big".to_vec()),
        value: Some(vec![7; 300_000]),
        ..OutRecord::default()
    };
    let rejected = produce(Cluster::Dest, &topic, vec![big.clone()]).await;
    let error = format!(
        "{:#}",
        rejected.expect_err("a record over max.message.bytes is rejected")
    );
    assert!(
        error.contains("too large") || error.contains("TooLarge"),
        "{error}"
    );

    kafka::alter_topic_configs(Cluster::Dest, &topic, &[("max.message.bytes", "1000000")]).await?;
    // Config changes reach the broker's log asynchronously.
    kmirror_tests::wait_until(Duration::from_secs(30), "the raised limit to apply", || {
        let (topic, big) = (topic.clone(), big.clone());
        async move {
            match produce(Cluster::Dest, &topic, vec![big]).await {
                Ok(_) => Ok(()),
                Err(error) => Err(format!("{error:#}")),
            }
        }
    })
    .await
    .map_err(anyhow::Error::msg)?;
    assert_eq!(
        kafka::topic_config(Cluster::Dest, &topic, "max.message.bytes")
            .await?
            .as_deref(),
        Some("1000000")
    );
    let read = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&read), 1);
    assert_eq!(read[&0][0].value.as_ref().map(Vec::len), Some(300_000));
    Ok(())
}
