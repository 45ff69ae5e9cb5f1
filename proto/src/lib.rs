//! Generated code for the `fdr.v1` protobuf package and its gRPC service.
#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("fdr.v1");
}
