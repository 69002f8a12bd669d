//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates the prost
//! messages and tonic client and server code, plus the descriptor set server reflection
//! serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos =
        ["proto/converge/context/v1/context.proto", "proto/converge/cluster/v1/peer.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("converge_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .bytes(".")
        .btree_map(".")
        // Written by hand so one encoding serves every watcher (see src/watch_event.rs).
        .extern_path(".converge.context.v1.WatchEvent", "crate::watch_event::WatchEvent")
        .emit_rerun_if_changed(false)
        .build_transport(false)
        // Request decode failures are INVALID_ARGUMENT, not INTERNAL (see src/codec.rs).
        .codec_path("crate::codec::LedgerCodec")
        .compile_fds(fds)?;
    Ok(())
}
