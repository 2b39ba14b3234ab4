//! `kmirrorctl`: what each command does against the coordinator's admin API.
//! The connection and the dispatch of a command are here; the command line is
//! in `args`, failures in `failure`, config files in `files`, and each group of
//! commands in a module of its own: `clusters`, `flows`, `status` (with
//! `--watch` and `assignments`), `members` (with drain and rebalance),
//! `offsets` (translate), `apply` (with `import` and `config show`) and
//! `verify`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use kmirror_common::tls::{PeerRole, Transport};
use kmirror_proto::tonic::service::interceptor::InterceptedService;
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::Status;
use kmirror_proto::v1::admin_client::AdminClient;

use crate::output::{render, top_text, DoneJson, OutputFormat};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Adding a cluster waits for it to answer (up to about ten seconds), status asks
/// every source cluster for its offsets and a rebalance waits for the leader:
/// leave room for all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

mod apply;
mod args;
mod audit;
mod certificates;
mod clusters;
mod tokens;
use tokens::BearerToken;
pub mod connection;
mod failover;
mod failure;
mod files;
mod flows;
mod members;
mod offsets;
mod partitions;
mod status;
mod verify;

pub use crate::values::{parse_property, parse_start, StartArg};
pub use args::*;
pub use failure::Failure;
use failure::*;
use files::*;

/// What a command produced: text for stdout, and whether it counts as a failure
/// (a degraded fleet, a position not translated: the output is still printed,
/// then `error: <reason>`, and the exit code is 1).
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

/// Why a call's connection was dropped before any answer, in words: under
/// TLS 1.3 a server checks the client's certificate after the client thinks
/// the handshake is done, so a refused certificate shows as a cancelled call or
/// a bare transport error.
fn connection_refused_hint(status: &Status, coordinator: &str) -> Option<String> {
    let dropped = matches!(status.code(), kmirror_proto::tonic::Code::Cancelled)
        || (status.code() == kmirror_proto::tonic::Code::Unknown
            && status.message() == "transport error");
    dropped.then(|| {
        format!(
            "the coordinator at {coordinator} closed the connection: it takes a client \
             certificate of the fleet CA that is valid now (--tls-cert, --tls-key, --tls-ca, or a \
             context), or, for a fleet run with --insecure, --insecure"
        )
    })
}

/// A connected admin client.
pub struct Ctl {
    pub client: AdminClient<InterceptedService<Channel, BearerToken>>,
    /// The connection, for the coordinator's other services (audit, tokens).
    channel: Channel,
    /// Adds the bearer token, if any, to every call.
    bearer: BearerToken,
    coordinator: String,
    format: OutputFormat,
}

impl Ctl {
    /// Connects to the first coordinator that answers of `addresses`
    /// (comma-separated): any coordinator serves the admin API. Over TLS, the
    /// server must present a coordinator certificate of the fleet CA.
    pub async fn connect(
        addresses: &str,
        transport: &Transport,
        bearer: BearerToken,
        format: OutputFormat,
    ) -> Result<Self, Failure> {
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
            match transport.connect(endpoint, &[PeerRole::Coordinator]).await {
                Ok(channel) => {
                    return Ok(Self {
                        client: AdminClient::with_interceptor(channel.clone(), bearer.clone()),
                        channel,
                        bearer,
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
            cause: connection_refused_hint(&status, &self.coordinator)
                .unwrap_or_else(|| status_cause(&status, &self.coordinator)),
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
            Command::Members => self.members().await.map(Outcome::from),
            Command::Offsets(OffsetsCommand::Translate {
                flow,
                group,
                topic,
                partitions,
                offsets,
            }) => {
                self.translate(flow, group, topic, partitions, offsets)
                    .await
            }
            Command::Offsets(OffsetsCommand::Sync {
                flow,
                groups,
                dry_run,
                allow_backwards,
            }) => {
                self.sync_offsets(flow, groups, dry_run, allow_backwards)
                    .await
            }
            Command::Failover {
                flow,
                groups,
                now,
                timeout,
                allow_backwards,
            } => {
                self.failover(flow, groups, now, timeout, allow_backwards)
                    .await
            }
            Command::Assignments { flow } => self.assignments(flow).await.map(Outcome::from),
            Command::Drain {
                member,
                no_wait,
                timeout,
            } => self
                .drain(member, no_wait, timeout)
                .await
                .map(Outcome::from),
            Command::Undrain { member } => self.undrain(member).await.map(Outcome::from),
            Command::Rebalance { dry_run } => self.rebalance(dry_run).await.map(Outcome::from),
            Command::Import(ImportCommand::Mm2 { file, dry_run }) => {
                self.import_mm2(&file, dry_run).await.map(Outcome::from)
            }
            Command::Apply { file, dry_run } => self.apply(&file, dry_run).await.map(Outcome::from),
            Command::Config(ConfigCommand::Show { file: None }) => {
                self.show_config().await.map(Outcome::from)
            }
            Command::Config(_) => Err(Failure {
                what: "config".to_string(),
                cause: "this config command needs no coordinator".to_string(),
            }),
            Command::Audit { limit } => self.audit(limit).await.map(Outcome::from),
            Command::Token(command) => self.token(command).await.map(Outcome::from),
            Command::Certificates(_) | Command::Context(_) => Err(Failure {
                what: "certificates".to_string(),
                cause: "this command needs no coordinator".to_string(),
            }),
            Command::Completion { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "kmirrorctl", &mut script);
                Ok(String::from_utf8_lossy(&script).into_owned().into())
            }
            Command::Partition(command) => self.partition(command).await.map(Outcome::from),
            Command::Verify { flow, sample, seed } => self.verify(flow, sample, seed).await,
        }
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
    match cli.command {
        Command::Certificates(command) => return report(certificates::run_certificates(command)),
        Command::Context(command) => {
            return report(certificates::run_context(command, &cli.connection))
        }
        _ => {}
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
        let connection = cli.connection.resolve()?;
        let mut ctl = Ctl::connect(
            &connection.coordinators,
            &connection.transport,
            BearerToken::new(connection.token_opt.as_ref())?,
            cli.output,
        )
        .await?;
        ctl.run(cli.command).await
    }
    .await;
    match result {
        Ok(outcome) => {
            print!("{}", outcome.stdout);
            match outcome.degraded_opt {
                Some(reason) => {
                    eprintln!("error: {reason}");
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
