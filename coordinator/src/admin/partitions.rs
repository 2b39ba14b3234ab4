//! Partition calls: resetting the checkpoint of a held partition (a retention
//! gap or a recreated source topic, see `kmirror_common::holds`), the operator's
//! decision of where its mirror goes on.
//!
//! The reset is one etcd transaction: the new checkpoint and the hold's deletion,
//! compared against the partition having no assignment and its hold and
//! checkpoint being those read, so nothing the fetcher writes can cross it. A held
//! partition's assignment is being released by the leader when the call comes;
//! the call waits for that. A running partition (not held, its flow not paused)
//! is refused: its fetcher would write over the reset.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use kmirror_common::schema::{encode, Checkpoint, PartitionHold};
use kmirror_common::{Epoch, FlowName, PartitionKey};
use kmirror_proto::v1::{ResetPartitionRequest, ResetPartitionResponse};
use tracing::info;

use super::{not_found, AdminService};
use crate::error::CoordinatorError;
use crate::status::hold_message;
use crate::store::Sections;
use crate::topic_filter::TopicFilter;

/// How long a reset waits for a held partition's assignment to be released:
/// longer than a fetcher waits for its in-flight acks before it gives a
/// partition back.
const RELEASE_WAIT: Duration = Duration::from_secs(25);
const RELEASE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Where a reset puts a partition's checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The source's log start: everything it retains is mirrored.
    Earliest,
    /// The source's log end: only records produced from now on.
    Latest,
    /// An explicit source offset, between the log start and end.
    Offset(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = CoordinatorError;

    fn from_str(text: &str) -> Result<Self, CoordinatorError> {
        match text {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            other => other.parse::<i64>().map(ResetTo::Offset).map_err(|_| {
                CoordinatorError::InvalidArgument(format!(
                    "reset target {other:?}: expected earliest, latest or a source offset"
                ))
            }),
        }
    }
}

/// The checkpoint a reset writes, from the source's log start and end offsets;
/// an offset the source does not have is refused, naming the range it has.
pub fn reset_offset(to: ResetTo, log_start: i64, log_end: i64) -> Result<i64, String> {
    match to {
        ResetTo::Earliest => Ok(log_start),
        ResetTo::Latest => Ok(log_end),
        ResetTo::Offset(offset) if (log_start..=log_end).contains(&offset) => Ok(offset),
        ResetTo::Offset(offset) => Err(format!(
            "offset {offset} is outside the source's range {log_start}..{log_end} (log start to log end)"
        )),
    }
}

impl AdminService {
    pub async fn reset_partition(
        &self,
        request: ResetPartitionRequest,
    ) -> Result<ResetPartitionResponse, CoordinatorError> {
        let flow_name = FlowName::new(&request.flow)?;
        if request.topic.is_empty() {
            return Err(CoordinatorError::InvalidArgument(
                "a topic is required".to_string(),
            ));
        }
        if request.partition < 0 {
            return Err(CoordinatorError::InvalidArgument(format!(
                "partition {} is negative",
                request.partition
            )));
        }
        let to: ResetTo = request.to.parse()?;
        let key = PartitionKey::new(flow_name.clone(), &request.topic, request.partition);
        let sections = Sections {
            clusters: true,
            checkpoints: true,
            ..Sections::default()
        };
        let (_, snapshot) = self.read_for_flow(flow_name.as_str(), sections).await?;
        let flow = &snapshot.flows[&flow_name];
        let filter = TopicFilter::new(&flow.include, flow.exclude.as_deref())?;
        let known = snapshot.holds.contains_key(&key) || snapshot.checkpoints.contains_key(&key);
        if !known && !filter.matches(&request.topic) {
            return Err(not_found(
                "topic",
                &format!("{} (flow {flow_name} does not mirror it)", request.topic),
            ));
        }
        let source_spec = snapshot
            .clusters
            .get(&flow.source_cluster)
            .ok_or_else(|| not_found("cluster", &flow.source_cluster))?;
        let source = self.kafka.client(source_spec)?;
        let listing = source.list_topics().await?;
        match listing.partitions.get(&request.topic) {
            None if listing.unavailable.contains_key(&request.topic) => {
                return Err(CoordinatorError::Refused(format!(
                    "source topic {} cannot be read now: {}",
                    request.topic, listing.unavailable[&request.topic]
                )))
            }
            None => {
                return Err(not_found(
                    "topic",
                    &format!(
                        "{} in source cluster {}",
                        request.topic, flow.source_cluster
                    ),
                ))
            }
            Some(&count) if request.partition >= count => {
                return Err(not_found(
                    "partition",
                    &format!(
                        "{}/{} (the source topic has {count} partitions)",
                        request.topic, request.partition
                    ),
                ))
            }
            Some(_) => {}
        }

        let hold_opt = snapshot.holds.get(&key).cloned();
        self.wait_until_unassigned(&key, hold_opt.is_some()).await?;
        let watermarks = source
            .watermarks(vec![(request.topic.clone(), request.partition)])
            .await;
        let Some((log_start, log_end)) = watermarks.into_iter().next().flatten() else {
            return Err(CoordinatorError::ClusterUnreachable {
                cluster: flow.source_cluster.to_string(),
                bootstrap: source_spec.bootstrap_servers.clone(),
                cause: format!(
                    "cannot read the log start and end offsets of {}/{}",
                    request.topic, request.partition
                ),
            });
        };
        let offset = reset_offset(to, log_start, log_end)
            .map_err(|reason| CoordinatorError::InvalidArgument(format!("{key}: {reason}")))?;
        let previous_opt = self.write_reset(&key, offset, hold_opt.as_ref()).await?;
        let previous_offset = previous_opt.map_or(-1, |checkpoint| checkpoint.next_offset);
        info!(partition = %key, previous_offset, offset, to = %request.to, held = hold_opt.is_some(), "partition reset");
        Ok(ResetPartitionResponse {
            flow: flow_name.to_string(),
            topic: request.topic,
            partition: request.partition,
            previous_offset,
            offset,
            cleared: hold_opt.as_ref().map(hold_message),
        })
    }

