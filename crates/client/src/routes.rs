//! Where an append goes in a cluster: to the node that leads its context's shard.
//!
//! Any node takes any append (CONTRACT §5), but one that does not lead the shard forwards it
//! to the leader: a second hop, and with shard leaders spread over three nodes, two appends in
//! three pay it. A client given several nodes (`A,B,C`) therefore learns, from each node's
//! `cluster status` (role reader), which node it is and who leads each shard, and sends an
//! append straight to its shard's leader ([`converge_core::shard_of`]).
//!
//! The table is a hint, never a rule: it is learned again when a second has passed and an
//! append asks for it, a node that fails is dropped from it at once, and a node that no longer
//! leads the shard still forwards. So a stale table costs a hop, not an error. Appends with
//! an order to keep ([`crate::Client`]'s `append_queued`) do not use it. Servers that answer
//! `cluster status` with `UNIMPLEMENTED` (single nodes) or refuse it turn it off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use converge_proto::cluster;

use crate::nodes::Nodes;

/// How old the table may grow before an append asks for it to be learned again.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How long a node gets to answer `cluster status`.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// Per shard, the index of the server that leads it, as last learned.
#[derive(Default)]
pub(crate) struct Routes {
    table: RwLock<Table>,
    /// A refresh is under way.
    refreshing: AtomicBool,
    /// The servers do not answer `cluster status` (single nodes, or the token may not ask).
    off: AtomicBool,
}

#[derive(Default)]
struct Table {
    /// Per shard (their count is the cluster's), the leader's server index, if known.
    leaders: Vec<Option<usize>>,
    learned: Option<Instant>,
}

/// What one server said of itself and the shards.
pub(crate) struct Said {
    server: usize,
    node: u64,
    /// Per shard: its term and leader, as that server sees them.
    shards: Vec<(u64, Option<u64>)>,
}

impl Said {
    /// From server `server`'s `cluster status` answer, which lists every shard once (a shard
    /// number beyond the list is ignored, so no answer can make the table large).
    pub(crate) fn from_status(server: usize, status: &cluster::StatusResponse) -> Self {
        let mut shards = vec![(0, None); status.shards.len()];
        for s in &status.shards {
            if let Some(slot) = usize::try_from(s.shard).ok().and_then(|i| shards.get_mut(i)) {
                *slot = (s.term, s.leader);
            }
        }
        Self { server, node: status.node, shards }
    }
}

impl Routes {
    /// The server leading the shard of `context_id`, if known.
    pub(crate) fn server_for(&self, context_id: &str) -> Option<usize> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let count = u32::try_from(table.leaders.len()).ok().filter(|c| *c > 0)?;
        let shard = converge_core::shard_of(context_id, count) as usize;
        table.leaders.get(shard).copied().flatten()
    }

    /// Whether the table should be learned (again), and no one is doing it: if so, the caller
    /// does it and then calls [`Self::learn`].
    pub(crate) fn claim_refresh(&self) -> bool {
        if self.off.load(Ordering::Relaxed) {
            return false;
        }
        let due = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            table.learned.is_none_or(|t| t.elapsed() >= REFRESH_EVERY)
        };
        due && !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Takes what the servers said: a shard's leader is the one named by the answer with the
    /// highest term for it, where that leader is one of the servers. `refused`: every server
    /// that answered refused the question (then routing stays off).
    pub(crate) fn learn(&self, said: &[Said], refused: bool) {
        if refused && said.is_empty() {
            self.off.store(true, Ordering::Relaxed);
        }
        let servers: HashMap<u64, usize> = said.iter().map(|s| (s.node, s.server)).collect();
        let count = said.iter().map(|s| s.shards.len()).max().unwrap_or(0);
        let mut best: Vec<(u64, Option<u64>)> = vec![(0, None); count];
        for s in said {
            for (shard, &(term, leader)) in s.shards.iter().enumerate() {
                if leader.is_some() && (best[shard].1.is_none() || term > best[shard].0) {
                    best[shard] = (term, leader);
                }
            }
        }
        let leaders =
            best.iter().map(|(_, l)| l.and_then(|id| servers.get(&id).copied())).collect();
        *self.table.write().unwrap_or_else(PoisonError::into_inner) =
            Table { leaders, learned: Some(Instant::now()) };
        self.refreshing.store(false, Ordering::Release);
    }

    /// Server `server` failed a call: nothing goes to it by the table until it is learned
    /// again.
    pub(crate) fn forget(&self, server: usize) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        for leader in &mut table.leaders {
            if *leader == Some(server) {
                *leader = None;
            }
        }
        table.learned = None;
    }
}

