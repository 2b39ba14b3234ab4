//! Every record arrives byte-exact: null keys, tombstones (a null value is not an
//! empty value), empty, null and binary headers, binary keys and values, and from
//! a transactional producer only the committed records (the offset gaps that
//! aborted records and transaction markers leave are not loss).

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::{fidelity_records, KeyedRecords};
use kmirror_tests::kafka::{
    assert_partition_holds, assert_same_partitions, create_topic, produce, produce_transactions,
    read_all, record_count, Cluster, OutRecord, Transaction, WatermarkReader,
};
use kmirror_tests::{now_ms, unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn edge_case_records_and_committed_transactions_arrive_byte_exact() -> Result<()> {
    const PARTITIONS: i32 = 2;
    let topic = unique_name("fidelity");
    let flow = unique_name("fidelity-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;

    let base_timestamp = now_ms() - 60_000;
    let mut plain = fidelity_records(0, base_timestamp);
    plain.extend(fidelity_records(1, base_timestamp + 1_000));
    produce(Cluster::Source, &topic, plain.clone()).await?;

    let batch = |first_sequence: u64, count: u64| {
        KeyedRecords {
            first_sequence,
            ..KeyedRecords::new(count, PARTITIONS)
        }
        .generate()
    };
    let transactions = vec![
        Transaction {
            records: batch(0, 50),
            commit: true,
        },
        Transaction {
            records: batch(50, 50),
            commit: false,
        },
        Transaction {
            records: fidelity_records(1, base_timestamp + 2_000),
            commit: true,
        },
        Transaction {
            records: batch(100, 30),
            commit: false,
        },
        Transaction {
            records: batch(130, 20),
            commit: true,
        },
    ];
    let mut expected: Vec<OutRecord> = plain;
    expected.extend(
        transactions
            .iter()
            .filter(|transaction| transaction.commit)
            .flat_map(|transaction| transaction.records.clone()),
    );
    produce_transactions(Cluster::Source, &topic, transactions).await?;

    // The source itself holds exactly the expected records, with offset gaps.
    let source = read_all(Cluster::Source, &topic).await?;
    for (partition, records) in &source {
        let produced: Vec<&OutRecord> = expected
            .iter()
            .filter(|record| record.partition == Some(*partition))
            .collect();
        assert_partition_holds(records, &produced);
    }
    let source_offsets = WatermarkReader::new(Cluster::Source)?
        .offset_count(&topic)
        .await?;
    assert!(
        source_offsets > expected.len() as i64,
        "no offset gaps in the source"
    );

    let fleet = Fleet::start(FleetOptions::new("fidelity")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, expected.len() as i64, Duration::from_secs(120))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    let dest = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&dest), expected.len());
    assert_same_partitions(&source, &dest);
    for (partition, records) in &dest {
        let produced: Vec<&OutRecord> = expected
            .iter()
            .filter(|record| record.partition == Some(*partition))
            .collect();
        assert_partition_holds(records, &produced);
    }
    Ok(())
}
