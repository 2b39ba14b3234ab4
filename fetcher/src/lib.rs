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
use kmirror_common::lease_keeper::{next_lease, Lease};
use kmirror_common::member_config::{text, MemberConfig};
use kmirror_common::service::{MemberArgs, StartedMember};
use kmirror_common::tls::Transport;
use kmirror_common::{Keys, MemberId, Role};
use kmirror_proto::frame::Compression;
use kmirror_proto::tonic::server::NamedService;
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::worker_server::{Worker, WorkerServer};
use kmirror_proto::v1::{WorkerPartition, WorkerStatusRequest, WorkerStatusResponse};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The fetcher's flags: the flag form of [`FetcherConfig`], field for field.
#[derive(Debug, Clone, Args)]
pub struct FetcherArgs {
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

/// Everything a fetcher is configured with, as plain data (see [`FetcherArgs`]
/// for what each setting means).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FetcherConfig {
    pub member: MemberConfig,
    #[serde(deserialize_with = "text::duration")]
    pub checkpoint_interval: Duration,
    #[serde(deserialize_with = "text::parsed")]
    pub max_in_flight_batches: usize,
    #[serde(deserialize_with = "max_in_flight_mib")]
    pub max_in_flight_mib: u32,
    #[serde(deserialize_with = "text::duration")]
    pub retry_backoff: Duration,
    #[serde(deserialize_with = "text::value_enum")]
    pub grpc_compression: GrpcCompression,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        Self {
            member: MemberConfig::default(),
            checkpoint_interval: Duration::from_secs(1),
            max_in_flight_batches: 64,
            max_in_flight_mib: 32,
            retry_backoff: Duration::from_secs(5),
            grpc_compression: GrpcCompression::None,
        }
    }
}

fn max_in_flight_mib<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    text::number_in(deserializer, 1, u32::MAX)
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
    /// once; the fetcher then works under the lease the keeper registers next,
    /// starting over from the checkpoints with whatever the coordinator assigns it.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), FetcherError> {
        let Fetcher {
            config,
            member:
                StartedMember {
                    etcd,
                    keys,
                    id,
                    listener,
                    info: _,
                    runtime,
                    transport,
                },
        } = self;
        runtime.stop_on(shutdown.clone());
        let stop_server = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(Vec::new());
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        runtime.report_grpc_health(
            health_reporter,
            &["", <WorkerServer<StatusEndpoint> as NamedService>::NAME],
            None,
        );
        let status = StatusEndpoint {
            id: id.clone(),
            status_rx,
        };
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(WorkerServer::new(status))
            .serve_with_incoming_shutdown(
                transport.incoming(listener),
                stop_server.clone().cancelled_owned(),
            );
        let server_handle = runtime.spawn(server);

        let mut lease_rx = runtime.lease_rx();
        while let Some(lease) = next_lease(&mut lease_rx).await {
            let session = Session {
                config: &config,
                id: &id,
                keys: &keys,
                etcd: &etcd,
                lease: &lease,
                status_tx: status_tx.clone(),
                transport: &transport,
            };
            session.run(&shutdown).await;
            if shutdown.is_cancelled() {
                break;
            }
            warn!(member = %id, "lease lost: every partition stopped; registering again");
        }
        stop_server.cancel();
        let _ = server_handle.await;
        runtime.finish().await;
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
    lease: &'a Lease,
    status_tx: watch::Sender<Vec<WorkerPartition>>,
    transport: &'a Transport,
}

impl Session<'_> {
    /// Works until `shutdown` is cancelled or the lease is lost.
    async fn run(self, shutdown: &CancellationToken) {
        let lease_lost = self.lease.lost.clone();
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
            lease_id: self.lease.id,
            identity: kmirror_common::tls::Identity::new(
                self.keys.fleet(),
                kmirror_common::tls::PeerRole::Fetcher,
                self.id.to_string(),
            )
            .uri(),
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
            transport: self.transport.clone(),
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
            self.lease.guard.clone(),
        );
        core.run(shutdown.clone(), lease_lost.clone()).await;
        background.cancel();
        // The core dropped its checkpoint sender: the checkpointer ends once the
        // last write is done.
        let _ = checkpointer_handle.await;
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

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};
    use kmirror_common::config_file::{flag_defaults, from_yaml, service_config};

    use super::*;

    fn command() -> Command {
        FetcherArgs::augment_args(Command::new("kmirror-fetcher"))
    }

    #[test]
    fn the_configs_defaults_are_the_flags_defaults() {
        let from_flags: FetcherConfig = flag_defaults(&command()).unwrap();
        assert_eq!(from_flags, FetcherConfig::default());
    }

    #[test]
    fn flags_convert_into_the_config() {
        let matches = command()
            .try_get_matches_from([
                "kmirror-fetcher",
                "--id",
                "fetcher-a",
                "--checkpoint-interval",
                "250ms",
                "--max-in-flight-mib",
                "8",
                "--grpc-compression",
                "zstd",
            ])
            .unwrap();
        let config: FetcherConfig = service_config(&command(), &matches).unwrap();
        assert_eq!(config.member.id.as_deref(), Some("fetcher-a"));
        assert_eq!(config.checkpoint_interval, Duration::from_millis(250));
        assert_eq!(config.max_in_flight_mib, 8);
        assert_eq!(config.grpc_compression, GrpcCompression::Zstd);
        assert_eq!(config.retry_backoff, Duration::from_secs(5));
    }

    #[test]
    fn yaml_converts_into_the_config_and_unknown_keys_are_refused() {
        let config: FetcherConfig =
            from_yaml("fleet: prod\nmaxInFlightBatches: 8\ngrpcCompression: zstd\n").unwrap();
        assert_eq!(config.member.fleet, "prod");
        assert_eq!(config.max_in_flight_batches, 8);
        assert_eq!(config.grpc_compression, GrpcCompression::Zstd);
        assert!(from_yaml::<FetcherConfig>("maxInFlightMib: 0\n").is_err());
        let error = from_yaml::<FetcherConfig>("checkpointEvery: 1s\n").unwrap_err();
        assert!(error.contains("unknown field `checkpointEvery`"), "{error}");
    }
}
