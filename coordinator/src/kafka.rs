//! The coordinator's Kafka side: one client per cluster (cached by cluster spec) for
//! topic listing and watermarks, plus short-lived admin clients for the rare topic
//! and partition creation. A reconcile round reaches them through the
//! [`KafkaSide`] and [`ClusterAdmin`] traits, so its unit tests run against an
//! in-memory fake.
//!
//! librdkafka's metadata and watermark calls block, so they run on the blocking
//! pool; admin operations use the async admin API. The cached client is a producer
//! handle that is never produced to: unlike rdkafka's `AdminClient`, it can be
//! polled, which serves librdkafka's logs and errors (they would otherwise pile up
//! in its main queue for as long as the client lives). A `ClientConfig` is never
//! logged (its `Debug` prints secrets). The cache, and what a cluster that
//! refuses the coordinator's client gets instead of a client, are in [`clients`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmirror_common::schema::ClusterSpec;
use kmirror_common::ClusterName;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::CoordinatorError;

mod clients;

pub use clients::KafkaClients;
use clients::{client_answered, client_refused, ClusterContext, RefusalSink, RETRY_CALL_TIMEOUT};

type Admin = AdminClient<ClusterContext>;
type Probe = BaseProducer<ClusterContext>;

/// How long each use of the cached client serves its queued logs and errors.
const EVENT_SERVE_TIME: Duration = Duration::from_millis(10);

/// Topic configs always copied to a new destination topic, whatever their source
/// (a broker default on the source may differ from the destination's).
const ALWAYS_COPIED_CONFIGS: [&str; 4] = [
    "cleanup.policy",
    "retention.ms",
    "max.message.bytes",
    "compression.type",
];

/// The Kafka side of a reconcile round: a client per cluster. [`KafkaClients`] is
/// the real one; the round's unit tests use an in-memory fake.
pub trait KafkaSide: Sync {
    type Cluster: ClusterAdmin;

    /// The client of a cluster; fails on properties the client refuses.
    fn cluster(&self, spec: &ClusterSpec) -> Result<Self::Cluster, CoordinatorError>;
}

/// What a round reads from one cluster and the few writes it makes there (see
/// [`ClusterClient`] for what each call means).
pub trait ClusterAdmin: Send + Sync {
    fn cluster_id(&self) -> impl Future<Output = Option<String>> + Send;

    fn list_topics(&self) -> impl Future<Output = Result<TopicListing, CoordinatorError>> + Send;

