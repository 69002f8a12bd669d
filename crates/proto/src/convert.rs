//! Wire messages ⇄ API types, in one place. Everything that comes off the wire is checked
//! here (names, metadata, 32-byte hashes) before it becomes a domain value.

use std::sync::Arc;

use converge_api::{
    AppendRequest, ConsistencyProof, ContextInfo, GetRequest, GetResponse, InclusionProof,
    LedgerError, ListContextsRequest, ListContextsResponse, LoadRequest, LoadResponse,
    SnapshotResponse, TreeHead, WatchRequest,
};
use converge_core::{Entry, EntryParts, Hash, Key, LamportTime, Metadata, Seq, Timestamp};

use crate::v1;

/// An entry as it goes on the wire.
pub fn entry_to_wire(entry: &Entry) -> v1::Entry {
    v1::Entry {
        id: entry.id().to_hex(),
        key: entry.key().as_str().to_string(),
        payload: entry.payload().clone(),
        sequence: entry.sequence().0,
        appended_at_ns: entry.appended_at().0,
        metadata: entry.metadata().as_map().clone(),
        lamport_clock: entry.lamport().0,
        content_hash: bytes::Bytes::copy_from_slice(entry.content_hash().as_bytes()),
    }
}

fn bad(what: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::Verification(format!(
        "the ledger sent {what} that does not hold together: {detail}"
    ))
}

/// A hash from the wire: exactly 32 bytes.
pub fn hash_from_wire(bytes: &[u8], what: &str) -> Result<Hash, LedgerError> {
    Hash::try_from_slice(bytes).map_err(|e| bad(what, e))
}

/// An entry from the wire, checked field by field. Its content hash is taken as sent; a
/// verifying client also recomputes it.
pub fn entry_from_wire(entry: v1::Entry) -> Result<Entry, LedgerError> {
    let id = entry.id;
    let key = Key::try_new(entry.key).map_err(|e| bad("an entry", e))?;
    let metadata = Metadata::try_from_pairs(entry.metadata).map_err(|e| bad("an entry", e))?;
    let content_hash = hash_from_wire(&entry.content_hash, "an entry content hash")?;
    let parts = EntryParts {
        sequence: Seq(entry.sequence),
        key,
        payload: entry.payload,
        appended_at: Timestamp(entry.appended_at_ns),
        lamport: LamportTime(entry.lamport_clock),
        metadata,
    };
    let entry = Entry::from_trusted_parts(parts, content_hash);
    if !entry.id().is_written_as(&id) {
        return Err(bad(
            "an entry",
            format!("its id {id:?} is not the hex of its content hash's first 16 bytes"),
        ));
    }
    Ok(entry)
}

/// An append request from the wire (empty `append_id` means none, as proto3 strings do).
pub fn append_request_from_wire(req: v1::AppendRequest) -> AppendRequest {
    AppendRequest {
        context_id: req.context_id,
        key: req.key,
        payload: req.payload,
        metadata: req.metadata,
        received_lamport_clock: req.received_lamport_clock,
        append_id: Some(req.append_id).filter(|id| !id.is_empty()),
    }
}

/// An append request for the wire.
pub fn append_request_to_wire(req: AppendRequest) -> v1::AppendRequest {
    v1::AppendRequest {
        context_id: req.context_id,
        key: req.key,
        payload: req.payload,
        metadata: req.metadata,
        received_lamport_clock: req.received_lamport_clock,
        append_id: req.append_id.unwrap_or_default(),
    }
}

/// A get request from the wire.
pub fn get_request_from_wire(req: v1::GetRequest) -> GetRequest {
    GetRequest {
        context_id: req.context_id,
        key: Some(req.key).filter(|k| !k.is_empty()),
        after_sequence: req.after_sequence,
        limit: req.limit,
        before_sequence: req.before_sequence,
        newest_first: req.newest_first,
    }
}

/// A get request for the wire.
pub fn get_request_to_wire(req: GetRequest) -> v1::GetRequest {
    v1::GetRequest {
        context_id: req.context_id,
        key: req.key.unwrap_or_default(),
        after_sequence: req.after_sequence,
        limit: req.limit,
        before_sequence: req.before_sequence,
        newest_first: req.newest_first,
    }
}

/// A get response for the wire.
pub fn get_response_to_wire(resp: &GetResponse) -> v1::GetResponse {
    v1::GetResponse {
        entries: resp.entries.iter().map(|e| entry_to_wire(e)).collect(),
        latest_sequence: resp.latest_sequence,
    }
}

