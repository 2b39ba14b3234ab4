//! The writer: receives batches of source records from fetchers over gRPC and
//! produces them into the destination cluster with an idempotent producer
//! (acks=all), acknowledging each batch only once Kafka has every record of it.
#![forbid(unsafe_code)]

pub mod deliverability;
pub mod error;
pub mod partitioner;
pub mod producer;
pub mod replicate;
pub mod routes;
pub mod send;
pub mod session;
pub mod telemetry;
pub mod transactional;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use kmirror_common::lease_keeper::LeaseState;
use kmirror_common::member_config::{text, MemberConfig};
use kmirror_common::schema::ClusterSpec;
use kmirror_common::service::{
    MemberArgs, StartedMember, REPLICATE_CONNECTION_WINDOW_BYTES, REPLICATE_MAX_FRAME_BYTES,
    REPLICATE_STREAM_WINDOW_BYTES,
};
use kmirror_common::{Epoch, MemberId, PartitionKey, Role};
use kmirror_proto::tonic::server::NamedService;
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::worker_server::{Worker, WorkerServer};
use kmirror_proto::v1::{
    SourcePartition, WorkerPartition, WorkerStatusRequest, WorkerStatusResponse,
};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::WriterError;
use producer::DestinationProducer;
use replicate::ReplicateService;
use routes::Routes;

/// The writer's flags: the flag form of [`WriterConfig`], field for field.
#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    #[command(flatten)]
    pub member: MemberArgs,

    /// librdkafka producer property for the destination, as KEY=VALUE (repeatable).
    /// Wins over the writer's defaults and the cluster's stored properties.
    #[arg(long = "producer-property", value_name = "KEY=VALUE", value_parser = text::parse_property)]
    pub producer_properties: Vec<(String, String)>,
}

/// Everything a writer is configured with, as plain data (see [`WriterArgs`]
/// for what each setting means).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WriterConfig {
    pub member: MemberConfig,
    #[serde(deserialize_with = "text::properties")]
    pub producer_properties: Vec<(String, String)>,
}

/// State every stream session of the writer shares.
pub struct WriterShared {
    pub routes: Routes,
    /// Destination clusters whose deliveries time out.
    pub deliverability: deliverability::Deliverability,
    /// Highest assignment epoch seen per partition: older ones are refused.
    epochs: Mutex<HashMap<PartitionKey, Epoch>>,
    producer_overrides: Vec<(String, String)>,
    pub drain_timeout: Duration,
    /// The fleet's offset map topic on every destination cluster
    /// (see `kmirror_common::offset_map`).
    pub offset_map_topic: String,
    /// The fleet's name: exactly-once partitions' transactional ids start with it.
    pub fleet: String,
    /// The lease keeper's channel: the lease the writer produces under.
    lease_rx: watch::Receiver<LeaseState>,
}

impl WriterShared {
    /// Records the batch's epoch; returns the held epoch when the batch's is older.
    pub fn check_epoch(&self, partition: &PartitionKey, epoch: Epoch) -> Option<Epoch> {
        let mut epochs = self.epochs.lock().expect("epoch lock poisoned");
        match epochs.get_mut(partition) {
            Some(held) if *held > epoch => Some(*held),
            Some(held) => {
                *held = epoch;
                None
            }
            None => {
                epochs.insert(partition.clone(), epoch);
                None
            }
        }
    }

    /// Whether the writer may still produce: a writer past its lease deadline
    /// writes nothing, since its partitions may already be written elsewhere.
    pub fn lease_is_live(&self) -> bool {
        self.lease_rx
            .borrow()
            .lease()
            .is_some_and(|lease| lease.guard.is_live())
    }

    pub fn create_producer(
        &self,
        cluster: &ClusterSpec,
        batch_size: i64,
    ) -> Result<DestinationProducer, rdkafka::error::KafkaError> {
        session::build_producer(cluster, batch_size, &self.producer_overrides)
    }

    /// A producer of one exactly-once partition: the writer's settings plus its
    /// transactional id (see [`transactional`]).
    pub fn create_transactional_producer(
        &self,
        cluster: &ClusterSpec,
        batch_size: i64,
        transactional_id: &str,
    ) -> Result<DestinationProducer, rdkafka::error::KafkaError> {
        let timeout_ms = transactional::TRANSACTION_TIMEOUT.as_millis().to_string();
        session::producer_config(cluster, batch_size, &self.producer_overrides)?
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", &timeout_ms)
            // A record may not outlive its transaction.
            .set("message.timeout.ms", &timeout_ms)
            .create_with_context(producer::DeliveryContext::new(cluster))
    }
}

/// A writer bound to its address and registered in etcd.
pub struct Writer {
    config: WriterConfig,
    member: StartedMember,
    shared: Arc<WriterShared>,
}

