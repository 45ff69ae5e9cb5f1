//! Compiles `proto/fdr/v1/fdr.proto` and our subset of the CRI
//! (`proto/cri/runtime/v1/api.proto`) with protox (pure Rust, no protoc).
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["fdr/v1/fdr.proto", "cri/runtime/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
