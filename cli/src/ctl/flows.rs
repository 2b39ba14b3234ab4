//! `flow create|list|delete|pause|resume|wait`.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use kmirror_proto::v1::{
    CreateFlowRequest, DeleteFlowRequest, Flow, ListFlowsRequest, PauseFlowRequest,
    ResumeFlowRequest,
};

use super::args::{FlowCommand, RenameArg};
use super::failure::Failure;
use super::Ctl;
use crate::output::{
    flows_text, matched_topics_text, render, DoneJson, FlowJson, FlowStoredJson, FlowsJson,
};
use crate::progress::{Tracker, Verdict};
use crate::values::StartArg;

impl Ctl {
    pub(super) async fn flow(&mut self, command: FlowCommand) -> Result<String, Failure> {
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
                sync_group_offsets,
                sync_group_offsets_exclude,
                sync_group_offsets_interval,
                exactly_once,
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
                    sync_group_offsets: sync_group_offsets.unwrap_or_default(),
                    sync_group_offsets_exclude_set: !sync_group_offsets_exclude.is_empty(),
                    sync_group_offsets_exclude,
                    sync_group_offsets_interval_ms: sync_group_offsets_interval
                        .map_or(0, |interval| interval.as_millis() as i64),
                    exactly_once,
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

/// Warnings go to stderr, so that stdout stays one document for scripts.
fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}
