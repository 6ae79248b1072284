//! Generates the `querypulse.v1` tonic/prost code (and the Prometheus
//! remote-write messages) with a vendored `protoc`, so a
//! machine without a system `protoc` builds the workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["querypulse/v1/ingest.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["."])?;

    // Prometheus remote write: messages only, no service.
    let remote_write = "prometheus/remote.proto";
    println!("cargo:rerun-if-changed={remote_write}");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&[remote_write], &["."])?;
    Ok(())
}
