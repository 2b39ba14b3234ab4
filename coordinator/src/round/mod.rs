//! The parts of a reconcile round.

#[cfg(test)]
pub mod fake_kafka;
