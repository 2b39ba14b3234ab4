//! Command-line flags every fleet member takes, with `KMIRROR_*` environment
//! overrides (they convert into [`MemberConfig`], see [`crate::config_file`]),
//! and how a worker (fetcher or writer) joins the fleet with its config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use etcd_client::Client;
use tokio::net::TcpListener;
use tracing::info;

use crate::etcd::EtcdError;
use crate::http::MetricsEndpoint;
use crate::lease_keeper::{EtcdRegistrar, LeaseKeeper};
use crate::member_config::MemberConfig;
use crate::runtime::MemberRuntime;
use crate::schema::{Keys, MemberInfo};
use crate::tls::Transport;
use crate::types::{InvalidName, MemberId, Role};

/// Flags shared by the coordinator, the fetcher and the writer: the flag
/// form of [`MemberConfig`], field for field.
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "KMIRROR_ETCD",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd: Vec<String>,

    /// Fleet name: all control state lives under /kmirror/<fleet>/ in etcd.
    #[arg(long, env = "KMIRROR_FLEET", default_value = "local")]
    pub fleet: String,

    /// Member id, unique in the fleet [default: role plus a random suffix].
    #[arg(long, env = "KMIRROR_ID")]
    pub id: Option<String>,

    /// Address the gRPC server listens on.
    #[arg(long, env = "KMIRROR_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// Address other members reach this one at [default: the listen address].
    #[arg(long, env = "KMIRROR_ADVERTISE")]
    pub advertise: Option<String>,

    /// TTL of the member's etcd lease. A member that stops renewing it is gone
    /// after this long, and its work moves to others.
    #[arg(long, env = "KMIRROR_LEASE_TTL", default_value = "6s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// How long a graceful stop (SIGTERM) may take before the member exits anyway.
    #[arg(long, env = "KMIRROR_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Threads that run the member's gRPC service and its own work (librdkafka
    /// runs its clients on threads of its own). One keeps the hand-offs between
    /// threads, and the CPU they cost, low: on two cores it mirrors faster, with a
    /// shorter latency tail, than two. A writer that serves many fetchers on a
    /// machine with cores to spare may take more.
    #[arg(long, env = "KMIRROR_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,

    #[command(flatten)]
    pub metrics: crate::http::MetricsArgs,

    // Secrets.
    /// The fleet's secrets key: a file of 64 hexadecimal characters (make one
    /// with `openssl rand -hex 32`). Cluster secrets (passwords, private keys)
    /// are stored in etcd sealed with it; every member of the fleet needs the
    /// same file. Without it, clusters with secrets cannot be stored or used.
    #[arg(long, env = "KMIRROR_SECRETS_KEY_FILE", value_name = "FILE")]
    pub secrets_key_file: Option<std::path::PathBuf>,

    // Transport security (mutual TLS between members and with kmirrorctl).
    /// This member's certificate (PEM), issued by the fleet CA for its role
    /// and id (`kmirrorctl certificates issue`). Reloaded when the file changes.
    #[arg(long, env = "KMIRROR_TLS_CERT", help_heading = "Transport security")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, env = "KMIRROR_TLS_KEY", help_heading = "Transport security")]
    pub tls_key: Option<PathBuf>,

    /// The fleet CA's certificate (PEM): every peer must present a certificate
    /// it signed.
    #[arg(long, env = "KMIRROR_TLS_CA", help_heading = "Transport security")]
    pub tls_ca: Option<PathBuf>,

    /// Run without TLS: plaintext and unauthenticated, anyone who reaches the
    /// port may call the member. Only for a trusted network; without TLS
    /// files or this flag a member does not start.
    #[arg(long, env = "KMIRROR_INSECURE", help_heading = "Transport security")]
    pub insecure: bool,

    #[command(flatten)]
    pub etcd_security: EtcdSecurityArgs,
}

/// How a member authenticates to etcd and encrypts the connection: the flag
/// form of [`crate::etcd::EtcdSecurity`]. `kmirror mirror --etcd` takes them too.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdSecurityArgs {
    /// Client certificate (PEM) presented to etcd; the endpoints must be https://.
    #[arg(long, env = "KMIRROR_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --etcd-cert.
    #[arg(long, env = "KMIRROR_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<std::path::PathBuf>,

    /// CA (PEM) that signed etcd's server certificate; needed by https:// endpoints.
    #[arg(long, env = "KMIRROR_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<std::path::PathBuf>,

    /// etcd user (etcd's RBAC) the member authenticates as; its role needs
    /// readwrite on the fleet's prefix /kmirror/<fleet>/.
    #[arg(long, env = "KMIRROR_ETCD_USER")]
    pub etcd_user: Option<String>,

    /// File holding the etcd user's password (its first line).
    #[arg(long, env = "KMIRROR_ETCD_PASSWORD_FILE", value_name = "FILE")]
    pub etcd_password_file: Option<std::path::PathBuf>,

    /// Refused: give the password in a file with --etcd-password-file.
    #[arg(long, env = "KMIRROR_ETCD_PASSWORD", hide = true, value_parser = RefusePasswordOnCommandLine)]
    pub etcd_password: Option<String>,
}

/// Refuses `--etcd-password` (or `KMIRROR_ETCD_PASSWORD`) whatever its value,
/// without the value in the message (clap's own errors quote it).
#[derive(Clone)]
struct RefusePasswordOnCommandLine;

