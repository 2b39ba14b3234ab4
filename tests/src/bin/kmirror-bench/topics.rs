//! `topic create|delete|delete-matching`: fresh topics for every contender and
//! round, and their removal afterwards.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use regex::Regex;

use crate::clients::{partition_count, plain_consumer, IsolationLevel};

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Creates a topic (one replica) and waits until every partition has a leader.
    Create {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partitions: i32,
        /// Topic configs, `key=value` (repeatable).
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Deletes topics; a topic that does not exist is fine.
    Delete {
        #[arg(long)]
        bootstrap: String,
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
    },
    /// Deletes every topic whose name matches a regular expression.
    DeleteMatching {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        regex: String,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got '{text}'"))?;
    Ok((key.to_string(), value.to_string()))
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .with_context(|| format!("cannot create an admin client for {bootstrap}"))
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

pub fn run(command: TopicCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            TopicCommand::Create {
                bootstrap,
                topic,
                partitions,
                configs,
            } => create(&bootstrap, &topic, partitions, &configs).await,
            TopicCommand::Delete { bootstrap, topics } => delete(&bootstrap, &topics).await,
            TopicCommand::DeleteMatching { bootstrap, regex } => {
                let pattern =
                    Regex::new(&regex).with_context(|| format!("invalid regex {regex}"))?;
                let consumer = plain_consumer(&bootstrap, IsolationLevel::ReadUncommitted, &[])?;
                let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
                let topics: Vec<String> = metadata
                    .topics()
                    .iter()
                    .map(|topic| topic.name().to_string())
                    .filter(|name| pattern.is_match(name))
                    .collect();
                if topics.is_empty() {
                    return Ok(());
                }
                delete(&bootstrap, &topics).await
            }
        }
    })
}

async fn create(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> Result<()> {
    let admin = admin(bootstrap)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        new_topic = new_topic.set(key, value);
    }
    for result in admin.create_topics([&new_topic], &options()).await? {
        if let Err((name, code)) = result {
            bail!("cannot create topic {name} at {bootstrap}: {code}");
        }
    }
    let consumer = plain_consumer(bootstrap, IsolationLevel::ReadUncommitted, &[])?;
    let ready = partition_count(&consumer, topic, Duration::from_secs(60))?;
    if ready != partitions {
        bail!("topic {topic} at {bootstrap} has {ready} partitions, not {partitions}");
    }
    Ok(())
}

async fn delete(bootstrap: &str, topics: &[String]) -> Result<()> {
    let admin = admin(bootstrap)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    for result in admin.delete_topics(&names, &options()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => bail!("cannot delete topic {name} at {bootstrap}: {code}"),
        }
    }
    Ok(())
}
