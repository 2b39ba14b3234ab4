//! `kmirrorctl`: what each command does against the coordinator's admin API
//! (the command line is in `args`, failures in `failure`, config files in `files`).

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use kmirror_common::tls::{PeerRole, Transport};
use kmirror_proto::tonic::service::interceptor::InterceptedService;
use kmirror_proto::tonic::transport::{Channel, Endpoint};
use kmirror_proto::tonic::Status;
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

mod args;
mod audit;
mod certificates;
mod tokens;
use tokens::BearerToken;
pub mod connection;
mod failure;
mod files;

pub use crate::values::{parse_property, parse_start, StartArg};
pub use args::*;
pub use failure::Failure;
use failure::*;
use files::*;

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

/// Each partition's mirrored offset, keyed like [`Rates`].
type Offsets = BTreeMap<(String, String, i32), i64>;

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
