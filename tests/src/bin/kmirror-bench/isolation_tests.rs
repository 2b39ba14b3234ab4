//! Tests of `--isolation-level`: the flag itself, and `verify` and `watch` against
//! the local stack on a destination written in transactions, with commit and abort
//! markers, aborted records and a transaction still open.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::clients::{CountingContext, IsolationLevel};
use crate::topics::TopicCommand;
use crate::verify::VerifyArgs;
use crate::watch::WatchArgs;
use crate::{Cli, Command};

const PARTITIONS: i32 = 3;
const RECORDS_PER_PARTITION: i32 = 50;
/// Committed records per transaction: several transactions, and so several commit
/// markers, per partition.
const RECORDS_PER_TRANSACTION: i32 = 7;
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a command line, failing the test (not exiting) on an error.
fn parse(arguments: impl IntoIterator<Item = &'static str>) -> Cli {
    Cli::try_parse_from(arguments).unwrap_or_else(|error| panic!("{error}"))
}

/// The isolation level a command line asks of `watch`, `verify` or `latency`.
fn isolation_level_of(arguments: &[&'static str]) -> IsolationLevel {
    let cli = parse([&["kmirror-bench"][..], arguments].concat());
    match cli.command {
        Command::Watch(args) => args.isolation_level,
        Command::Verify(args) => args.isolation_level,
        Command::Latency(args) => args.isolation_level,
        other => panic!("not a reading subcommand: {other:?}"),
    }
}

const WATCH: &[&str] = &["watch", "--bootstrap", "b", "--topic", "t", "--target", "1"];
const VERIFY: &[&str] = &["verify", "--source", "s", "--dest", "d", "--topic", "t"];
const LATENCY: &[&str] = &[
    "latency",
    "--bootstrap",
    "b",
    "--topic",
    "t",
    "--rate",
    "10",
    "--start-at-ns",
    "0",
    "--warmup-s",
    "1",
    "--measure-s",
    "1",
];

#[test]
fn watch_verify_and_latency_read_uncommitted_by_default() {
    for arguments in [WATCH, VERIFY, LATENCY] {
        assert_eq!(
            isolation_level_of(arguments),
            IsolationLevel::ReadUncommitted,
            "{arguments:?}"
        );
    }
}

#[test]
fn watch_verify_and_latency_take_the_flag_bench_run_passes() {
    // bench/run's READ_COMMITTED_FLAG, word for word.
    let flag: &[&str] = &["--isolation-level", "read_committed"];
    for arguments in [WATCH, VERIFY, LATENCY] {
        assert_eq!(
            isolation_level_of(&[arguments, flag].concat()),
            IsolationLevel::ReadCommitted,
            "{arguments:?}"
        );
    }
}

#[test]
fn the_help_of_watch_verify_and_latency_shows_the_flag() {
    // bench/run looks for the flag in `kmirror-bench SUBCOMMAND --help`.
    let mut cli = Cli::command();
    for subcommand in ["watch", "verify", "latency"] {
        let help = cli
            .find_subcommand_mut(subcommand)
            .expect("a subcommand")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--isolation-level") && help.contains("read_committed"),
            "{subcommand} --help: {help}"
        );
    }
}

/// Topics of one test on both clusters, deleted when dropped (also when the test
/// fails).
pub struct TestTopics {
    pub source: String,
    pub dest: String,
    pub names: Vec<String>,
}

impl TestTopics {
    pub fn create(names: &[&str], partitions: i32) -> Result<Self> {
        let stack = kmirror_tests::stack::stack();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let topics = Self {
            source: stack.source_bootstrap.clone(),
            dest: stack.dest_bootstrap.clone(),
            names: names
                .iter()
                .map(|name| format!("kmirror-bench-{name}-{unique}"))
                .collect(),
        };
        for bootstrap in [&topics.source, &topics.dest] {
            for topic in &topics.names {
                crate::topics::run(TopicCommand::Create {
                    bootstrap: bootstrap.clone(),
                    topic: topic.clone(),
                    partitions,
                    configs: Vec::new(),
                })?;
            }
        }
        Ok(topics)
    }
}

impl Drop for TestTopics {
    fn drop(&mut self) {
        for bootstrap in [&self.source, &self.dest] {
            let deleted = crate::topics::run(TopicCommand::Delete {
                bootstrap: bootstrap.clone(),
                topics: self.names.clone(),
            });
            if let Err(error) = deleted {
                eprintln!("cannot delete the test topics at {bootstrap}: {error:#}");
            }
        }
    }
}

/// One record of the tests, the same on both sides of a mirror.
pub struct TestRecord {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub header: (&'static str, Vec<u8>),
    pub timestamp_ms: i64,
}

impl TestRecord {
    pub fn numbered(partition: i32, index: i32) -> Self {
        Self {
            partition,
            key: format!("key-{partition}-{index}").into_bytes(),
            value: format!("value-{partition}-{index}").into_bytes(),
            header: ("seq", index.to_be_bytes().to_vec()),
            // Now, not a fixed time: retention would delete records older than
            // a week at its next check.
            timestamp_ms: crate::records::wall_ms(),
        }
    }

    /// A record that must never be read: it goes into a transaction that aborts
    /// or stays open.
    fn uncommitted(partition: i32, index: i32) -> Self {
        Self {
            value: format!("never-committed-{partition}-{index}").into_bytes(),
            ..Self::numbered(partition, index)
        }
    }
}

pub fn send(
    producer: &BaseProducer<CountingContext>,
    topic: &str,
    record: &TestRecord,
) -> Result<()> {
    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
        key: record.header.0,
        value: Some(&record.header.1),
    });
    producer
        .send(
            BaseRecord::to(topic)
                .partition(record.partition)
                .key(&record.key)
                .payload(&record.value)
                .headers(headers)
                .timestamp(record.timestamp_ms),
        )
        .map_err(|(error, _)| error)
        .with_context(|| format!("cannot produce to {topic}"))?;
    producer.poll(Duration::ZERO);
    Ok(())
}

