//! `kmirrorctl`: the command definitions and what each does against the
//! coordinator's admin API.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::{Code, Status};
use kmirror_proto::v1::admin_client::AdminClient;
use kmirror_proto::v1::{
    AddClusterRequest, Cluster, CreateFlowRequest, DeleteClusterRequest, DeleteFlowRequest,
    DrainMemberRequest, Flow, FlowStatus, ListAssignmentsRequest, ListClustersRequest,
    ListFlowsRequest, ListMembersRequest, PauseFlowRequest, RebalanceRequest, ResumeFlowRequest,
    StatusRequest,
};

use crate::output::{
    assignments_text, clusters_text, degraded_reasons, flows_text, matched_topics_text,
    members_text, moves_text, render, status_text, top_text, AssignmentJson, AssignmentsJson,
    ClusterJson, ClustersJson, DoneJson, FlowJson, FlowStoredJson, FlowsJson, MemberJson,
    MembersJson, MoveJson, OutputFormat, Rates, RebalanceJson, StatusJson,
};
use crate::progress::{Tracker, Verdict};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Adding a cluster waits for it to answer (up to about ten seconds), status asks
/// every source cluster for its offsets and a rebalance waits for the leader:
/// leave room for all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    name = "kmirrorctl",
    version,
    about = "Manage a kmirror fleet: clusters, flows, status, members and assignments",
    after_help = "Exit codes: 0 ok, 1 the operation failed (or, for status, the fleet is degraded), 2 usage error.\n\n\
Examples:\n  \
        kmirrorctl cluster add source --bootstrap 127.0.0.1:19092\n  \
        kmirrorctl cluster add dest --bootstrap 127.0.0.1:29092\n  \
        kmirrorctl flow create dr --source source --dest dest --include 'orders\\..*'\n  \
        kmirrorctl status --flow dr --watch\n  \
        kmirrorctl --coordinator coordinator.internal:7070 members -o json\n  \
        KMIRROR_COORDINATOR=10.0.0.5:7070,10.0.0.6:7070 kmirrorctl status"
)]
pub struct Cli {
    /// Address of a coordinator's admin API (http://HOST:PORT or HOST:PORT); several,
    /// comma-separated, are tried in order until one answers.
    #[arg(
        long,
        global = true,
        env = "KMIRROR_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub coordinator: String,

