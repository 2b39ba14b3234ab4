//! Waiting for a condition with a deadline: the only way these tests synchronise
//! with the fleet (never a fixed sleep). Shared with every crate's tests from
//! `kmirror-test-support`.

pub use kmirror_test_support::wait::{wait_until, FIRST_POLL_INTERVAL, MAX_POLL_INTERVAL};
