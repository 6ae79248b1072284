//! Generates the `querypulse.v1` tonic/prost code with a vendored `protoc`, so a
//! machine without a system `protoc` builds the workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["querypulse/v1/ingest.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["."])?;
    Ok(())
}