    /// Output format: aligned tables (text, wide with more columns) for people,
    /// json or yaml for scripts.
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Text
    )]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Kafka clusters the fleet mirrors from and to.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Flows: which topics to mirror from which cluster to which.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Mirroring progress per flow and source partition; exits 1 when degraded.
    #[command(
        after_help = "The partition table uses kafka-consumer-groups' columns: \
CURRENT-OFFSET is the next source offset to mirror (the checkpoint), LOG-END-OFFSET the \
source's, LAG the records between them. The exit code is 1 when the fleet is degraded \
(a partition stopped, a flow failing, no leader), so probes and scripts can use it.\n\n\
Examples:\n  \
        kmirrorctl status\n  \
        kmirrorctl status --flow dr -o wide\n  \
        kmirrorctl status --watch --interval 5s\n  \
        kmirrorctl status --flow dr -o json | jq '.flows[0].total_lag'"
    )]
    Status {
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Refresh until interrupted, with each partition's throughput measured
        /// between refreshes (RATE).
        #[arg(short, long)]
        watch: bool,
        /// Time between refreshes with --watch.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// The partitions furthest behind, most lag first.
    #[command(after_help = "Examples:\n  \
        kmirrorctl top\n  \
        kmirrorctl top --limit 20 --flow dr --watch")]
    Top {
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// How many partitions to show.
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
        /// Refresh until interrupted.
        #[arg(short, long)]
        watch: bool,
        /// Time between refreshes with --watch.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Coordinators, fetchers and writers registered in the fleet.
    #[command(
        after_help = "LEASE is the time left on the member's etcd lease; RATE the \
records/s of its partitions as the fetchers measure them.\n\n\
Examples:\n  \
        kmirrorctl members\n  \
        kmirrorctl members -o wide\n  \
        kmirrorctl members -o json"
    )]
    Members,
    /// Which fetcher and writer work on each source partition.
    #[command(after_help = "Examples:\n  \
        kmirrorctl assignments\n  \
        kmirrorctl assignments --flow dr -o wide")]
    Assignments {
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
    },
    /// Move a member's partitions away and give it nothing new; then it may stop.
    #[command(
        after_help = "A drained member stays drained until `kmirrorctl undrain` or \
until it leaves the fleet. The last live fetcher or writer cannot be drained: start \
another one first.\n\n\
Examples:\n  \
        kmirrorctl drain fetcher-2\n  \
        kmirrorctl drain writer-1 --no-wait"
    )]
    Drain {
        /// Member id (see `kmirrorctl members`).
        member: String,
        /// Return at once instead of waiting until the member holds no partition.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the member to be empty.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Make a drained member eligible for partitions again.
    #[command(after_help = "Examples:\n  \
        kmirrorctl undrain fetcher-2")]
    Undrain {
        /// Member id.
        member: String,
    },
    /// Even out the load of running partitions (tolerance 0); --dry-run prints the moves.
    #[command(
        after_help = "Every reconcile keeps members within 10 % of the mean load \
(or one partition's weight); a rebalance evens out what that tolerance allowed. Each \
move is a handover: the partition's in-flight batches may be sent again.\n\n\
Examples:\n  \
        kmirrorctl rebalance --dry-run\n  \
        kmirrorctl rebalance"
    )]
    Rebalance {
        /// Only print the moves.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create clusters and flows from another tool's config.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Create or update the clusters and flows of a kmirror.yaml (shaped like
    /// Strimzi's KafkaMirrorMaker2).
    #[command(
        after_help = "kmirror.yaml follows Strimzi's KafkaMirrorMaker2 resource: \
spec.target (alias, bootstrapServers, config, configFile), spec.clusters (the source \
clusters), spec.mirrors (sourceCluster, targetCluster, topicsPattern, \
topicsExcludePattern as MirrorMaker 2's comma-separated regex lists, \
sourceConnector.config with replication.policy.class, replication.policy.separator, \
sync.topic.configs.enabled, config.properties.exclude; and kmirror's startPosition, \
untilCaughtUp, renamePrefix, renameMap). configFile points at a standard .properties \
client file. Settings kmirror cannot map (Kubernetes metadata, tls and authentication \
secrets, connector and Connect settings) are listed with the reason. Each cluster and \
flow is reported as created, configured (with each field that changes) or unchanged; \
only changes are stored.\n\n\
Examples:\n  \
        kmirrorctl apply -f kmirror.yaml --dry-run\n  \
        kmirrorctl apply -f kmirror.yaml"
    )]
    Apply {
        /// The kmirror.yaml file.
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
        /// Only print what would be created or updated.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check or show configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        kmirrorctl completion bash > /etc/bash_completion.d/kmirrorctl\n  \
        kmirrorctl completion zsh > \"${fpath[1]}/_kmirrorctl\"\n  \
        kmirrorctl completion fish > ~/.config/fish/completions/kmirrorctl.fish")]
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Store how to reach a Kafka cluster (it must answer now).
    #[command(
        after_help = "With --replace, properties stored before and not given again are \
kept (the output names them); --remove-property KEY drops one.\n\n\
Examples:\n  \
        kmirrorctl cluster add source --bootstrap 127.0.0.1:19092\n  \
        kmirrorctl cluster add dest --bootstrap broker-1:9093,broker-2:9093 \\\n      \
        --property security.protocol=SASL_SSL --property sasl.mechanism=SCRAM-SHA-512 \\\n      \
        --property sasl.username=mirror --property sasl.password=secret\n  \
        kmirrorctl cluster add source --bootstrap 10.0.0.5:9092 --replace\n  \
        kmirrorctl cluster add dest --bootstrap broker-1:9093 --replace --remove-property compression.type"
    )]
    Add {
        /// Name flows refer to the cluster by.
        name: String,
        /// Bootstrap servers, HOST:PORT[,HOST:PORT...].
        #[arg(long)]
        bootstrap: String,
        /// librdkafka client property KEY=VALUE (repeatable), e.g. security settings.
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Update a cluster of the same name instead of failing: the bootstrap
        /// address and the given properties replace the stored ones, other stored
        /// properties are kept.
        #[arg(long)]
        replace: bool,
        /// With --replace: drop this stored property (repeatable).
        #[arg(long = "remove-property", value_name = "KEY", requires = "replace")]
        remove_properties: Vec<String>,
    },
    /// Remove a cluster; refused while a flow reads from or writes to it.
    #[command(after_help = "Examples:\n  \
        kmirrorctl cluster delete old-source\n  \
        kmirrorctl flow delete dr && kmirrorctl cluster delete old-source")]
    Delete {
        /// Name of the cluster (see `kmirrorctl cluster list`).
        name: String,
    },
    /// List the stored clusters (secret properties masked).
    #[command(after_help = "Examples:\n  \
        kmirrorctl cluster list\n  \
        kmirrorctl cluster list -o yaml")]
    List,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Create the clusters and flows of a MirrorMaker 2 config (mm2.properties).
    #[command(
        after_help = "Reads clusters, A.bootstrap.servers, per-cluster client \
settings (A.<key>, A.consumer.*, A.producer.*, A.admin.*), A->B.enabled, A->B.topics, \
topics.exclude, replication.policy.class and .separator, sync.topic.configs.enabled \
and config.properties.exclude. Each enabled A->B becomes flow A-to-B; \
DefaultReplicationPolicy names destination topics A.<topic>. Prints what it created \
and every setting it could not map, with the reason.\n\n\
Examples:\n  \
        kmirrorctl import mm2 mm2.properties --dry-run\n  \
        kmirrorctl import mm2 mm2.properties"
    )]
    Mm2 {
        file: std::path::PathBuf,
        /// Only print what would be created.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a kmirror.yaml without applying it.
    #[command(after_help = "Examples:\n  \
        kmirrorctl config validate kmirror.yaml")]
    Validate { file: std::path::PathBuf },
    /// Print the effective config with secrets masked: the fleet's (as a
    /// kmirror.yaml), or a file's with -f.
    #[command(after_help = "Examples:\n  \
        kmirrorctl config show\n  \
        kmirrorctl config show -f kmirror.yaml -o json")]
    Show {
        /// Show this file's effective config instead of the fleet's.
        #[arg(short = 'f', long = "file")]
        file: Option<std::path::PathBuf>,
    },
}

