//! The kmirror coordinator: the fleet's control plane.
//!
//! Every coordinator registers as a member and serves the admin API; one of them,
//! elected through etcd, reconciles: it lists the source topics each flow selects,
//! creates or grows destination topics, assigns every source partition to a live
//! fetcher and a live writer, and records each flow's state. See
//! [`planner`] for how partitions are assigned and [`leadership`] for how a
//! deposed leader is kept from writing.
//!
//! Life cycle: [`Config`] (from [`CoordinatorConfig`], which [`CoordinatorArgs`]
//! and the config file convert into) → [`Coordinator::build`]
//! (connects to etcd, binds the gRPC port) → [`Coordinator::run`] until the
//! cancellation token fires.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod authorize;
pub mod error;
pub mod group_sync;
pub mod guard;
pub mod kafka;
pub mod leadership;
pub mod planner;
pub mod reconcile;
pub mod round;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod topic_filter;

use std::net::SocketAddr;
use std::time::Duration;

use kmirror_common::etcd::EtcdSettings;
use kmirror_common::http::MetricsListen;
use kmirror_common::lease_keeper::{EtcdRegistrar, LeaseKeeper};
use kmirror_common::member_config::MemberConfig;
use kmirror_common::metrics::Granularity;
use kmirror_common::runtime::MemberRuntime;
use kmirror_common::schema::MemberInfo;
use kmirror_common::service::MemberArgs;
use kmirror_common::tls::{PeerRole, Transport, TransportSettings};
use kmirror_common::{now_ms, Keys, MemberId, Role, VERSION};
use kmirror_proto::tonic::server::NamedService;
use kmirror_proto::tonic::transport::Server;
use kmirror_proto::v1::admin_server::AdminServer;
use kmirror_proto::v1::audit_server::AuditServer;
use kmirror_proto::v1::tokens_server::TokensServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::AdminService;
use crate::audit::{AuditLog, AuditService};
use crate::authorize::Authorize;
pub use crate::error::CoordinatorError;
use crate::kafka::KafkaClients;
use crate::leadership::Leadership;
use crate::tokens::{TokenService, TokenStore};

/// Address the admin API listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Command-line flags of `kmirror-coordinator`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "kmirror-coordinator",
    version,
    about = "Control plane of a kmirror fleet: elects a leader that assigns source partitions, serves the admin API",
    after_help = "Settings come from flags, then KMIRROR_* environment variables, then the \
config file (--config or KMIRROR_CONFIG), then the defaults. The config file is YAML:\n\n  \
apiVersion: kmirror.io/v1\n  \
kind: Coordinator\n  \
spec:\n    \
etcd: [http://10.0.0.5:2379]\n    \
fleet: prod\n    \
refreshInterval: 5s\n\n\
Example:\n  \
kmirror-coordinator --etcd http://10.0.0.5:2379 --fleet prod --listen 0.0.0.0:7070 --advertise coordinator-a.internal:7070"
)]
pub struct CoordinatorArgs {
    /// YAML config file whose settings are these flags by name (see below).
    #[arg(long, env = "KMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub member: MemberArgs,

    /// How often the leader reconciles flows, topics and assignments even when
    /// nothing changed in etcd (new source topics and partitions are found this way).
    #[arg(long, env = "KMIRROR_REFRESH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
}

/// The coordinator's settings as plain data: the flags and the config file
/// convert into it (see [`kmirror_common::config_file`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    pub member: MemberConfig,
    #[serde(deserialize_with = "kmirror_common::member_config::text::duration")]
    pub refresh_interval: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            member: MemberConfig::default(),
            refresh_interval: Duration::from_secs(5),
        }
    }
}

/// Everything the coordinator needs, as plain data.
#[derive(Debug, Clone)]
pub struct Config {
    pub etcd: EtcdSettings,
    pub member_id: MemberId,
    pub listen: SocketAddr,
    /// Address registered for others to reach this coordinator; the bound address
    /// when absent.
    pub advertise_opt: Option<String>,
    pub lease_ttl: Duration,
    pub shutdown_grace: Duration,
    pub refresh_interval: Duration,
    /// Quiet time after a change in etcd before the leader reconciles.
    pub debounce: Duration,
    /// Timeout of Kafka requests (metadata, admin operations).
    pub kafka_timeout: Duration,
    /// Where the /metrics, /healthz and /readyz endpoint listens, if anywhere.
    pub metrics_listen: MetricsListen,
    /// Labels of per-partition metrics.
    pub metrics_labels: Granularity,
    /// Mutual TLS (the admin API's clients are authorised by their
    /// certificate's role), or `--insecure`.
    pub transport: TransportSettings,
}

