//! The source cluster refusing a flow's consumer: a login rejected or a TLS
//! handshake failed (the whole consumer), or a partition's fetch denied by an
//! ACL (that partition). The consumer thread tells the core once per consumer,
//! or once per partition and assignment; the core drops the consumer, or stops
//! the partition, for the cluster's pause (`kmirror_common::cluster_access`).

use kmirror_common::cluster_access::RefusalCause;
use kmirror_common::{FlowName, PartitionKey};
use rdkafka::error::KafkaError;

use super::{Fetched, Poller};

/// What the consumer thread reports when its cluster refused it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub flow: FlowName,
    /// The consumer that met it ([`super::ConsumerHandle::id`]): a refusal of a
    /// consumer already replaced is ignored.
    pub consumer_id: u64,
    /// The partition refused, or `None` for the whole consumer.
    pub partition_opt: Option<PartitionKey>,
    pub cause: RefusalCause,
    /// librdkafka's error, without any property value.
    pub message: String,
}

impl Poller {
    /// Tells the core of `error` when it is a refusal not reported yet: by the
    /// consumer (`partition_opt` `None`), or of a partition under its current
    /// assignment. False once the core is gone.
    pub(super) fn report_refusal(
        &mut self,
        partition_opt: Option<(&str, i32)>,
        error: &KafkaError,
    ) -> bool {
        let Some(cause) = RefusalCause::of(error) else {
            return true;
        };
        // A login or a handshake refused is the whole consumer's, even when
        // librdkafka reports it on one partition's fetch: the cluster pauses.
        let partition_opt = partition_opt.filter(|_| !cause.refuses_the_cluster());
        let first = match partition_opt {
            None => !std::mem::replace(&mut self.refusal_reported, true),
            Some((topic, partition)) => {
                let key = (topic.to_string(), partition);
                match self.generations.get(&key).copied() {
                    Some(generation) => {
                        self.refused_partitions.insert(key, generation) != Some(generation)
                    }
                    None => false,
                }
            }
        };
        if !first {
            return true;
        }
        let refusal = Refusal {
            flow: self.flow.clone(),
            consumer_id: self.consumer_id,
            partition_opt: partition_opt.map(|(topic, partition)| {
                PartitionKey::new(self.flow.clone(), topic.to_string(), partition)
            }),
            cause,
            message: error.to_string(),
        };
        self.fetched_tx
            .blocking_send(Fetched::Refused(refusal))
            .is_ok()
    }
}