/// How destination topics are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenameArg {
    /// Same name as the source topic.
    Identity,
    /// <alias><separator><topic> (alias: --prefix, the source cluster by default).
    Prefix,
    /// The names given with --map; others keep theirs.
    Map,
}

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// Start mirroring the source topics matching --include (and not --exclude).
    #[command(
        after_help = "Regular expressions must match the whole topic name; topics \
starting with \"__\" are never mirrored. Missing destination topics are created with \
the source's partition count and configs; later config changes in the source follow \
(unless --no-sync-topic-configs). --start applies to partitions without a checkpoint \
when the flow starts; partitions and topics that appear later are read from their \
beginning.\n\n\
Prints the topics matched now and their destination topics, and warns when none \
matches or a destination topic has fewer partitions than its source. Refused: \
destination topics another flow writes (in the same Kafka cluster, whatever its name \
here), and with --replace a change of --rename/--prefix/--map once the flow has \
progress.\n\n\
Examples:\n  \
        kmirrorctl flow create dr --source source --dest dest --include 'orders|payments'\n  \
        kmirrorctl flow create all --source source --dest dest --include '.*' --exclude '.*-dlq'\n  \
        kmirrorctl flow create east --source east --dest central --include '.*' --rename prefix\n  \
        kmirrorctl flow create tail --source a --dest b --include 'logs' --start latest\n  \
        kmirrorctl flow create move --source old --dest new --include '.*' --until-caught-up"
    )]
    Create {
        name: String,
        /// Cluster to read from.
        #[arg(long)]
        source: String,
        /// Cluster to write to.
        #[arg(long)]
        dest: String,
        /// Regex of the source topics to mirror.
        #[arg(long)]
        include: String,
        /// Regex of topics to leave out ('' for none) [default: MirrorMaker 2's
        /// topics.exclude, .*[\-\.]internal, .*\.replica, __.*, as in kmirror.yaml
        /// and imported configs].
        #[arg(long)]
        exclude: Option<String>,
        /// Destination topic names [default: identity; prefix with --prefix, map
        /// with --map].
        #[arg(long, value_enum)]
        rename: Option<RenameArg>,
        /// Alias the prefix policy puts before each topic [default: the source
        /// cluster's name].
        #[arg(long, value_name = "ALIAS")]
        prefix: Option<String>,
        /// Separator between the alias and the topic.
        #[arg(long, default_value = ".")]
        separator: String,
        /// Explicit destination name SOURCE=DEST (repeatable).
        #[arg(long = "map", value_name = "SOURCE=DEST", value_parser = parse_property)]
        map: Vec<(String, String)>,
        /// Where partitions without a checkpoint start: earliest, latest, an
        /// RFC 3339 time (2024-05-01T00:00:00Z) or milliseconds since the epoch.
        #[arg(long, default_value = "earliest", value_parser = parse_start)]
        start: StartArg,
        /// Migration: copy up to the source end offsets seen when the flow starts,
        /// then complete (see `flow wait`).
        #[arg(long)]
        until_caught_up: bool,
        /// Copy topic configs at creation only; do not follow later source changes.
        #[arg(long)]
        no_sync_topic_configs: bool,
        /// Config name never copied (regex, repeatable) [default: MirrorMaker 2's
        /// config.properties.exclude list].
        #[arg(long = "config-exclude", value_name = "REGEX")]
        config_exclude: Vec<String>,
        /// Update the flow if it exists (its progress stays).
        #[arg(long)]
        replace: bool,
    },
    /// List the flows.
    #[command(after_help = "Examples:\n  \
        kmirrorctl flow list\n  \
        kmirrorctl flow list -o wide\n  \
        kmirrorctl flow list -o json")]
    List,
    /// Stop mirroring a flow and forget its progress (destination topics stay).
    #[command(after_help = "Returns once every partition of the flow has stopped: \
        nothing of it is written to the destination after that.\n\n\
        Examples:\n  \
        kmirrorctl flow delete dr")]
    Delete { name: String },
    /// Stop a flow's partitions; its progress stays until `flow resume`.
    #[command(
        after_help = "Returns once every partition of the flow has stopped and \
        checkpointed what it wrote (up to 45 s), so nothing more reaches the destination \
        and `flow resume` copies nothing twice.\n\n\
        Examples:\n  \
        kmirrorctl flow pause dr"
    )]
    Pause { name: String },
    /// Run a paused flow again from where it stopped.
    #[command(after_help = "Examples:\n  \
        kmirrorctl flow resume dr")]
    Resume { name: String },
    /// Wait until a migration completes (or a continuous flow has no lag), with progress.
    #[command(
        after_help = "Shows records done, throughput and ETA: a bar on a terminal, \
plain lines otherwise. Exits 0 when the flow completes, 1 with the reason when it is \
deleted, failing or degraded for longer than --fail-after, or --timeout passes.\n\n\
Examples:\n  \
        kmirrorctl flow wait move\n  \
        kmirrorctl flow wait move --timeout 2h --interval 10s"
    )]
    Wait {
        name: String,
        /// Give up after this long [default: never].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// How long the flow may stay failing or degraded before waiting fails.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        fail_after: Duration,
        /// Time between polls.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

/// Where a new flow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartArg {
    Earliest,
    Latest,
    Timestamp(i64),
}

pub fn parse_start(text: &str) -> Result<StartArg, String> {
    match text {
        "earliest" => Ok(StartArg::Earliest),
        "latest" => Ok(StartArg::Latest),
        digits if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) => digits
            .parse()
            .map(StartArg::Timestamp)
            .map_err(|error| format!("{error}")),
        time => humantime::parse_rfc3339_weak(time)
            .map_err(|_| {
                format!(
                    "expected earliest, latest, an RFC 3339 time or milliseconds since the epoch, got {time:?}"
                )
            })
            .map(|at| {
                let since_epoch = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                StartArg::Timestamp(since_epoch.as_millis() as i64)
            }),
    }
}

pub fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// The addresses of a comma-separated `--coordinator` list, in order.
pub fn coordinator_addresses(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_string)
        .collect()
}

/// The coordinator address as a URI: a bare HOST:PORT gets `http://`.
pub fn coordinator_uri(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// A failed operation: what was attempted and why it failed, printed as
/// `error: <what>: <cause>`.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub cause: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "error: {}: {}", self.what, self.cause)
    }
}

