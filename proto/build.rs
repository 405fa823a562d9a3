//! Compiles the .proto files with protox (pure Rust, no system protoc) and
//! generates the tonic clients and servers.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "sms/v1/sms.proto",
    "auth/v1/auth.proto",
    "admin/v1/admin.proto",
    "config/v1/config.proto",
    "dispatch/v1/dispatch.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set itself; reflection needs it.
    std::fs::write(
        out.join("smsgw_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