/// A get response from the wire.
pub fn get_response_from_wire(resp: v1::GetResponse) -> Result<GetResponse, LedgerError> {
    let entries = resp
        .entries
        .into_iter()
        .map(|e| entry_from_wire(e).map(Arc::new))
        .collect::<Result<_, _>>()?;
    Ok(GetResponse { entries, latest_sequence: resp.latest_sequence })
}

/// A snapshot response for the wire.
pub fn snapshot_response_to_wire(resp: SnapshotResponse) -> v1::SnapshotResponse {
    v1::SnapshotResponse {
        snapshot: resp.snapshot,
        sequence: resp.sequence,
        metadata: Some(v1::SnapshotMetadata {
            created_at_ns: resp.created_at_ns,
            entry_count: resp.entry_count,
            version: resp.version,
            merkle_root: bytes::Bytes::copy_from_slice(resp.merkle_root.as_bytes()),
        }),
    }
}

/// A snapshot response from the wire.
pub fn snapshot_response_from_wire(
    resp: v1::SnapshotResponse,
) -> Result<SnapshotResponse, LedgerError> {
    let metadata = resp.metadata.ok_or_else(|| bad("a snapshot", "no metadata"))?;
    Ok(SnapshotResponse {
        snapshot: resp.snapshot,
        sequence: resp.sequence,
        created_at_ns: metadata.created_at_ns,
        entry_count: metadata.entry_count,
        version: metadata.version,
        merkle_root: hash_from_wire(&metadata.merkle_root, "a snapshot root")?,
    })
}

/// A load request from the wire.
pub fn load_request_from_wire(req: v1::LoadRequest) -> LoadRequest {
    LoadRequest {
        context_id: req.context_id,
        snapshot: req.snapshot,
        fail_if_exists: req.fail_if_exists,
        load_id: Some(req.load_id).filter(|id| !id.is_empty()),
    }
}

/// A load request for the wire.
pub fn load_request_to_wire(req: LoadRequest) -> v1::LoadRequest {
    v1::LoadRequest {
        context_id: req.context_id,
        snapshot: req.snapshot,
        fail_if_exists: req.fail_if_exists,
        load_id: req.load_id.unwrap_or_default(),
    }
}

/// A load response for the wire.
pub fn load_response_to_wire(resp: LoadResponse) -> v1::LoadResponse {
    v1::LoadResponse {
        entries_restored: resp.entries_restored,
        latest_sequence: resp.latest_sequence,
    }
}

/// A load response from the wire.
pub fn load_response_from_wire(resp: &v1::LoadResponse) -> LoadResponse {
    LoadResponse { entries_restored: resp.entries_restored, latest_sequence: resp.latest_sequence }
}

/// A watch request from the wire.
pub fn watch_request_from_wire(req: v1::WatchRequest) -> WatchRequest {
    WatchRequest {
        context_id: req.context_id,
        key: Some(req.key).filter(|k| !k.is_empty()),
        from_sequence: req.from_sequence,
    }
}

/// A watch request for the wire.
pub fn watch_request_to_wire(req: WatchRequest) -> v1::WatchRequest {
    v1::WatchRequest {
        context_id: req.context_id,
        key: req.key.unwrap_or_default(),
        from_sequence: req.from_sequence,
    }
}

/// A tree head for the wire.
pub fn tree_head_to_wire(head: &TreeHead) -> v1::TreeHead {
    v1::TreeHead {
        tree_size: head.tree_size,
        root_hash: bytes::Bytes::copy_from_slice(head.root_hash.as_bytes()),
        lamport_clock: head.lamport_clock,
    }
}

/// A tree head from the wire.
pub fn tree_head_from_wire(head: &v1::TreeHead) -> Result<TreeHead, LedgerError> {
    Ok(TreeHead {
        tree_size: head.tree_size,
        root_hash: hash_from_wire(&head.root_hash, "a tree head")?,
        lamport_clock: head.lamport_clock,
    })
}

/// A list-contexts request from the wire.
pub fn list_request_from_wire(req: v1::ListContextsRequest) -> ListContextsRequest {
    ListContextsRequest { prefix: req.prefix, page_token: req.page_token, limit: req.limit }
}

/// A list-contexts request for the wire.
pub fn list_request_to_wire(req: ListContextsRequest) -> v1::ListContextsRequest {
    v1::ListContextsRequest { prefix: req.prefix, page_token: req.page_token, limit: req.limit }
}

/// A page of contexts for the wire.
pub fn list_response_to_wire(resp: ListContextsResponse) -> v1::ListContextsResponse {
    v1::ListContextsResponse {
        contexts: resp
            .contexts
            .into_iter()
            .map(|c| v1::ContextInfo {
                context_id: c.context_id,
                tree_size: c.head.tree_size,
                root_hash: bytes::Bytes::copy_from_slice(c.head.root_hash.as_bytes()),
                lamport_clock: c.head.lamport_clock,
                latest_appended_at_ns: c.latest_appended_at_ns,
            })
            .collect(),
        next_page_token: resp.next_page_token,
    }
}

