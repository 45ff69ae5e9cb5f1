//! Generated code for the `fdr.v1` protobuf package and its gRPC service,
//! and for the subset of the Kubernetes CRI (`runtime.v1`) fdr uses; and
//! the code the agent and its client (`fdrctl`, crate `fdr-cli`) share
//! about it: names of the wire enums, the text and JSON of events
//! ([`render`]), unix-socket channels ([`transport`]).

pub mod auth;
pub mod integrity;
pub mod render;
pub mod transport;

mod names;
pub use names::UnknownKind;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("fdr.v1");
}

/// A subset of the Kubernetes Container Runtime Interface, `runtime.v1`:
/// the `RuntimeService` calls that run, list and inspect pods and
/// containers, wire-compatible with containerd and CRI-O (upstream names
/// and field numbers; fields left out are skipped when decoding). Client
/// ([`cri::runtime_service_client`]) and server code.
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

/// A subset of containerd's own metadata API (containers and images), for
/// containers made outside the CRI. Wire-compatible with containerd.
#[allow(clippy::all, clippy::pedantic)]
pub mod containerd {
    pub mod services {
        pub mod containers {
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
    }
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
}
