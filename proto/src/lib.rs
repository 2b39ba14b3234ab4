//! The gRPC contract between the kmirror services: generated prost messages and tonic
//! clients and servers, the packed record layout and the batch framing. Re-exports
//! `tonic`, `prost`, `tonic_health` and `tonic_prost` so every crate builds against
//! the same versions.
#![allow(clippy::large_enum_variant)]

pub use prost;
pub use tonic;
pub use tonic_health;
pub use tonic_prost;

pub mod frame;
pub mod packed;

pub mod v1 {
    tonic::include_proto!("kmirror.v1");
}
