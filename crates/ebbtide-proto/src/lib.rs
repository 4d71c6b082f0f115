//! # ebbtide-proto
//!
//! The scheduler↔agent gRPC protocol (`proto/ebbtide/worker/v1/worker.proto`,
//! documented there for agents written in other languages), compiled with
//! tonic. Only generated code and its codec live here; it must never depend on the
//! engine, the store or a provider.

#![allow(missing_docs)] // generated code; the .proto file is the documentation

pub mod bootstrap;
pub mod codec;
pub mod gce;

/// `ebbtide.worker.v1`.
pub mod worker {
    /// Version 1 of the worker protocol.
    pub mod v1 {
        tonic::include_proto!("ebbtide.worker.v1");
    }
}