/// A cause in words for a status the coordinator returned (or the transport made up).
fn status_cause(status: &Status, coordinator: &str) -> String {
    let message = status.message().trim();
    match status.code() {
        Code::Unavailable if is_transport_failure(status) => {
            format!("cannot reach the coordinator at {coordinator}: {}", transport_cause(status))
        }
        Code::DeadlineExceeded => format!("the coordinator at {coordinator} did not answer in time"),
        Code::Unimplemented => format!(
            "the coordinator at {coordinator} does not serve this request (is it a kmirror coordinator of this version?)"
        ),
        Code::Internal | Code::Unknown if message.is_empty() => {
            format!("internal error in the coordinator ({})", status.code().description())
        }
        _ if message.is_empty() => status.code().description().to_string(),
        _ => message.to_string(),
    }
}

/// Whether an Unavailable status comes from the connection rather than from the
/// coordinator (which also answers Unavailable when a Kafka cluster cannot be
/// reached). Only statuses made up by the client side carry the transport error.
fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

fn transport_cause(status: &Status) -> String {
    let mut causes = Vec::new();
    let mut source_opt = std::error::Error::source(status);
    while let Some(source) = source_opt {
        causes.push(source.to_string());
        source_opt = source.source();
    }
    causes.dedup();
    causes
        .last()
        .cloned()
        .unwrap_or_else(|| status.message().to_string())
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut causes = vec![error.to_string()];
    let mut source_opt = error.source();
    while let Some(source) = source_opt {
        causes.push(source.to_string());
        source_opt = source.source();
    }
    causes.dedup();
    causes.join(": ")
}

/// The innermost cause of a connection failure ("Connection refused", "dns error").
fn transport_error_cause(error: &kmirror_proto::tonic::transport::Error) -> String {
    let mut innermost = error.to_string();
    let mut source_opt = std::error::Error::source(error);
    while let Some(source) = source_opt {
        innermost = source.to_string();
        source_opt = source.source();
    }
    innermost
}

/// What a command produced: text for stdout, and whether it counts as a failure
/// (a degraded fleet: the output is still printed).
pub struct Outcome {
    pub stdout: String,
    pub degraded_opt: Option<String>,
}

impl From<String> for Outcome {
    fn from(stdout: String) -> Self {
        Self {
            stdout,
            degraded_opt: None,
        }
    }
}

/// Each partition's mirrored offset, keyed like [`Rates`].
type Offsets = BTreeMap<(String, String, i32), i64>;

/// A connected admin client.
pub struct Ctl {
    pub client: AdminClient<Channel>,
    coordinator: String,
    format: OutputFormat,
}