/// A page of contexts from the wire (each root must be 32 bytes).
pub fn list_response_from_wire(
    resp: v1::ListContextsResponse,
) -> Result<ListContextsResponse, LedgerError> {
    let contexts = resp
        .contexts
        .into_iter()
        .map(|c| {
            Ok(ContextInfo {
                head: TreeHead {
                    tree_size: c.tree_size,
                    root_hash: hash_from_wire(&c.root_hash, "a context's root")?,
                    lamport_clock: c.lamport_clock,
                },
                context_id: c.context_id,
                latest_appended_at_ns: c.latest_appended_at_ns,
            })
        })
        .collect::<Result<_, LedgerError>>()?;
    Ok(ListContextsResponse { contexts, next_page_token: resp.next_page_token })
}

fn hashes_to_wire(hashes: &[Hash]) -> Vec<bytes::Bytes> {
    hashes.iter().map(|h| bytes::Bytes::copy_from_slice(h.as_bytes())).collect()
}

fn hashes_from_wire(hashes: &[bytes::Bytes], what: &str) -> Result<Vec<Hash>, LedgerError> {
    hashes.iter().map(|h| hash_from_wire(h, what)).collect()
}

/// An inclusion proof for the wire.
pub fn inclusion_to_wire(proof: &InclusionProof) -> v1::InclusionProof {
    v1::InclusionProof {
        leaf_index: proof.leaf_index,
        tree_size: proof.tree_size,
        hashes: hashes_to_wire(&proof.hashes),
        root_hash: bytes::Bytes::copy_from_slice(proof.root_hash.as_bytes()),
    }
}

/// An inclusion proof from the wire.
pub fn inclusion_from_wire(proof: &v1::InclusionProof) -> Result<InclusionProof, LedgerError> {
    Ok(InclusionProof {
        leaf_index: proof.leaf_index,
        tree_size: proof.tree_size,
        hashes: hashes_from_wire(&proof.hashes, "an inclusion proof")?,
        root_hash: hash_from_wire(&proof.root_hash, "an inclusion proof root")?,
    })
}

/// A consistency proof for the wire.
pub fn consistency_to_wire(proof: &ConsistencyProof) -> v1::ConsistencyProof {
    v1::ConsistencyProof {
        from_size: proof.from_size,
        to_size: proof.to_size,
        hashes: hashes_to_wire(&proof.hashes),
        from_root: bytes::Bytes::copy_from_slice(proof.from_root.as_bytes()),
        to_root: bytes::Bytes::copy_from_slice(proof.to_root.as_bytes()),
    }
}

/// A consistency proof from the wire.
pub fn consistency_from_wire(
    proof: &v1::ConsistencyProof,
) -> Result<ConsistencyProof, LedgerError> {
    Ok(ConsistencyProof {
        from_size: proof.from_size,
        to_size: proof.to_size,
        hashes: hashes_from_wire(&proof.hashes, "a consistency proof")?,
        from_root: hash_from_wire(&proof.from_root, "a consistency proof root")?,
        to_root: hash_from_wire(&proof.to_root, "a consistency proof root")?,
    })
}

#[cfg(test)]
mod tests {
    use converge_core::ContextId;

    use super::*;

    fn wire_entry() -> v1::Entry {
        let parts = EntryParts {
            sequence: Seq(3),
            key: Key::try_new("facts").unwrap(),
            payload: bytes::Bytes::from_static(b"x"),
            appended_at: Timestamp(5),
            lamport: LamportTime(8),
            metadata: Metadata::default(),
        };
        entry_to_wire(&Entry::seal(&ContextId::try_new("c").unwrap(), parts))
    }

    #[test]
    fn an_entry_round_trips() {
        let wire = wire_entry();
        let entry = entry_from_wire(wire.clone()).unwrap();
        assert_eq!(entry_to_wire(&entry), wire);
    }

    #[test]
    fn an_entry_whose_id_is_not_its_hashs_is_refused() {
        for id in ["", "00112233445566778899aabbccddeeff"] {
            let mut wire = wire_entry();
            wire.id = id.into();
            let err = entry_from_wire(wire).unwrap_err();
            assert!(matches!(err, LedgerError::Verification(_)), "{err:?}");
            assert!(err.to_string().contains("its id"), "{err}");
        }
        let mut wire = wire_entry();
        wire.id = wire.id.to_uppercase();
        assert!(entry_from_wire(wire).is_err(), "ids are lowercase on the wire");
    }
}
