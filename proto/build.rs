//! Compiles `proto/fdr/v1/fdr.proto`, our subset of the CRI
//! (`proto/cri/runtime/v1/api.proto`) and of containerd's metadata API
//! (`proto/containerd/…`) with protox (pure Rust, no protoc).
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "fdr/v1/fdr.proto",
            "cri/runtime/v1/api.proto",
            "containerd/services/containers/v1/containers.proto",
            "containerd/services/images/v1/images.proto",
        ],
        ["proto"],
    )?;
    // Maps as BTreeMaps: an fdr.v1 message then encodes, and renders as
    // JSON, the same way every time (a snapshot is named by its encoding's
    // hash; exports from an agent and a console are byte-identical).
    tonic_prost_build::configure()
        .btree_map(".fdr.v1")
        .compile_fds(fds)?;
    Ok(())
}
