//! The node's Raft metrics in Prometheus text: per shard its role, term, last log index,
//! commit and apply indices, and (on the leader) how far behind each peer is.

use std::fmt::Write as _;

use openraft::ServerState;

use crate::node::Cluster;
use crate::types::node_name;

impl Cluster {
    /// Appends the metrics to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        let status = self.status_local();
        let _ =
            writeln!(out, "# HELP converge_raft_leader 1 if this node leads the shard, else 0.");
        let _ = writeln!(out, "# TYPE converge_raft_leader gauge");
        for shard in &status.shards {
            let leads = u8::from(shard.role == "leader");
            let _ = writeln!(out, "converge_raft_leader{{shard=\"{}\"}} {leads}", shard.shard);
        }
        let _ = writeln!(
            out,
            "# HELP converge_raft_role This node's role in the shard (the label), always 1."
        );
        let _ = writeln!(out, "# TYPE converge_raft_role gauge");
        for shard in &status.shards {
            let _ = writeln!(
                out,
                "converge_raft_role{{shard=\"{}\",role=\"{}\"}} 1",
                shard.shard, shard.role
            );
        }
        for (name, help, value) in [
            (
                "converge_raft_term",
                "The shard's current term.",
                (|s: &converge_proto::cluster::ShardStatus| s.term) as fn(&_) -> u64,
            ),
            (
                "converge_raft_committed_index",
                "The shard's committed log index as this node knows it.",
                |s| s.committed,
            ),
            ("converge_raft_applied_index", "The shard's log index this node has applied.", |s| {
                s.applied
            }),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for shard in &status.shards {
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", shard.shard, value(shard));
            }
        }
        let _ = writeln!(
            out,
            "# HELP converge_cluster_forwarded_total Writes this node took for a shard another node leads, sent to that leader (each attempt)."
        );
        let _ = writeln!(out, "# TYPE converge_cluster_forwarded_total counter");
        let forwarded = self.inner.forwarded.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "converge_cluster_forwarded_total {forwarded}");
        let _ = writeln!(
            out,
            "# HELP converge_raft_peer_lag Entries a peer lacks of the leader's log (on the shard's leader only)."
        );
        let _ = writeln!(out, "# TYPE converge_raft_peer_lag gauge");
        for (shard, raft) in status.shards.iter().zip(&self.inner.shards) {
            let m = raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                continue;
            }
            let last = m.last_log_index.unwrap_or(0);
            for peer in &shard.peers {
                let lag = peer.matched.map_or(last + 1, |matched| last.saturating_sub(matched));
                let _ = writeln!(
                    out,
                    "converge_raft_peer_lag{{shard=\"{}\",peer=\"{}\"}} {lag}",
                    shard.shard,
                    node_name(peer.node)
                );
            }
        }
    }
}