    /// Waits until the partition has no assignment: a held one's is being
    /// released; a running one's is not, and the reset is refused.
    async fn wait_until_unassigned(
        &self,
        key: &PartitionKey,
        held: bool,
    ) -> Result<(), CoordinatorError> {
        let started = Instant::now();
        let mut client = self.client.clone();
        loop {
            let response = client.get(self.keys.assignment(key), None).await?;
            let Some(assigned) = response.kvs().first() else {
                return Ok(());
            };
            if !held {
                let fetcher =
                    serde_json::from_slice::<kmirror_common::schema::Assignment>(assigned.value())
                        .map(|assignment| assignment.fetcher.to_string())
                        .unwrap_or_default();
                return Err(CoordinatorError::Refused(format!(
                    "{key} is being mirrored (fetcher {fetcher}) and is not held: pause flow {} first, then reset it",
                    key.flow
                )));
            }
            if started.elapsed() >= RELEASE_WAIT {
                return Err(CoordinatorError::StopTimedOut {
                    flow: key.flow.to_string(),
                    pending: 1,
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(RELEASE_POLL_INTERVAL).await;
        }
    }

    /// The new checkpoint and the hold's deletion, if the partition is still
    /// unassigned and its hold and checkpoint are those read now. Returns the
    /// checkpoint replaced.
    async fn write_reset(
        &self,
        key: &PartitionKey,
        offset: i64,
        hold_opt: Option<&PartitionHold>,
    ) -> Result<Option<Checkpoint>, CoordinatorError> {
        let checkpoint_key = self.keys.checkpoint(key);
        let hold_key = self.keys.hold(key);
        let stored_checkpoint = self.read_stored::<Checkpoint>(&checkpoint_key).await?;
        let stored_hold = self.read_stored::<PartitionHold>(&hold_key).await?;
        if stored_hold.as_ref().map(|(hold, _)| hold) != hold_opt {
            return Err(changed_meanwhile(key));
        }
        let unchanged = |stored_key: &str, revision_opt: Option<i64>| match revision_opt {
            Some(revision) => Compare::mod_revision(stored_key, CompareOp::Equal, revision),
            None => Compare::create_revision(stored_key, CompareOp::Equal, 0),
        };
        let previous_opt = stored_checkpoint.map(|(checkpoint, _)| checkpoint);
        let checkpoint = Checkpoint {
            next_offset: offset,
            // The last record mirrored is still where it was.
            dest_partition: previous_opt.map_or(-1, |previous| previous.dest_partition),
            dest_offset: previous_opt.map_or(-1, |previous| previous.dest_offset),
            epoch: previous_opt.map_or(Epoch(0), |previous| previous.epoch),
            updated_ms: kmirror_common::now_ms(),
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
        };
        let compares = [
            Compare::create_revision(self.keys.assignment(key), CompareOp::Equal, 0),
            unchanged(
                &checkpoint_key,
                stored_checkpoint.as_ref().map(|(_, revision)| *revision),
            ),
            unchanged(
                &hold_key,
                stored_hold.as_ref().map(|(_, revision)| *revision),
            ),
        ];
        let operations = [
            TxnOp::put(checkpoint_key.as_str(), encode(&checkpoint), None),
            TxnOp::delete(hold_key.as_str(), None),
        ];
        let response = self
            .client
            .clone()
            .txn(Txn::new().when(compares).and_then(operations))
            .await?;
        if !response.succeeded() {
            return Err(changed_meanwhile(key));
        }
        Ok(previous_opt)
    }
}

fn changed_meanwhile(key: &PartitionKey) -> CoordinatorError {
    CoordinatorError::Refused(format!(
        "{key} changed while it was being reset (assigned again, or held or checkpointed anew); see `kmirrorctl status` and repeat the call"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_are_earliest_latest_or_an_offset() {
        assert_eq!("earliest".parse::<ResetTo>().unwrap(), ResetTo::Earliest);
        assert_eq!("latest".parse::<ResetTo>().unwrap(), ResetTo::Latest);
        assert_eq!("4200".parse::<ResetTo>().unwrap(), ResetTo::Offset(4_200));
        let error = "soon".parse::<ResetTo>().unwrap_err().to_string();
        assert_eq!(
            error,
            r#"reset target "soon": expected earliest, latest or a source offset"#
        );
    }

    #[test]
    fn a_reset_goes_to_the_source_ends_or_an_offset_the_source_has() {
        assert_eq!(reset_offset(ResetTo::Earliest, 5_000, 9_000), Ok(5_000));
        assert_eq!(reset_offset(ResetTo::Latest, 5_000, 9_000), Ok(9_000));
        assert_eq!(
            reset_offset(ResetTo::Offset(5_000), 5_000, 9_000),
            Ok(5_000)
        );
        assert_eq!(
            reset_offset(ResetTo::Offset(9_000), 5_000, 9_000),
            Ok(9_000)
        );
        assert_eq!(
            reset_offset(ResetTo::Offset(3_200), 5_000, 9_000),
            Err(
                "offset 3200 is outside the source's range 5000..9000 (log start to log end)"
                    .to_string()
            )
        );
        assert!(reset_offset(ResetTo::Offset(9_001), 5_000, 9_000).is_err());
    }
}