    fn topic_configs(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<TopicConfigs<Vec<(String, String)>>, CoordinatorError>> + Send;

    fn dynamic_topic_configs(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<TopicConfigs<BTreeMap<String, String>>, CoordinatorError>> + Send;

    fn replace_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), String>> + Send;

    fn offsets_for_time(
        &self,
        partitions: Vec<(String, i32)>,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Vec<i64>, CoordinatorError>> + Send;

    fn create_topics(
        &self,
        topics: &[TopicToCreate],
    ) -> impl Future<Output = Result<BTreeMap<String, Result<(), String>>, CoordinatorError>> + Send;

    fn create_partitions(
        &self,
        topic: &str,
        count: i32,
    ) -> impl Future<Output = Result<(), String>> + Send;

    fn watermarks(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> impl Future<Output = Vec<Option<(i64, i64)>>> + Send;
}

/// Per topic, its configs or why they could not be read.
pub type TopicConfigs<C> = BTreeMap<String, Result<C, String>>;

impl KafkaSide for KafkaClients {
    type Cluster = ClusterClient;

    fn cluster(&self, spec: &ClusterSpec) -> Result<ClusterClient, CoordinatorError> {
        self.client(spec)
    }
}

impl ClusterAdmin for ClusterClient {
    fn cluster_id(&self) -> impl Future<Output = Option<String>> + Send {
        ClusterClient::cluster_id(self)
    }

    fn list_topics(&self) -> impl Future<Output = Result<TopicListing, CoordinatorError>> + Send {
        ClusterClient::list_topics(self)
    }

    fn topic_configs(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<TopicConfigs<Vec<(String, String)>>, CoordinatorError>> + Send
    {
        ClusterClient::topic_configs(self, topics)
    }

    fn dynamic_topic_configs(
        &self,
        topics: &[String],
    ) -> impl Future<Output = Result<TopicConfigs<BTreeMap<String, String>>, CoordinatorError>> + Send
    {
        ClusterClient::dynamic_topic_configs(self, topics)
    }

    fn replace_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> impl Future<Output = Result<(), String>> + Send {
        ClusterClient::replace_topic_configs(self, topic, configs)
    }

    fn offsets_for_time(
        &self,
        partitions: Vec<(String, i32)>,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Vec<i64>, CoordinatorError>> + Send {
        ClusterClient::offsets_for_time(self, partitions, timestamp_ms)
    }

    fn create_topics(
        &self,
        topics: &[TopicToCreate],
    ) -> impl Future<Output = Result<BTreeMap<String, Result<(), String>>, CoordinatorError>> + Send
    {
        ClusterClient::create_topics(self, topics)
    }

    fn create_partitions(
        &self,
        topic: &str,
        count: i32,
    ) -> impl Future<Output = Result<(), String>> + Send {
        ClusterClient::create_partitions(self, topic, count)
    }

    fn watermarks(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> impl Future<Output = Vec<Option<(i64, i64)>>> + Send {
        ClusterClient::watermarks(self, partitions)
    }
}

/// Topics of a cluster as its metadata shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicListing {
    /// Partition count of every topic whose metadata is complete.
    pub partitions: BTreeMap<String, i32>,
    /// Topics the cluster reported an error for (being created, leader missing, ...):
    /// they exist but cannot be looked at this time.
    pub unavailable: BTreeMap<String, String>,
}

/// A new destination topic: name, partition count and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicToCreate {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(String, String)>,
}

/// A client for one cluster.
#[derive(Clone)]
pub struct ClusterClient {
    spec: Arc<ClusterSpec>,
    probe: Arc<Probe>,
    timeout: Duration,
    /// Kafka's cluster id once read (it never changes for a running cluster).
    cluster_id: Arc<Mutex<Option<String>>>,
    /// Where a refusal is reported ([`KafkaClients`] sets it on the clients it caches).
    refusal_sink: RefusalSink,
    /// Built to ask a cluster that refused the settings again, after its pause:
    /// its first calls wait [`RETRY_CALL_TIMEOUT`] only, until the cluster answers.
    retrying: Arc<AtomicBool>,
}

impl ClusterClient {
    /// Builds a client (it connects lazily). Fails on properties librdkafka rejects.
    pub fn build(spec: &ClusterSpec, timeout: Duration) -> Result<Self, CoordinatorError> {
        let probe: Probe = client_config(spec)?
            .create_with_context(ClusterContext::new(spec.name.clone()))
            .map_err(|error| invalid_properties(spec, &error))?;
        Ok(Self {
            spec: Arc::new(spec.clone()),
            probe: Arc::new(probe),
            timeout,
            cluster_id: Arc::new(Mutex::new(None)),
            refusal_sink: RefusalSink::new(),
            retrying: Arc::new(AtomicBool::new(false)),
        })
    }

    /// How long a metadata call may wait: shorter while the client retries a
    /// cluster that refused it.
    fn metadata_timeout(&self) -> Duration {
        match self.retrying.load(Ordering::Acquire) {
            true => self.timeout.min(RETRY_CALL_TIMEOUT),
            false => self.timeout,
        }
    }

    fn is_same_client(&self, other: &ClusterClient) -> bool {
        Arc::ptr_eq(&self.probe, &other.probe)
    }

    /// Kafka's id of the cluster: two cluster names with the same id are one
    /// cluster. `None` while it cannot be read (the cluster is unreachable).
    pub async fn cluster_id(&self) -> Option<String> {
        if let Some(known) = self.cluster_id.lock().expect("cluster id lock").clone() {
            return Some(known);
        }
        let timeout = self.metadata_timeout();
        let read = self
            .blocking(move |probe| probe.client().fetch_cluster_id(timeout))
            .await
            .ok()
            .flatten()?;
        *self.cluster_id.lock().expect("cluster id lock") = Some(read.clone());
        Some(read)
    }

    /// An admin client for one operation; hand it to [`dispose_admin`] afterwards.
    fn admin(&self) -> Result<Admin, CoordinatorError> {
        client_config(&self.spec)?
            .create_with_context(ClusterContext::new(self.spec.name.clone()))
            .map_err(|error| invalid_properties(&self.spec, &error))
    }

    /// Runs a blocking librdkafka call on the blocking pool, then serves the events
    /// it queued.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Probe) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let probe = self.probe.clone();
        let (outcome, refusal_opt) = tokio::task::spawn_blocking(move || {
            let outcome = call(&probe);
            probe.poll(EVENT_SERVE_TIME);
            (outcome, probe.context().take_refusal())
        })
        .await?;
        if let Some((cause, reason)) = refusal_opt {
            client_refused(self, cause, reason);
        }
        Ok(outcome)
    }

    pub fn name(&self) -> &ClusterName {
        &self.spec.name
    }

    pub fn bootstrap(&self) -> &str {
        &self.spec.bootstrap_servers
    }

    /// Lists the cluster's topics. An error here means the cluster cannot be reached.
    pub async fn list_topics(&self) -> Result<TopicListing, CoordinatorError> {
        let timeout = self.metadata_timeout();
        let metadata = self
            .blocking(move |probe| probe.client().fetch_metadata(None, timeout))
            .await
            .map_err(|join_error| self.unreachable(join_error.to_string()))?
            .map_err(|error| {
                let cause = self
                    .probe
                    .client()
                    .context()
                    .recent_error(self.timeout)
                    .unwrap_or_else(|| kafka_cause(&error));
                self.unreachable(cause)
            })?;
        client_answered(self);
        let mut listing = TopicListing::default();
        for topic in metadata.topics() {
            match topic.error() {
                None => {
                    listing
                        .partitions
                        .insert(topic.name().to_string(), topic.partitions().len() as i32);
                }
                Some(error) => {
                    let code = RDKafkaErrorCode::from(error);
                    listing
                        .unavailable
                        .insert(topic.name().to_string(), code_cause(code));
                }
            }
        }
        Ok(listing)
    }

    /// The configs of each topic to carry over to a copy of it: the always-copied
    /// ones plus every config set on the topic itself.
    pub async fn topic_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Result<Vec<(String, String)>, String>>, CoordinatorError> {
        self.describe_topic_configs(topics, |entry| {
            !entry.is_read_only
                && !entry.is_sensitive
                && (entry.source == ConfigSource::DynamicTopic
                    || ALWAYS_COPIED_CONFIGS.contains(&entry.name.as_str()))
        })
        .await
    }

    /// The configs set on each topic itself (dynamic topic configs), by name.
    pub async fn dynamic_topic_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Result<BTreeMap<String, String>, String>>, CoordinatorError> {
        let described = self
            .describe_topic_configs(topics, |entry| entry.source == ConfigSource::DynamicTopic)
            .await?;
        Ok(by_name(described))
    }

    /// Every config value of each topic, whatever sets it (the topic, the broker,
    /// Kafka's default), by name; sensitive ones left out.
    pub async fn topic_config_values(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Result<BTreeMap<String, String>, String>>, CoordinatorError> {
        let described = self
            .describe_topic_configs(topics, |entry| !entry.is_sensitive)
            .await?;
        Ok(by_name(described))
    }

    /// The values of each topic's configs that `keep` keeps.
    async fn describe_topic_configs(
        &self,
        topics: &[String],
        keep: impl Fn(&rdkafka::admin::ConfigEntry) -> bool,
    ) -> Result<TopicConfigs<Vec<(String, String)>>, CoordinatorError> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let specifiers: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|topic| ResourceSpecifier::Topic(topic))
            .collect();
        let admin = self.admin()?;
        let results = admin
            .describe_configs(&specifiers, &self.admin_options())
            .await;
        dispose_admin(admin);
        let results = results.map_err(|error| self.failed("describing topic configs", &error))?;
        Ok(topics
            .iter()
            .zip(results)
            .map(|(topic, result)| {
                let configs = match result {
                    Ok(resource) => Ok(resource
                        .entries
                        .iter()
                        .filter(|entry| keep(entry))
                        .filter_map(|entry| {
                            entry
                                .value
                                .as_ref()
                                .map(|value| (entry.name.clone(), value.clone()))
                        })
                        .collect()),
                    Err(code) => Err(code_cause(code)),
                };
                (topic.clone(), configs)
            })
            .collect())
    }

    /// Sets a topic's dynamic configs to exactly `configs` (Kafka's AlterConfigs
    /// replaces the whole set: pass the ones to keep too).
    pub async fn replace_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (key, value) in configs {
            alter = alter.set(key, value);
        }
        let admin = self.admin().map_err(|error| error.to_string())?;
        let results = admin.alter_configs([&alter], &self.admin_options()).await;
        dispose_admin(admin);
        match results
            .map_err(|error| kafka_cause(&error))?
            .into_iter()
            .next()
        {
            Some(Ok(_)) | None => Ok(()),
            Some(Err((_, code))) => Err(code_cause(code)),
        }
    }

    /// For each partition, the offset of the first record whose timestamp is at or
    /// after `timestamp_ms`; the partition's end offset when there is none.
    pub async fn offsets_for_time(
        &self,
        partitions: Vec<(String, i32)>,
        timestamp_ms: i64,
    ) -> Result<Vec<i64>, CoordinatorError> {
        let consumer: BaseConsumer = client_config(&self.spec)?
            .create()
            .map_err(|error| invalid_properties(&self.spec, &error))?;
        let timeout = self.timeout;
        let cluster = self.spec.name.to_string();
        let bootstrap = self.spec.bootstrap_servers.clone();
        let looked_up = tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::new();
            for (topic, partition) in &partitions {
                list.add_partition_offset(topic, *partition, Offset::Offset(timestamp_ms))
                    .map_err(|error| kafka_cause(&error))?;
            }
            let found = consumer
                .offsets_for_times(list, timeout)
                .map_err(|error| kafka_cause(&error))?;
            let mut offsets = Vec::with_capacity(partitions.len());
            for (topic, partition) in &partitions {
                let element = found
                    .find_partition(topic, *partition)
                    .ok_or_else(|| format!("no answer for {topic}/{partition}"))?;
                if let Err(error) = element.error() {
                    return Err(format!("{topic}/{partition}: {}", kafka_cause(&error)));
                }
                offsets.push(match element.offset() {
                    Offset::Offset(offset) => offset,
                    // No record at or after the timestamp: start at the end.
                    _ => -1,
                });
            }
            drop(consumer);
            Ok(offsets)
        })
        .await
        .map_err(|join_error| join_error.to_string())
        .and_then(|outcome| outcome);
        looked_up.map_err(|cause| CoordinatorError::Kafka {
            cluster: format!("{cluster} ({bootstrap})"),
            action: "looking up offsets by timestamp".to_string(),
            cause,
        })
    }

    /// Creates topics with the broker's default replication factor. Returns the
    /// outcome per topic; a topic that already exists counts as created.
    pub async fn create_topics(
        &self,
        topics: &[TopicToCreate],
    ) -> Result<BTreeMap<String, Result<(), String>>, CoordinatorError> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|topic| {
                // -1: the destination broker's default.replication.factor.
                let mut new_topic =
                    NewTopic::new(&topic.name, topic.partitions, TopicReplication::Fixed(-1));
                for (key, value) in &topic.configs {
                    new_topic = new_topic.set(key, value);
                }
                new_topic
            })
            .collect();
        let admin = self.admin()?;
        let results = admin
            .create_topics(&new_topics, &self.admin_options())
            .await;
        dispose_admin(admin);
        let results = results.map_err(|error| self.failed("creating topics", &error))?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                Ok(topic) => (topic, Ok(())),
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => (topic, Ok(())),
                Err((topic, code)) => (topic, Err(code_cause(code))),
            })
            .collect())
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<(), String> {
        let new_partitions = NewPartitions::new(topic, count.max(0) as usize);
        let admin = self.admin().map_err(|error| error.to_string())?;
        let results = admin
            .create_partitions([&new_partitions], &self.admin_options())
            .await;
        dispose_admin(admin);
        let results = results.map_err(|error| kafka_cause(&error))?;
        match results.into_iter().next() {
            Some(Ok(_)) | None => Ok(()),
            Some(Err((_, code))) => Err(code_cause(code)),
        }
    }

    /// Low and high watermarks of each partition, `None` where they could not be read.
    /// Stops asking after the first failure to reach the cluster, so an unreachable
    /// cluster costs one timeout, not one per partition.
    pub async fn watermarks(&self, partitions: Vec<(String, i32)>) -> Vec<Option<(i64, i64)>> {
        let timeout = self.timeout.min(Duration::from_secs(5));
        let count = partitions.len();
        self.blocking(move |probe| {
            let mut watermarks = Vec::with_capacity(partitions.len());
            let mut reachable = true;
            for (topic, partition) in &partitions {
                if !reachable {
                    watermarks.push(None);
                    continue;
                }
                match probe.client().fetch_watermarks(topic, *partition, timeout) {
                    Ok(pair) => watermarks.push(Some(pair)),
                    Err(error) => {
                        reachable = !is_transport_failure(&error);
                        watermarks.push(None);
                    }
                }
            }
            watermarks
        })
        .await
        .unwrap_or_else(|_| vec![None; count])
    }

    fn admin_options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    fn unreachable(&self, cause: String) -> CoordinatorError {
        CoordinatorError::ClusterUnreachable {
            cluster: self.spec.name.to_string(),
            bootstrap: self.spec.bootstrap_servers.clone(),
            cause,
        }
    }

    fn failed(&self, action: &str, error: &KafkaError) -> CoordinatorError {
        CoordinatorError::Kafka {
            cluster: self.spec.name.to_string(),
            action: action.to_string(),
            cause: kafka_cause(error),
        }
    }

    /// Destroys the librdkafka handle off the async runtime (destroying may block
    /// while it closes broker connections).
    pub fn dispose(self) {
        if let Some(probe) = Arc::into_inner(self.probe) {
            tokio::task::spawn_blocking(move || drop(probe));
        }
    }
}

