//! Guarantee: a record larger than the destination topic accepts stops its
//! partition at that record (never skipped, the checkpoint never passes it) and
//! `status` says why; other partitions keep flowing; once the operator raises the
//! limit the partition resumes by itself and nothing is lost.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    alter_topic_configs, assert_same_partitions, create_topic, produce, read_all, Cluster,
    OutRecord, WatermarkReader,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};
use regex::Regex;

const PARTITIONS: i32 = 3;
const SMALL_RECORDS_PER_PARTITION: u64 = 100;
const BIG_RECORD_BYTES: usize = 300_000;
const DEST_LIMIT: &str = "100000";

#[tokio::test(flavor = "multi_thread")]
async fn record_over_the_destination_limit_stops_its_partition_until_the_limit_is_raised(
) -> Result<()> {
    let topic = unique_name("oversized");
    let flow = unique_name("oversized-flow");
    create_topic(
        Cluster::Source,
        &topic,
        PARTITIONS,
        &[("max.message.bytes", "2000000")],
    )
    .await?;
    create_topic(
        Cluster::Dest,
        &topic,
        PARTITIONS,
        &[("max.message.bytes", DEST_LIMIT)],
    )
    .await?;

    // Partition 0: 50 small records, the big one, 50 small ones; the others small only.
    let mut records: Vec<OutRecord> = Vec::new();
    let small =
        KeyedRecords::new(SMALL_RECORDS_PER_PARTITION * PARTITIONS as u64, PARTITIONS).generate();
    for (index, mut record) in small.into_iter().enumerate() {
        let partition = (index as u64 / SMALL_RECORDS_PER_PARTITION) as i32;
        record.partition = Some(partition);
        records.push(record);
        if partition == 0 && index as u64 == SMALL_RECORDS_PER_PARTITION / 2 - 1 {
            records.push(OutRecord {
                partition: Some(0),
                key: Some(b"big".to_vec()),
                value: Some(vec![b'B'; BIG_RECORD_BYTES]),
                headers: vec![("kind".to_string(), Some(b"big".to_vec()))],
                timestamp: Some(kmirror_tests::now_ms()),
            });
        }
    }
    let big_index = records
        .iter()
        .position(|record| record.key.as_deref() == Some(b"big"))
        .expect("the big record is there");
    let total = records.len() as i64;
    let delivered = produce(Cluster::Source, &topic, records).await?;
    let big_offset = delivered[big_index].offset;
    assert_eq!(delivered[big_index].partition, 0);

    let fleet = Fleet::start(FleetOptions::new("oversized")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;

    // The other partitions are mirrored completely, partition 0 up to the big record.
    let dest = WatermarkReader::new(Cluster::Dest)?;
    let small_count = SMALL_RECORDS_PER_PARTITION as i64;
    let expected_highs = [big_offset, small_count, small_count];
    fleet
        .wait_until(
            Duration::from_secs(120),
            "partitions 1 and 2 mirrored, partition 0 up to the big record",
            || async {
                let watermarks = dest
                    .watermarks(&topic)
                    .await
                    .map_err(|error| format!("{error:#}"))?;
                let highs: Vec<i64> = watermarks
                    .iter()
                    .map(|watermarks| watermarks.high)
                    .collect();
                if highs == expected_highs {
                    Ok(())
                } else {
                    Err(format!("destination high watermarks {highs:?}"))
                }
            },
        )
        .await;
    wait_stuck_at(&fleet, &flow, &topic, big_offset).await;

    // Stuck there for a reason named in full, and the other partitions are done.
    let status = fleet.flow_status(&flow).await.map_err(anyhow::Error::msg)?;
    let stuck = status
        .partition(&topic, 0)
        .expect("partition 0 has a status");
    assert_error_names_the_problem(&stuck.error, &topic, big_offset);
    for partition in status.partitions_of(&topic) {
        if partition.partition == 0 {
            assert_eq!(
                partition.mirrored_offset, big_offset,
                "checkpoint passed the big record: {partition:?}"
            );
        } else {
            assert_eq!(partition.mirrored_offset, small_count, "{partition:?}");
            assert!(partition.error.is_empty(), "{partition:?}");
        }
    }
    assert_eq!(dest.watermarks(&topic).await?[0].high, big_offset);

    // The operator raises the limit; partition 0 resumes by itself.
    alter_topic_configs(Cluster::Dest, &topic, &[("max.message.bytes", "1000000")]).await?;
    fleet
        .wait_for_mirror(&topic, total, Duration::from_secs(120))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}

/// The operator's first hour: `small1`, a 2 MB record and `small2`, each produced
/// on its own while the fleet runs, to a topic whose destination takes about 1 MB.
/// The consumer fetches `small1` alone (the big record does not fit in the same
/// fetch), so its batch is still waiting for the destination when the big record's
/// batch is cut short: `small1` must be written once and checkpointed, and every
/// retry must start at the big record, not write `small1` again.
#[tokio::test(flavor = "multi_thread")]
async fn records_before_a_too_large_one_are_written_once_however_often_it_is_retried() -> Result<()>
{
    let topic = unique_name("halted");
    let flow = unique_name("halted-flow");
    create_topic(
        Cluster::Source,
        &topic,
        1,
        &[("max.message.bytes", "3000000")],
    )
    .await?;
    create_topic(
        Cluster::Dest,
        &topic,
        1,
        &[("max.message.bytes", "1048588")],
    )
    .await?;
    let fleet = Fleet::start(FleetOptions::new("halted")).await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;

    let record = |name: &str, value: Vec<u8>| OutRecord {
        partition: Some(0),
        key: Some(name.as_bytes().to_vec()),
        value: Some(value),
        headers: vec![("record".to_string(), Some(name.as_bytes().to_vec()))],
        timestamp: Some(kmirror_tests::now_ms()),
    };
    let small1 = record("small1", b"first".to_vec());
    let big = record("big", vec![b'B'; 2_000_000]);
    let small2 = record("small2", b"second".to_vec());
    for one in [&small1, &big, &small2] {
        produce(Cluster::Source, &topic, vec![one.clone()]).await?;
    }
    let big_offset = 1;

    // Stuck at the big record, with `small1` checkpointed.
    wait_stuck_at(&fleet, &flow, &topic, big_offset).await;
    // Several retries, each halting at the big record again.
    let halts = || {
        fleet
            .member_ids()
            .iter()
            .filter_map(|id| {
                std::fs::read_to_string(fleet.log_dir().join(format!("{id}.log"))).ok()
            })
            .map(|log| {
                log.matches("partition halted at a record it cannot produce")
                    .count()
            })
            .sum::<usize>()
    };
    fleet
        .wait_until(
            Duration::from_secs(60),
            "four halts at the big record",
            || async {
                match halts() {
                    count if count >= 4 => Ok(()),
                    count => Err(format!("{count} halts so far")),
                }
            },
        )
        .await;

    let dest = read_all(Cluster::Dest, &topic).await?;
    let written = dest.get(&0).map(Vec::as_slice).unwrap_or_default();
    assert_eq!(written.len(), 1, "the destination holds {written:?}");
    if let Some(difference) = written[0].matches_produced(&small1) {
        panic!("small1 differs in the destination: {difference}");
    }
    let status = fleet.flow_status(&flow).await.map_err(anyhow::Error::msg)?;
    assert_eq!(
        status
            .partition(&topic, 0)
            .map(|partition| partition.mirrored_offset),
        Some(big_offset)
    );

    // Once the limit is raised, the big record and `small2` follow, each once.
    alter_topic_configs(Cluster::Dest, &topic, &[("max.message.bytes", "3000000")]).await?;
    fleet
        .wait_for_mirror(&topic, 3, Duration::from_secs(120))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, 1, Duration::from_secs(60))
        .await;
    let dest = read_all(Cluster::Dest, &topic).await?;
    let written = dest.get(&0).map(Vec::as_slice).unwrap_or_default();
    assert_eq!(
        written.len(),
        3,
        "the destination holds {} records",
        written.len()
    );
    for (consumed, produced) in written.iter().zip([&small1, &big, &small2]) {
        if let Some(difference) = consumed.matches_produced(produced) {
            panic!("record {:?} differs: {difference}", produced.key);
        }
    }
    assert_same_partitions(&read_all(Cluster::Source, &topic).await?, &dest);
    Ok(())
}

