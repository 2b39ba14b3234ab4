//! `kmirror mirror`: MirrorMaker 1's command line, run as a whole kmirror fleet in
//! one process — a coordinator, N fetchers and N writers on the same code paths
//! as the distributed fleet, against the etcd given with `--etcd` or a private
//! etcd child process whose data lives under a state folder.
//!
//! The consumer config's `group.id` names the fleet (the checkpoint namespace),
//! so running the same command again resumes where it stopped.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use kmirror_common::etcd::EtcdSettings;
use kmirror_common::http::MetricsListen;
use kmirror_common::member_config::MemberConfig;
use kmirror_common::schema::{decode, encode, FlowPhase, FlowState};
use kmirror_common::tls::{PeerRole, TransportSettings};
use kmirror_common::types::FlowName;
use kmirror_common::Keys;
use kmirror_coordinator::admin::AdminService;
use kmirror_coordinator::kafka::KafkaClients;
use kmirror_coordinator::{Coordinator, CoordinatorConfig};
use kmirror_fetcher::{Fetcher, FetcherConfig};
use kmirror_proto::v1::{AddClusterRequest, Cluster, CreateFlowRequest, Flow, StatusRequest};
use kmirror_writer::{Writer, WriterConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::console::console;
use crate::progress::{Tracker, Verdict};
use crate::properties::{load_client_config, ClientRole, ClientSettings};

/// The names the one-process fleet gives its clusters and its flow.
pub const SOURCE_CLUSTER: &str = "source";
pub const DEST_CLUSTER: &str = "dest";
pub const FLOW: &str = "mirror";

const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
const ETCD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "kmirror",
    version,
    about = "Mirror Kafka topics like MirrorMaker, in one process (coordinator, fetchers and writers of a kmirror fleet)"
)]
pub struct KmirrorCli {
    #[command(subcommand)]
    pub command: KmirrorCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KmirrorCommand {
    /// Mirror the topics matching --whitelist from the consumer config's cluster
    /// to the producer config's cluster.
    #[command(
        after_help = "The config files are Java-properties Kafka client configs. \
librdkafka keys pass through, Java keys with an equivalent are translated \
(sasl.jaas.config for PLAIN and SCRAM, PEM truststores, ...), keys that cannot work \
(zookeeper.connect, JKS stores) and unknown keys are errors naming the key. group.id \
names the checkpoints: the same command run again resumes where it stopped.\n\n\
Without --etcd, a private etcd (Debian's etcd-server) runs as a child process with \
its data under --state-dir.\n\n\
Exit codes: 0 stopped (or caught up), 1 mirroring failed, 2 usage or config error.\n\n\
Environment: KMIRROR_ETCD, KMIRROR_MIRROR_STATE_DIR, KMIRROR_LEASE_TTL, RUST_LOG.\n\n\
Examples:\n  \
kmirror mirror --consumer.config consumer.properties --producer.config producer.properties \\\n      \
--whitelist 'orders.*' --num.streams 4\n  \
kmirror mirror --consumer.config c.properties --producer.config p.properties \\\n      \
--include '.*' --until-caught-up --etcd http://10.0.0.5:2379"
    )]
    Mirror(MirrorArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct MirrorArgs {
    /// Kafka consumer config of the source cluster (.properties); needs
    /// bootstrap.servers and group.id.
    #[arg(long = "consumer.config", value_name = "FILE")]
    pub consumer_config: PathBuf,

    /// Kafka producer config of the destination cluster (.properties); needs
    /// bootstrap.servers.
    #[arg(long = "producer.config", value_name = "FILE")]
    pub producer_config: PathBuf,

    /// Regex of the topics to mirror, matched against the whole name (commas
    /// separate alternatives, as in MirrorMaker 1).
    #[arg(long = "whitelist", alias = "include", value_name = "REGEX")]
    pub whitelist: String,

    /// Regex of topics to leave out.
    #[arg(long = "blacklist", alias = "exclude", value_name = "REGEX")]
    pub blacklist: Option<String>,

    /// Fetcher streams (and as many writers).
    #[arg(long = "num.streams", default_value_t = 1, value_name = "N")]
    pub num_streams: usize,

    /// etcd endpoints of an existing fleet store [default: a private etcd child].
    #[arg(long, env = "KMIRROR_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// Folder of the private etcd's data [default: $XDG_STATE_HOME/kmirror or
    /// ~/.local/state/kmirror].
    #[arg(long, env = "KMIRROR_MIRROR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// The etcd server binary for the private etcd.
    #[arg(long, default_value = "etcd")]
    pub etcd_binary: PathBuf,

    /// Migration: copy up to the source end offsets seen at the start, then exit 0.
    #[arg(long)]
    pub until_caught_up: bool,

    /// How often progress is checkpointed, in milliseconds (MirrorMaker's flag).
    #[arg(long = "offset.commit.interval.ms", default_value_t = 1000)]
    pub offset_commit_interval_ms: u64,

    /// Accepted for MirrorMaker compatibility: kmirror never skips a record that
    /// cannot be sent, it stops the partition and retries.
    #[arg(long = "abort.on.send.failure")]
    pub abort_on_send_failure: Option<String>,

    /// TTL of the members' etcd leases.
    #[arg(long, env = "KMIRROR_LEASE_TTL", default_value = "6s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// How often the coordinator looks for new topics and partitions.
    #[arg(long, env = "KMIRROR_REFRESH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
}

/// Why `kmirror mirror` stopped other than by being asked to.
#[derive(Debug)]
pub enum MirrorError {
    /// The command line or a config file cannot work (exit code 2).
    Config(String),
    /// Mirroring could not start or failed (exit code 1).
    Failed(String),
}

impl std::fmt::Display for MirrorError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MirrorError::Config(message) | MirrorError::Failed(message) => {
                formatter.write_str(message)
            }
        }
    }
}