/// Each topic's configs as a map by name.
fn by_name(
    described: TopicConfigs<Vec<(String, String)>>,
) -> TopicConfigs<BTreeMap<String, String>> {
    described
        .into_iter()
        .map(|(topic, result)| (topic, result.map(|configs| configs.into_iter().collect())))
        .collect()
}

/// The coordinator's client settings. While a request waits, librdkafka logs in
/// again after 100 ms, doubling: a cluster that refuses the login would see half
/// a dozen attempts within one metadata call's timeout. The coordinator is no
/// part of the data path, so its clients wait 5 s before connecting again (a
/// call then makes at most two attempts before its refusal pauses the cluster).
const CLIENT_DEFAULTS: &[(&str, &str)] = &[("reconnect.backoff.ms", "5000")];

fn client_config(spec: &ClusterSpec) -> Result<ClientConfig, CoordinatorError> {
    let role = kmirror_common::kafka::RoleSettings {
        required: &[("client.id", "kmirror-coordinator")],
        defaults: CLIENT_DEFAULTS,
    };
    Ok(kmirror_common::kafka::client_config(spec, &role, &[])?)
}

fn invalid_properties(spec: &ClusterSpec, error: &KafkaError) -> CoordinatorError {
    CoordinatorError::InvalidArgument(format!(
        "invalid client properties for cluster {}: {}",
        spec.name,
        kafka_cause(error)
    ))
}

