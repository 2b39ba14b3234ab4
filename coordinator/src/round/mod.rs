//! A reconcile round, shaped like the planner: I/O at the edges, decisions in the
//! middle, each decision a pure function tested without servers.
//!
//! | step | module | what |
//! |------|--------|------|
//! | discover | [`discover`] | list each running flow's clusters (through [`KafkaSide`](crate::kafka::KafkaSide)), create and grow destination topics as decided, read a new flow's start offsets, carry config changes over |
//! | decide | [`topics`] | per matched source topic: ready, create, grow, carried over, or an error; the configs a copy carries; one flow per destination topic |
//! | | [`lifecycle`] | a flow's phase, its start positions and captured migration targets, a migration's completion |
//! | | [`config_sync`] | which source config changes to carry, the destination configs they make |
//! | | [`planning`] | the planner's [`Problem`](crate::planner::Problem) from a snapshot (shared with the admin API's rebalance dry run), releases of unwanted partitions, deleted flows |
//! | | [`decide`] | the round's [`Decision`](decide::Decision): assignments, cleanups, flow states |
//! | apply | [`apply`] | the decision as etcd writes, guarded by the leadership key |
//!
//! Some Kafka writes depend on a decision (a topic is created only when it is
//! missing, a config carried only when it changed): discovery calls the pure
//! decision, then does what it says. etcd is written once per round, at the end.
//! [`crate::reconcile::Reconciler`] runs the steps in order.

use std::collections::{BTreeMap, BTreeSet};

use crate::planner::WantedPartition;
use crate::telemetry::RoundFigures;

pub mod apply;
pub mod config_sync;
pub mod decide;
pub mod discover;
#[cfg(test)]
pub mod fake_kafka;
pub mod lifecycle;
pub mod planning;
#[cfg(test)]
pub(crate) mod test_support;
pub mod topics;

pub use lifecycle::{flow_phase, migration_remaining};

/// What one round did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    pub flows: usize,
    pub partitions: usize,
    pub changed: usize,
    pub removed: usize,
    pub deleted_flows: Vec<kmirror_common::FlowName>,
    pub created_topics: Vec<String>,
}

impl From<&RoundSummary> for RoundFigures {
    fn from(summary: &RoundSummary) -> Self {
        RoundFigures {
            flows: summary.flows,
            partitions: summary.partitions,
            changed: summary.changed,
            removed: summary.removed,
            topics_created: summary.created_topics.len(),
        }
    }
}

/// What a round learned about one flow.
#[derive(Debug, Clone, Default)]
pub struct FlowDiscovery {
    pub partitions: Vec<WantedPartition>,
    /// Source topics the flow mirrors.
    pub topics: Vec<String>,
    /// Why (part of) the flow cannot run.
    pub errors: Vec<String>,
    pub created_topics: Vec<String>,
    /// Whether both clusters answered and the flow's topics are known this round.
    pub source_listed: bool,
    /// Matching source topics with complete metadata, and their partition counts.
    pub matched: BTreeMap<String, i32>,
    /// Configs of matching source topics that the flow copies (its config sync
    /// exclusions left out), where they could be read.
    pub source_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Source topics whose destination topic existed before this round.
    pub dest_existed: BTreeSet<String>,
}
