//! ARCHITECTURE.md's invariant for the core, as a test: no IO, threads or clocks, and no crate
//! that brings them.

use std::path::Path;

/// The only crates the core may depend on, each pure computation.
const ALLOWED: [&str; 4] = ["bytes", "crc32c", "sha2", "thiserror"];

#[test]
fn the_core_depends_on_no_io_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some(name) = line.split(['=', ' ']).next().filter(|n| !n.is_empty()) else { continue };
        if section == "[dependencies]" {
            assert!(ALLOWED.contains(&name), "the core must stay pure, yet depends on {name}");
        }
    }
}

#[test]
fn the_core_does_no_io_spawns_no_threads_and_reads_no_clock() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::thread",
        "std::process",
        "std::env",
        "SystemTime",
        "Instant",
        "tokio",
        "std::io::stdin",
    ];
    let mut checked = 0;
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests at the end of a file may use what they like.
            let code = text.split("#[cfg(test)]").next().unwrap();
            for word in forbidden {
                assert!(!code.contains(word), "{} uses {word}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "read {checked} files");
}
