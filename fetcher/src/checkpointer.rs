//! Writes checkpoints and partition errors to etcd off the core's loop.
//!
//! Checkpoints of many partitions go in one transaction that compares each
//! partition's assignment with the bytes the fetcher holds, so a fetcher whose
//! partition moved (a zombie) cannot move its checkpoint. When such a transaction
//! fails, each partition is retried alone to find the ones that moved.

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use kmirror_common::schema::{
    encode, Assignment, AuditRecord, Checkpoint, PartitionError, PartitionHold,
};
use kmirror_common::{Keys, PartitionKey};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// etcd allows 128 operations per transaction by default: a compare and a put each.
const PARTITIONS_PER_TXN: usize = 60;

pub struct CheckpointEntry {
    pub partition: PartitionKey,
    pub assignment_raw: Vec<u8>,
    pub checkpoint: Checkpoint,
}

pub enum CheckpointCommand {
    Write {
        entries: Vec<CheckpointEntry>,
        done_tx: oneshot::Sender<CheckpointOutcome>,
    },
    ReportError {
        partition: PartitionKey,
        error: PartitionError,
    },
    ClearError {
        partition: PartitionKey,
    },
    /// Stores a hold (the source no longer has the partition's position) and
    /// its event in the audit log, if the assignment is still the one held and
    /// no hold is stored yet.
    Hold {
        partition: PartitionKey,
        assignment_raw: Vec<u8>,
        hold: PartitionHold,
    },
    /// Gives a partition back: its final checkpoint (when it moved) and the
    /// deletion of its assignment, if the assignment is still the one held.
    Release {
        partition: PartitionKey,
        assignment_raw: Vec<u8>,
        checkpoint_opt: Option<Checkpoint>,
    },
}

#[derive(Debug, Default)]
pub struct CheckpointOutcome {
    pub written: Vec<(PartitionKey, Checkpoint)>,
    /// Partitions whose assignment changed under the fetcher, with the assignment
    /// bytes the refused write compared.
    pub fenced: Vec<(PartitionKey, Vec<u8>)>,
}

pub struct Checkpointer {
    pub etcd: Client,
    pub keys: Keys,
    pub lease_id: i64,
    /// This fetcher's identity URI, as the audit log names who did something.
    pub identity: String,
    pub command_rx: mpsc::UnboundedReceiver<CheckpointCommand>,
}

impl Checkpointer {
    pub async fn run(mut self) {
        while let Some(command) = self.command_rx.recv().await {
            match command {
                CheckpointCommand::Write { entries, done_tx } => {
                    let outcome = self.write(entries).await;
                    let _ = done_tx.send(outcome);
                }
                CheckpointCommand::ReportError { partition, error } => {
                    kmirror_common::metrics::metrics()
                        .partition_stopped(&partition, &error.message);
                    let key = self.keys.partition_error(&partition);
                    let options = PutOptions::new().with_lease(self.lease_id);
                    if let Err(etcd_error) = self.etcd.put(key, encode(&error), Some(options)).await
                    {
                        warn!(%partition, error = %etcd_error, "cannot report partition error");
                    }
                }
                CheckpointCommand::Release {
                    partition,
                    assignment_raw,
                    checkpoint_opt,
                } => {
                    let assignment_key = self.keys.assignment(&partition);
                    let held =
                        Compare::value(assignment_key.as_str(), CompareOp::Equal, assignment_raw);
                    let mut operations = Vec::new();
                    if let Some(checkpoint) = &checkpoint_opt {
                        operations.push(TxnOp::put(
                            self.keys.checkpoint(&partition),
                            encode(checkpoint),
                            None,
                        ));
                    }
                    operations.push(TxnOp::delete(assignment_key, None));
                    match self
                        .etcd
                        .txn(Txn::new().when([held]).and_then(operations))
                        .await
                    {
                        Ok(response) if response.succeeded() => {
                            debug!(%partition, "partition given back");
                        }
                        Ok(_) => {
                            info!(%partition, "partition not given back: its assignment changed meanwhile");
                        }
                        Err(etcd_error) => {
                            warn!(%partition, error = %etcd_error, "cannot give the partition back; the leader unassigns it after its timeout");
                        }
                    }
                }
                CheckpointCommand::Hold {
                    partition,
                    assignment_raw,
                    hold,
                } => self.store_hold(partition, assignment_raw, hold).await,
                CheckpointCommand::ClearError { partition } => {
                    kmirror_common::metrics::metrics().partition_progressing(&partition);
                    let key = self.keys.partition_error(&partition);
                    if let Err(etcd_error) = self.etcd.delete(key, None).await {
                        warn!(%partition, error = %etcd_error, "cannot clear partition error");
                    }
                }
            }
        }
    }

    /// The hold and its audit event in one transaction that compares the
    /// assignment (a fetcher that lost the partition writes nothing) and that no
    /// hold is stored (one event per hold, however often it is detected).
    async fn store_hold(
        &mut self,
        partition: PartitionKey,
        assignment_raw: Vec<u8>,
        hold: PartitionHold,
    ) {
        let hold_key = self.keys.hold(&partition);
        let compares = [
            Compare::value(
                self.keys.assignment(&partition),
                CompareOp::Equal,
                assignment_raw,
            ),
            Compare::create_revision(hold_key.as_str(), CompareOp::Equal, 0),
        ];
        let event = hold_event(&self.identity, &partition, &hold);
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let operations = [
            TxnOp::put(hold_key.as_str(), encode(&hold), None),
            TxnOp::put(
                self.keys.audit_entry(event.time_ms, &unique[..8]),
                encode(&event),
                None,
            ),
        ];
        match self
            .etcd
            .txn(Txn::new().when(compares).and_then(operations))
            .await
        {
            Ok(response) if response.succeeded() => {
                kmirror_common::metrics::partition_held(&partition, &hold);
                info!(target: "audit", %partition, call = HOLD_EVENT, outcome = hold.reason.as_str(), detail = %hold.message, "partition held");
            }
            Ok(_) => {
                debug!(%partition, "hold not stored: stored already, or the partition moved")
            }
            Err(etcd_error) => {
                warn!(%partition, error = %etcd_error, "cannot store the partition's hold; trying again later")
            }
        }
    }

