//! The fetcher's in-flight budget: bytes of record data read from the source and
//! not yet acknowledged by a writer, over every partition of the process.
//!
//! The consumer thread reserves a batch's bytes before handing it to the core and
//! waits while the budget is spent, so librdkafka's fetch queue fills and fetching
//! pauses: memory stays bounded by configuration whatever the backlog. The
//! reservation travels with the batch into the partition's window and is released
//! when the writer acknowledges the batch, or when the window drops it (restart,
//! stop, failure).

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB, so a budget of any practical size fits the
/// semaphore's permit count.
const UNIT_BYTES: usize = 1024;

#[derive(Clone)]
pub struct InFlightBudget {
    semaphore: Arc<Semaphore>,
    capacity_units: usize,
    runtime: Handle,
}

impl InFlightBudget {
    /// A budget of `bytes`; call from within the fetcher's runtime.
    pub fn new(bytes: usize) -> Self {
        let capacity_units = bytes.div_ceil(UNIT_BYTES).max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(capacity_units)),
            capacity_units,
            runtime: Handle::current(),
        }
    }

    /// Waits (blocking the calling thread, which must not be one of the runtime's)
    /// until `bytes` fit, and reserves them. A batch larger than the whole budget
    /// waits for all of it.
    pub fn reserve_blocking(&self, bytes: usize) -> Reservation {
        let units = bytes.div_ceil(UNIT_BYTES).clamp(1, self.capacity_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let acquire = self.semaphore.clone().acquire_many_owned(units);
        // The semaphore is never closed, so acquiring only ever waits.
        Reservation {
            _permit: self.runtime.block_on(acquire).ok(),
        }
    }

    /// Bytes not reserved at the moment.
    pub fn available_bytes(&self) -> usize {
        self.semaphore.available_permits() * UNIT_BYTES
    }
}

/// Bytes of the budget held by one batch until it is dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Holds nothing (a batch outside any budget).
    pub fn none() -> Self {
        Self { _permit: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget whose runtime runs beside the test thread, which reserves like
    /// the consumer thread does.
    fn budget(bytes: usize) -> (tokio::runtime::Runtime, InFlightBudget) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let budget = runtime.block_on(async { InFlightBudget::new(bytes) });
        (runtime, budget)
    }

    #[test]
    fn reservations_hold_bytes_until_dropped() {
        let (_runtime, budget) = budget(64 * 1024);
        let first = budget.reserve_blocking(10 * 1024);
        let second = budget.reserve_blocking(100);
        assert_eq!(budget.available_bytes(), 53 * 1024, "rounded up to KiB");
        drop(first);
        assert_eq!(budget.available_bytes(), 63 * 1024);
        drop(second);
        assert_eq!(budget.available_bytes(), 64 * 1024);
    }

    #[test]
    fn a_spent_budget_waits_for_a_release() {
        let (_runtime, budget) = budget(8 * 1024);
        let held = budget.reserve_blocking(8 * 1024);
        let waiting = budget.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Larger than the whole budget: waits for all of it, not forever.
            let reservation = waiting.reserve_blocking(1024 * 1024);
            done_tx.send(()).unwrap();
            drop(reservation);
        });
        assert!(
            done_rx.try_recv().is_err(),
            "nothing fits while the budget is spent"
        );
        drop(held);
        done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the waiting reservation goes through once bytes are released");
        thread.join().unwrap();
        assert_eq!(budget.available_bytes(), 8 * 1024);
    }
}
