//! The shard a context belongs to in a cluster (CONTRACT §5). Nodes use it to send an append to
//! its shard's Raft; clients use it to send the append to that shard's leader.

use sha2::{Digest as _, Sha256};

/// The shard of `context_id` among `shards`: the first eight bytes of SHA-256(context id),
/// big-endian, modulo the shard count (a count of 0 is taken as 1).
pub fn shard_of(context_id: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(context_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let shard = u64::from_be_bytes(first) % u64::from(shards.max(1));
    u32::try_from(shard).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn shards_follow_the_contract() {
        // SHA-256("a") = ca978112ca1bbdca…; 0xca978112ca1bbdca mod 8 = 2.
        assert_eq!(shard_of("a", 8), 2);
        assert_eq!(shard_of("a", 1), 0);
        assert_eq!(shard_of("a", 0), 0);
        let spread: std::collections::BTreeSet<u32> =
            (0..200).map(|i| shard_of(&format!("ctx-{i}"), 8)).collect();
        assert_eq!(spread.len(), 8, "200 contexts land on every one of 8 shards");
    }
}
