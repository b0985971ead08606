//! Compiles the protobuf wire types with protox (pure Rust, no protoc install)
//! and generates their canonical protobuf JSON mapping with pbjson.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/natter/common/v1/common.proto",
        "proto/natter/auth/v1/auth.proto",
        "proto/natter/message/v1/message.proto",
        "proto/natter/delivery/v1/delivery.proto",
        "proto/natter/presence/v1/presence.proto",
        "proto/natter/social/v1/social.proto",
        "proto/natter/group/v1/group.proto",
        "proto/natter/edge/v1/edge.proto",
        "proto/natter/file/v1/file.proto",
        "proto/natter/search/v1/search.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(protos, ["proto"])?;
    let descriptor_path = out.join("descriptors.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    prost_build::Config::new()
        // A file's bytes as `Bytes`: decoded from a NATS payload, they share
        // its memory instead of being copied (uploads and downloads go
        // through in chunks of 512 KiB).
        .bytes([
            ".natter.file.v1.WriteRequest.data",
            ".natter.file.v1.ReadReply.data",
        ])
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .build(&[".natter"])?;
    Ok(())
}
