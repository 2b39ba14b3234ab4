//! A producer that keeps records flowing through a fault: a chunk of unique keyed
//! records every tick, until a number of chunks is in the source.

use std::time::Duration;

use anyhow::Result;
use tokio::task::JoinHandle;

use crate::data::KeyedRecords;
use crate::kafka::{produce, Cluster};

#[derive(Debug, Clone, Copy)]
pub struct SteadyLoad {
    pub partitions: i32,
    pub chunk: u64,
    pub tick: Duration,
    pub chunks: u64,
}

impl SteadyLoad {
    /// Records per second the load offers.
    pub fn rate(&self) -> f64 {
        self.chunk as f64 / self.tick.as_secs_f64()
    }

    pub fn total(&self) -> u64 {
        self.chunk * self.chunks
    }

    /// Starts producing into `topic`; the task returns how many records it produced.
    /// A chunk waits for the cluster when it is down (the producer retries), so the
    /// load pauses rather than fails while a broker restarts.
    pub fn start(self, cluster: Cluster, topic: String) -> JoinHandle<Result<u64>> {
        tokio::spawn(async move {
            let base_timestamp = KeyedRecords::new(0, self.partitions).base_timestamp;
            for chunk in 0..self.chunks {
                let next_tick = tokio::time::Instant::now() + self.tick;
                let records = KeyedRecords {
                    first_sequence: chunk * self.chunk,
                    base_timestamp,
                    value_padding: 64,
                    ..KeyedRecords::new(self.chunk, self.partitions)
                }
                .generate();
                produce(cluster, &topic, records).await?;
                tokio::time::sleep_until(next_tick).await;
            }
            Ok(self.total())
        })
    }
}
