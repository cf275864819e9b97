//! Holds the dependency direction: `urbis-core` is pure and depends on nothing that does I/O.

#[test]
fn core_depends_on_no_io_crate() {
    let manifest = std::fs::read_to_string(crate::manifest_dir().join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for forbidden in [
        "tokio",
        "rocksdb",
        "quinn",
        "axum",
        "hyper",
        "reqwest",
        "rustls",
        "urbis-shard",
        "urbis-beacon",
        "urbis-bridge",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "urbis-core must stay pure, but depends on {forbidden}"
        );
    }
}

#[test]
fn core_source_never_reads_the_clock_or_the_filesystem() {
    let dir = crate::manifest_dir().join("src");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for forbidden in
            ["SystemTime::now", "Instant::now", "std::fs::", "std::net::", "thread::spawn"]
        {
            assert!(!text.contains(forbidden), "{} uses {forbidden}", path.display());
        }
    }
}
