//! The fetcher: reads the source partitions assigned to it (explicit assignment,
//! no consumer group) and streams them as batches to their writers over gRPC,
//! checkpointing in etcd only what the writers acknowledged.
#![deny(unsafe_code)]

pub mod batch_poll;
pub mod budget;
pub mod checkpointer;
pub mod consumer;
pub mod core;
pub mod link;
pub mod partition;
pub mod telemetry;
pub mod watcher;
pub mod window;

use std::time::Duration;

use clap::Args;
use etcd_client::Client;
use kmirror_common::membership::{register_again, Registration};
use kmirror_common::service::{MemberArgs, StartedMember};
use kmirror_common::{Keys, MemberId, Role};
use kmirror_proto::frame::Compression;
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::worker_server::{Worker, WorkerServer};
use kmirror_proto::v1::{WorkerPartition, WorkerStatusRequest, WorkerStatusResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Largest gRPC message exchanged with writers.
pub const MAX_BATCH_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Args)]
pub struct FetcherConfig {
    #[command(flatten)]
    pub member: MemberArgs,

    /// How often acknowledged progress is checkpointed in etcd (per partition at
    /// most once per interval, many partitions per transaction).
    #[arg(long, env = "KMIRROR_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,

    /// Unacknowledged batches per partition before the partition is paused.
    #[arg(long, env = "KMIRROR_MAX_IN_FLIGHT_BATCHES", default_value_t = 64)]
    pub max_in_flight_batches: usize,

    /// MiB of record data read from the source and not yet acknowledged by a
    /// writer, over all partitions of this fetcher. Reading pauses while it is
    /// spent, so memory stays bounded whatever the backlog; the default keeps a
    /// fast stream busy.
    #[arg(long, env = "KMIRROR_MAX_IN_FLIGHT_MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight_mib: u32,

    /// Wait before retrying a partition that could not progress (record too large,
    /// destination topic missing, ...).
    #[arg(long, env = "KMIRROR_RETRY_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub retry_backoff: Duration,

    /// Compression of the batches sent to writers. `none` suits writers on the
    /// same host or a fast network: the records cross as they were read, and
    /// compressing would cost the fetcher and the writer CPU for every byte. `zstd`
    /// cuts the bytes on the wire several times, for writers across a slow or
    /// metered link. Writers accept both.
    #[arg(long, env = "KMIRROR_GRPC_COMPRESSION", value_enum, default_value_t = GrpcCompression::None)]
    pub grpc_compression: GrpcCompression,
}

/// `--grpc-compression`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcCompression {
    #[default]
    None,
    Zstd,
}

