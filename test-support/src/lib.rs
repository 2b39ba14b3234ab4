//! What every kmirror test needs, whichever crate it is in: names unique to the
//! run, waiting for a condition with a deadline, the local stack's addresses and
//! etcd clean-up. It depends on `kmirror-common` alone, so any crate's tests can
//! use it (`kmirror-tests`, the end-to-end harness, depends on the fetcher and
//! the writer, whose own tests therefore cannot use that).
//!
//! - [`unique_name`]: fleets, topics and flows that never collide;
//! - [`wait`]: waiting for a condition with a deadline (never a fixed sleep);
//! - [`local_stack`]: the addresses of the local stack's etcd and Kafka clusters;
//! - [`etcd`]: connecting to etcd and removing what a test left under its fleet.

#![forbid(unsafe_code)]

pub mod etcd;
pub mod local_stack;
pub mod wait;

pub use wait::wait_until;

/// A name unique to this run: `prefix` plus a random suffix. Used for fleets,
/// topics and flows so that tests never collide, even across runs against the same
/// stack.
pub fn unique_name(prefix: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let prefix: String = prefix
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '-' {
                character.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{}", &suffix[..8])
}
