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
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