impl Writer {
    pub async fn build(config: WriterConfig) -> Result<Self, WriterError> {
        let member = config.member.start(Role::Writer).await?;
        let shared = Arc::new(WriterShared {
            routes: Routes::new(member.etcd.clone(), member.keys.clone()),
            deliverability: Default::default(),
            lease_rx: member.runtime.lease_rx(),
            epochs: Mutex::new(HashMap::new()),
            producer_overrides: config.producer_properties.clone(),
            drain_timeout: config.member.shutdown_grace,
            offset_map_topic: kmirror_common::offset_map::map_topic(&config.member.fleet),
            fleet: config.member.fleet.clone(),
        });
        Ok(Self {
            config,
            member,
            shared,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.member.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains the open streams (their
    /// fetchers stop sending and wait for the last acks) within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WriterError> {
        let StartedMember {
            id,
            listener,
            runtime,
            etcd,
            keys,
            transport,
            ..
        } = self.member;
        // A lost lease turns health NOT_SERVING and stops producing (sessions
        // check [`WriterShared::lease_is_live`] before every batch) until the
        // keeper registers the writer again.
        runtime.stop_on(shutdown.clone());
        runtime.spawn_background({
            let (shared, id, lease_rx) = (self.shared.clone(), id.clone(), runtime.lease_rx());
            move |stop| deliverability::publish(shared, etcd, keys, id, lease_rx, stop)
        });
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        runtime.report_grpc_health(
            health_reporter,
            &["", <ReplicateService as NamedService>::NAME],
            None,
        );
        let replicate =
            ReplicateService::new(self.shared.clone(), self.config.member.fleet.clone());
        let status = WorkerEndpoint {
            id: id.clone(),
            shared: self.shared.clone(),
        };
        let stop_serving = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(REPLICATE_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(REPLICATE_CONNECTION_WINDOW_BYTES)
            .max_frame_size(REPLICATE_MAX_FRAME_BYTES)
            .add_service(health_service)
            .add_service(replicate)
            .add_service(WorkerServer::new(status))
            .serve_with_incoming_shutdown(
                // Accepted connections have TCP_NODELAY: acks are small, and
                // each could otherwise wait for the fetcher's delayed TCP
                // acknowledgement.
                transport.incoming(listener),
                stop_serving.clone().cancelled_owned(),
            );
        tokio::pin!(server);
        let grace = self.config.member.shutdown_grace;
        let outcome = tokio::select! {
            result = &mut server => result.map_err(WriterError::from),
            _ = shutdown.cancelled() => {
                stop_serving.cancel();
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result.map_err(WriterError::from),
                    Err(_) => {
                        warn!(grace_secs = grace.as_secs(), "streams still open when the grace period ended");
                        Ok(())
                    }
                }
            }
        };
        runtime.finish().await;
        info!(member = %id, "writer stopped");
        outcome
    }
}

struct WorkerEndpoint {
    id: MemberId,
    shared: Arc<WriterShared>,
}

#[tonic::async_trait]
impl Worker for WorkerEndpoint {
    async fn get_worker_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatusResponse>, Status> {
        let epochs = self.shared.epochs.lock().expect("epoch lock poisoned");
        let partitions = epochs
            .iter()
            .map(|(partition, epoch)| WorkerPartition {
                source: Some(SourcePartition {
                    flow: partition.flow.to_string(),
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                }),
                epoch: epoch.0,
                next_offset: -1,
                in_flight_batches: 0,
                error: String::new(),
            })
            .collect();
        Ok(Response::new(WorkerStatusResponse {
            id: self.id.to_string(),
            role: Role::Writer.to_string(),
            partitions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};
    use kmirror_common::config_file::{flag_defaults, from_yaml, service_config};

    use super::*;

    fn command() -> Command {
        WriterArgs::augment_args(Command::new("kmirror-writer"))
    }

    #[test]
    fn the_configs_defaults_are_the_flags_defaults() {
        let from_flags: WriterConfig = flag_defaults(&command()).unwrap();
        assert_eq!(from_flags, WriterConfig::default());
    }

    #[test]
    fn flags_convert_into_the_config() {
        let matches = command()
            .try_get_matches_from([
                "kmirror-writer",
                "--listen",
                "127.0.0.1:7081",
                "--producer-property",
                "linger.ms=10",
            ])
            .unwrap();
        let config: WriterConfig = service_config(&command(), &matches).unwrap();
        assert_eq!(
            config.member.listen,
            Some("127.0.0.1:7081".parse().unwrap())
        );
        assert_eq!(
            config.producer_properties,
            [("linger.ms".to_string(), "10".to_string())]
        );
    }

    #[test]
    fn yaml_converts_into_the_config_and_unknown_keys_are_refused() {
        let config: WriterConfig =
            from_yaml("shutdownGrace: 5s\nproducerProperties:\n  acks: all\n").unwrap();
        assert_eq!(config.member.shutdown_grace, Duration::from_secs(5));
        assert_eq!(
            config.producer_properties,
            [("acks".to_string(), "all".to_string())]
        );
        assert!(from_yaml::<WriterConfig>("producerProperties: [nokey]\n").is_err());
        let error = from_yaml::<WriterConfig>("producer: x\n").unwrap_err();
        assert!(error.contains("unknown field `producer`"), "{error}");
    }
}
