//! The gRPC contract between the kmirror services: generated prost messages and tonic
//! clients and servers. Re-exports `tonic`, `prost` and `tonic_health` so every crate
//! builds against the same versions.
#![allow(clippy::large_enum_variant)]

pub use prost;
pub use tonic;
pub use tonic_health;

pub mod packed;

pub mod v1 {
    tonic::include_proto!("kmirror.v1");
}
