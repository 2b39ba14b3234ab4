//! `kmirror mirror`, the MirrorMaker-compatible entry point: the seed scenario
//! (MirrorMaker 1 configs, `--whitelist`, `--num.streams 4`, a private etcd),
//! resuming without re-copying, the clear errors for a ZooKeeper-era config and
//! for producer settings the writers cannot run with, `--until-caught-up` exiting
//! by itself, a second `--until-caught-up` run copying what arrived since, a
//! closed output pipe, and Ctrl-C stopping the private etcd last.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Result;
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::WatermarkReader;
use kmirror_tests::kafka::{
    alter_topic_configs, assert_same_partitions, create_topic, produce, read_all, topic_config,
    Cluster,
};
use kmirror_tests::mirror_process::{run_kmirror, MirrorDir, MirrorProcess, KMIRROR_BINARY};
use kmirror_tests::{stack, unique_name, wait_until};
use tokio::io::{AsyncBufReadExt as _, BufReader};

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
async fn a_producer_config_with_acks_1_is_refused_at_start_with_the_fix() -> Result<()> {
    let stack = stack();
    let dir = MirrorDir::new(&unique_name("mirror-acks"));
    let consumer = dir.properties(
        "consumer.properties",
        &[
            ("bootstrap.servers", &stack.source_bootstrap),
            ("group.id", &unique_name("acks-group")),
        ],
    );
    // MirrorMaker 1's producer files commonly carry acks=1.
    let producer = dir.properties(
        "producer.properties",
        &[
            ("bootstrap.servers", &stack.dest_bootstrap),
            ("acks", "1"),
            ("enable.idempotence", "false"),
        ],
    );
    let args = mirror_args(
        &consumer,
        &producer,
        "anything",
        &["--etcd", &stack.etcd_endpoint],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = run_kmirror(&args, Duration::from_secs(30)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("producer.properties"), "{stderr}");
    assert!(stderr.contains("acks=1 cannot work"), "{stderr}");
    assert!(stderr.contains("set acks=all"), "{stderr}");
    assert!(
        stderr.contains("enable.idempotence=false cannot work"),
        "{stderr}"
    );
    // Refused before anything ran: no mirroring was attempted.
    assert!(!stderr.contains("mirroring"), "{stderr}");
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

#[tokio::test(flavor = "multi_thread")]
async fn until_caught_up_run_again_copies_what_arrived_since_the_last_run() -> Result<()> {
    let stack = stack();
    let topic = unique_name("mirror-rerun");
    create_topic(Cluster::Source, &topic, 4, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(8_000, 4).generate(),
    )
    .await?;

    let dir = MirrorDir::new(&unique_name("mirror-rerun"));
    let consumer = dir.properties(
        "consumer.properties",
        &[
            ("bootstrap.servers", &stack.source_bootstrap),
            ("group.id", &unique_name("rerun-group")),
        ],
    );
    let producer = dir.properties(
        "producer.properties",
        &[("bootstrap.servers", &stack.dest_bootstrap)],
    );
    let state_dir = dir.path.join("state").display().to_string();
    let args = mirror_args(
        &consumer,
        &producer,
        &topic,
        &["--until-caught-up", "--state-dir", &state_dir],
    );

    let mut first = MirrorProcess::start(&args, &dir.path.join("first.log"));
    let status = first.wait(TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror exited with {status}:\n{}",
        first.log()
    );
    assert!(
        first.log().contains("completed: 8000 records mirrored"),
        "{}",
        first.log()
    );

    // Records that arrive after the first run are the second run's to copy, and
    // a topic config changed meanwhile follows too.
    let more = KeyedRecords {
        first_sequence: 8_000,
        ..KeyedRecords::new(3_000, 4)
    };
    produce(Cluster::Source, &topic, more.generate()).await?;
    alter_topic_configs(Cluster::Source, &topic, &[("retention.ms", "7200000")]).await?;
    let mut second = MirrorProcess::start(&args, &dir.path.join("second.log"));
    let status = second.wait(TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror exited with {status}:\n{}",
        second.log()
    );
    assert!(
        second.log().contains("completed: 3000 records mirrored"),
        "{}",
        second.log()
    );
    assert_eq!(
        topic_config(Cluster::Dest, &topic, "retention.ms")
            .await?
            .as_deref(),
        Some("7200000")
    );

    // Every record once, in order, with its key, value, headers and timestamp.
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_output_pipe_does_not_stop_the_mirror() -> Result<()> {
    let stack = stack();
    let topic = unique_name("mirror-pipe");
    create_topic(Cluster::Source, &topic, 2, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(2_000, 2).generate(),
    )
    .await?;
    let dir = MirrorDir::new(&unique_name("mirror-pipe"));
    let consumer = dir.properties(
        "consumer.properties",
        &[
            ("bootstrap.servers", &stack.source_bootstrap),
            ("group.id", &unique_name("pipe-group")),
        ],
    );
    let producer = dir.properties(
        "producer.properties",
        &[("bootstrap.servers", &stack.dest_bootstrap)],
    );
    let args = mirror_args(
        &consumer,
        &producer,
        &topic,
        &["--until-caught-up", "--etcd", &stack.etcd_endpoint],
    );
    // `kmirror mirror ... 2>&1 | head -1`: the reader takes one line and goes.
    let mut child = tokio::process::Command::new(stack.binary(KMIRROR_BINARY))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut first_line = String::new();
    stderr.read_line(&mut first_line).await?;
    assert!(!first_line.is_empty(), "kmirror wrote nothing");
    drop(stderr);
    drop(child.stdout.take());
    let status = tokio::time::timeout(TIMEOUT, child.wait()).await??;
    assert_eq!(status.code(), Some(0), "kmirror exited with {status}");
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_private_etcd_after_the_fleet_checkpointed() -> Result<()> {
    let stack = stack();
    let topic = unique_name("mirror-ctrl-c");
    create_topic(Cluster::Source, &topic, 4, &[]).await?;
    produce(
        Cluster::Source,
        &topic,
        KeyedRecords::new(10_000, 4).generate(),
    )
    .await?;
    let dir = MirrorDir::new(&unique_name("mirror-ctrl-c"));
    let consumer = dir.properties(
        "consumer.properties",
        &[
            ("bootstrap.servers", &stack.source_bootstrap),
            ("group.id", &unique_name("ctrl-c-group")),
        ],
    );
    let producer = dir.properties(
        "producer.properties",
        &[("bootstrap.servers", &stack.dest_bootstrap)],
    );
    let state_dir = dir.path.join("state").display().to_string();
    let args = mirror_args(&consumer, &producer, &topic, &["--state-dir", &state_dir]);

    let mut first = MirrorProcess::start_in_own_group(&args, &dir.path.join("first.log"));
    wait_for_records(&mut first, &topic, 10_000).await;
    // Ctrl-C reaches the private etcd too; it must still serve the members while
    // they stop: revoking their leases, the leader resigning, the last checkpoints.
    let status = first.interrupt_group(STOP_TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror exited with {status}:\n{}",
        first.log()
    );
    for trouble in [
        "failed to revoke lease",
        "failed to resign",
        "Connection refused",
    ] {
        assert!(
            !first.log().contains(trouble),
            "{trouble}:\n{}",
            first.log()
        );
    }

    // The next run resumes from those checkpoints: nothing is copied twice.
    let more = KeyedRecords {
        first_sequence: 10_000,
        ..KeyedRecords::new(2_000, 4)
    };
    produce(Cluster::Source, &topic, more.generate()).await?;
    let mut second = MirrorProcess::start_in_own_group(&args, &dir.path.join("second.log"));
    wait_for_records(&mut second, &topic, 12_000).await;
    let status = second.interrupt_group(STOP_TIMEOUT).await;
    assert!(
        status.success(),
        "kmirror exited with {status}:\n{}",
        second.log()
    );
    assert_same_partitions(
        &read_all(Cluster::Source, &topic).await?,
        &read_all(Cluster::Dest, &topic).await?,
    );
    Ok(())
}
