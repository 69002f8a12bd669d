//! The cluster-wide limits (CONTRACT §5, "Apply is deterministic"): what decides whether a
//! write is accepted, the same on every node whatever its own flags.
//!
//! They are fixed at `--bootstrap` (from the bootstrapping node's `--payload-bytes-max` and
//! `--response-bytes-max`) as a command in every shard's log, changed only by another such
//! command (`converge-ledger cluster limits`), and saved with each shard's applied position.
//! A request is checked against them where it enters, before it is proposed, so a request the
//! ledger refuses never enters the log; apply judges nothing by limits a node could set
//! differently. A shard whose log has set none yet (a cluster made before they existed) is
//! checked against the node's own flags until a leader records its own there.

use converge_api::{AppendRequest, LedgerError, LoadRequest};
use converge_core::Limits;
use converge_core::limits::PAYLOAD_BYTES_MAX_CEILING;
use converge_proto::cluster as pb;
use tokio::sync::watch;

/// The largest snapshot blob a cluster's Load may carry: it rides one Raft entry, which one
/// record of the Raft log holds whole ([`crate::log_store::RECORD_BYTES_MAX`]).
pub const LOAD_BYTES_MAX_CEILING: usize = 64 * 1024 * 1024;

/// What decides, cluster-wide, whether a write is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterLimits {
    /// Largest payload of an append, in bytes.
    pub payload_bytes_max: usize,
    /// Largest snapshot blob a Load may carry, in bytes.
    pub load_bytes_max: usize,
}

impl ClusterLimits {
    /// The limits a node's own flags describe (what it records when it bootstraps).
    pub fn of_node(limits: &Limits) -> Self {
        Self {
            payload_bytes_max: limits.payload_bytes_max,
            load_bytes_max: limits.response_bytes_max.min(LOAD_BYTES_MAX_CEILING),
        }
    }

    /// Checks that the limits can be honoured by every node and one Raft record.
    pub fn validate(self) -> Result<Self, String> {
        if self.payload_bytes_max == 0 || self.payload_bytes_max > PAYLOAD_BYTES_MAX_CEILING {
            return Err(format!(
                "the payload limit must be between 1 and {PAYLOAD_BYTES_MAX_CEILING} bytes, got {}",
                self.payload_bytes_max
            ));
        }
        if self.load_bytes_max < self.payload_bytes_max
            || self.load_bytes_max > LOAD_BYTES_MAX_CEILING
        {
            return Err(format!(
                "the load limit must be between the payload limit ({}) and {LOAD_BYTES_MAX_CEILING} bytes, got {}",
                self.payload_bytes_max, self.load_bytes_max
            ));
        }
        Ok(self)
    }

    /// As the log carries them.
    pub fn to_wire(self) -> pb::ClusterLimits {
        pb::ClusterLimits {
            payload_bytes_max: self.payload_bytes_max as u64,
            load_bytes_max: self.load_bytes_max as u64,
        }
    }

    /// From the log, checked.
    pub fn from_wire(wire: &pb::ClusterLimits) -> Result<Self, String> {
        let size = |v: u64| usize::try_from(v).map_err(|_| format!("{v} bytes does not fit"));
        Self {
            payload_bytes_max: size(wire.payload_bytes_max)?,
            load_bytes_max: size(wire.load_bytes_max)?,
        }
        .validate()
    }

    /// Refuses an append these limits (or the contract) do not allow.
    pub fn check_append(&self, request: &AppendRequest) -> Result<(), LedgerError> {
        converge_ledger::check_append(request, self.payload_bytes_max).map_err(|e| match e {
            LedgerError::ResourceExhausted(_) => LedgerError::ResourceExhausted(format!(
                "payload is {} bytes; the cluster's limit is {} bytes (shown by `converge-ledger cluster status`, changed by `converge-ledger cluster limits`); send a smaller payload",
                request.payload.len(),
                self.payload_bytes_max
            )),
            other => other,
        })
    }

    /// Refuses a load these limits (or the contract) do not allow: the blob is verified whole
    /// before it is proposed.
    pub fn check_load(&self, request: &LoadRequest) -> Result<(), LedgerError> {
        if request.snapshot.len() > self.load_bytes_max {
            return Err(LedgerError::ResourceExhausted(format!(
                "the snapshot is {} bytes; the cluster's load limit is {} bytes (changed by `converge-ledger cluster limits --load-bytes-max`)",
                request.snapshot.len(),
                self.load_bytes_max
            )));
        }
        let limits =
            Limits { payload_bytes_max: self.payload_bytes_max, response_bytes_max: usize::MAX };
        converge_ledger::check_load(request, &limits)
    }
}

/// The limits one shard's log has set, as this node applied them (`None`: none yet).
pub(crate) type InForce = watch::Receiver<Option<ClusterLimits>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_check_and_round_trip() {
        let node = ClusterLimits::of_node(&Limits::default());
        assert_eq!(ClusterLimits::from_wire(&node.to_wire()), Ok(node));
        let huge = Limits { payload_bytes_max: 1 << 20, response_bytes_max: 1 << 40 };
        assert_eq!(ClusterLimits::of_node(&huge).load_bytes_max, LOAD_BYTES_MAX_CEILING);
        for bad in [(0, 10), (10, 9), (10, LOAD_BYTES_MAX_CEILING + 1)] {
            let limits = ClusterLimits { payload_bytes_max: bad.0, load_bytes_max: bad.1 };
            assert!(limits.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_append_over_the_clusters_limit_is_refused_with_a_clear_message() {
        let limits = ClusterLimits { payload_bytes_max: 4, load_bytes_max: 4 };
        assert_eq!(limits.check_append(&AppendRequest::new("c", "k", "1234")), Ok(()));
        let Err(LedgerError::ResourceExhausted(why)) =
            limits.check_append(&AppendRequest::new("c", "k", "12345"))
        else {
            panic!("a payload over the limit must be RESOURCE_EXHAUSTED");
        };
        assert!(why.contains("cluster's limit is 4 bytes"), "{why}");
        let bad_key = limits.check_append(&AppendRequest::new("c", "", "1"));
        assert!(matches!(bad_key, Err(LedgerError::InvalidArgument(_))), "{bad_key:?}");
    }
}
