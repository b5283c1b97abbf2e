//! Generates the prost types from `proto/loyalty.proto` with protox (no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The manifest directory as cargo gives it to this run, not as it was when the script
    // was compiled: a target directory shared by clones at other paths reuses the compiled
    // script (cargo fingerprints a workspace's packages by relative path).
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = format!("{manifest}/../../proto");
    let file = format!("{proto_dir}/loyalty.proto");
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([&file], [&proto_dir])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
