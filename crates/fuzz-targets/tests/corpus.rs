//! The fuzz targets in the normal test suite: every committed corpus file and every past
//! finding (`fuzz/regressions/`) is replayed, then each corpus file is mutated a bounded
//! number of times (deterministically) and fed to its target.
#![allow(clippy::cast_possible_truncation, reason = "test arithmetic on small numbers")]

use std::path::{Path, PathBuf};

use converge_fuzz_targets::TARGETS;

/// Mutations per corpus file per run.
const MUTATIONS: usize = 400;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_file())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| (e.path(), std::fs::read(e.path()).expect("readable corpus file")))
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_file_and_past_finding_replays() {
    for (name, target) in TARGETS {
        let corpus = files(&root().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has seeds");
        for (path, bytes) in
            corpus.iter().chain(files(&root().join("regressions").join(name)).iter())
        {
            let outcome = std::panic::catch_unwind(|| target(bytes));
            assert!(outcome.is_ok(), "{name} panicked on {}", path.display());
        }
    }
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
            3 if !data.is_empty() => {
                let i = rng.below(data.len());
                data.remove(i);
            }
            4 => data.truncate(rng.below(data.len() + 1)),
            _ if data.len() >= 4 => {
                // An interesting integer where a length or count might be.
                let i = rng.below(data.len() - 3);
                let value = [0u32, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, u32::MAX][rng.below(7)];
                data[i..i + 4].copy_from_slice(&value.to_be_bytes());
            }
            _ => {}
        }
    }
    data
}

#[test]
fn bounded_mutations_of_the_corpus_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, target) in TARGETS {
        for (path, seed) in files(&root().join("corpus").join(name)) {
            for _ in 0..MUTATIONS {
                let data = mutate(&mut rng, &seed);
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(
                    outcome.is_ok(),
                    "{name} panicked on a mutation of {} (save these bytes to fuzz/regressions/{name}/): {}",
                    path.display(),
                    converge_core::hex::encode(&data)
                );
            }
        }
    }
}
