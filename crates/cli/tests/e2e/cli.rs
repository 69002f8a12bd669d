//! The client subcommands for people and scripts: output, `--json`, exit codes (0 ok, 1
//! verification failed, 2 error), stdin payloads, and a quiet exit on a closed pipe.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use converge_api::{AppendRequest, GetRequest, LedgerApi as _, LedgerError, ListContextsRequest};
use converge_ledger::{Ledger, LedgerConfig};
use converge_proto::v1;
use converge_proto::v1::context_service_server::{ContextService, ContextServiceServer};
use converge_proto::v1::integrity_service_server::{IntegrityService, IntegrityServiceServer};
use converge_server::metrics::Metrics;
use converge_server::service::{LedgerService, WatchEvents};
use tonic::{Request, Response, Status};

use crate::node::{BIN, Node};

fn run(node_url: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("CONVERGE_LEDGER_SERVER", node_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn subcommands_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let url = node.url();
    let out =
        run(&url, &["append", "ctx", "facts", "market size 2.4B", "--meta", "agent=a1"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout(&out).starts_with("#1 ") && stdout(&out).contains("[agent=a1] market size 2.4B"),
        "{}",
        stdout(&out)
    );
    let out = run(&url, &["append", "ctx", "intents", "-", "--json"], Some(b"from stdin"));
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (json["sequence"].as_u64(), json["payload"].as_str()),
        (Some(2), Some("from stdin"))
    );
    run(&url, &["append", "ctx", "facts", "third", "--append-id", "x"], None);

    let out = run(&url, &["get", "ctx", "--key", "facts", "--json"], None);
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(json["latest_sequence"].as_u64(), Some(3));
    let seqs: Vec<u64> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 3]);
    let out = run(&url, &["get", "ctx", "--after", "1", "--limit", "1"], None);
    // Each entry on its own line, then the context's latest sequence on its own.
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("#2 ") && lines[0].ends_with("from stdin"), "{lines:?}");
    assert_eq!(lines[1], "latest sequence: 3");

    let out = run(&url, &["verify", "ctx"], None);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("ok: 3 entries"), "{}", stdout(&out));
    let out = run(&url, &["verify", "ctx.snapshot"], None);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("ctx.snapshot has no entries"), "{}", stdout(&out));
    let out = run(&url, &["proof", "ctx", "2", "--json"], None);
    let json: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((json["ok"].as_bool(), json["tree_size"].as_u64()), (Some(true), Some(3)));

    let blob = dir.path().join("ctx.snapshot");
    let out = run(&url, &["snapshot", "ctx", "-o", blob.to_str().unwrap()], None);
    assert!(out.status.success() && blob.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&url, &["load", "restored", blob.to_str().unwrap(), "--fail-if-exists"], None);
    assert!(stdout(&out).contains("restored 3 entries"), "{}", stdout(&out));
    let out = run(&url, &["load", "restored", blob.to_str().unwrap(), "--fail-if-exists"], None);
    assert_eq!(out.status.code(), Some(2), "an error exits 2");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&url, &["append", "bad\u{7}ctx", "k", "p"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("control character"));
    let out = run("http://127.0.0.1:9", &["get", "ctx"], None);
    assert_eq!(out.status.code(), Some(2), "no server exits 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn watch_follows_live_and_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let url = node.url();
    for i in 0..200 {
        run(&url, &["append", "ctx", "k", &format!("entry {i}")], None);
    }
    let mut watch = Command::new(BIN)
        .args(["watch", "ctx", "--from", "198"])
        .env("CONVERGE_LEDGER_SERVER", &url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("#199 "));
    assert!(lines.next().unwrap().unwrap().starts_with("#200 "));
    run(&url, &["append", "ctx", "k", "live one"], None);
    assert!(lines.next().unwrap().unwrap().contains("live one"));
    watch.kill().unwrap();
    let _ = watch.wait();

    // `get ctx | head -1`: the reader goes away after one line.
    let mut get = Command::new(BIN)
        .args(["get", "ctx"])
        .env("CONVERGE_LEDGER_SERVER", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(get.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    drop(out);
    let status = get.wait().unwrap();
    assert!(first.starts_with("#1 "));
    assert_eq!(status.code(), Some(0), "a broken pipe exits quietly with 0");
}

#[test]
fn append_many_sends_stdin_on_one_stream_and_a_rerun_with_its_append_id_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let url = node.url();
    let lines: Vec<String> = (1..=500).map(|i| format!("line {i}")).collect();
    let lines = lines.join("\n") + "\n";
    let args = ["append", "batch", "k", "--many", "lines", "--append-id", "import-7", "--json"];
    let first = run(&url, &args, Some(lines.as_bytes()));
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let printed: Vec<serde_json::Value> =
        stdout(&first).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(printed.len(), 500);
    for (i, entry) in printed.iter().enumerate() {
        assert_eq!(entry["sequence"], i + 1, "printed in order, sequences in stdin order");
    }
    assert_eq!(crate::stream::rpc_count(&node, "AppendStream"), 1, "one stream");
    assert_eq!(crate::stream::rpc_count(&node, "Append"), 500);

    let again = run(&url, &args, Some(lines.as_bytes()));
    assert!(again.status.success());
    assert_eq!(stdout(&again), stdout(&first), "the same entries, none new");

    // Framed: payloads may hold line endings; one refused payload is reported, the rest go on.
    let mut framed = Vec::new();
    for payload in [&b"a\nb"[..], &vec![0u8; 5 << 20], b"after"] {
        framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(payload);
    }
    let out = run(&url, &["append", "framed", "k", "--many", "framed", "--json"], Some(&framed));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("entry 2 of stdin was not appended"), "{stderr}");
    let printed: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(printed.len(), 2);
    assert_eq!(printed[1]["sequence"], 2);
}

