//! Generates the kubelet device-plugin gRPC code (client and server) from the vendored
//! `proto/deviceplugin_v1beta1.proto` into `OUT_DIR`. protoc comes from
//! `protoc-bin-vendored`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/deviceplugin_v1beta1.proto";
    println!("cargo:rerun-if-changed={proto}");
    // `std::env::set_var("PROTOC", ..)` is unsafe in edition 2024 (and denied by the
    // workspace lints); prost-build's Config takes the protoc path directly instead.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[proto], &["proto"])?;
    Ok(())
}
