//! `kmirror mirror`'s command line (MirrorMaker 1's flags) and its two client
//! configs, read, translated and checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::properties::{load_client_config, ClientRole, ClientSettings};

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

    #[command(flatten)]
    pub etcd_security: kmirror_common::service::EtcdSecurityArgs,

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

pub(super) fn default_state_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(state).join("kmirror");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/kmirror")
}
