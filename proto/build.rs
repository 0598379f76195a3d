//! Compiles every .proto under `ursa/` with protox (pure Rust), so a fresh
//! machine needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "ursa/node/v1/node.proto",
        "ursa/netd/v1/netd.proto",
        "ursa/blockd/v1/blockd.proto",
        "ursa/compute/v1/agent.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