/// Drops an admin client off the async runtime: dropping joins its polling thread
/// and destroys the librdkafka handle, both of which block.
fn dispose_admin(admin: Admin) {
    tokio::task::spawn_blocking(move || drop(admin));
}

/// "connect to ... failed: Connection refused (after 0ms in state CONNECT, 3
/// identical error(s) suppressed)" without the parenthesised retry details.
fn without_retry_details(reason: &str) -> &str {
    match reason.rfind(" (after ") {
        Some(start) if reason.ends_with(')') => &reason[..start],
        _ => reason,
    }
}

fn is_transport_failure(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
        )
    )
}

/// The cause of a Kafka error in words, without the wrapping rdkafka adds.
pub fn kafka_cause(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientCreation(message) => message.clone(),
        // librdkafka's description quotes the value: never show a secret's.
        KafkaError::ClientConfig(_, _, key, _)
            if kmirror_common::kafka::is_secret_property(key) =>
        {
            format!("invalid value for property {key}")
        }
        KafkaError::ClientConfig(_, description, _, _) => description.clone(),
        KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut) => {
            "no broker answered in time".to_string()
        }
        _ => match error.rdkafka_error_code() {
            Some(code) => code_cause(code),
            None => error.to_string(),
        },
    }
}

/// librdkafka's description of an error code ("Broker transport failure"), without
/// the enum name rdkafka's `Display` puts first.
pub fn code_cause(code: RDKafkaErrorCode) -> String {
    let text = code.to_string();
    let description = text
        .split_once(" (")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(&text);
    description
        .strip_prefix("Broker: ")
        .or_else(|| description.strip_prefix("Local: "))
        .unwrap_or(description)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_read_as_their_description() {
        assert_eq!(
            code_cause(RDKafkaErrorCode::BrokerTransportFailure),
            "Broker transport failure"
        );
        assert_eq!(
            code_cause(RDKafkaErrorCode::PolicyViolation),
            "Policy violation"
        );
    }

    #[test]
    fn retry_details_are_cut_from_connection_errors() {
        assert_eq!(
            without_retry_details(
                "h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT, 1 identical error(s) suppressed)"
            ),
            "h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
        );
        assert_eq!(without_retry_details("plain (detail)"), "plain (detail)");
    }

    #[test]
    fn invalid_secret_values_are_not_echoed() {
        let error = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"sasl.password\"".to_string(),
            "sasl.password".to_string(),
            "hunter2".to_string(),
        );
        assert!(!kafka_cause(&error).contains("hunter2"));
    }

    #[test]
    fn unknown_properties_are_refused_when_the_client_is_built() {
        let spec = ClusterSpec {
            name: ClusterName::new("src").unwrap(),
            bootstrap_servers: "127.0.0.1:1".to_string(),
            properties: [("no.such.property".to_string(), "1".to_string())].into(),
        };
        let error = ClusterClient::build(&spec, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(error, CoordinatorError::InvalidArgument(_)));
        assert!(error.to_string().contains("no.such.property"), "{error}");
    }
}
