//! Generates the prost types from `proto/loyalty.proto` with protox (no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = format!("{proto_dir}/loyalty.proto");
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([&file], [proto_dir])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
