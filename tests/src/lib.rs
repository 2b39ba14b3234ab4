//! Harness for kmirror's end-to-end tests: real etcd, real Kafka, real fleet processes.
//!
//! Every test gets its own fleet (an etcd prefix), its own topics and its own flows,
//! so tests never share state and may run in parallel:
//!
//! - [`stack`]: the local stack (`deploy/local/stack up`, once per test process) and
//!   the addresses of its servers;
//! - [`fleet`]: coordinator, fetcher and writer processes of one fleet, `kmirrorctl`
//!   against it, graceful and hard stops, restarts ([`member_process`]: one
//!   process; [`ctl_output`]: one `kmirrorctl` call);
//! - [`pki`]: a CA and certificates per test fleet, so every test crosses mutual TLS;
//! - [`kafka`]: topics, producing (plain and transactional), reading every record
//!   back, comparing partitions;
//! - [`kcat`]: reading a topic with Debian's `kcat`, a second, independent client;
//! - [`status`]: the JSON of `kmirrorctl status -o json`, parsed in one place;
//! - [`murmur2`]: Kafka's default partitioner, to check where keyed records land;
//! - [`data`]: generated test records;
//! - [`netns`]: simulated hosts (network namespaces on a bridge) with packet loss
//!   and cuts between them;
//! - [`hosts`]: a whole deployment on simulated hosts, for the multi-host tests;
//! - [`process_memory`]: a member's resident memory and its peak, from `/proc`;
//! - [`wait`]: waiting for a condition with a deadline (never a fixed sleep).

#![forbid(unsafe_code)]

pub mod ctl_output;
pub mod data;
pub mod fleet;
pub mod fleet_options;
pub mod host_producer;
pub mod hosts;
pub mod kafka;
pub mod kcat;
pub mod member_process;
pub mod mirror_process;
pub mod murmur2;
pub mod netns;
pub mod observability;
pub mod ordering;
pub mod pki;
pub mod private_stack;
pub mod process_memory;
pub mod secure_etcd;
pub mod secure_stack;
pub mod stack;
pub mod status;
pub mod steady;
pub mod wait;

pub use fleet::{CtlOutput, Fleet, FleetOptions};
pub use kafka::{Cluster, ConsumedRecord, Delivered, OutRecord};
pub use stack::{stack, Stack};
pub use wait::wait_until;

/// A name unique to this run (fleets, topics, flows); shared with every crate's
/// tests from `kmirror-test-support`.
pub use kmirror_test_support::unique_name;

/// Milliseconds since the Unix epoch, for record timestamps.
pub use kmirror_common::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_fleet_topic_and_flow_names() {
        let name = unique_name("Mirror_exact::test");
        assert!(name.starts_with("mirror-exact--test-"), "{name}");
        assert!(kmirror_common::types::FlowName::new(&name).is_ok());
        assert_ne!(unique_name("a"), unique_name("a"));
    }
}
