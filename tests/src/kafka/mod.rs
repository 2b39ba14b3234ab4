//! Kafka helpers on rdkafka: topics, producing (plain and transactional), reading
//! every record of a topic back, and comparing partitions record by record.
//!
//! librdkafka calls block, so each helper runs on tokio's blocking pool.
//!
//! | module | what |
//! | --- | --- |
//! | `cluster` | which cluster, request timeouts, blocking work off the async threads |
//! | `records` | records produced and read back, and comparing them |
//! | `topics` | creating, growing, configuring and deleting topics, deleting records; watermarks |
//! | `produce` | producing, plain and transactional |
//! | `read` | reading a whole topic back |
//! | `groups` | consuming as a group member, and a group's committed offsets |

mod cluster;
mod groups;
mod produce;
mod read;
mod records;
mod topics;

pub use cluster::{Cluster, SecuredCluster};
pub use groups::*;
pub use produce::*;
pub use read::*;
pub use records::*;
pub use topics::*;
