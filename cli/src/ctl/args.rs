//! `kmirrorctl`'s command line: every command, its arguments and its `--help`.

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::output::OutputFormat;
use crate::values::{parse_property, parse_start, StartArg};

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
        KMIRROR_COORDINATOR=10.0.0.5:7070,10.0.0.6:7070 kmirrorctl status\n\n\
Connection: the admin API takes mutual TLS; kmirrorctl presents an admin, operator or viewer \
certificate of the fleet CA. It takes the coordinator address and its files from flags, \
KMIRROR_* variables, or a context of ~/.config/kmirror/kmirrorctl.yaml (deploy/local/fleet \
writes one named local): see `kmirrorctl context --help` and `kmirrorctl certificates --help`."
)]
pub struct Cli {
    /// Where the admin API is and how to reach it (flags, variables, a context).
    #[command(flatten)]
    pub connection: super::connection::ConnectionArgs,

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
    /// Consumer failover: source positions in the destination, through the offset map.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// Move consumers to the destination: wait until caught up, stop the flow,
    /// sync the groups' offsets, report per group and partition.
    #[command(after_help = "The disaster-recovery runbook as one command:\n  \
1. wait until the flow has mirrored every source record that existed when the command \
started (skip with --now, for a source that is gone);\n  \
2. pause the flow: nothing more is written to the destination;\n  \
3. sync the selected groups' offsets one last time (as `offsets sync`);\n  \
4. print, per group and partition, the source position and the destination one.\n\
Exit 0 only if every selected group was translated and committed exactly: its consumers \
can then start on the destination and read each record they had not read, once. Stop \
the groups' consumers on the source first (a group still consuming there moves on after \
the sync), and keep them off the destination until the command returns (a group with \
active members on the destination is never moved). `flow resume` undoes the pause.\n\n\
Failback: create a flow in the other direction starting where the destination \
consumers are (see docs/consumer-failover.md).\n\n\
Examples:\n  \
        kmirrorctl failover dr --groups 'billing|shipping'\n  \
        kmirrorctl failover dr --now -o json")]
    Failover {
        /// The flow to fail over.
        flow: String,
        /// Source groups to move (regex, whole id) [default: the flow's --sync-group-offsets].
        #[arg(long, value_name = "REGEX")]
        groups: Option<String>,
        /// Do not wait until caught up (the source is gone or must not be waited for).
        #[arg(long)]
        now: bool,
        /// How long to wait until caught up.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Move destination groups back when their committed offset is past the
        /// translated one.
        #[arg(long)]
        allow_backwards: bool,
    },
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
sync.topic.configs.enabled, config.properties.exclude; groupsPattern, groupsExcludePattern \
and checkpointConnector.config with sync.group.offsets.enabled and \
sync.group.offsets.interval.seconds; and kmirror's startPosition, \
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
    /// The audit log: every mutating admin call, allowed or refused, newest first.
    #[command(after_help = "Needs an operator or admin certificate.\n\n\
Examples:\n  \
        kmirrorctl audit\n  \
        kmirrorctl audit --limit 1000 -o json")]
    Audit {
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Bearer tokens of the admin API, for scripts without a certificate (admins only).
    #[command(subcommand)]
    Token(super::tokens::TokenCommand),
    /// Make a fleet CA and issue member and client certificates.
    #[command(subcommand)]
    Certificates(super::certificates::CertificatesCommand),
    /// kmirrorctl's contexts: named coordinators with their TLS files.
    #[command(subcommand)]
    Context(super::certificates::ContextCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        kmirrorctl completion bash > /etc/bash_completion.d/kmirrorctl\n  \
        kmirrorctl completion zsh > \"${fpath[1]}/_kmirrorctl\"\n  \
        kmirrorctl completion fish > ~/.config/fish/completions/kmirrorctl.fish")]
    Completion { shell: clap_complete::Shell },
    /// Source partitions: reset the checkpoint of a held one.
    #[command(subcommand)]
    Partition(super::partitions::PartitionCommand),
    /// Check that the destination holds what a flow mirrored; exits 1 on drift.
    #[command(
        after_help = "Run it before a failover. For each source topic of the flow: the \
destination topic exists with the source's partition count, and the configs the config sync \
copies have the source's values (configs it excludes, such as min.insync.replicas, are not \
compared). For each partition: the records the offset map says were mirrored are still in \
the destination partition at the offsets the map gives (a deleted record, a deleted or \
re-created destination topic shows as missing records with their offsets), unless the source \
deleted them too (retention). With --sample N, N records per partition picked at random \
through the map are read from both clusters and compared: key, value, headers and timestamp. \
A record the source no longer holds is reported as not compared, not as drift.\n\n\
The report lists every partition and each finding with what is wrong and where; the exit \
code is 1 on drift, so scripts can gate a failover on it. --seed repeats a pick.\n\n\
Examples:\n  \
        kmirrorctl verify dr\n  \
        kmirrorctl verify dr --sample 100\n  \
        kmirrorctl verify dr --sample 100 -o json | jq '.findings[] | select(.drift)'"
    )]
    Verify {
        /// The flow to verify.
        flow: String,
        /// Records to compare in content per partition (0: counts only).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        sample: u32,
        /// Seed of the random pick (a report gives the one it used).
        #[arg(long, requires = "sample", value_parser = clap::value_parser!(u64).range(1..))]
        seed: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Store how to reach a Kafka cluster (it must answer now).
    #[command(
        after_help = "With --replace, properties stored before and not given again are \
kept (the output names them); --remove-property KEY drops one.\n\n\
Secrets (passwords, keys) come from files: --property KEY=@FILE or --property-file FILE; \
a secret given as a value on the command line is refused. The fleet stores them sealed \
with its secrets key.\n\n\
Examples:\n  \
        kmirrorctl cluster add source --bootstrap 127.0.0.1:19092\n  \
        kmirrorctl cluster add dest --bootstrap broker-1:9093,broker-2:9093 \\\n      \
        --property security.protocol=SASL_SSL --property sasl.mechanism=SCRAM-SHA-512 \\\n      \
        --property sasl.username=mirror --property sasl.password=@/etc/kmirror/dest.password\n  \
        kmirrorctl cluster add source --property-file source.properties\n  \
        kmirrorctl cluster add source --bootstrap 10.0.0.5:9092 --replace\n  \
        kmirrorctl cluster add dest --bootstrap broker-1:9093 --replace --remove-property compression.type"
    )]
    Add {
        /// Name flows refer to the cluster by.
        name: String,
        /// Bootstrap servers, HOST:PORT[,HOST:PORT...] [default: bootstrap.servers
        /// of --property-file; with --replace, the stored ones].
        #[arg(long)]
        bootstrap: Option<String>,
        /// librdkafka client property KEY=VALUE (repeatable), e.g. security
        /// settings; KEY=@FILE reads the value from FILE (secrets must).
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// A client .properties file (Java's, as MirrorMaker takes, or
        /// librdkafka's), translated like kmirror mirror's (repeatable).
        #[arg(long = "property-file", value_name = "FILE")]
        property_files: Vec<std::path::PathBuf>,
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

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
        kmirrorctl flow create move --source old --dest new --include '.*' --until-caught-up\n  \
        kmirrorctl flow create dr --source east --dest west --include 'orders' --sync-group-offsets 'billing|shipping'\n  \
        kmirrorctl flow create ledger --source east --dest west --include 'payments' --exactly-once"
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
        /// Sync the offsets of source consumer groups whose id matches this regex
        /// (whole id) to the destination's groups of the same id, translated
        /// exactly; a group with active members on the destination is never moved.
        #[arg(long, value_name = "REGEX")]
        sync_group_offsets: Option<String>,
        /// Group id never synced (regex, repeatable) [default: MirrorMaker 2's
        /// groups.exclude, console-consumer-.*, connect-.*, __.*].
        #[arg(long, value_name = "REGEX", requires = "sync_group_offsets")]
        sync_group_offsets_exclude: Vec<String>,
        /// Time between group offset syncs [default: 10s].
        #[arg(long, value_parser = humantime::parse_duration, requires = "sync_group_offsets")]
        sync_group_offsets_interval: Option<Duration>,
        /// Exactly-once: a consumer reading the destination with
        /// isolation.level=read_committed sees each source record exactly once,
        /// across any single failure of a member, a broker or etcd.
        ///
        /// Writers produce each batch in a Kafka transaction together with its
        /// offset-map entry. The cost is one transaction per batch: lower
        /// throughput than the default at-least-once mode (figures in
        /// bench/README.md). Consumers reading with isolation.level=read_uncommitted
        /// (Kafka's default) may also see the records of aborted transactions:
        /// duplicates after a failure.
        #[arg(long)]
        exactly_once: bool,
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

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Where source positions are in the destination cluster, exactly.
    #[command(
        after_help = "Every batch a writer acknowledges has an entry in the fleet's offset map, \
a compacted topic on the destination cluster (__kmirror.<fleet>.offsets), saying where its \
source offsets landed. A translated position is exact: a consumer that seeks there on the \
destination reads exactly the records the source position had not reached, none twice and \
none skipped. A position that cannot be translated says why (not mirrored yet, a flow whose \
destination topic has another partition count so records were re-partitioned by key, an \
unknown topic or partition) and the exit code is 1; nothing is ever guessed.\n\n\
With --group, the group's committed offsets are read from the source cluster; without it, \
give a --topic and pairs of --partition and --offset.\n\n\
Examples:\n  \
        kmirrorctl offsets translate --flow dr --group billing\n  \
        kmirrorctl offsets translate --flow dr --topic orders --partition 0 --offset 1200\n  \
        kmirrorctl offsets translate --flow dr --topic orders --partition 0 --offset 1200 --partition 1 --offset 80 -o json"
    )]
    Translate {
        /// The flow that mirrors the topics.
        #[arg(long)]
        flow: String,
        /// A consumer group of the source cluster: translate its committed offsets.
        #[arg(long, conflicts_with_all = ["topic", "partitions", "offsets"], required_unless_present = "topic")]
        group: Option<String>,
        /// A source topic (with --partition and --offset).
        #[arg(long, requires_all = ["partitions", "offsets"])]
        topic: Option<String>,
        /// A partition of --topic; repeat it with an --offset for each.
        #[arg(long = "partition")]
        partitions: Vec<i32>,
        /// A source offset: the next record a consumer of the partition would read.
        #[arg(long = "offset", allow_negative_numbers = true)]
        offsets: Vec<i64>,
    },
    /// Commit source consumer groups' translated offsets to the destination's groups, now.
    #[command(
        after_help = "The sync a flow created with --sync-group-offsets runs every interval, \
on request: each selected source group's committed offsets on the flow's topics are \
translated through the offset map and committed to the destination group of the same id. \
A group with active members on the destination is left alone (a live group is never moved), \
and a partition is never moved backwards unless --allow-backwards. A partition that cannot \
be translated (not mirrored yet, a re-partitioned flow) is reported, not guessed. Exits 1 \
unless every selected group was synced exactly.\n\n\
Examples:\n  \
        kmirrorctl offsets sync --flow dr --groups billing --dry-run\n  \
        kmirrorctl offsets sync --flow dr --groups 'billing|shipping' -o json"
    )]
    Sync {
        /// The flow that mirrors the groups' topics.
        #[arg(long)]
        flow: String,
        /// Source groups (regex, whole id) [default: the flow's --sync-group-offsets].
        #[arg(long, value_name = "REGEX")]
        groups: Option<String>,
        /// Only print what would be committed.
        #[arg(long)]
        dry_run: bool,
        /// Move a destination group back when its committed offset is past the
        /// translated one.
        #[arg(long)]
        allow_backwards: bool,
    },
}