impl From<GrpcCompression> for Compression {
    fn from(compression: GrpcCompression) -> Self {
        match compression {
            GrpcCompression::None => Compression::Identity,
            GrpcCompression::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error(transparent)]
    Etcd(#[from] kmirror_common::etcd::EtcdError),
    #[error(transparent)]
    Start(#[from] kmirror_common::service::StartError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the member's etcd lease was lost")]
    LeaseLost,
}

/// A fetcher registered in etcd, with its status server bound.
pub struct Fetcher {
    config: FetcherConfig,
    member: StartedMember,
}

impl Fetcher {
    pub async fn build(config: FetcherConfig) -> Result<Self, FetcherError> {
        let member = config.member.start(Role::Fetcher).await?;
        Ok(Self { config, member })
    }

    /// Works until `shutdown` is cancelled. A lost lease stops every partition at
    /// once; the fetcher then registers again under a new lease and starts over
    /// from the checkpoints with whatever the coordinator assigns it.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FetcherError> {
        let Fetcher {
            config,
            member:
                StartedMember {
                    mut etcd,
                    keys,
                    id,
                    listener,
                    info,
                    mut registration,
                },
        } = self;
        let stop_server = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(Vec::new());
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<WorkerServer<StatusEndpoint>>()
            .await;
        kmirror_common::health::report_grpc(
            keys.member(Role::Fetcher, &id),
            health_reporter.clone(),
            &[""],
            None,
            shutdown.clone(),
        );
        let status = StatusEndpoint {
            id: id.clone(),
            status_rx,
        };
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(WorkerServer::new(status))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop_server.clone().cancelled_owned(),
            );
        let server_handle = tokio::spawn(server);

        loop {
            let session = Session {
                config: &config,
                id: &id,
                keys: &keys,
                etcd: &etcd,
                registration: &registration,
                status_tx: status_tx.clone(),
            };
            let lease_lost = session.run(&shutdown).await;
            if !lease_lost {
                break;
            }
            health_reporter
                .set_not_serving::<WorkerServer<StatusEndpoint>>()
                .await;
            warn!(member = %id, "lease lost: every partition stopped; registering again");
            let ttl = config.member.lease_ttl;
            let old_lease = registration.lease_id;
            match register_again(&mut etcd, &keys, &info, ttl, old_lease, &shutdown).await {
                Some(renewed) => {
                    registration = renewed;
                    health_reporter
                        .set_serving::<WorkerServer<StatusEndpoint>>()
                        .await;
                }
                None => break,
            }
        }
        health_reporter
            .set_not_serving::<WorkerServer<StatusEndpoint>>()
            .await;
        stop_server.cancel();
        let _ = server_handle.await;
        registration.revoke(&mut etcd).await;
        info!(member = %id, "fetcher stopped");
        Ok(())
    }
}

/// One registration's worth of work: the watcher, the checkpointer and the core,
/// all bound to the same lease.
struct Session<'a> {
    config: &'a FetcherConfig,
    id: &'a MemberId,
    keys: &'a Keys,
    etcd: &'a Client,
    registration: &'a Registration,
    status_tx: watch::Sender<Vec<WorkerPartition>>,
}

impl Session<'_> {
    /// Returns whether it ended because the lease was lost.
    async fn run(self, shutdown: &CancellationToken) -> bool {
        let lease_lost = self.registration.lost();
        let background = CancellationToken::new();
        let (desired_tx, desired_rx) = mpsc::channel(4);
        let (fetched_tx, fetched_rx) = mpsc::channel(64);
        let (link_events_tx, link_events_rx) = mpsc::unbounded_channel();
        let (checkpoint_tx, checkpoint_rx) = mpsc::unbounded_channel();

        let watcher = watcher::Watcher {
            etcd: self.etcd.clone(),
            keys: self.keys.clone(),
            me: self.id.clone(),
            desired_tx,
            cancel: background.clone(),
            resync_interval: Duration::from_secs(10),
        };
        tokio::spawn(watcher.run());
        let checkpointer = checkpointer::Checkpointer {
            etcd: self.etcd.clone(),
            keys: self.keys.clone(),
            lease_id: self.registration.lease_id,
            command_rx: checkpoint_rx,
        };
        let checkpointer_handle = tokio::spawn(checkpointer.run());

        let settings = core::CoreSettings {
            max_in_flight_batches: self.config.max_in_flight_batches.max(1),
            max_in_flight_bytes: self.config.max_in_flight_mib as usize * 1024 * 1024,
            checkpoint_interval: self.config.checkpoint_interval,
            retry_backoff: self.config.retry_backoff,
            shutdown_grace: self.config.member.shutdown_grace,
            compression: self.config.grpc_compression.into(),
        };
        let core = core::Core::new(
            self.id.clone(),
            settings,
            desired_rx,
            fetched_rx,
            fetched_tx,
            link_events_rx,
            link_events_tx,
            checkpoint_tx,
            self.status_tx,
            self.registration.guard(),
        );
        core.run(shutdown.clone(), lease_lost.clone()).await;
        background.cancel();
        // The core dropped its checkpoint sender: the checkpointer ends once the
        // last write is done.
        let _ = checkpointer_handle.await;
        lease_lost.is_cancelled() && !shutdown.is_cancelled()
    }
}

struct StatusEndpoint {
    id: MemberId,
    status_rx: watch::Receiver<Vec<WorkerPartition>>,
}

#[tonic::async_trait]
impl Worker for StatusEndpoint {
    async fn get_worker_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatusResponse>, Status> {
        Ok(Response::new(WorkerStatusResponse {
            id: self.id.to_string(),
            role: Role::Fetcher.to_string(),
            partitions: self.status_rx.borrow().clone(),
        }))
    }
}
