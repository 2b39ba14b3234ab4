//! kmirror's command-line tools: `kmirrorctl`, which manages a fleet through a
//! coordinator's admin API, and `kmirror`, which mirrors like Kafka's MirrorMaker
//! in one process (coordinator, fetchers and writers on the fleet's code paths).
#![forbid(unsafe_code)]

pub mod cluster_properties;
pub mod console;
pub mod ctl;
pub mod manifest;
pub mod mirror;
pub mod output;
pub mod plan_diff;
pub mod progress;
pub mod properties;
pub mod values;
