//! The conformance vector files, copied from `shared/testdata` into `tests/data`.

use serde::Deserialize;

pub fn rfc6962() -> Rfc6962 {
    let text = include_str!("../data/rfc6962/vectors.json");
    serde_json::from_str(text).expect("rfc6962 vectors parse")
}

pub fn entry_hash() -> EntryHashVectors {
    let text = include_str!("../data/entry-hash/vectors.json");
    serde_json::from_str(text).expect("entry-hash vectors parse")
}

#[derive(Deserialize)]
pub struct Rfc6962 {
    pub schema: String,
    pub hasher: Vec<Hasher>,
    pub reference_tree: ReferenceTree,
    pub inclusion_proofs: Vec<InclusionKat>,
    pub consistency_proofs: Vec<ConsistencyKat>,
    pub inclusion_probes: Vec<InclusionProbe>,
    pub consistency_probes: Vec<ConsistencyProbe>,
    pub accumulated: Accumulated,
    pub derived: Derived,
}

#[derive(Deserialize)]
pub struct Hasher {
    pub desc: String,
    pub kind: String,
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub left: String,
    #[serde(default)]
    pub right: String,
    pub expected: String,
}

#[derive(Deserialize)]
pub struct ReferenceTree {
    pub leaf_inputs: Vec<String>,
    pub leaf_hashes: Vec<String>,
    pub complete_subtree_hashes: Vec<SubtreeHash>,
    pub roots: Vec<SizedRoot>,
}

#[derive(Deserialize)]
pub struct SubtreeHash {
    pub level: u8,
    pub index: u64,
    pub start: u64,
    pub end: u64,
    pub hash: String,
}

#[derive(Deserialize)]
pub struct SizedRoot {
    pub tree_size: u64,
    pub root: String,
}

#[derive(Deserialize)]
pub struct InclusionKat {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub root: String,
    pub proof: Vec<String>,
}

#[derive(Deserialize)]
pub struct ConsistencyKat {
    pub size1: u64,
    pub size2: u64,
    pub root1: String,
    pub root2: String,
    pub proof: Vec<String>,
}

#[derive(Deserialize)]
pub struct InclusionProbe {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub root: String,
    pub proof: Vec<String>,
    pub expect_valid_strict: bool,
    pub desc: String,
    pub source_file: String,
}

#[derive(Deserialize)]
pub struct ConsistencyProbe {
    pub size1: u64,
    pub size2: u64,
    pub root1: String,
    pub root2: String,
    pub proof: Vec<String>,
    pub expect_valid_strict: bool,
    pub desc: String,
    pub source_file: String,
}

#[derive(Deserialize)]
pub struct Accumulated {
    pub max_size: usize,
    pub subtree_hashes: Digest,
    pub subtree_inclusion_proofs: Digest,
    pub subtree_consistency_proofs: Digest,
}

#[derive(Deserialize)]
pub struct Digest {
    pub expected: String,
}

#[derive(Deserialize)]
pub struct Derived {
    pub inclusion_proofs: Vec<InclusionKat>,
    pub consistency_proofs: Vec<ConsistencyKat>,
}

#[derive(Deserialize)]
pub struct EntryHashVectors {
    pub entries: Vec<EntryVector>,
    pub root_of_first_three_hex: String,
}

#[derive(Deserialize)]
pub struct EntryVector {
    pub context_id: String,
    pub key: String,
    pub sequence: u64,
    pub appended_at_ns: u64,
    pub lamport_clock: u64,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub payload_hex: String,
    pub leaf_input_hex: String,
    pub content_hash_hex: String,
    pub id: String,
}
