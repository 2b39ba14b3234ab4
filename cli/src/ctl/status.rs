//! `status` (once or `--watch`), `top --watch` and `assignments`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use kmirror_proto::v1::{FlowStatus, ListAssignmentsRequest, StatusRequest};

use super::failure::Failure;
use super::{Ctl, Outcome};
use crate::output::{
    assignments_text, degraded_reasons, render, status_text, top_text, AssignmentJson,
    AssignmentsJson, OutputFormat, Rates, StatusJson,
};

/// Each partition's mirrored offset, keyed like [`Rates`].
type Offsets = BTreeMap<(String, String, i32), i64>;

impl Ctl {
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

    pub(super) async fn status_once(&mut self, flow: Option<String>) -> Result<Outcome, Failure> {
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
                Some(format!("the fleet is degraded: {}", reasons.join("; ")))
            },
        })
    }

    /// `status --watch` and `top --watch`: refresh until interrupted, with each
    /// partition's records/s measured between refreshes.
    pub(super) async fn watch(
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

    /// `assignments`: who runs each partition, with its rates.
    pub(super) async fn assignments(&mut self, flow: Option<String>) -> Result<String, Failure> {
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
        }))
    }
}

/// One refresh of `status --watch -o json|yaml`: a JSON document on one line
/// (JSON lines, for `jq` and friends), or a YAML document opened by `---`.
pub(super) fn watch_document<T: serde::Serialize>(format: OutputFormat, value: &T) -> String {
    match format {
        OutputFormat::Yaml => format!("---\n{}", crate::output::to_yaml(value)),
        _ => {
            let mut line = serde_json::to_string(value).expect("output values always serialize");
            line.push('\n');
            line
        }
    }
}