/// Waits until `status` shows partition 0 stopped with an error and checkpointed
/// exactly up to `offset`.
async fn wait_stuck_at(fleet: &Fleet, flow: &str, topic: &str, offset: i64) {
    fleet
        .wait_until(
            Duration::from_secs(60),
            "status to report partition 0 stuck at the big record",
            || async {
                let status = fleet.flow_status(flow).await?;
                let partition = status
                    .partition(topic, 0)
                    .ok_or_else(|| format!("no status for partition 0: {status:?}"))?;
                if partition.error.is_empty() || partition.mirrored_offset != offset {
                    return Err(format!("partition 0: {partition:?}"));
                }
                Ok(())
            },
        )
        .await;
}

/// The error names the topic, the partition, the offset, the record's size and
/// the destination's limit.
fn assert_error_names_the_problem(error: &str, topic: &str, offset: i64) {
    assert!(
        error.contains(topic),
        "the error does not name topic {topic}: {error}"
    );
    let partition = Regex::new(&format!(
        r"(?i)(partition\D{{0,3}}0\b|{}[-/:\[ ]0\b)",
        regex::escape(topic)
    ))
    .expect("valid regex");
    assert!(
        partition.is_match(error),
        "the error does not name partition 0: {error}"
    );
    let offset_pattern =
        Regex::new(&format!(r"(?i)offset\D{{0,3}}{offset}\b")).expect("valid regex");
    assert!(
        offset_pattern.is_match(error),
        "the error does not name offset {offset}: {error}"
    );
    let numbers: Vec<u64> = Regex::new(r"\d+")
        .expect("valid regex")
        .find_iter(error)
        .filter_map(|number| number.as_str().parse().ok())
        .collect();
    let big = BIG_RECORD_BYTES as u64;
    assert!(
        numbers
            .iter()
            .any(|number| (big..big + 10_000).contains(number)),
        "the error does not give the record's size (about {big} bytes): {error}"
    );
    assert!(
        numbers.contains(&DEST_LIMIT.parse().expect("a number")),
        "the error does not give the destination's limit {DEST_LIMIT}: {error}"
    );
}