pub fn plain_producer(bootstrap: &str) -> Result<BaseProducer<CountingContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create_with_context(CountingContext::default())?)
}

/// Flushes a plain producer and fails if a record was not delivered.
pub fn flush(producer: &BaseProducer<CountingContext>) -> Result<()> {
    producer.flush(TRANSACTION_TIMEOUT)?;
    producer.context().check("test records")
}

pub fn transactional_producer(bootstrap: &str) -> Result<BaseProducer<CountingContext>> {
    let producer: BaseProducer<CountingContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "transactional.id",
            format!("kmirror-bench-test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("transaction.timeout.ms", "120000")
        .create_with_context(CountingContext::default())?;
    producer.init_transactions(TRANSACTION_TIMEOUT)?;
    Ok(producer)
}

/// Writes a transaction's records to the log and aborts it: the records keep
/// their offsets and an abort marker follows them.
pub fn abort_after_flush(producer: &BaseProducer<CountingContext>) -> Result<()> {
    producer.flush(TRANSACTION_TIMEOUT)?;
    producer.abort_transaction(TRANSACTION_TIMEOUT)?;
    Ok(())
}

fn watch_args(bootstrap: &str, topic: &str, isolation_level: IsolationLevel) -> WatchArgs {
    WatchArgs {
        bootstrap: bootstrap.to_string(),
        topics: vec![topic.to_string()],
        target: None,
        source: None,
        interval_ms: 50,
        timeout_s: 30.0,
        isolation_level,
    }
}

/// The source gets plain records; the destination's `mirror` topic gets the same
/// records in transactions, between aborted ones, followed by a transaction still
/// open while the tools read; its `plain` topic gets them without transactions.
#[test]
fn read_committed_verify_and_watch_see_exactly_the_committed_records() -> Result<()> {
    let topics = TestTopics::create(&["mirror", "plain"], PARTITIONS)?;
    let (mirror, plain) = (&topics.names[0], &topics.names[1]);
    let records: Vec<TestRecord> = (0..PARTITIONS)
        .flat_map(|partition| {
            (0..RECORDS_PER_PARTITION).map(move |index| TestRecord::numbered(partition, index))
        })
        .collect();
    let total = i64::from(PARTITIONS * RECORDS_PER_PARTITION);

    let source_producer = plain_producer(&topics.source)?;
    let plain_producer = plain_producer(&topics.dest)?;
    for record in &records {
        send(&source_producer, mirror, record)?;
        send(&source_producer, plain, record)?;
        send(&plain_producer, plain, record)?;
    }
    flush(&source_producer)?;
    flush(&plain_producer)?;

    let producer = transactional_producer(&topics.dest)?;
    for (number, transaction) in records
        .chunks(usize::try_from(RECORDS_PER_TRANSACTION)?)
        .enumerate()
    {
        if number % 3 == 1 {
            producer.begin_transaction()?;
            for partition in 0..PARTITIONS {
                send(&producer, mirror, &TestRecord::uncommitted(partition, 0))?;
            }
            abort_after_flush(&producer)?;
        }
        producer.begin_transaction()?;
        for record in transaction {
            send(&producer, mirror, record)?;
        }
        producer.commit_transaction(TRANSACTION_TIMEOUT)?;
    }
    producer.begin_transaction()?;
    for partition in 0..PARTITIONS {
        send(&producer, mirror, &TestRecord::uncommitted(partition, 1))?;
    }
    producer.flush(TRANSACTION_TIMEOUT)?;

    let verify = |topic: &str, isolation_level| {
        crate::verify::run(VerifyArgs {
            source: topics.source.clone(),
            dest: topics.dest.clone(),
            topic: topic.to_string(),
            dest_topic: None,
            timeout_s: 30.0,
            isolation_level,
        })
    };
    // Same counts and hashes per partition: every committed record, none of the
    // aborted or open ones; and it ends although each partition's last stable
    // offset follows a commit marker.
    assert!(verify(mirror, IsolationLevel::ReadCommitted)?);
    assert!(verify(plain, IsolationLevel::ReadUncommitted)?);
    assert!(verify(plain, IsolationLevel::ReadCommitted)?);

    let mut watch_committed = watch_args(&topics.dest, mirror, IsolationLevel::ReadCommitted);
    watch_committed.source = Some(topics.source.clone());
    watch_committed.target = Some(total);
    crate::watch::run(watch_committed).context("watch read_committed, every record")?;

    // The offsets (markers, aborted and open records) pass one record more than
    // the destination holds; the committed count does not.
    let mut watch_offsets = watch_args(&topics.dest, mirror, IsolationLevel::ReadUncommitted);
    watch_offsets.target = Some(total + 1);
    crate::watch::run(watch_offsets).context("watch read_uncommitted, offsets")?;
    let mut watch_one_more = watch_args(&topics.dest, mirror, IsolationLevel::ReadCommitted);
    watch_one_more.target = Some(total + 1);
    watch_one_more.timeout_s = 2.0;
    assert!(
        crate::watch::run(watch_one_more).is_err(),
        "watch read_committed called {} records complete when {total} are committed",
        total + 1
    );

    let mut watch_plain = watch_args(&topics.dest, plain, IsolationLevel::ReadUncommitted);
    watch_plain.source = Some(topics.source.clone());
    watch_plain.target = Some(total);
    crate::watch::run(watch_plain).context("watch read_uncommitted, a plain topic")?;

    producer.abort_transaction(TRANSACTION_TIMEOUT)?;
    Ok(())
}