impl Config {
    pub fn from_config(config: &CoordinatorConfig) -> Result<Self, CoordinatorError> {
        let member = &config.member;
        let member_id = match &member.id {
            Some(id) => MemberId::new(id.clone())?,
            None => MemberId::generate(Role::Coordinator),
        };
        Ok(Self {
            etcd: member.etcd_settings(),
            member_id,
            listen: member.listen.unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .expect("the default listen address parses")
            }),
            advertise_opt: member.advertise.clone(),
            lease_ttl: member.lease_ttl,
            shutdown_grace: member.shutdown_grace,
            refresh_interval: config.refresh_interval,
            debounce: Duration::from_millis(300),
            kafka_timeout: Duration::from_secs(10),
            metrics_listen: member.metrics_listen,
            metrics_labels: member.metrics_labels,
            transport: member.transport_settings(),
        })
    }
}

/// A coordinator connected to etcd with its gRPC port bound, ready to run.
pub struct Coordinator {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    admin: AdminService,
    audit_log: AuditLog,
    audit_service: AuditService,
    token_store: TokenStore,
    leadership: Leadership,
    keeper: LeaseKeeper,
    runtime: MemberRuntime,
    transport: Transport,
}

impl Coordinator {
    /// Connects to etcd and binds the listen address (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, CoordinatorError> {
        let transport = config
            .transport
            .resolve(&config.etcd.fleet, PeerRole::Coordinator)?;
        let client = kmirror_common::etcd::connect(&config.etcd).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|error| CoordinatorError::Server {
                    address: config.listen.to_string(),
                    cause: format!("cannot listen: {error}"),
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| CoordinatorError::Server {
                address: config.listen.to_string(),
                cause: error.to_string(),
            })?;
        let keys = Keys::new(&config.etcd.fleet);
        let kafka = KafkaClients::new(config.kafka_timeout);
        let metrics_endpoint_opt = kmirror_common::http::bind(
            config.metrics_listen,
            config.metrics_labels,
            Role::Coordinator,
            config.advertise_opt.as_deref(),
        )
        .await
        .map_err(|error| CoordinatorError::Server {
            address: error.address.to_string(),
            cause: error.to_string(),
        })?;
        let member = MemberInfo {
            id: config.member_id.clone(),
            role: Role::Coordinator,
            address: config
                .advertise_opt
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            version: VERSION.to_string(),
            started_ms: now_ms(),
            metrics_address: metrics_endpoint_opt
                .as_ref()
                .map(|endpoint| endpoint.url.clone()),
        };
        let (keeper, lease_rx) = LeaseKeeper::new(EtcdRegistrar {
            client: client.clone(),
            keys: keys.clone(),
            info: member.clone(),
            ttl: config.lease_ttl,
        });
        let (leader_tx, leader_rx) = watch::channel(false);
        let runtime = MemberRuntime::new(lease_rx.clone()).with_leader(leader_rx);
        if let Some(endpoint) = metrics_endpoint_opt {
            let health = runtime.health();
            runtime.spawn_background(|stop| endpoint.serve(health, stop));
        }
        let admin = AdminService::new(client.clone(), keys.clone(), kafka.clone());
        let audit_log = AuditLog::new(client.clone(), keys.clone());
        let audit_service = AuditService::new(client.clone(), keys.clone());
        let token_store = TokenStore::new(client.clone(), keys.clone());
        let leadership =
            Leadership::new(client, &config, keys, member, kafka, lease_rx, leader_tx).await?;
        Ok(Self {
            config,
            listener,
            local_addr,
            admin,
            audit_log,
            audit_service,
            token_store,
            leadership,
            keeper,
            runtime,
            transport,
        })
    }

    /// The address the gRPC server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves and takes part in the election until `cancel` fires, then stops in
    /// order: health NOT_SERVING, resign leadership, revoke the lease, stop gRPC,
    /// all within the shutdown grace.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), CoordinatorError> {
        let Coordinator {
            config,
            listener,
            local_addr,
            admin,
            audit_log,
            audit_service,
            token_store,
            leadership,
            keeper,
            mut runtime,
            transport,
        } = self;
        runtime.run_keeper(keeper);
        runtime.stop_on(cancel.clone());
        let (health_reporter, health_service) =
            kmirror_proto::tonic_health::server::health_reporter();
        runtime.report_grpc_health(
            health_reporter,
            &["", <AdminServer<AdminService> as NamedService>::NAME],
            Some(kmirror_common::health::LEADER_HEALTH_SERVICE),
        );

        let server_stop = CancellationToken::new();
        let watched = transport.clone();
        runtime.spawn_background(|stop| watched.watch(stop));
        let server = Server::builder()
            .add_service(health_service)
            .add_service(Authorize::new(
                AdminServer::new(admin),
                config.etcd.fleet.clone(),
                Some(audit_log.clone()),
                Some(token_store.clone()),
            ))
            .add_service(Authorize::new(
                AuditServer::new(audit_service),
                config.etcd.fleet.clone(),
                None,
                Some(token_store.clone()),
            ))
            .add_service(Authorize::new(
                TokensServer::new(TokenService::new(token_store.clone())),
                config.etcd.fleet.clone(),
                Some(audit_log.clone()),
                Some(token_store.clone()),
            ))
            .serve_with_incoming_shutdown(
                transport.incoming(listener),
                server_stop.clone().cancelled_owned(),
            );
        let mut server_handle = runtime.spawn(server);
        info!(
            member = %config.member_id,
            fleet = %config.etcd.fleet,
            address = %local_addr,
            "coordinator serving"
        );

        let leadership_stop = CancellationToken::new();
        let leadership_handle = runtime.spawn(leadership.run(leadership_stop.clone()));

        let server_failure_opt = tokio::select! {
            _ = cancel.cancelled() => None,
            result = &mut server_handle => Some(match result {
                Ok(Ok(())) => "the server stopped by itself".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(join_error) => join_error.to_string(),
            }),
        };

        info!("coordinator stopping");
        runtime.begin_stopping();
        let ordered_stop = async {
            leadership_stop.cancel();
            let _ = leadership_handle.await;
            // Revoking deletes the member key and any campaign key bound to the lease.
            runtime.leave().await;
            info!(member = %config.member_id, "left the fleet");
            server_stop.cancel();
            if server_failure_opt.is_none() {
                let _ = server_handle.await;
            }
            runtime.finish().await;
        };
        if tokio::time::timeout(config.shutdown_grace, ordered_stop)
            .await
            .is_err()
        {
            warn!(grace = ?config.shutdown_grace, "graceful stop did not finish in time");
        }
        match server_failure_opt {
            Some(cause) => Err(CoordinatorError::Server {
                address: local_addr.to_string(),
                cause,
            }),
            None => {
                info!("coordinator stopped");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use kmirror_common::config_file::{flag_defaults, from_yaml, service_config};

    fn config_of(args: &[&str]) -> CoordinatorConfig {
        let command = CoordinatorArgs::command();
        let matches = command.clone().try_get_matches_from(args).unwrap();
        service_config(&command, &matches).unwrap()
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let config = Config::from_config(&config_of(&["kmirror-coordinator"])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.refresh_interval, Duration::from_secs(5));
        assert!(config.member_id.as_str().starts_with("coordinator-"));
        let from_flags: CoordinatorConfig = flag_defaults(&CoordinatorArgs::command()).unwrap();
        assert_eq!(from_flags, CoordinatorConfig::default());
    }

    #[test]
    fn refresh_interval_takes_a_human_duration() {
        let config = Config::from_config(&config_of(&[
            "kmirror-coordinator",
            "--refresh-interval",
            "750ms",
            "--id",
            "coord-a",
            "--listen",
            "127.0.0.1:0",
        ]))
        .unwrap();
        assert_eq!(config.refresh_interval, Duration::from_millis(750));
        assert_eq!(config.member_id.as_str(), "coord-a");
        assert_eq!(config.listen.port(), 0);
    }

    #[test]
    fn yaml_converts_into_the_config_and_unknown_keys_are_refused() {
        let config: CoordinatorConfig =
            from_yaml("etcd: [http://10.0.0.5:2379]\nrefreshInterval: 2s\n").unwrap();
        assert_eq!(config.member.etcd, ["http://10.0.0.5:2379"]);
        assert_eq!(config.refresh_interval, Duration::from_secs(2));
        let error = from_yaml::<CoordinatorConfig>("refresh: 2s\n").unwrap_err();
        assert!(error.contains("unknown field `refresh`"), "{error}");
    }

    #[test]
    fn an_invalid_member_id_is_refused() {
        let config = config_of(&["kmirror-coordinator", "--id", "a/b"]);
        assert!(Config::from_config(&config).is_err());
    }
}
