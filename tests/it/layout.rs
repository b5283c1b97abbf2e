//! The shape the design card and issue 18 fix, checked from the files: which crate may
//! depend on what (the core is pure: no I/O, no clock; the store knows no Kafka; the Kafka
//! edge reaches RocksDB only through the store), and no file of the core much over 600
//! lines.

use std::path::Path;

/// The names under `[dependencies]` of a crate's manifest.
fn dependencies(krate: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("crates/{krate}/Cargo.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['.', '=', ' ']).next().unwrap();
            out.push(name.to_string());
        }
    }
    assert!(
        !out.is_empty(),
        "no dependencies read from {}",
        path.display()
    );
    out
}

#[test]
fn each_crate_depends_only_on_what_its_layer_may() {
    let forbidden: [(&str, &[&str]); 3] = [
        // The pure engine: no storage, no broker, no runtime, no HTTP.
        (
            "core",
            &[
                "rocksdb",
                "rdkafka",
                "rdkafka-sys",
                "tokio",
                "axum",
                "hyper",
                "loyalty-store",
            ],
        ),
        // The durable state: no broker.
        ("store", &["rdkafka", "rdkafka-sys", "tokio"]),
        // The Kafka edge: RocksDB only through loyalty-store.
        ("stream", &["rocksdb"]),
    ];
    for (krate, never) in forbidden {
        let deps = dependencies(krate);
        for d in never {
            assert!(
                !deps.iter().any(|x| x == d),
                "crates/{krate} depends on {d}: {deps:?}"
            );
        }
    }
    // The names are read (a parser that read none would pass the checks above).
    assert!(dependencies("stream").iter().any(|d| d == "loyalty-store"));
    assert!(dependencies("store").iter().any(|d| d == "rocksdb"));
    assert!(dependencies("stream").iter().any(|d| d == "rdkafka"));
}

#[test]
fn no_file_of_the_core_is_much_over_600_lines() {
    fn walk(dir: &Path, out: &mut Vec<(usize, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let n = std::fs::read_to_string(&p).unwrap().lines().count();
                out.push((n, p.display().to_string()));
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/core/src"),
        &mut files,
    );
    assert!(files.len() > 20, "{files:?}");
    let long: Vec<_> = files.iter().filter(|(n, _)| *n > 650).collect();
    assert!(long.is_empty(), "over 650 lines: {long:?}");
}