impl clap::builder::TypedValueParser for RefusePasswordOnCommandLine {
    type Value = String;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _arg: Option<&clap::Arg>,
        _value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            "--etcd-password: a password on the command line or in the environment is readable by other users of this machine (ps, /proc) and kept in shell histories and unit files: put it in a file readable by the member only and give --etcd-password-file FILE (KMIRROR_ETCD_PASSWORD_FILE)\n",
        )
        .with_cmd(command))
    }
}

impl EtcdSecurityArgs {
    pub fn security(&self) -> crate::etcd::EtcdSecurity {
        crate::etcd::EtcdSecurity {
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            ca: self.etcd_ca.clone(),
            user: self.etcd_user.clone(),
            password_file: self.etcd_password_file.clone(),
        }
    }
}

impl MemberConfig {
    /// Joins the fleet as a worker of `role`: connects to etcd, binds the gRPC
    /// listener (`--listen`, else a free port on 127.0.0.1) and the metrics
    /// endpoint, and registers the member under a lease of `--lease-ttl`.
    pub async fn start(&self, role: Role) -> Result<StartedMember, StartError> {
        // Checked first: a member without its transport settings must not
        // join the fleet at all.
        let transport = self
            .transport_settings()
            .resolve(&self.fleet, role.into())?;
        let settings = self.etcd_settings();
        let etcd = crate::etcd::connect(&settings).await?;
        let keys = Keys::new(&settings.fleet);
        let id = match &self.id {
            Some(id) => MemberId::new(id.clone())?,
            None => MemberId::generate(role),
        };
        let address = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listen_error = |source| StartError::Listen { address, source };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let bound = listener.local_addr().map_err(listen_error)?;
        let advertised = match &self.advertise {
            Some(advertised) => advertised.clone(),
            None => format!("http://{bound}"),
        };
        let metrics_endpoint_opt = crate::http::bind(
            self.metrics_listen,
            self.metrics_labels,
            role,
            self.advertise.as_deref(),
        )
        .await?;
        let info = MemberInfo {
            id: id.clone(),
            role,
            address: advertised.clone(),
            version: crate::VERSION.to_string(),
            started_ms: crate::now_ms(),
            metrics_address: metrics_endpoint_opt
                .as_ref()
                .map(|endpoint| endpoint.url.clone()),
        };
        let (mut keeper, lease_rx) = LeaseKeeper::new(EtcdRegistrar {
            client: etcd.clone(),
            keys: keys.clone(),
            info: info.clone(),
            ttl: self.lease_ttl,
        });
        keeper.register_first().await?;
        let mut runtime = MemberRuntime::new(lease_rx);
        runtime.run_keeper(keeper);
        start_background(&runtime, &etcd, &keys, metrics_endpoint_opt);
        let watched = transport.clone();
        runtime.spawn_background(|stop| watched.watch(stop));
        info!(member = %id, listen = %bound, advertised, tls = transport.is_tls(), "{role} ready");
        Ok(StartedMember {
            etcd,
            keys,
            id,
            listener,
            info,
            runtime,
            transport,
        })
    }
}

/// The background every member runs: its metrics endpoint, if any, and the
/// clean-up of deleted flows' metric series.
pub fn start_background(
    runtime: &MemberRuntime,
    etcd: &Client,
    keys: &Keys,
    metrics_endpoint_opt: Option<MetricsEndpoint>,
) {
    if let Some(endpoint) = metrics_endpoint_opt {
        let health = runtime.health();
        runtime.spawn_background(|stop| endpoint.serve(health, stop));
    }
    let forget = crate::metrics::forget_deleted_flows(etcd.clone(), keys.clone());
    runtime.spawn_background(|stop| async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = forget => {}
        }
    });
}

/// A worker registered in etcd, with its gRPC listener bound and its metrics
/// served: what a fetcher or a writer holds before it starts serving.
pub struct StartedMember {
    pub etcd: Client,
    pub keys: Keys,
    pub id: MemberId,
    pub listener: TcpListener,
    pub info: MemberInfo,
    pub runtime: MemberRuntime,
    /// How the member's connections are made (TLS or `--insecure`).
    pub transport: Transport,
}

/// Why a worker could not join the fleet.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    InvalidId(#[from] InvalidName),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] crate::http::ListenError),
    #[error(transparent)]
    Transport(#[from] crate::tls::TransportError),
}

/// HTTP/2 flow-control window of one replicate stream, on both ends. The protocol's
/// default (64 KiB) lets a fetcher send only that much before waiting a round trip
/// for the writer's window update, which caps a stream far below what Kafka
/// delivers; a few batches' worth keeps the stream busy without letting one
/// connection buffer without bound.
pub const REPLICATE_STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// HTTP/2 flow-control window of one fetcher-to-writer connection (all its streams).
pub const REPLICATE_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Largest HTTP/2 DATA frame a writer accepts. The protocol's default (16 KiB) cuts
/// a batch of a MiB into 64 frames, each decoded and window-updated on its own. A
/// fetcher's batch holds at most about 2 MiB of records, which it sends as one
/// chunk: at 4 MiB they cross in one frame, and the writer decodes them as a slice
/// of it instead of gathering them from several.
pub const REPLICATE_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;
