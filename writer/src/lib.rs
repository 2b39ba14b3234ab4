//! The writer: receives batches of source records from fetchers over gRPC and
//! produces them into the destination cluster with an idempotent producer
//! (acks=all), acknowledging each batch only once Kafka has every record of it.
#![forbid(unsafe_code)]

pub mod error;
pub mod partitioner;
pub mod producer;
pub mod replicate;
pub mod routes;
pub mod session;
pub mod telemetry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use etcd_client::Client;
use kmirror_common::membership::{register_again, LeaseGuard, Registration};
use kmirror_common::schema::{ClusterSpec, MemberInfo};
use kmirror_common::service::{
    MemberArgs, StartedMember, REPLICATE_CONNECTION_WINDOW_BYTES, REPLICATE_MAX_FRAME_BYTES,
    REPLICATE_STREAM_WINDOW_BYTES,
};
use kmirror_common::{Epoch, Keys, MemberId, PartitionKey, Role};
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::worker_server::{Worker, WorkerServer};
use kmirror_proto::v1::{
    SourcePartition, WorkerPartition, WorkerStatusRequest, WorkerStatusResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use error::WriterError;
use producer::DestinationProducer;
use replicate::ReplicateService;
use routes::Routes;

/// Largest gRPC message a writer accepts: a batch of a few MiB plus headroom.
pub const MAX_BATCH_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct WriterConfig {
    #[command(flatten)]
    pub member: MemberArgs,

    /// librdkafka producer property for the destination, as KEY=VALUE (repeatable).
    /// Wins over the writer's defaults and the cluster's stored properties.
    #[arg(long = "producer-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub producer_properties: Vec<(String, String)>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// State every stream session of the writer shares.
pub struct WriterShared {
    pub routes: Routes,
    /// Highest assignment epoch seen per partition: older ones are refused.
    epochs: Mutex<HashMap<PartitionKey, Epoch>>,
    producer_overrides: Vec<(String, String)>,
    pub drain_timeout: Duration,
    /// The current registration's lease; replaced when the writer registers again.
    lease: Mutex<LeaseGuard>,
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
        self.lease.lock().expect("lease lock poisoned").is_live()
    }

    pub fn create_producer(
        &self,
        cluster: &ClusterSpec,
        batch_size: i64,
    ) -> Result<DestinationProducer, rdkafka::error::KafkaError> {
        session::build_producer(cluster, batch_size, &self.producer_overrides)
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
            lease: Mutex::new(member.registration.guard()),
            epochs: Mutex::new(HashMap::new()),
            producer_overrides: config.producer_properties.clone(),
            drain_timeout: config.member.shutdown_grace,
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
            mut etcd,
            keys,
            id,
            listener,
            info,
            registration,
        } = self.member;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<ReplicateService>().await;
        kmirror_common::health::report_grpc(
            keys.member(Role::Writer, &id),
            health_reporter.clone(),
            &[""],
            None,
            shutdown.clone(),
        );
        let replicate = ReplicateService::new(self.shared.clone());
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
                // Acks are small: without TCP_NODELAY each could wait for the
                // fetcher's delayed TCP acknowledgement.
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop_serving.clone().cancelled_owned(),
            );
        tokio::pin!(server);
        let grace = self.config.member.shutdown_grace;
        let serving = async {
            let outcome = tokio::select! {
                result = &mut server => result.map_err(WriterError::from),
                _ = shutdown.cancelled() => {
                    health_reporter.set_not_serving::<ReplicateService>().await;
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
            // The lease keeper below ends with the shutdown too.
            shutdown.cancel();
            outcome
        };
        let keeper = LeaseKeeper {
            etcd: etcd.clone(),
            keys,
            info,
            ttl: self.config.member.lease_ttl,
            shared: self.shared.clone(),
            health_reporter: health_reporter.clone(),
        };
        let (outcome, registration) =
            tokio::join!(serving, keeper.run(registration, shutdown.clone()));
        registration.revoke(&mut etcd).await;
        info!(member = %id, "writer stopped");
        outcome
    }
}

/// Keeps the writer registered: when the lease is lost the writer stops producing
/// (sessions check [`WriterShared::lease_is_live`] before every batch), reports
/// NOT_SERVING, and registers again under a new lease.
struct LeaseKeeper {
    etcd: Client,
    keys: Keys,
    info: MemberInfo,
    ttl: Duration,
    shared: Arc<WriterShared>,
    health_reporter: tonic_health::server::HealthReporter,
}

impl LeaseKeeper {
    /// Returns the registration in force when `shutdown` was cancelled.
    async fn run(
        mut self,
        mut registration: Registration,
        shutdown: CancellationToken,
    ) -> Registration {
        loop {
            let lost = registration.lost();
            tokio::select! {
                _ = shutdown.cancelled() => return registration,
                _ = lost.cancelled() => {}
            }
            self.health_reporter
                .set_not_serving::<ReplicateService>()
                .await;
            warn!(member = %self.info.id, "lease lost: producing nothing until registered again");
            let old_lease = registration.lease_id;
            match register_again(
                &mut self.etcd,
                &self.keys,
                &self.info,
                self.ttl,
                old_lease,
                &shutdown,
            )
            .await
            {
                Some(renewed) => {
                    *self.shared.lease.lock().expect("lease lock poisoned") = renewed.guard();
                    registration = renewed;
                    self.health_reporter.set_serving::<ReplicateService>().await;
                }
                None => return registration,
            }
        }
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
