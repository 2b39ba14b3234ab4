//! Writes checkpoints and partition errors to etcd off the core's loop.
//!
//! Checkpoints of many partitions go in one transaction that compares each
//! partition's assignment with the bytes the fetcher holds, so a fetcher whose
//! partition moved (a zombie) cannot move its checkpoint. When such a transaction
//! fails, each partition is retried alone to find the ones that moved.

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use kmirror_common::schema::{encode, Checkpoint, PartitionError};
use kmirror_common::{Keys, PartitionKey};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

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
                        match self.write_chunk(std::slice::from_ref(entry)).await {
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