impl Ctl {
    /// Connects to the first coordinator that answers of `addresses`
    /// (comma-separated): any coordinator serves the admin API.
    pub async fn connect(addresses: &str, format: OutputFormat) -> Result<Self, Failure> {
        let candidates = coordinator_addresses(addresses);
        if candidates.is_empty() {
            return Err(Failure {
                what: format!("invalid coordinator address {addresses:?}"),
                cause: "no address given".to_string(),
            });
        }
        let mut causes = Vec::new();
        for address in &candidates {
            let endpoint = Endpoint::from_shared(coordinator_uri(address))
                .map_err(|error| Failure {
                    what: format!("invalid coordinator address {address:?}"),
                    cause: error_chain(&error),
                })?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT);
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(Self {
                        client: AdminClient::new(channel),
                        coordinator: address.clone(),
                        format,
                    })
                }
                Err(error) => causes.push((address.clone(), transport_error_cause(&error))),
            }
        }
        Err(match causes.as_slice() {
            [(address, cause)] => Failure {
                what: format!("cannot reach the coordinator at {address}"),
                cause: cause.clone(),
            },
            _ => Failure {
                what: "cannot reach the coordinator at any address".to_string(),
                cause: causes
                    .iter()
                    .map(|(address, cause)| format!("{address}: {cause}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            },
        })
    }

    pub fn failure(&self, what: impl Into<String>, status: Status) -> Failure {
        Failure {
            what: what.into(),
            cause: status_cause(&status, &self.coordinator),
        }
    }

    fn done(&self, kind: &str, name: &str, action: &str) -> String {
        let value = DoneJson {
            kind: kind.to_string(),
            name: name.to_string(),
            action: action.to_string(),
        };
        render(self.format, &value, |_| format!("{kind} {name} {action}\n"))
    }

    pub async fn run(&mut self, command: Command) -> Result<Outcome, Failure> {
        match command {
            Command::Cluster(command) => self.cluster(command).await.map(Outcome::from),
            Command::Flow(command) => self.flow(command).await.map(Outcome::from),
            Command::Status {
                flow,
                watch,
                interval,
            } => {
                if watch {
                    self.watch(flow, interval, None).await
                } else {
                    self.status_once(flow).await
                }
            }
            Command::Top {
                flow,
                limit,
                watch,
                interval,
            } => {
                if watch {
                    self.watch(flow, interval, Some(limit)).await
                } else {
                    let (_, flows) = self.status(flow).await?;
                    Ok(top_text(&flows, limit, None).into())
                }
            }
            Command::Members => {
                let members = self
                    .client
                    .list_members(ListMembersRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list members", status))?
                    .into_inner()
                    .members;
                let json = MembersJson {
                    members: members.iter().map(MemberJson::from).collect(),
                };
                Ok(render(self.format, &json, |wide| members_text(&members, wide)).into())
            }
            Command::Assignments { flow } => {
                let what = match &flow {
                    Some(flow) => format!("cannot list the assignments of flow {flow}"),
                    None => "cannot list assignments".to_string(),
                };
                let assignments = self
                    .client
                    .list_assignments(ListAssignmentsRequest {
                        flow: flow.unwrap_or_default(),
                    })
                    .await
                    .map_err(|status| self.failure(what, status))?
                    .into_inner()
                    .assignments;
                let json = AssignmentsJson {
                    assignments: assignments.iter().map(AssignmentJson::from).collect(),
                };
                Ok(render(self.format, &json, |wide| {
                    assignments_text(&assignments, wide)
                })
                .into())
            }
            Command::Drain {
                member,
                no_wait,
                timeout,
            } => self
                .drain(member, no_wait, timeout)
                .await
                .map(Outcome::from),
            Command::Undrain { member } => {
                let answer = self
                    .client
                    .drain_member(DrainMemberRequest {
                        id: member.clone(),
                        undo: true,
                    })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot undrain member {member}"), status)
                    })?
                    .into_inner();
                Ok(self.done(&answer.role, &member, "undrained").into())
            }
            Command::Rebalance { dry_run } => {
                let answer = self
                    .client
                    .rebalance(RebalanceRequest { dry_run })
                    .await
                    .map_err(|status| self.failure("cannot rebalance", status))?
                    .into_inner();
                let json = RebalanceJson {
                    applied: answer.applied,
                    moves: answer.moves.iter().map(MoveJson::from).collect(),
                };
                Ok(render(self.format, &json, |_| {
                    moves_text(&answer.moves, answer.applied)
                })
                .into())
            }
            Command::Import(ImportCommand::Mm2 { file, dry_run }) => {
                let text = std::fs::read_to_string(&file).map_err(|error| Failure {
                    what: format!("cannot import {}", file.display()),
                    cause: error.to_string(),
                })?;
                let plan = crate::manifest::import_mm2(&text).map_err(|error| Failure {
                    what: format!("cannot import {}", file.display()),
                    cause: error.0,
                })?;
                self.apply_plan(&plan, dry_run).await.map(Outcome::from)
            }
            Command::Apply { file, dry_run } => {
                let plan = crate::manifest::load_manifest(&file).map_err(|error| Failure {
                    what: format!("cannot apply {}", file.display()),
                    cause: error.0,
                })?;
                self.apply_plan(&plan, dry_run).await.map(Outcome::from)
            }
            Command::Config(ConfigCommand::Show { file: None }) => {
                let clusters = self
                    .client
                    .list_clusters(ListClustersRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list clusters", status))?
                    .into_inner()
                    .clusters;
                let flows = self.list_flows().await?;
                Ok(show_manifest(&clusters, &flows, self.format).into())
            }
            Command::Config(_) => Err(Failure {
                what: "config".to_string(),
                cause: "this config command needs no coordinator".to_string(),
            }),
            Command::Completion { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "kmirrorctl", &mut script);
                Ok(String::from_utf8_lossy(&script).into_owned().into())
            }
        }
    }

    /// Creates or updates a plan's clusters, then its flows; objects the fleet
    /// already holds as planned are left alone. Every object is reported as
    /// created, configured (with what changes) or unchanged.
    async fn apply_plan(
        &mut self,
        plan: &crate::manifest::ImportPlan,
        dry_run: bool,
    ) -> Result<String, Failure> {
        let clusters = self
            .client
            .list_clusters(ListClustersRequest {})
            .await
            .map_err(|status| self.failure("cannot list clusters", status))?
            .into_inner()
            .clusters;
        let flows = self.list_flows().await?;
        let objects = crate::plan_diff::compare(plan, &clusters, &flows);
        let (cluster_objects, flow_objects) = objects.split_at(plan.clusters.len());
        let to_store = |object: &crate::plan_diff::ObjectChange| {
            object.action != crate::plan_diff::Action::Unchanged
        };
        // A masked secret (as `config show` writes it) would be stored as the
        // mask: refuse before anything is written.
        for (cluster, _) in plan
            .clusters
            .iter()
            .zip(cluster_objects)
            .filter(|(_, object)| to_store(object))
        {
            let masked = crate::plan_diff::masked_secrets(cluster);
            if !masked.is_empty() {
                return Err(Failure {
                    what: format!("cannot store cluster {}", cluster.name),
                    cause: format!(
                        "{} {} masked in the file: give the secret's value, or make the cluster match the stored one to leave it as it is",
                        masked.join(", "),
                        if masked.len() == 1 { "is" } else { "are" }
                    ),
                });
            }
        }
        if !dry_run {
            for (cluster, _) in plan
                .clusters
                .iter()
                .zip(cluster_objects)
                .filter(|(_, object)| to_store(object))
            {
                self.client
                    .add_cluster(AddClusterRequest {
                        cluster: Some(cluster.clone()),
                        replace: true,
                        // The file is the whole config: properties it drops go.
                        ..AddClusterRequest::default()
                    })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot store cluster {}", cluster.name), status)
                    })?;
            }
            for (flow, _) in plan
                .flows
                .iter()
                .zip(flow_objects)
                .filter(|(_, object)| to_store(object))
            {
                let answer = self
                    .client
                    .create_flow(CreateFlowRequest {
                        flow: Some(flow.clone()),
                        replace: true,
                    })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot store flow {}", flow.name), status)
                    })?
                    .into_inner();
                print_matched_topics(&flow.name, &answer.topics, &answer.warnings);
            }
        }
        let json = PlanJson::new(plan, &objects, !dry_run);
        Ok(render(self.format, &json, |_| {
            crate::plan_diff::changes_text(&objects, dry_run) + &crate::manifest::plan_remarks(plan)
        }))
    }

    async fn cluster(&mut self, command: ClusterCommand) -> Result<String, Failure> {
        match command {
            ClusterCommand::Add {
                name,
                bootstrap,
                properties,
                replace,
                remove_properties,
            } => {
                let request = AddClusterRequest {
                    cluster: Some(Cluster {
                        name: name.clone(),
                        bootstrap_servers: bootstrap,
                        properties: properties.into_iter().collect::<HashMap<_, _>>(),
                    }),
                    replace,
                    keep_properties: replace,
                    remove_properties,
                };
                let answer = self
                    .client
                    .add_cluster(request)
                    .await
                    .map_err(|status| self.failure(format!("cannot add cluster {name}"), status))?
                    .into_inner();
                let action = cluster_stored_action(
                    replace,
                    &answer.kept_properties,
                    &answer.removed_properties,
                );
                Ok(self.done("cluster", &name, &action))
            }
            ClusterCommand::Delete { name } => {
                self.client
                    .delete_cluster(DeleteClusterRequest { name: name.clone() })
                    .await
                    .map_err(|status| {
                        self.failure(format!("cannot delete cluster {name}"), status)
                    })?;
                Ok(self.done("cluster", &name, "deleted"))
            }
            ClusterCommand::List => {
                let clusters = self
                    .client
                    .list_clusters(ListClustersRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list clusters", status))?
                    .into_inner()
                    .clusters;
                let json = ClustersJson {
                    clusters: clusters.iter().map(ClusterJson::from).collect(),
                };
                Ok(render(self.format, &json, |_| clusters_text(&clusters)))
            }
        }
    }

    async fn flow(&mut self, command: FlowCommand) -> Result<String, Failure> {
        match command {
            FlowCommand::Create {
                name,
                source,
                dest,
                include,
                exclude,
                rename,
                prefix,
                separator,
                map,
                start,
                until_caught_up,
                no_sync_topic_configs,
                config_exclude,
                replace,
            } => {
                let policy = match (rename, &prefix, map.is_empty()) {
                    (Some(RenameArg::Identity), _, _) => "identity",
                    (Some(RenameArg::Prefix), _, _) | (None, Some(_), _) => "prefix",
                    (Some(RenameArg::Map), _, _) | (None, None, false) => "map",
                    (None, None, true) => "identity",
                };
                let (start, start_timestamp_ms) = match start {
                    StartArg::Earliest => ("earliest", 0),
                    StartArg::Latest => ("latest", 0),
                    StartArg::Timestamp(ms) => ("timestamp", ms),
                };
                let flow = Flow {
                    name: name.clone(),
                    source_cluster: source,
                    dest_cluster: dest,
                    include,
                    exclude: exclude.unwrap_or_else(|| {
                        crate::manifest::regex_list(crate::manifest::MM2_DEFAULT_TOPICS_EXCLUDE)
                    }),
                    rename_policy: policy.to_string(),
                    rename_prefix: prefix.unwrap_or_default(),
                    rename_separator: separator,
                    rename_map: map.into_iter().collect(),
                    start: start.to_string(),
                    start_timestamp_ms,
                    until_caught_up,
                    sync_topic_configs: Some(!no_sync_topic_configs),
                    sync_topic_configs_exclude_set: !config_exclude.is_empty(),
                    sync_topic_configs_exclude: config_exclude,
                    ..Flow::default()
                };
                let answer = self
                    .client
                    .create_flow(CreateFlowRequest {
                        flow: Some(flow),
                        replace,
                    })
                    .await
                    .map_err(|status| self.failure(format!("cannot create flow {name}"), status))?
                    .into_inner();
                print_warnings(&answer.warnings);
                let action = if replace { "stored" } else { "created" };
                let json = FlowStoredJson::new(&name, action, &answer.topics, &answer.warnings);
                Ok(render(self.format, &json, |_| {
                    format!(
                        "flow {name} {action}\n{}",
                        matched_topics_text(&answer.topics)
                    )
                }))
            }
            FlowCommand::List => {
                let flows = self.list_flows().await?;
                let json = FlowsJson {
                    flows: flows.iter().map(FlowJson::from).collect(),
                };
                Ok(render(self.format, &json, |wide| flows_text(&flows, wide)))
            }
            FlowCommand::Delete { name } => {
                self.client
                    .delete_flow(DeleteFlowRequest { name: name.clone() })
                    .await
                    .map_err(|status| self.failure(format!("cannot delete flow {name}"), status))?;
                Ok(self.done("flow", &name, "deleted"))
            }
            FlowCommand::Pause { name } => {
                self.client
                    .pause_flow(PauseFlowRequest { name: name.clone() })
                    .await
                    .map_err(|status| self.failure(format!("cannot pause flow {name}"), status))?;
                Ok(self.done("flow", &name, "paused"))
            }
            FlowCommand::Resume { name } => {
                self.client
                    .resume_flow(ResumeFlowRequest { name: name.clone() })
                    .await
                    .map_err(|status| self.failure(format!("cannot resume flow {name}"), status))?;
                Ok(self.done("flow", &name, "resumed"))
            }
            FlowCommand::Wait {
                name,
                timeout,
                fail_after,
                interval,
            } => self.wait(&name, timeout, fail_after, interval).await,
        }
    }

    pub async fn list_flows(&mut self) -> Result<Vec<Flow>, Failure> {
        Ok(self
            .client
            .list_flows(ListFlowsRequest {})
            .await
            .map_err(|status| self.failure("cannot list flows", status))?
            .into_inner()
            .flows)
    }

    /// The leader's id and the flows' status.
    pub async fn status(
        &mut self,
        flow: Option<String>,
    ) -> Result<(String, Vec<FlowStatus>), Failure> {
        let what = match &flow {
            Some(flow) => format!("cannot get the status of flow {flow}"),
            None => "cannot get the status".to_string(),
        };
        let response = self
            .client
            .status(StatusRequest {
                flow: flow.unwrap_or_default(),
            })
            .await
            .map_err(|status| self.failure(what, status))?
            .into_inner();
        Ok((response.leader, response.flows))
    }

    async fn status_once(&mut self, flow: Option<String>) -> Result<Outcome, Failure> {
        let (leader, flows) = self.status(flow).await?;
        let json = StatusJson::new(&leader, &flows);
        let stdout = render(self.format, &json, |wide| {
            status_text(&leader, &flows, wide, None)
        });
        let reasons = degraded_reasons(&leader, &flows);
        Ok(Outcome {
            stdout,
            degraded_opt: if reasons.is_empty() {
                None
            } else {
                Some(reasons.join("; "))
            },
        })
    }

    /// `status --watch` and `top --watch`: refresh until interrupted, with each
    /// partition's records/s measured between refreshes.
    async fn watch(
        &mut self,
        flow: Option<String>,
        interval: Duration,
        top_limit_opt: Option<usize>,
    ) -> Result<Outcome, Failure> {
        let terminal = std::io::stdout().is_terminal();
        let mut previous_opt: Option<(Instant, Offsets)> = None;
        loop {
            let (leader, flows) = self.status(flow.clone()).await?;
            let now = Instant::now();
            let offsets: Offsets = flows
                .iter()
                .flat_map(|flow| {
                    flow.partitions.iter().map(move |partition| {
                        (
                            (
                                flow.name.clone(),
                                partition.topic.clone(),
                                partition.partition,
                            ),
                            partition.mirrored_offset,
                        )
                    })
                })
                .collect();
            let rates: Rates = match &previous_opt {
                Some((at, before)) => {
                    let seconds = now.duration_since(*at).as_secs_f64().max(0.001);
                    offsets
                        .iter()
                        .filter_map(|(key, offset)| {
                            before.get(key).map(|earlier| {
                                (key.clone(), ((offset - earlier).max(0)) as f64 / seconds)
                            })
                        })
                        .collect()
                }
                None => Rates::new(),
            };
            let body = match top_limit_opt {
                Some(limit) => top_text(&flows, limit, Some(&rates)),
                None => match self.format {
                    OutputFormat::Json | OutputFormat::Yaml => {
                        watch_document(self.format, &StatusJson::new(&leader, &flows))
                    }
                    format => {
                        status_text(&leader, &flows, format == OutputFormat::Wide, Some(&rates))
                    }
                },
            };
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let mut stdout = std::io::stdout();
            let frame = if top_limit_opt.is_none() && self.format.is_machine() {
                // A stream a script can read: JSON lines, or YAML documents.
                body
            } else if terminal {
                // Clear the screen and go home, like watch(1).
                format!(
                    "\x1b[2J\x1b[H{stamp}  every {}\n\n{body}",
                    humantime::format_duration(interval)
                )
            } else {
                format!("--- {stamp}\n{body}\n")
            };
            let _ = stdout.write_all(frame.as_bytes());
            let _ = stdout.flush();
            previous_opt = Some((now, offsets));
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(String::new().into()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn drain(
        &mut self,
        member: String,
        no_wait: bool,
        timeout: Duration,
    ) -> Result<String, Failure> {
        let answer = self
            .client
            .drain_member(DrainMemberRequest {
                id: member.clone(),
                undo: false,
            })
            .await
            .map_err(|status| self.failure(format!("cannot drain member {member}"), status))?
            .into_inner();
        if no_wait {
            return Ok(self.done(
                &answer.role,
                &member,
                "drained (its partitions are moving away)",
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let members = self
                .client
                .list_members(ListMembersRequest {})
                .await
                .map_err(|status| self.failure("cannot list members", status))?
                .into_inner()
                .members;
            let held = members
                .iter()
                .find(|candidate| candidate.id == member && candidate.role == answer.role)
                .map(|candidate| candidate.partitions);
            match held {
                None | Some(0) => {
                    return Ok(self.done(
                        &answer.role,
                        &member,
                        "drained: it holds no partition and may stop now",
                    ))
                }
                Some(count) if Instant::now() >= deadline => {
                    return Err(Failure {
                        what: format!("cannot drain member {member}"),
                        cause: format!(
                            "it still holds {count} partition(s) after {} (are other members of its role live?)",
                            humantime::format_duration(timeout)
                        ),
                    })
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `flow wait`: polls the flow's status until it completes, fails or times out.
    pub async fn wait(
        &mut self,
        name: &str,
        timeout_opt: Option<Duration>,
        fail_after: Duration,
        interval: Duration,
    ) -> Result<String, Failure> {
        let terminal = std::io::stderr().is_terminal();
        let mut tracker = Tracker::new(name, fail_after);
        let started = Instant::now();
        let what = format!("flow {name} did not complete");
        let mut seen = false;
        loop {
            let status = match self.status(Some(name.to_string())).await {
                Ok((_, flows)) => flows.into_iter().next(),
                Err(failure) if failure.cause.contains("not found") => None,
                Err(failure) => return Err(failure),
            };
            let Some(status) = status else {
                // Unknown from the start (a typo), or deleted while waited for.
                return Err(match seen {
                    false => Failure {
                        what: format!("cannot wait for flow {name}"),
                        cause: format!("flow {name} not found"),
                    },
                    true => Failure {
                        what,
                        cause: format!("flow {name} no longer exists"),
                    },
                });
            };
            seen = true;
            let verdict = tracker.observe(&status, Instant::now());
            let line = tracker.line(&status, terminal);
            let mut stderr = std::io::stderr();
            if terminal {
                let _ = write!(stderr, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(stderr, "{line}");
            }
            let _ = stderr.flush();
            match verdict {
                Verdict::Done(message) => {
                    if terminal {
                        let _ = writeln!(stderr);
                    }
                    let value = DoneJson {
                        kind: "flow".to_string(),
                        name: name.to_string(),
                        action: "completed".to_string(),
                    };
                    return Ok(render(self.format, &value, |_| format!("{message}\n")));
                }
                Verdict::Failed(reason) => {
                    if terminal {
                        let _ = writeln!(stderr);
                    }
                    return Err(Failure {
                        what,
                        cause: reason,
                    });
                }
                Verdict::Waiting => {}
            }
            if let Some(timeout) = timeout_opt {
                if started.elapsed() >= timeout {
                    if terminal {
                        let _ = writeln!(stderr);
                    }
                    return Err(Failure {
                        what,
                        cause: format!("timed out after {}", humantime::format_duration(timeout)),
                    });
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// The outcome of an import or apply, for `-o json|yaml`.
#[derive(serde::Serialize)]
struct PlanJson {
    applied: bool,
    /// Per cluster and flow: created, configured (with the changes) or unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    objects: Vec<crate::plan_diff::ObjectChange>,
    clusters: Vec<crate::output::ClusterJson>,
    flows: Vec<FlowJson>,
    not_mapped: Vec<NotMappedJson>,
    notes: Vec<String>,
}

#[derive(serde::Serialize)]
struct NotMappedJson {
    setting: String,
    reason: String,
}

impl PlanJson {
    fn new(
        plan: &crate::manifest::ImportPlan,
        objects: &[crate::plan_diff::ObjectChange],
        applied: bool,
    ) -> Self {
        Self {
            applied,
            objects: objects.to_vec(),
            clusters: plan
                .clusters
                .iter()
                .map(|cluster| {
                    let mut json = ClusterJson::from(cluster);
                    json.properties = kmirror_common::kafka::masked(&json.properties);
                    json
                })
                .collect(),
            flows: plan.flows.iter().map(FlowJson::from).collect(),
            not_mapped: plan
                .unmapped
                .iter()
                .map(|(setting, reason)| NotMappedJson {
                    setting: setting.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            notes: plan.notes.clone(),
        }
    }
}

/// `config validate FILE`: the plan a file makes, or what is wrong with it.
fn validate_file(file: &std::path::Path, format: OutputFormat) -> Result<String, Failure> {
    let plan = crate::manifest::load_manifest(file).map_err(|error| Failure {
        what: format!("{} is not valid", file.display()),
        cause: error.0,
    })?;
    let json = PlanJson::new(&plan, &[], false);
    Ok(render(format, &json, |_| {
        format!(
            "{} is valid: {} cluster(s), {} flow(s)\n{}",
            file.display(),
            plan.clusters.len(),
            plan.flows.len(),
            crate::manifest::plan_text(&plan, "defined")
        )
    }))
}

/// `config show -f FILE`: the file's effective config, secrets masked.
fn show_file(file: &std::path::Path, format: OutputFormat) -> Result<String, Failure> {
    let plan = crate::manifest::load_manifest(file).map_err(|error| Failure {
        what: format!("cannot read {}", file.display()),
        cause: error.0,
    })?;
    Ok(show_manifest(&plan.clusters, &plan.flows, format))
}

fn show_manifest(clusters: &[Cluster], flows: &[Flow], format: OutputFormat) -> String {
    let masked: Vec<Cluster> = clusters
        .iter()
        .map(|cluster| Cluster {
            properties: kmirror_common::kafka::masked(
                &cluster.properties.clone().into_iter().collect(),
            )
            .into_iter()
            .collect(),
            ..cluster.clone()
        })
        .collect();
    let manifest = crate::manifest::manifest_of(&masked, flows);
    match format {
        OutputFormat::Json => crate::output::to_json(&manifest) + "\n",
        _ => crate::output::to_yaml(&manifest),
    }
}

/// One refresh of `status --watch -o json|yaml`: a JSON document on one line
/// (JSON lines, for `jq` and friends), or a YAML document opened by `---`.
fn watch_document<T: serde::Serialize>(format: OutputFormat, value: &T) -> String {
    match format {
        OutputFormat::Yaml => format!("---\n{}", crate::output::to_yaml(value)),
        _ => {
            let mut line = serde_json::to_string(value).expect("output values always serialize");
            line.push('\n');
            line
        }
    }
}

/// What `cluster add` did: added, or stored with the properties it kept and removed.
fn cluster_stored_action(replace: bool, kept: &[String], removed: &[String]) -> String {
    if !replace {
        return "added".to_string();
    }
    let mut notes = Vec::new();
    if !kept.is_empty() {
        notes.push(format!("kept properties: {}", kept.join(", ")));
    }
    if !removed.is_empty() {
        notes.push(format!("removed properties: {}", removed.join(", ")));
    }
    match notes.is_empty() {
        true => "stored".to_string(),
        false => format!("stored ({})", notes.join("; ")),
    }
}

/// Warnings go to stderr, so that stdout stays one document for scripts.
fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

/// `apply` and `import`: each flow's matched topics (stderr, like the warnings,
/// so `-o json` keeps one document on stdout).
fn print_matched_topics(flow: &str, topics: &[kmirror_proto::v1::TopicMatch], warnings: &[String]) {
    eprint!("flow {flow}: {}", matched_topics_text(topics));
    for warning in warnings {
        eprintln!("warning: flow {flow}: {warning}");
    }
}

fn report(result: Result<String, Failure>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(1)
        }
    }
}

/// Runs `kmirrorctl` with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    // Usage errors exit with 2 inside `parse`.
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(run(cli))
}

pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Completion { shell } = &cli.command {
        // Needs no coordinator.
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "kmirrorctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    match &cli.command {
        Command::Config(ConfigCommand::Validate { file }) => {
            return report(validate_file(file, cli.output));
        }
        Command::Config(ConfigCommand::Show { file: Some(file) }) => {
            return report(show_file(file, cli.output));
        }
        _ => {}
    }
    let result = async {
        let mut ctl = Ctl::connect(&cli.coordinator, cli.output).await?;
        ctl.run(cli.command).await
    }
    .await;
    match result {
        Ok(outcome) => {
            print!("{}", outcome.stdout);
            match outcome.degraded_opt {
                Some(reason) => {
                    eprintln!("error: the fleet is degraded: {reason}");
                    ExitCode::from(1)
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests;
