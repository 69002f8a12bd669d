//! Crash testing for Converge Ledger.
//!
//! What it is: the `crash-writer` binary appends to a data directory as fast as it can,
//! printing one `ACK <context> <sequence> <content hash>` line per acknowledged append, until
//! it is killed; the tests kill it with SIGKILL at random moments and check what survived.
//! [`power`] cuts power on a simulated disk at every fsync and between, and checks every
//! state a cut can leave; the `power-cut` binary runs it for as long as asked.
//! [`cluster`] is the cluster fault suite: real node processes in network namespaces,
//! partitions, kills and pauses under load, and a checker over the recorded history; the
//! `cluster-faults` binary runs it for as long as asked.
//! What it is not: part of the product. Nothing depends on it.

pub mod cluster;
pub mod power;

/// The line the writer prints for an acknowledged append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The context.
    pub context: String,
    /// The sequence.
    pub sequence: u64,
    /// The content hash, hex.
    pub content_hash: String,
}

impl Ack {
    /// The line for this acknowledgement.
    pub fn line(&self) -> String {
        format!("ACK {} {} {}", self.context, self.sequence, self.content_hash)
    }

    /// Parses a line; `None` for anything else (including a line cut by the kill).
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        if parts.next()? != "ACK" {
            return None;
        }
        let context = parts.next()?.to_string();
        let sequence = parts.next()?.parse().ok()?;
        let content_hash = parts.next()?.to_string();
        (content_hash.len() == 64 && parts.next().is_none()).then_some(Self {
            context,
            sequence,
            content_hash,
        })
    }
}