/// Asks every server for its `cluster status`, at once, and learns the table from the answers.
pub(crate) async fn refresh(nodes: &Nodes) {
    let asks = (0..nodes.len()).map(|server| {
        let mut admin = nodes.node(server).admin.clone();
        async move {
            let answer = tokio::time::timeout(ASK_TIMEOUT, admin.status(cluster::StatusRequest {}));
            (server, answer.await)
        }
    });
    let mut said = Vec::new();
    let mut refused = false;
    for (server, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(Ok(status)) => said.push(Said::from_status(server, status.get_ref())),
            Ok(Err(status)) => {
                refused |= matches!(
                    status.code(),
                    tonic::Code::Unimplemented
                        | tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                );
            }
            Err(_) => {}
        }
    }
    tracing::debug!(answered = said.len(), "learned the shards' leaders");
    nodes.routes.learn(&said, refused);
}

#[cfg(test)]
mod tests {
    use super::{Routes, Said};

    fn said(server: usize, node: u64, shards: &[(u64, Option<u64>)]) -> Said {
        Said { server, node, shards: shards.to_vec() }
    }

    /// The first context id (ctx-0, ctx-1, …) in each of `count` shards.
    fn one_per_shard(count: u32) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; count as usize];
        for i in 0.. {
            let id = format!("ctx-{i}");
            let shard = converge_core::shard_of(&id, count) as usize;
            found[shard].get_or_insert(id);
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        found.into_iter().flatten().collect()
    }

    #[test]
    fn an_append_goes_to_its_shards_leader() {
        let routes = Routes::default();
        let contexts = one_per_shard(3);
        assert_eq!(routes.server_for(&contexts[0]), None, "nothing learned yet");
        // Node ids 10, 20, 30 are servers 2, 0, 1; shard 0 led by 30, 1 by 10, 2 by 20.
        let table = [(4, Some(30)), (4, Some(10)), (4, Some(20))];
        routes.learn(
            &[said(0, 20, &table), said(1, 30, &table), said(2, 10, &[(0, None); 3])],
            false,
        );
        let servers: Vec<_> = contexts.iter().map(|c| routes.server_for(c)).collect();
        assert_eq!(servers, [Some(1), Some(2), Some(0)]);
    }

    #[test]
    fn the_highest_term_names_the_leader() {
        let routes = Routes::default();
        let contexts = one_per_shard(1);
        routes.learn(&[said(0, 1, &[(5, Some(1))]), said(1, 2, &[(6, Some(2))])], false);
        assert_eq!(routes.server_for(&contexts[0]), Some(1));
    }

    #[test]
    fn a_leader_that_is_not_a_server_is_not_a_route() {
        let routes = Routes::default();
        let contexts = one_per_shard(1);
        routes.learn(&[said(0, 1, &[(5, Some(99))])], false);
        assert_eq!(routes.server_for(&contexts[0]), None);
    }

    #[test]
    fn a_failed_server_is_forgotten_and_a_refresh_is_due() {
        let routes = Routes::default();
        let contexts = one_per_shard(2);
        routes.learn(&[said(0, 1, &[(1, Some(1)), (1, Some(2))]), said(1, 2, &[])], false);
        assert!(!routes.claim_refresh(), "just learned");
        routes.forget(0);
        assert_eq!(routes.server_for(&contexts[0]), None);
        assert_eq!(routes.server_for(&contexts[1]), Some(1));
        assert!(routes.claim_refresh());
        assert!(!routes.claim_refresh(), "one refresh at a time");
    }

    #[test]
    fn a_shard_number_beyond_the_answer_is_ignored() {
        let shard = |shard, leader| converge_proto::cluster::ShardStatus {
            shard,
            leader: Some(leader),
            term: 1,
            ..Default::default()
        };
        let status = converge_proto::cluster::StatusResponse {
            node: 7,
            shards: vec![shard(0, 7), shard(u32::MAX, 7)],
            ..Default::default()
        };
        let said = Said::from_status(0, &status);
        assert_eq!(said.shards, [(1, Some(7)), (0, None)]);
    }

    #[test]
    fn servers_that_refuse_turn_it_off() {
        let routes = Routes::default();
        routes.learn(&[], true);
        assert!(!routes.claim_refresh());
    }
}
