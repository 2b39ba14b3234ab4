//! Guarantee: a graceful stop (SIGTERM) of the whole fleet in the middle of a
//! mirror drains what is in flight and checkpoints it, so after a restart nothing
//! is lost and nothing is copied twice.

use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{
    assert_same_partitions, create_topic, produce, read_all, record_count, Cluster, WatermarkReader,
};
use kmirror_tests::{unique_name, Fleet, FleetOptions};

#[tokio::test(flavor = "multi_thread")]
async fn fleet_stopped_with_sigterm_mid_mirror_resumes_without_loss_or_duplicates() -> Result<()> {
    const RECORDS: u64 = 1_000_000;
    const PARTITIONS: i32 = 8;
    /// Stop once this many records arrived: well before the end.
    const STOP_AFTER: i64 = 25_000;
    let topic = unique_name("restart");
    let flow = unique_name("restart-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let records = KeyedRecords {
        value_padding: 16,
        ..KeyedRecords::new(RECORDS, PARTITIONS)
    }
    .generate();
    produce(Cluster::Source, &topic, records).await?;

    // One batch in flight per partition (at most 40 000 records over the 8): with
    // the default window the fetchers can read the whole topic ahead, and the
    // drain would then write all of it before the stop completes.
    let fleet = Fleet::start(FleetOptions {
        max_in_flight_batches: Some(1),
        ..FleetOptions::new("restart")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;

    let dest = WatermarkReader::new(Cluster::Dest)?;
    // Checked often: the mirror is fast and the stop must come while it runs.
    fleet
        .wait_until_every(
            Duration::from_secs(300),
            Duration::from_millis(10),
            &format!("{STOP_AFTER} records to arrive"),
            || async {
                match dest.offset_count(&topic).await {
                    Ok(count) if count >= STOP_AFTER => Ok(()),
                    Ok(count) => Err(format!("{count} records arrived")),
                    Err(error) => Err(format!("{error:#}")),
                }
            },
        )
        .await;
    let exits = fleet.sigterm_all().await;
    for (member, status) in &exits {
        assert!(
            status.success(),
            "{member} did not stop cleanly on SIGTERM ({status})\n{}",
            fleet.log_paths()
        );
    }
    let arrived_at_stop = dest.offset_count(&topic).await?;
    assert!(
        arrived_at_stop < RECORDS as i64,
        "every record arrived before the stop ({arrived_at_stop}): the test proves nothing; \
         lower STOP_AFTER"
    );
    eprintln!("{arrived_at_stop} of {RECORDS} records had arrived when the fleet had stopped");

    fleet.restart().await;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(600))
        .await;
    fleet
        .wait_caught_up(&flow, &topic, PARTITIONS, Duration::from_secs(60))
        .await;

    assert_eq!(
        dest.offset_count(&topic).await?,
        RECORDS as i64,
        "records were copied twice"
    );
    let source = read_all(Cluster::Source, &topic).await?;
    let dest_records = read_all(Cluster::Dest, &topic).await?;
    assert_eq!(record_count(&source), RECORDS as usize);
    assert_same_partitions(&source, &dest_records);
    Ok(())
}