/// A node that lies: its Get changes one payload byte of entry 2, and its inclusion proofs carry
/// a damaged hash. Everything else it answers honestly.
#[derive(Clone)]
struct Liar(LedgerService);

#[tonic::async_trait]
impl ContextService for Liar {
    async fn append(
        &self,
        r: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        self.0.append(r).await
    }
    async fn get(&self, r: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let mut resp = self.0.get(r).await?;
        for entry in &mut resp.get_mut().entries {
            if entry.sequence == 2 {
                let mut payload = entry.payload.to_vec();
                payload[0] ^= 1;
                entry.payload = payload.into();
            }
        }
        Ok(resp)
    }
    async fn snapshot(
        &self,
        r: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        self.0.snapshot(r).await
    }
    /// Lists the contexts newest name first: out of the order the contract fixes.
    async fn list_contexts(
        &self,
        r: Request<v1::ListContextsRequest>,
    ) -> Result<Response<v1::ListContextsResponse>, Status> {
        let mut resp = self.0.list_contexts(r).await?;
        resp.get_mut().contexts.reverse();
        Ok(resp)
    }
    async fn load(
        &self,
        r: Request<v1::LoadRequest>,
    ) -> Result<Response<v1::LoadResponse>, Status> {
        self.0.load(r).await
    }
    type WatchStream = WatchEvents;
    async fn watch(&self, r: Request<v1::WatchRequest>) -> Result<Response<WatchEvents>, Status> {
        self.0.watch(r).await
    }
    type AppendStreamStream = AppendAnswers;
    async fn append_stream(
        &self,
        _: Request<tonic::Streaming<v1::AppendRequest>>,
    ) -> Result<Response<AppendAnswers>, Status> {
        Err(Status::unimplemented("an old server"))
    }
}