/// Both client configs, translated and checked.
#[derive(Debug, Clone)]
pub struct MirrorConfigs {
    pub source: ClientSettings,
    pub dest: ClientSettings,
    pub group_id: String,
}

/// Reads and checks the consumer and producer configs.
pub fn load_configs(args: &MirrorArgs) -> Result<MirrorConfigs, MirrorError> {
    let source = load_client_config(&args.consumer_config, ClientRole::Consumer)
        .map_err(|errors| MirrorError::Config(errors.to_string()))?;
    let dest = load_client_config(&args.producer_config, ClientRole::Producer)
        .map_err(|errors| MirrorError::Config(errors.to_string()))?;
    let missing = |file: &Path, key: &str, why: &str| {
        MirrorError::Config(format!(
            "invalid client config {}:\n  {key}: missing; {why}",
            file.display()
        ))
    };
    if source.bootstrap_opt.is_none() {
        return Err(missing(
            &args.consumer_config,
            "bootstrap.servers",
            "set it to the source cluster's brokers",
        ));
    }
    if dest.bootstrap_opt.is_none() {
        return Err(missing(
            &args.producer_config,
            "bootstrap.servers",
            "set it to the destination cluster's brokers",
        ));
    }
    let group_id = source
        .group_id_opt
        .clone()
        .filter(|group| !group.trim().is_empty())
        .ok_or_else(|| {
            missing(
                &args.consumer_config,
                "group.id",
                "it names the checkpoints, so that running the command again resumes",
            )
        })?;
    if args.num_streams == 0 {
        return Err(MirrorError::Config(
            "--num.streams must be at least 1".to_string(),
        ));
    }
    Ok(MirrorConfigs {
        source,
        dest,
        group_id,
    })
}

/// The fleet name a consumer group maps to (etcd key segments cannot hold '/').
pub fn fleet_name(group_id: &str) -> String {
    group_id.trim().replace('/', "_")
}

/// MirrorMaker 1's whitelist: commas separate alternatives.
pub fn whitelist_regex(whitelist: &str) -> String {
    whitelist
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("|")
}

fn default_state_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(state).join("kmirror");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/kmirror")
}

/// A private etcd server run as a child process.
pub struct PrivateEtcd {
    child: tokio::process::Child,
    pub endpoint: String,
    pid_file: PathBuf,
}

