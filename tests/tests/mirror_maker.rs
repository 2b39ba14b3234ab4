//! `kmirror mirror`, the MirrorMaker-compatible entry point: the seed scenario
//! (MirrorMaker 1 configs, `--whitelist`, `--num.streams 4`, a private etcd),
//! resuming without re-copying, the clear error for a ZooKeeper-era config, and
//! `--until-caught-up` exiting by itself.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::WatermarkReader;
use kmirror_tests::kafka::{assert_same_partitions, create_topic, produce, read_all, Cluster};
use kmirror_tests::mirror_process::{run_kmirror, MirrorDir, MirrorProcess};
use kmirror_tests::{stack, unique_name, wait_until};

const TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn mirror_args(consumer: &Path, producer: &Path, topic: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "mirror",
        "--consumer.config",
        &consumer.display().to_string(),
        "--producer.config",
        &producer.display().to_string(),
        "--whitelist",
        topic,
        "--num.streams",
        "4",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

async fn wait_for_records(process: &mut MirrorProcess, topic: &str, expected: i64) {
    let reader = WatermarkReader::new(Cluster::Dest).expect("a destination reader");
    let what = format!("{expected} records of {topic} in the destination");
    let outcome = wait_until(TIMEOUT, &what, || {
        let reader = reader.clone();
        let running = process.is_running();
        async move {
            if !running {
                return Err("kmirror exited".to_string());
            }
            match reader.offset_count(topic).await {
                Ok(count) if count >= expected => Ok(()),
                Ok(count) => Err(format!("{count} of {expected}")),
                Err(error) => Err(format!("{error:#}")),
            }
        }
    })
    .await;
    if let Err(message) = outcome {
        panic!("{message}\nkmirror log:\n{}", process.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_maker_configs_mirror_every_record_and_a_rerun_resumes_without_recopying(
) -> Result<()> {
    let stack = stack();
    let topic = unique_name("testtopic");
    create_topic(Cluster::Source, &topic, 8, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(20_000, 8).generate(),
    )
    .await?;

    let dir = MirrorDir::new(&unique_name("mirror-seed"));
    let group = unique_name("mirrorgroup");
    let consumer = dir.properties(
        "consumer.properties",
        &[
            ("bootstrap.servers", &stack.source_bootstrap),
            ("group.id", &group),
        ],
    );
    let producer = dir.properties(
        "producer.properties",
        &[
            ("bootstrap.servers", &stack.dest_bootstrap),
            ("compression.type", "none"),
        ],
    );
    let state_dir = dir.path.join("state").display().to_string();
    let args = mirror_args(&consumer, &producer, &topic, &["--state-dir", &state_dir]);

    let mut first = MirrorProcess::start(&args, &dir.log_path());
    wait_for_records(&mut first, &topic, 20_000).await;
    let status = first.terminate(STOP_TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror stopped with {status}:\n{}",
        first.log()
    );

    // Run again with more records waiting: it resumes from its checkpoints.
    let more = KeyedRecords {
        first_sequence: 20_000,
        ..KeyedRecords::new(5_000, 8)
    };
    produce(Cluster::Source, &topic, more.generate()).await?;
    let mut second = MirrorProcess::start(&args, &dir.log_path());
    wait_for_records(&mut second, &topic, 25_000).await;
    let status = second.terminate(STOP_TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror stopped with {status}:\n{}",
        second.log()
    );

    // Every record, once, in order, in its partition: nothing was copied again.
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zookeeper_only_consumer_config_gets_a_clear_error() -> Result<()> {
    let stack = stack();
    let dir = MirrorDir::new(&unique_name("mirror-zookeeper"));
    let consumer = dir.properties(
        "consumer.properties",
        &[("zookeeper.connect", "127.0.0.1:2181"), ("group.id", "old")],
    );
    let producer = dir.properties(
        "producer.properties",
        &[("bootstrap.servers", &stack.dest_bootstrap)],
    );
    let args = mirror_args(&consumer, &producer, "anything", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = run_kmirror(&args, Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("zookeeper.connect"), "{stderr}");
    assert!(stderr.contains("bootstrap.servers"), "{stderr}");
    assert!(stderr.contains("consumer.properties"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn until_caught_up_exits_0_once_everything_is_mirrored() -> Result<()> {
    let stack = stack();
    let topic = unique_name("mirror-migration");
    create_topic(Cluster::Source, &topic, 4, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(30_000, 4).generate(),
    )
    .await?;

    let dir = MirrorDir::new(&unique_name("mirror-migration"));
    let consumer = dir.properties(
        "consumer.properties",
        &[
            ("bootstrap.servers", &stack.source_bootstrap),
            ("group.id", &unique_name("migration-group")),
            (
                "key.deserializer",
                "org.apache.kafka.common.serialization.ByteArrayDeserializer",
            ),
        ],
    );
    let producer = dir.properties(
        "producer.properties",
        &[
            ("bootstrap.servers", &stack.dest_bootstrap),
            ("acks", "all"),
        ],
    );
    let args = mirror_args(
        &consumer,
        &producer,
        &topic,
        &["--until-caught-up", "--etcd", &stack.etcd_endpoint],
    );
    let mut process = MirrorProcess::start(&args, &dir.log_path());
    let status = process.wait(TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror exited with {status}:\n{}",
        process.log()
    );
    assert!(process.log().contains("completed"), "{}", process.log());
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}