type AppendAnswers = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<v1::AppendStreamResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl IntegrityService for Liar {
    async fn get_tree_head(
        &self,
        r: Request<v1::TreeHeadRequest>,
    ) -> Result<Response<v1::TreeHead>, Status> {
        self.0.get_tree_head(r).await
    }
    async fn prove_inclusion(
        &self,
        r: Request<v1::InclusionRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        let mut resp = self.0.prove_inclusion(r).await?;
        if let Some(first) = resp.get_mut().hashes.first_mut() {
            let mut hash = first.to_vec();
            hash[31] ^= 1;
            *first = hash.into();
        }
        Ok(resp)
    }
    async fn prove_consistency(
        &self,
        r: Request<v1::ConsistencyRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        self.0.prove_consistency(r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_proof_exit_1_when_the_node_lies() {
    let ledger = Ledger::open(LedgerConfig::memory()).unwrap();
    let liar = Liar(LedgerService::new(ledger, Arc::new(Metrics::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContextServiceServer::new(liar.clone()))
            .add_service(IntegrityServiceServer::new(liar))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let old_server = url.clone();
    let url_for_list = url.clone();
    let (verify, proof) = tokio::task::spawn_blocking(move || {
        for i in 0..3 {
            assert!(
                run(&url, &["append", "ctx", "k", &format!("entry {i}")], None).status.success()
            );
        }
        (run(&url, &["verify", "ctx"], None), run(&url, &["proof", "ctx", "3"], None))
    })
    .await
    .unwrap();
    assert_eq!(verify.status.code(), Some(1), "verify: {}", stdout(&verify));
    assert!(stdout(&verify).contains("MISMATCH: entry 2 has content hash"), "{}", stdout(&verify));
    assert_eq!(proof.status.code(), Some(1), "proof: {}", stdout(&proof));
    assert!(
        stdout(&proof).contains("MISMATCH: the inclusion proof does not check out"),
        "{}",
        stdout(&proof)
    );

    // The liar is also an old server without AppendStream: a client's concurrent appends,
    // which would ride a stream, go unary instead and all succeed.
    let client = converge_client::Client::connect(old_server).await.unwrap();
    let appends: Vec<_> = (0..40)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client.append(AppendRequest::new("old", "k", format!("{i}"))).await
            })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert_eq!(client.get(GetRequest::all("old")).await.unwrap().latest_sequence, 40);

    // Contexts listed out of order are refused by a verifying client.
    let verifying = converge_client::Client::connect_with(
        converge_client::ClientConfig::new(url_for_list).verifying(),
    )
    .await
    .unwrap();
    let listed = verifying.list_contexts(ListContextsRequest::default()).await;
    assert!(
        matches!(&listed, Err(LedgerError::Verification(why)) if why.contains("out of order")),
        "{listed:?}"
    );
}

/// `GetRequest.before_sequence` and `newest_first` (CONTRACT §2 *ext*) against the real binary:
/// the latest entry, the latest of a key, history newest first paged with `before_sequence`,
/// through the verifying client and through `get --newest-first --before`, also after a
/// restart has moved the entries into the checkpointed index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_and_before_read_the_latest_and_page_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let writer = node.client().await;
    let mut all = Vec::new();
    for i in 1..=30u32 {
        let key = if i % 3 == 0 { "plan" } else { "step" };
        all.push(writer.append(AppendRequest::new("run", key, format!("p{i}"))).await.unwrap());
    }
    let seqs = |entries: &[Arc<converge_core::Entry>]| -> Vec<u64> {
        entries.iter().map(|e| e.sequence().0).collect()
    };
    let newest = |key: Option<&str>, before: u64, limit: u32| GetRequest {
        context_id: "run".into(),
        key: key.map(Into::into),
        after_sequence: 0,
        limit,
        before_sequence: before,
        newest_first: true,
    };
    for round in 0..2 {
        let client = node.verifying_client().await;
        let latest = client.get(newest(None, 0, 1)).await.unwrap();
        assert_eq!((seqs(&latest.entries), latest.latest_sequence), (vec![30], 30), "{round}");
        let plan = client.get(newest(Some("plan"), 0, 1)).await.unwrap();
        assert_eq!(seqs(&plan.entries), [30]);
        let step = client.get(newest(Some("step"), 0, 2)).await.unwrap();
        assert_eq!(seqs(&step.entries), [29, 28]);
        assert_eq!(plan.entries[0], all[29], "the same entry, every field");
        // History newest first, four at a time, each page before the last one's end.
        let (mut before, mut pages) = (0, Vec::new());
        loop {
            let page = client.get(newest(None, before, 4)).await.unwrap().entries;
            let Some(last) = page.last() else { break };
            before = last.sequence().0;
            pages.extend(seqs(&page));
        }
        assert_eq!(pages, (1..=30).rev().collect::<Vec<_>>());
        let plans_before_10 = client.get(newest(Some("plan"), 10, 0)).await.unwrap();
        assert_eq!(seqs(&plans_before_10.entries), [9, 6, 3]);
        // Oldest first below a bound.
        let first = GetRequest { before_sequence: 5, ..GetRequest::all("run") };
        assert_eq!(seqs(&client.get(first).await.unwrap().entries), [1, 2, 3, 4]);

        let out = run(
            &node.url(),
            &["get", "run", "--newest-first", "--before", "29", "--limit", "2", "--json"],
            None,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let from_cli: Vec<u64> = json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(from_cli, [28, 27]);
        // Again after a restart, reading from the checkpointed index.
        assert!(node.terminate().success());
        node = Node::start_at(dir.path(), &node.grpc.to_string(), &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_are_listed_in_order_page_by_page_with_their_heads() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let writer = node.client().await;
    // Written out of order; one context is only watched, which does not make it exist.
    let names = ["run/b", "agent/1", "run/a", "run/a/sub", "run/c", "agent/2", "z"];
    for (i, name) in names.iter().enumerate() {
        for k in 0..=i {
            writer.append(AppendRequest::new(*name, "step", format!("{name} {k}"))).await.unwrap();
        }
    }
    let watched = writer.watch(converge_api::WatchRequest {
        context_id: "run/0-watched".into(),
        ..Default::default()
    });
    let _watched = watched.await.unwrap();
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable();
    for round in 0..2 {
        let client = node.verifying_client().await;
        // Paged two at a time, every context once, in byte order, each with its own head.
        let (mut token, mut listed) = (String::new(), Vec::new());
        loop {
            let page = client
                .list_contexts(ListContextsRequest {
                    page_token: token,
                    limit: 2,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.contexts.len() <= 2);
            listed.extend(page.contexts);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let ids: Vec<&str> = listed.iter().map(|c| c.context_id.as_str()).collect();
        assert_eq!(ids, sorted, "round {round}");
        for info in &listed {
            let head = client.tree_head(&info.context_id).await.unwrap();
            assert_eq!(info.head, head, "{}", info.context_id);
            let i = names.iter().position(|n| *n == info.context_id).unwrap() as u64;
            assert_eq!(info.head.tree_size, i + 1);
            let latest = client
                .get(GetRequest {
                    limit: 1,
                    newest_first: true,
                    ..GetRequest::all(&info.context_id)
                })
                .await
                .unwrap();
            assert_eq!(info.latest_appended_at_ns, latest.entries[0].appended_at().0);
        }
        let runs = client.list_contexts(ListContextsRequest::prefix("run/")).await.unwrap();
        let run_ids: Vec<&str> = runs.contexts.iter().map(|c| c.context_id.as_str()).collect();
        assert_eq!(
            (run_ids, runs.next_page_token.as_str()),
            (vec!["run/a", "run/a/sub", "run/b", "run/c"], "")
        );
        let bad = ListContextsRequest { page_token: "bad\ntoken".into(), ..Default::default() };
        assert!(
            matches!(client.list_contexts(bad).await, Err(LedgerError::InvalidArgument(_))),
            "a page token this ledger never gave is refused"
        );

        let out = run(&node.url(), &["contexts", "--prefix", "agent/", "--json"], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<serde_json::Value> =
            stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let from_cli: Vec<(&str, u64)> = lines
            .iter()
            .map(|l| (l["context_id"].as_str().unwrap(), l["tree_size"].as_u64().unwrap()))
            .collect();
        assert_eq!(from_cli, [("agent/1", 2), ("agent/2", 6)]);
        let text = run(&node.url(), &["contexts", "--limit", "3"], None);
        assert_eq!(stdout(&text).lines().count(), 3, "{}", stdout(&text));
        // Again after a restart, from the checkpointed index.
        assert!(node.terminate().success());
        node = Node::start_at(dir.path(), &node.grpc.to_string(), &[]);
    }
}