    async fn write(&mut self, entries: Vec<CheckpointEntry>) -> CheckpointOutcome {
        let mut outcome = CheckpointOutcome::default();
        for chunk in entries.chunks(PARTITIONS_PER_TXN) {
            match self.write_chunk(chunk).await {
                Ok(true) => outcome.written.extend(
                    chunk
                        .iter()
                        .map(|entry| (entry.partition.clone(), entry.checkpoint)),
                ),
                Ok(false) => {
                    for entry in chunk {
                        match self.write_alone(entry).await {
                            Ok(true) => outcome
                                .written
                                .push((entry.partition.clone(), entry.checkpoint)),
                            Ok(false) => outcome
                                .fenced
                                .push((entry.partition.clone(), entry.assignment_raw.clone())),
                            Err(error) => {
                                warn!(partition = %entry.partition, %error, "cannot write checkpoint")
                            }
                        }
                    }
                }
                Err(error) => warn!(partitions = chunk.len(), %error, "cannot write checkpoints"),
            }
        }
        outcome
    }

    /// Writes one partition's checkpoint. When the assignment changed only in
    /// that the leader asked for the partition back, the fetcher still owns it
    /// (the release itself writes under that assignment): the write is made
    /// against it rather than refused, so what the fetcher has in flight is not
    /// dropped unrecorded.
    async fn write_alone(&mut self, entry: &CheckpointEntry) -> Result<bool, etcd_client::Error> {
        if self.write_chunk(std::slice::from_ref(entry)).await? {
            return Ok(true);
        }
        let response = self
            .etcd
            .get(self.keys.assignment(&entry.partition), None)
            .await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(false);
        };
        if !is_release_of(&entry.assignment_raw, kv.value()) {
            return Ok(false);
        }
        let releasing = CheckpointEntry {
            partition: entry.partition.clone(),
            assignment_raw: kv.value().to_vec(),
            checkpoint: entry.checkpoint,
        };
        self.write_chunk(std::slice::from_ref(&releasing)).await
    }

    async fn write_chunk(&mut self, chunk: &[CheckpointEntry]) -> Result<bool, etcd_client::Error> {
        let compares: Vec<Compare> = chunk
            .iter()
            .map(|entry| {
                Compare::value(
                    self.keys.assignment(&entry.partition),
                    CompareOp::Equal,
                    entry.assignment_raw.clone(),
                )
            })
            .collect();
        let puts: Vec<TxnOp> = chunk
            .iter()
            .map(|entry| {
                TxnOp::put(
                    self.keys.checkpoint(&entry.partition),
                    encode(&entry.checkpoint),
                    None,
                )
            })
            .collect();
        let response = self
            .etcd
            .txn(Txn::new().when(compares).and_then(puts))
            .await?;
        Ok(response.succeeded())
    }
}

/// The audit log's event of a hold: who detected it, which partition, the
/// offsets lost in words.
fn hold_event(identity: &str, partition: &PartitionKey, hold: &PartitionHold) -> AuditRecord {
    AuditRecord {
        time_ms: hold.detected_ms,
        identity: identity.to_string(),
        call: HOLD_EVENT.to_string(),
        object: format!(
            "partition/{}/{}/{}",
            partition.flow, partition.topic, partition.partition
        ),
        outcome: hold.reason.as_str().to_string(),
        remote: String::new(),
        detail: hold.message.clone(),
    }
}

/// The call an audit entry of a hold names: an event, not a gRPC method.
pub const HOLD_EVENT: &str = "event/PartitionHeld";

/// Whether `current` is the assignment `held`, only now being released.
fn is_release_of(held_raw: &[u8], current_raw: &[u8]) -> bool {
    let (Ok(held), Ok(current)) = (
        serde_json::from_slice::<Assignment>(held_raw),
        serde_json::from_slice::<Assignment>(current_raw),
    ) else {
        return false;
    };
    !held.is_releasing()
        && current.is_releasing()
        && Assignment {
            releasing_since_ms: None,
            ..current
        } == held
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::{Epoch, MemberId};

    fn assignment(fetcher: &str, epoch: u64) -> Assignment {
        Assignment {
            fetcher: MemberId::new(fetcher).unwrap(),
            writer: MemberId::new("w1").unwrap(),
            epoch: Epoch(epoch),
            dest_topic: "orders".to_string(),
            dest_partitions: 3,
            source_partitions: 3,
            releasing_since_ms: None,
        }
    }

    #[test]
    fn only_the_release_of_the_held_assignment_is_written_through() {
        let held = encode(&assignment("f1", 7));
        let released = |assignment: Assignment| {
            encode(&Assignment {
                releasing_since_ms: Some(5),
                ..assignment
            })
        };
        assert!(is_release_of(&held, &released(assignment("f1", 7))));
        // Another owner, or a newer epoch of it: fenced.
        assert!(!is_release_of(&held, &released(assignment("f2", 7))));
        assert!(!is_release_of(&held, &released(assignment("f1", 8))));
        assert!(!is_release_of(&held, &encode(&assignment("f2", 9))));
        assert!(!is_release_of(&held, b"not json"));
    }
}
