//! What kmirrorctl prints: borderless aligned tables with upper-case headers for
//! people (`-o text`, and `-o wide` with more columns), stable JSON and YAML for
//! scripts (`-o json`, `-o yaml`: the same document).
//!
//! Machine output shapes (field names and nesting are stable; fields may be added,
//! never renamed or removed; integers are numbers, rates are numbers per second):
//!
//! - `status`: `{"leader", "flows":[{"name","source_cluster","dest_cluster","state",
//!   "phase","error","total_lag","until_caught_up","target_records",
//!   "remaining_records","records_per_sec","bytes_per_sec","partitions":[{"topic",
//!   "partition","dest_topic","log_end_offset","mirrored_offset","lag","fetcher",
//!   "writer","epoch","error","dest_offset","target_offset","records_per_sec",
//!   "bytes_per_sec","checkpoint_ms"}],"group_sync":{"at_ms","error","groups":[{"group",
//!   "state","committed","unchanged","skipped"}]}}]}`. `group_sync` is null for a flow
//!   that syncs no consumer group. `leader` is null when no coordinator
//!   leads. `state` is `running`, `degraded` (some partition cannot progress),
//!   `failing` (the flow as a whole cannot run), `paused` or `completed` (a
//!   migration that reached its targets). Unknown or inapplicable values are null,
//!   never -1 or "": `leader` when no coordinator leads, `error` when there is
//!   none, `log_end_offset` and `lag` when the source cannot be asked,
//!   `dest_offset` before the first checkpoint, `total_lag` until every partition's
//!   lag was measured (before the flow's topics were first discovered too),
//!   `fetcher` and `writer` for an
//!   unassigned partition, `target_records`, `remaining_records` and
//!   `target_offset` outside migration mode.
//! - `members`: `{"members":[{"id","role","address","version","leader","partitions",
//!   "lease_remaining_ms","records_per_sec","bytes_per_sec","drained","started_ms",
//!   "metrics_url"}]}`. `lease_remaining_ms` is null when unknown, `metrics_url`
//!   when the member serves no metrics.
//! - `cluster list`: `{"clusters":[{"name","bootstrap_servers","properties":{}}]}`
//!   (secret property values masked).
//! - `flow list`: `{"flows":[{"name","source_cluster","dest_cluster","include",
//!   "exclude" (null when none),"rename":{"policy",...},"start","start_timestamp_ms","until_caught_up",
//!   "paused","phase","sync_topic_configs","sync_topic_configs_exclude","sync_group_offsets"
//!   (null when none),"sync_group_offsets_exclude","sync_group_offsets_interval_ms",
//!   "exactly_once","created_ms"}]}`.
//! - `assignments`: `{"assignments":[{"flow","topic","partition","dest_topic",
//!   "fetcher","writer","epoch","records_per_sec","bytes_per_sec"}]}`.
//! - `rebalance`: `{"applied","moves":[{"flow","topic","partition","role","from","to"}]}`.
//! - `flow create`: `{"kind","name","action","topics":[{"source_topic","dest_topic",
//!   "source_partitions","dest_partitions"}],"warnings":[]}` (`dest_partitions` null
//!   for a destination topic still to be created).
//! - `status --watch -o json`: one compact `status` document per line.
//!
//! | module | what |
//! | --- | --- |
//! | `format` | `OutputFormat` and rendering a document as JSON or YAML |
//! | `documents` | the machine documents (`*Json`), their shapes stable |
//! | `tables` | the text tables of each command |
//! | `cells` | the table layout and how one cell prints (rates, durations, dashes) |

mod cells;
mod documents;
mod format;
mod tables;

pub use cells::*;
pub use documents::*;
pub use format::*;
pub use tables::*;

#[cfg(test)]
mod tests;