impl PrivateEtcd {
    /// Starts etcd with its data in `dir/etcd`, on the ports of its last run when
    /// they are free, and waits until it answers.
    pub async fn start(dir: &Path, binary: &Path) -> Result<Self, MirrorError> {
        let failed = |what: String| {
            MirrorError::Failed(format!("private etcd in {}: {what}", dir.display()))
        };
        std::fs::create_dir_all(dir)
            .map_err(|error| failed(format!("cannot create the folder: {error}")))?;
        let data_dir = dir.join("etcd");
        let pid_file = dir.join("etcd.pid");
        let ports_file = dir.join("etcd.ports");
        let log_path = dir.join("etcd.log");
        stop_leftover(&pid_file, &data_dir).await;

        let stored: Option<(u16, u16)> = std::fs::read_to_string(&ports_file)
            .ok()
            .and_then(|text| {
                let mut ports = text.split_whitespace().map(|port| port.parse::<u16>().ok());
                Some((ports.next()??, ports.next()??))
            })
            .filter(|(client, peer)| port_is_free(*client) && port_is_free(*peer));
        let (client_port, peer_port) = match stored {
            Some(ports) => ports,
            None => (
                free_port().map_err(|error| failed(format!("no free port: {error}")))?,
                free_port().map_err(|error| failed(format!("no free port: {error}")))?,
            ),
        };
        let _ = std::fs::write(&ports_file, format!("{client_port} {peer_port}\n"));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| failed(format!("cannot open {}: {error}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|error| failed(format!("cannot open {}: {error}", log_path.display())))?;
        let child = tokio::process::Command::new(binary)
            .arg("--name")
            .arg("kmirror")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("kmirror={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // A process group of its own: Ctrl-C on a terminal signals the whole
            // foreground group, and etcd must outlive the members, which still
            // write their final checkpoints to it while they stop. `run` stops
            // it last.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                failed(format!(
                    "cannot run {} ({error}): install etcd (Debian: apt-get install etcd-server) or give --etcd",
                    binary.display()
                ))
            })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&pid_file, format!("{pid}\n"));
        }
        let mut etcd = Self {
            child,
            endpoint: client_url,
            pid_file,
        };
        let deadline = Instant::now() + ETCD_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(failed(format!(
                    "etcd exited ({status}) while starting; see {}",
                    log_path.display()
                )));
            }
            let settings = EtcdSettings {
                endpoints: vec![etcd.endpoint.clone()],
                fleet: String::new(),
            };
            if kmirror_common::etcd::connect(&settings).await.is_ok() {
                info!(endpoint = %etcd.endpoint, data = %data_dir.display(), "private etcd ready");
                return Ok(etcd);
            }
            if Instant::now() >= deadline {
                etcd.stop().await;
                return Err(failed(format!(
                    "etcd did not answer within {}s; see {}",
                    ETCD_START_TIMEOUT.as_secs(),
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then SIGKILL after a grace.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        if tokio::time::timeout(ETCD_STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            warn!("private etcd did not stop in time, killing it");
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// An etcd left running on the same data by a run that was killed holds the
/// data folder's lock: stop it first.
async fn stop_leftover(pid_file: &Path, data_dir: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*data_dir.to_string_lossy());
    let Some(process) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    if !ours {
        return;
    }
    warn!(pid, "stopping the private etcd a previous run left behind");
    let _ = rustix::process::kill_process(process, rustix::process::Signal::TERM);
    let deadline = Instant::now() + ETCD_STOP_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process(process, rustix::process::Signal::KILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// What every member of the one-process fleet shares: loopback addresses, no
/// metrics endpoint, the run's lease TTL.
fn member_config(
    endpoints: &[String],
    fleet: &str,
    id: &str,
    args: &MirrorArgs,
    transport: TransportSettings,
) -> MemberConfig {
    MemberConfig {
        etcd: endpoints.to_vec(),
        fleet: fleet.to_string(),
        id: Some(id.to_string()),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        lease_ttl: args.lease_ttl,
        metrics_listen: MetricsListen(None),
        tls_cert: transport.tls_cert,
        tls_key: transport.tls_key,
        tls_ca: transport.tls_ca,
        insecure: transport.insecure,
        ..MemberConfig::default()
    }
}

/// A running member and how to stop it.
struct Running {
    name: String,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        match self.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(member = %self.name, %error, "member stopped on an error"),
            Err(error) => warn!(member = %self.name, %error, "member task failed"),
        }
    }
}

/// Mirrors until `shutdown` fires (or, with --until-caught-up, until the
/// migration completes), then stops every member in order.
pub async fn run(args: MirrorArgs, shutdown: CancellationToken) -> Result<(), MirrorError> {
    let configs = load_configs(&args)?;
    for note in configs.source.notes.iter().chain(&configs.dest.notes) {
        info!(note = %note, "client config");
    }
    if args.abort_on_send_failure.is_some() {
        info!("abort.on.send.failure ignored: a record that cannot be sent stops its partition, which retries; nothing is skipped");
    }
    let fleet = fleet_name(&configs.group_id);
    let mut private_etcd_opt = None;
    let endpoints = if args.etcd.is_empty() {
        let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
        let etcd = PrivateEtcd::start(&state_dir.join(&fleet), &args.etcd_binary).await?;
        let endpoints = vec![etcd.endpoint.clone()];
        private_etcd_opt = Some(etcd);
        endpoints
    } else {
        args.etcd.clone()
    };
    let outcome = run_fleet(&args, &configs, &fleet, &endpoints, shutdown).await;
    if let Some(mut etcd) = private_etcd_opt {
        etcd.stop().await;
    }
    outcome
}

async fn run_fleet(
    args: &MirrorArgs,
    configs: &MirrorConfigs,
    fleet: &str,
    endpoints: &[String],
    shutdown: CancellationToken,
) -> Result<(), MirrorError> {
    let settings = EtcdSettings {
        endpoints: endpoints.to_vec(),
        fleet: fleet.to_string(),
    };
    let mut client = kmirror_common::etcd::connect(&settings)
        .await
        .map_err(|error| MirrorError::Failed(error.to_string()))?;
    let keys = Keys::new(fleet);
    let admin = AdminService::new(
        client.clone(),
        keys.clone(),
        KafkaClients::new(Duration::from_secs(10)),
    );
    for (name, client_settings) in [
        (SOURCE_CLUSTER, &configs.source),
        (DEST_CLUSTER, &configs.dest),
    ] {
        admin
            .add_cluster(AddClusterRequest {
                cluster: Some(Cluster {
                    name: name.to_string(),
                    bootstrap_servers: client_settings.bootstrap_opt.clone().unwrap_or_default(),
                    properties: client_settings.properties.clone().into_iter().collect(),
                }),
                replace: true,
                ..AddClusterRequest::default()
            })
            .await
            .map_err(|error| MirrorError::Failed(format!("{name} cluster: {error}")))?;
    }
    let flow = Flow {
        name: FLOW.to_string(),
        source_cluster: SOURCE_CLUSTER.to_string(),
        dest_cluster: DEST_CLUSTER.to_string(),
        include: whitelist_regex(&args.whitelist),
        exclude: args.blacklist.clone().unwrap_or_default(),
        start: configs.source.start_opt.clone().unwrap_or_default(),
        until_caught_up: args.until_caught_up,
        ..Flow::default()
    };
    admin
        .create_flow(CreateFlowRequest {
            flow: Some(flow),
            replace: true,
        })
        .await
        .map_err(|error| MirrorError::Config(error.to_string()))?;
    if args.until_caught_up {
        // Before the coordinator runs: its first round must see no capture.
        start_new_migration_capture(&mut client, &keys).await?;
    }

    let mut members: Vec<Running> = Vec::new();
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let tls = tls::MirrorTls::open(state_dir.join(fleet).join("tls"), fleet)?;
    let coordinator_id = format!("{fleet}-coordinator");
    let coordinator_config = kmirror_coordinator::Config::from_config(&CoordinatorConfig {
        member: member_config(
            endpoints,
            fleet,
            &coordinator_id,
            args,
            tls.member(PeerRole::Coordinator, &coordinator_id)?,
        ),
        refresh_interval: args.refresh_interval,
    })
    .map_err(|error| MirrorError::Failed(error.to_string()))?;
    let coordinator = Coordinator::build(coordinator_config)
        .await
        .map_err(|error| MirrorError::Failed(format!("coordinator: {error}")))?;
    let mut writers = Vec::new();
    for index in 1..=args.num_streams {
        let id = format!("{fleet}-writer-{index}");
        let config = WriterConfig {
            member: member_config(
                endpoints,
                fleet,
                &id,
                args,
                tls.member(PeerRole::Writer, &id)?,
            ),
            ..WriterConfig::default()
        };
        let writer = Writer::build(config)
            .await
            .map_err(|error| MirrorError::Failed(format!("writer {id}: {error}")))?;
        let stop = CancellationToken::new();
        let handle = {
            let stop = stop.clone();
            tokio::spawn(async move { writer.run(stop).await.map_err(|error| error.to_string()) })
        };
        writers.push(Running {
            name: id,
            stop,
            handle,
        });
    }
    for index in 1..=args.num_streams {
        let id = format!("{fleet}-fetcher-{index}");
        let config = FetcherConfig {
            member: member_config(
                endpoints,
                fleet,
                &id,
                args,
                tls.member(PeerRole::Fetcher, &id)?,
            ),
            checkpoint_interval: Duration::from_millis(args.offset_commit_interval_ms.max(10)),
            ..FetcherConfig::default()
        };
        let fetcher = Fetcher::build(config)
            .await
            .map_err(|error| MirrorError::Failed(format!("fetcher {id}: {error}")))?;
        let stop = CancellationToken::new();
        let handle = {
            let stop = stop.clone();
            tokio::spawn(async move { fetcher.run(stop).await.map_err(|error| error.to_string()) })
        };
        members.push(Running {
            name: id,
            stop,
            handle,
        });
    }
    // The coordinator leads once the workers are registered, so its first plan
    // has members to assign to.
    let coordinator_stop = CancellationToken::new();
    let coordinator_handle = {
        let stop = coordinator_stop.clone();
        tokio::spawn(async move {
            coordinator
                .run(stop)
                .await
                .map_err(|error| error.to_string())
        })
    };
    let coordinator = Running {
        name: "coordinator".to_string(),
        stop: coordinator_stop,
        handle: coordinator_handle,
    };

    info!(
        fleet,
        streams = args.num_streams,
        whitelist = %args.whitelist,
        until_caught_up = args.until_caught_up,
        "mirroring"
    );

    let outcome = if args.until_caught_up {
        wait_caught_up(&admin, &shutdown).await
    } else {
        shutdown.cancelled().await;
        Ok(())
    };

    // Fetchers first (they drain through the writers and checkpoint), then the
    // writers, then the coordinator.
    info!("stopping");
    for fetcher in members {
        fetcher.stop().await;
    }
    for writer in writers {
        writer.stop().await;
    }
    coordinator.stop().await;
    outcome
}

/// Makes this run's migration copy up to the source's end offsets of now.
///
/// The leader captures a migration's end offsets once, when it first sees the
/// flow, and keeps the flow completed once they are reached. The flow of an
/// earlier run of the same `group.id` is the same flow, so without this a second
/// `--until-caught-up` run would find the first run's capture (or completion)
/// and leave whatever arrived since behind. Forgetting the capture makes the
/// leader's first round capture again; the checkpoints stay, so the new capture
/// starts where the last run stopped.
async fn start_new_migration_capture(client: &mut Client, keys: &Keys) -> Result<(), MirrorError> {
    let flow = FlowName::new(FLOW).expect("the mirror's flow name is valid");
    let state_key = keys.flow_state(&flow);
    let failed = |error: String| {
        MirrorError::Failed(format!(
            "cannot start a new migration of flow {flow}: {error}"
        ))
    };
    let response = client
        .get(state_key.as_str(), None)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let Some(stored) = response.kvs().first() else {
        return Ok(());
    };
    let state: FlowState =
        decode(stored.key(), stored.value()).map_err(|error| failed(error.to_string()))?;
    let Some(fresh) = without_migration_capture(state) else {
        return Ok(());
    };
    // Compared with what was read: a leader of this fleet still running elsewhere
    // (the same group.id in another process) would be overwritten otherwise.
    let written = client
        .txn(
            Txn::new()
                .when([Compare::mod_revision(
                    state_key.as_str(),
                    CompareOp::Equal,
                    stored.mod_revision(),
                )])
                .and_then([TxnOp::put(state_key.as_str(), encode(&fresh), None)]),
        )
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !written.succeeded() {
        return Err(failed(
            "its state changed meanwhile: is another kmirror mirror running with the same group.id?"
                .to_string(),
        ));
    }
    info!(flow = %flow, "previous migration forgotten: this run captures the current end offsets");
    Ok(())
}

/// A flow's state with its migration capture and completion removed, or `None`
/// when it holds none (the leader then captures in its first round anyway).
fn without_migration_capture(state: FlowState) -> Option<FlowState> {
    if state.started_ms.is_none() && state.completed_ms.is_none() && state.targets.is_empty() {
        return None;
    }
    Some(FlowState {
        phase: FlowPhase::Running,
        started_ms: None,
        targets: BTreeMap::new(),
        completed_ms: None,
        ..state
    })
}

/// Follows the flow until its migration completes, printing progress on stderr.
async fn wait_caught_up(
    admin: &AdminService,
    shutdown: &CancellationToken,
) -> Result<(), MirrorError> {
    let console = console();
    let terminal = console.is_terminal();
    let mut tracker = Tracker::new(FLOW, Duration::from_secs(300));
    let mut last_line = Instant::now() - Duration::from_secs(60);
    loop {
        let status = admin
            .status(StatusRequest {
                flow: FLOW.to_string(),
            })
            .await
            .map_err(|error| MirrorError::Failed(error.to_string()))?
            .into_iter()
            .next();
        if let Some(status) = status {
            let verdict = tracker.observe(&status, Instant::now());
            if terminal
                || last_line.elapsed() >= Duration::from_secs(5)
                || verdict != Verdict::Waiting
            {
                console.show_bar(&tracker.line(&status, terminal));
                last_line = Instant::now();
            }
            match verdict {
                Verdict::Done(message) => {
                    console.finish_bar();
                    console.line(&message);
                    return Ok(());
                }
                Verdict::Failed(reason) => {
                    console.finish_bar();
                    return Err(MirrorError::Failed(reason));
                }
                Verdict::Waiting => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                console.finish_bar();
                return Err(MirrorError::Failed("stopped before the migration completed (run the same command again to go on)".to_string()));
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

mod tls;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_mirror_makers() {
        use clap::CommandFactory;
        KmirrorCli::command().debug_assert();
        let cli = KmirrorCli::try_parse_from([
            "kmirror",
            "mirror",
            "--consumer.config",
            "c.properties",
            "--producer.config",
            "p.properties",
            "--whitelist",
            "testtopic",
            "--num.streams",
            "4",
        ])
        .unwrap();
        let KmirrorCommand::Mirror(args) = cli.command;
        assert_eq!(args.num_streams, 4);
        assert_eq!(args.whitelist, "testtopic");
        let cli = KmirrorCli::try_parse_from([
            "kmirror",
            "mirror",
            "--consumer.config",
            "c",
            "--producer.config",
            "p",
            "--include",
            "a,b",
            "--until-caught-up",
        ])
        .unwrap();
        let KmirrorCommand::Mirror(args) = cli.command;
        assert!(args.until_caught_up);
        assert_eq!(whitelist_regex(&args.whitelist), "a|b");
    }

    #[test]
    fn a_new_migration_run_forgets_the_last_capture_and_keeps_the_rest() {
        use kmirror_common::schema::OffsetRange;
        let completed = FlowState {
            error: String::new(),
            topics: vec!["orders".to_string()],
            updated_ms: 5,
            phase: FlowPhase::Completed,
            started_ms: Some(1),
            targets: BTreeMap::from([(
                "orders".to_string(),
                BTreeMap::from([(0, OffsetRange { start: 0, end: 10 })]),
            )]),
            completed_ms: Some(4),
            source_configs: BTreeMap::from([("orders".to_string(), BTreeMap::new())]),
        };
        let fresh = without_migration_capture(completed).expect("a capture to forget");
        assert_eq!(fresh.phase, FlowPhase::Running);
        assert_eq!(fresh.started_ms, None);
        assert_eq!(fresh.completed_ms, None);
        assert!(fresh.targets.is_empty());
        assert_eq!(fresh.topics, vec!["orders".to_string()]);
        assert_eq!(fresh.source_configs.len(), 1);
        assert!(without_migration_capture(fresh).is_none());
    }

    #[test]
    fn a_consumer_config_with_only_zookeeper_connect_is_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("kmirror-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let consumer = dir.join("consumer.properties");
        let producer = dir.join("producer.properties");
        std::fs::write(
            &consumer,
            "zookeeper.connect=zk:2181\ngroup.id=mirrorgroup\n",
        )
        .unwrap();
        std::fs::write(&producer, "bootstrap.servers=h:9092\n").unwrap();
        let args = MirrorArgs::clone(&match KmirrorCli::try_parse_from([
            "kmirror",
            "mirror",
            "--consumer.config",
            consumer.to_str().unwrap(),
            "--producer.config",
            producer.to_str().unwrap(),
            "--whitelist",
            "t",
        ])
        .unwrap()
        .command
        {
            KmirrorCommand::Mirror(args) => args,
        });
        let Err(MirrorError::Config(message)) = load_configs(&args) else {
            panic!("accepted a config without bootstrap.servers");
        };
        assert!(message.contains("zookeeper.connect"), "{message}");
        assert!(message.contains("bootstrap.servers"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
