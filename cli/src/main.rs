//! `kmirrorctl`: manage a kmirror fleet through its coordinator's admin API.
//!
//! Exit codes: 0 when the operation succeeded, 1 when it failed (the message names
//! the object and the cause), 2 for a usage error.
#![forbid(unsafe_code)]

mod output;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::{Code, Status};
use kmirror_proto::v1::admin_client::AdminClient;
use kmirror_proto::v1::{
    AddClusterRequest, Cluster, CreateFlowRequest, DeleteFlowRequest, Flow, ListClustersRequest,
    ListFlowsRequest, ListMembersRequest, StatusRequest,
};

use crate::output::{
    clusters_text, flows_text, members_text, status_text, to_json, ClusterJson, ClustersJson,
    FlowJson, FlowStatusJson, FlowsJson, MemberJson, MembersJson, StatusJson,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Adding a cluster waits for it to answer (up to about ten seconds) and status asks
/// every source cluster for its offsets: leave room for both.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(
    name = "kmirrorctl",
    version,
    about = "Manage a kmirror fleet: clusters, flows, status and members",
    after_help = "Examples:\n  \
        kmirrorctl cluster add source --bootstrap 127.0.0.1:19092\n  \
        kmirrorctl cluster add dest --bootstrap 127.0.0.1:29092\n  \
        kmirrorctl flow create dr --source source --dest dest --include 'orders\\..*'\n  \
        kmirrorctl status --flow dr\n  \
        kmirrorctl --coordinator coordinator.internal:7070 members -o json"
)]
struct Cli {
    /// Address of a coordinator's admin API (http://HOST:PORT or HOST:PORT).
    #[arg(
        long,
        global = true,
        env = "KMIRROR_COORDINATOR",
        default_value = "http://127.0.0.1:7070"
    )]
    coordinator: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Kafka clusters the fleet mirrors from and to.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Flows: which topics to mirror from which cluster to which.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Mirroring progress per flow and source partition.
    #[command(after_help = "Examples:\n  \
        kmirrorctl status\n  \
        kmirrorctl status --flow dr\n  \
        kmirrorctl status --flow dr -o json | jq '.flows[0].total_lag'")]
    Status {
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Output format: an aligned table, or JSON for scripts.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Coordinators, fetchers and writers registered in the fleet.
    #[command(after_help = "Examples:\n  \
        kmirrorctl members\n  \
        kmirrorctl members -o json")]
    Members {
        /// Output format: an aligned table, or JSON for scripts.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Store how to reach a Kafka cluster (it must answer now).
    #[command(after_help = "Examples:\n  \
        kmirrorctl cluster add source --bootstrap 127.0.0.1:19092\n  \
        kmirrorctl cluster add dest --bootstrap broker-1:9093,broker-2:9093 \\\n      \
        --property security.protocol=SASL_SSL --property sasl.mechanism=SCRAM-SHA-512 \\\n      \
        --property sasl.username=mirror --property sasl.password=secret\n  \
        kmirrorctl cluster add source --bootstrap 10.0.0.5:9092 --replace")]
    Add {
        /// Name flows refer to the cluster by.
        name: String,
        /// Bootstrap servers, HOST:PORT[,HOST:PORT...].
        #[arg(long)]
        bootstrap: String,
        /// librdkafka client property KEY=VALUE (repeatable), e.g. security settings.
        #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Replace a cluster of the same name instead of failing.
        #[arg(long)]
        replace: bool,
    },
    /// List the stored clusters (secret properties masked).
    #[command(after_help = "Examples:\n  \
        kmirrorctl cluster list\n  \
        kmirrorctl cluster list -o json")]
    List {
        /// Output format: an aligned table, or JSON for scripts.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
enum FlowCommand {
    /// Start mirroring the source topics matching --include (and not --exclude).
    #[command(
        after_help = "Regular expressions must match the whole topic name; topics \
starting with \"__\" are never mirrored. Missing destination topics are created with \
the source's partition count and configs.\n\n\
Examples:\n  \
        kmirrorctl flow create dr --source source --dest dest --include 'orders|payments'\n  \
        kmirrorctl flow create all --source source --dest dest --include '.*' --exclude '.*-dlq'"
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
        /// Regex of topics to leave out.
        #[arg(long)]
        exclude: Option<String>,
    },
    /// List the flows.
    #[command(after_help = "Examples:\n  \
        kmirrorctl flow list\n  \
        kmirrorctl flow list -o json")]
    List {
        /// Output format: an aligned table, or JSON for scripts.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Stop mirroring a flow and forget its progress (destination topics stay).
    #[command(after_help = "Examples:\n  \
        kmirrorctl flow delete dr")]
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// The coordinator address as a URI: a bare HOST:PORT gets `http://`.
fn coordinator_uri(address: &str) -> String {
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
struct Failure {
    what: String,
    cause: String,
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

struct Ctl {
    client: AdminClient<Channel>,
    coordinator: String,
}

impl Ctl {
    async fn connect(address: &str) -> Result<Self, Failure> {
        let uri = coordinator_uri(address);
        let unreachable = |cause: String| Failure {
            what: format!("cannot reach the coordinator at {address}"),
            cause,
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|error| Failure {
                what: format!("invalid coordinator address {address:?}"),
                cause: error_chain(&error),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| unreachable(transport_error_cause(&error)))?;
        Ok(Self {
            client: AdminClient::new(channel),
            coordinator: address.to_string(),
        })
    }

    fn failure(&self, what: impl Into<String>, status: Status) -> Failure {
        Failure {
            what: what.into(),
            cause: status_cause(&status, &self.coordinator),
        }
    }

    async fn run(&mut self, command: Command) -> Result<String, Failure> {
        match command {
            Command::Cluster(ClusterCommand::Add {
                name,
                bootstrap,
                properties,
                replace,
            }) => {
                let request = AddClusterRequest {
                    cluster: Some(Cluster {
                        name: name.clone(),
                        bootstrap_servers: bootstrap,
                        properties: properties.into_iter().collect::<HashMap<_, _>>(),
                    }),
                    replace,
                };
                self.client
                    .add_cluster(request)
                    .await
                    .map_err(|status| self.failure(format!("cannot add cluster {name}"), status))?;
                let verb = if replace { "stored" } else { "added" };
                Ok(format!("cluster {name} {verb}\n"))
            }
            Command::Cluster(ClusterCommand::List { output }) => {
                let clusters = self
                    .client
                    .list_clusters(ListClustersRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list clusters", status))?
                    .into_inner()
                    .clusters;
                Ok(match output {
                    OutputFormat::Text => clusters_text(&clusters),
                    OutputFormat::Json => json_line(&ClustersJson {
                        clusters: clusters.iter().map(ClusterJson::from).collect(),
                    }),
                })
            }
            Command::Flow(FlowCommand::Create {
                name,
                source,
                dest,
                include,
                exclude,
            }) => {
                let request = CreateFlowRequest {
                    flow: Some(Flow {
                        name: name.clone(),
                        source_cluster: source,
                        dest_cluster: dest,
                        include,
                        exclude: exclude.unwrap_or_default(),
                    }),
                };
                self.client
                    .create_flow(request)
                    .await
                    .map_err(|status| self.failure(format!("cannot create flow {name}"), status))?;
                Ok(format!("flow {name} created\n"))
            }
            Command::Flow(FlowCommand::List { output }) => {
                let flows = self
                    .client
                    .list_flows(ListFlowsRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list flows", status))?
                    .into_inner()
                    .flows;
                Ok(match output {
                    OutputFormat::Text => flows_text(&flows),
                    OutputFormat::Json => json_line(&FlowsJson {
                        flows: flows.iter().map(FlowJson::from).collect(),
                    }),
                })
            }
            Command::Flow(FlowCommand::Delete { name }) => {
                self.client
                    .delete_flow(DeleteFlowRequest { name: name.clone() })
                    .await
                    .map_err(|status| self.failure(format!("cannot delete flow {name}"), status))?;
                Ok(format!("flow {name} deleted\n"))
            }
            Command::Status { flow, output } => {
                let what = match &flow {
                    Some(flow) => format!("cannot get the status of flow {flow}"),
                    None => "cannot get the status".to_string(),
                };
                let flows = self
                    .client
                    .status(StatusRequest {
                        flow: flow.unwrap_or_default(),
                    })
                    .await
                    .map_err(|status| self.failure(what, status))?
                    .into_inner()
                    .flows;
                Ok(match output {
                    OutputFormat::Text => status_text(&flows),
                    OutputFormat::Json => json_line(&StatusJson {
                        flows: flows.iter().map(FlowStatusJson::from).collect(),
                    }),
                })
            }
            Command::Members { output } => {
                let members = self
                    .client
                    .list_members(ListMembersRequest {})
                    .await
                    .map_err(|status| self.failure("cannot list members", status))?
                    .into_inner()
                    .members;
                Ok(match output {
                    OutputFormat::Text => members_text(&members),
                    OutputFormat::Json => json_line(&MembersJson {
                        members: members.iter().map(MemberJson::from).collect(),
                    }),
                })
            }
        }
    }
}

fn json_line<T: serde::Serialize>(value: &T) -> String {
    let mut text = to_json(value);
    text.push('\n');
    text
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with 2 inside `parse`.
    let cli = Cli::parse();
    let result = async {
        let mut ctl = Ctl::connect(&cli.coordinator).await?;
        ctl.run(cli.command).await
    }
    .await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kmirrorctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cluster_add_collects_repeated_properties() {
        let cli = parse(&[
            "cluster",
            "add",
            "source",
            "--bootstrap",
            "127.0.0.1:19092",
            "--property",
            "security.protocol=SASL_SSL",
            "--property",
            "sasl.password=a=b",
        ])
        .unwrap();
        let Command::Cluster(ClusterCommand::Add {
            name,
            bootstrap,
            properties,
            replace,
        }) = cli.command
        else {
            panic!("parsed as another command");
        };
        assert_eq!(name, "source");
        assert_eq!(bootstrap, "127.0.0.1:19092");
        assert!(!replace);
        assert_eq!(
            properties,
            vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.password".to_string(), "a=b".to_string()),
            ]
        );
    }

    #[test]
    fn a_property_without_equals_is_a_usage_error() {
        let error = parse(&[
            "cluster",
            "add",
            "s",
            "--bootstrap",
            "h:1",
            "--property",
            "novalue",
        ])
        .unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("expected KEY=VALUE"));
    }

    #[test]
    fn flow_create_requires_source_dest_and_include() {
        let error = parse(&["flow", "create", "dr", "--source", "a", "--dest", "b"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let cli = parse(&[
            "flow",
            "create",
            "dr",
            "--source",
            "a",
            "--dest",
            "b",
            "--include",
            "x.*",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Flow(FlowCommand::Create { exclude: None, .. })
        ));
    }

    #[test]
    fn status_takes_a_flow_and_an_output_format() {
        let cli = parse(&["status", "--flow", "dr", "-o", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status { flow: Some(ref flow), output: OutputFormat::Json } if flow == "dr"
        ));
        let error = parse(&["status", "-o", "yaml"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn the_coordinator_flag_works_before_or_after_the_command() {
        let cli = parse(&["members", "--coordinator", "10.0.0.1:7070"]).unwrap();
        assert_eq!(cli.coordinator, "10.0.0.1:7070");
        let cli = parse(&["--coordinator", "http://c:1", "flow", "list"]).unwrap();
        assert_eq!(cli.coordinator, "http://c:1");
    }

    #[test]
    fn a_bare_host_and_port_gets_a_scheme() {
        assert_eq!(coordinator_uri("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(coordinator_uri("http://c:7070"), "http://c:7070");
        assert_eq!(coordinator_uri("https://c:7070"), "https://c:7070");
    }

    #[test]
    fn failures_print_what_and_cause_on_one_line() {
        let status = Status::already_exists("flow dr already exists");
        let failure = Failure {
            what: "cannot create flow dr".to_string(),
            cause: status_cause(&status, "http://127.0.0.1:7070"),
        };
        assert_eq!(
            failure.to_string(),
            "error: cannot create flow dr: flow dr already exists"
        );
    }

    #[test]
    fn a_coordinator_unavailable_answer_is_not_a_connection_failure() {
        let status = Status::unavailable("cannot reach cluster src at 127.0.0.1:1: timed out");
        assert_eq!(
            status_cause(&status, "http://127.0.0.1:7070"),
            "cannot reach cluster src at 127.0.0.1:1: timed out"
        );
    }

    #[test]
    fn every_subcommand_has_examples() {
        let command = Cli::command();
        let mut missing = Vec::new();
        for group in command.get_subcommands() {
            let leaves: Vec<&clap::Command> = if group.has_subcommands() {
                group.get_subcommands().collect()
            } else {
                vec![group]
            };
            for leaf in leaves {
                let examples = leaf
                    .get_after_help()
                    .map(|help| help.to_string().contains("Examples:"))
                    .unwrap_or(false);
                if !examples {
                    missing.push(leaf.get_name().to_string());
                }
            }
        }
        assert!(missing.is_empty(), "no examples for {missing:?}");
    }
}
