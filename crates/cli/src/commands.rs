//! The client subcommands: append, get, contexts, watch, snapshot, load, verify, proof.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use converge_api::{
    AppendRequest, GetRequest, LIST_LIMIT_DEFAULT, LedgerApi, LedgerError, ListContextsRequest,
    LoadRequest, WatchRequest,
};
use converge_client::{Client, ClientConfig, ClientTls};
use converge_core::merkle::CompactTree;
use converge_core::{ContextId, Hash};
use futures_util::StreamExt as _;

use crate::cli::{
    AppendArgs, ClientArgs, ContextsArgs, GetArgs, LoadArgs, ProofArgs, SnapshotArgs, VerifyArgs,
    WatchArgs,
};
use crate::output;

/// Exit code of a check that did not hold.
pub const VERIFICATION_FAILED: u8 = 1;

/// Entries fetched per page by `verify`.
const VERIFY_PAGE: u32 = 1000;

/// The client settings the flags describe.
pub fn client_config(args: &ClientArgs) -> anyhow::Result<ClientConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut config = ClientConfig::new(args.server.clone());
    config.token.clone_from(&args.token);
    if let Some(ca) = &args.ca {
        let identity = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => bail!("a client certificate needs both --client-cert and --client-key"),
        };
        config.tls = Some(ClientTls { ca_pem: read(ca)?, identity, domain: None });
    } else if args.server.starts_with("https://") {
        bail!("an https:// server needs --ca FILE (the CA that signed its certificate)");
    }
    Ok(config)
}

pub async fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::connect_with(client_config(args)?).await?)
}

fn progress(message: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K{message}");
    }
}

fn progress_done() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

pub async fn append(args: AppendArgs) -> anyhow::Result<ExitCode> {
    if let Some(framing) = args.many {
        return crate::many::append_many(args, framing).await;
    }
    let payload = match args.payload.as_deref() {
        Some("-") | None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read the payload from stdin")?;
            buf
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    let metadata = metadata(&args.meta)?;
    let client = connect(&args.client).await?;
    let request = AppendRequest {
        context_id: args.context,
        key: args.key,
        payload: payload.into(),
        metadata,
        received_lamport_clock: args.received_lamport_clock,
        append_id: args.append_id,
    };
    let entry = client.append(request).await?;
    output::print_entry(&entry, args.client.json);
    Ok(ExitCode::SUCCESS)
}

/// `--meta` pairs as a map.
pub fn metadata(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--meta wants KEY=VALUE, got {pair:?}");
        };
        metadata.insert(k.to_string(), v.to_string());
    }
    Ok(metadata)
}

pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.client).await?;
    let request = GetRequest {
        context_id: args.context,
        key: args.key,
        after_sequence: args.after,
        limit: args.limit,
        before_sequence: args.before.unwrap_or(0),
        newest_first: args.newest_first,
    };
    let resp = client.get(request).await?;
    if args.client.json {
        let entries: Vec<_> = resp.entries.iter().map(|e| output::entry_json(e)).collect();
        output::line(
            &serde_json::json!({ "entries": entries, "latest_sequence": resp.latest_sequence })
                .to_string(),
        );
    } else {
        output::entries(&resp.entries, false);
        // On stdout, after the entries, so it never runs into the last of them (stderr and
        // stdout reach a terminal or a log through different buffers).
        output::line(&format!("latest sequence: {}", resp.latest_sequence));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn contexts(args: ContextsArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.client).await?;
    let mut request = ListContextsRequest {
        prefix: args.prefix,
        page_token: args.after,
        limit: LIST_LIMIT_DEFAULT,
    };
    let mut left = if args.limit == 0 { u64::MAX } else { args.limit };
    while left > 0 {
        request.limit = u32::try_from(left).unwrap_or(u32::MAX).min(LIST_LIMIT_DEFAULT);
        let page = client.list_contexts(request.clone()).await?;
        for info in &page.contexts {
            output::line(&output::context_info(info, args.client.json));
        }
        left = left.saturating_sub(page.contexts.len() as u64);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.client).await?;
    let mut stream = client
        .watch(WatchRequest { context_id: args.context, key: args.key, from_sequence: args.from })
        .await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            next = stream.next() => match next {
                Some(Ok(entry)) => output::print_entry(&entry, args.client.json),
                Some(Err(err)) => return Err(err.into()),
                None => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}

pub async fn snapshot(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.client).await?;
    let started = Instant::now();
    progress(&format!("snapshotting {}…", args.context));
    let snap = client.snapshot(&args.context).await?;
    progress(&format!("writing {} bytes to {}…", snap.snapshot.len(), args.output.display()));
    let tmp = args.output.with_extension("partial");
    std::fs::write(&tmp, &snap.snapshot)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    progress_done();
    if args.client.json {
        output::line(
            &serde_json::json!({
                "context_id": args.context, "file": args.output, "bytes": snap.snapshot.len(),
                "entry_count": snap.entry_count, "sequence": snap.sequence, "version": snap.version,
                "merkle_root": snap.merkle_root.to_hex(), "created_at_ns": snap.created_at_ns,
            })
            .to_string(),
        );
    } else {
        output::line(&format!(
            "wrote {} entries of {} ({} bytes, format v{}, root {}) to {} in {:.2?}",
            snap.entry_count,
            args.context,
            snap.snapshot.len(),
            snap.version,
            snap.merkle_root,
            args.output.display(),
            started.elapsed()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let blob = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let client = connect(&args.client).await?;
    progress(&format!("loading {} bytes into {}…", blob.len(), args.context));
    let resp = client
        .load(LoadRequest {
            load_id: None,
            context_id: args.context.clone(),
            snapshot: blob.into(),
            fail_if_exists: args.fail_if_exists,
        })
        .await?;
    progress_done();
    if args.client.json {
        output::line(&serde_json::json!({ "entries_restored": resp.entries_restored, "latest_sequence": resp.latest_sequence }).to_string());
    } else {
        output::line(&format!(
            "restored {} entries into {}; latest sequence {}",
            resp.entries_restored, args.context, resp.latest_sequence
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The outcome of `verify` for one context.
struct Verified {
    entries: u64,
    root: Hash,
    problems: Vec<String>,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let id = ContextId::try_new(args.context.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = connect(&args.client).await?;
    let head = client.tree_head(&args.context).await?;
    let mut tree = CompactTree::new();
    let mut result = Verified { entries: 0, root: Hash::default(), problems: Vec::new() };
    let mut after = 0;
    while after < head.tree_size {
        let limit = VERIFY_PAGE.min(u32::try_from(head.tree_size - after).unwrap_or(VERIFY_PAGE));
        let page = client
            .get(GetRequest {
                context_id: args.context.clone(),
                key: None,
                after_sequence: after,
                limit,
                before_sequence: 0,
                newest_first: false,
            })
            .await?;
        if page.entries.is_empty() {
            result.problems.push(format!(
                "the server's tree head has {} entries but Get stopped after {after}",
                head.tree_size
            ));
            break;
        }
        for entry in &page.entries {
            if entry.sequence().0 != after + 1 {
                result.problems.push(format!(
                    "expected entry {}, got entry {}",
                    after + 1,
                    entry.sequence()
                ));
            }
            if let Err(err) = entry.verify(&id) {
                result.problems.push(err.to_string());
            }
            tree.push(entry.content_hash());
            after = entry.sequence().0;
        }
        progress(&format!("verified {after}/{} entries of {}", head.tree_size, args.context));
    }
    progress_done();
    result.entries = tree.size().0;
    result.root = tree.root();
    if result.root != head.root_hash {
        result.problems.push(format!(
            "the entries hash to root {}, but the server's tree head says {}",
            result.root, head.root_hash
        ));
    }
    report_verified(&args, &head, &result);
    Ok(if result.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(VERIFICATION_FAILED)
    })
}

fn report_verified(args: &VerifyArgs, head: &converge_api::TreeHead, result: &Verified) {
    if args.client.json {
        output::line(&serde_json::json!({
            "context_id": args.context, "ok": result.problems.is_empty(), "entries": result.entries,
            "computed_root": result.root.to_hex(), "tree_head_root": head.root_hash.to_hex(),
            "tree_size": head.tree_size, "problems": result.problems,
        }).to_string());
    } else if result.problems.is_empty() && result.entries == 0 {
        // Often a mistyped context id (or a snapshot file given where a context belongs).
        output::line(&format!(
            "ok: context {} has no entries, so there is nothing to verify (is the context id right?)",
            args.context
        ));
    } else if result.problems.is_empty() {
        output::line(&format!(
            "ok: {} entries of {} verified; every content hash recomputed, root {} matches the server's tree head",
            result.entries, args.context, result.root
        ));
    } else {
        for problem in &result.problems {
            output::line(&format!("MISMATCH: {problem}"));
        }
        output::line(&format!(
            "verification of {} FAILED ({} problems)",
            args.context,
            result.problems.len()
        ));
    }
}

pub async fn proof(args: ProofArgs) -> anyhow::Result<ExitCode> {
    ContextId::try_new(args.context.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The verifying client does every check (the entry's hash, the proof, its root against the
    // tree head): one implementation of them, the client's.
    let client = Client::connect_with(client_config(&args.client)?.verifying()).await?;
    let proof = match client.prove_inclusion(&args.context, args.sequence, args.tree_size).await {
        Ok(proof) => proof,
        Err(LedgerError::Verification(problem)) => {
            let problem = format!("the inclusion proof does not check out: {problem}");
            if args.client.json {
                output::line(
                    &serde_json::json!({
                        "context_id": args.context, "sequence": args.sequence, "ok": false,
                        "problems": [problem],
                    })
                    .to_string(),
                );
            } else {
                output::line(&format!("MISMATCH: {problem}"));
            }
            return Ok(ExitCode::from(VERIFICATION_FAILED));
        }
        Err(other) => return Err(other.into()),
    };
    let page = client
        .get(GetRequest {
            context_id: args.context.clone(),
            key: None,
            after_sequence: args.sequence - 1,
            limit: 1,
            before_sequence: 0,
            newest_first: false,
        })
        .await?;
    let entry = page
        .entries
        .first()
        .filter(|e| e.sequence().0 == args.sequence)
        .context("the entry cannot be read")?;
    if args.client.json {
        output::line(
            &serde_json::json!({
                "context_id": args.context, "sequence": args.sequence, "ok": true,
                "tree_size": proof.tree_size, "root_hash": proof.root_hash.to_hex(),
                "hashes": proof.hashes.iter().map(Hash::to_hex).collect::<Vec<_>>(),
                "content_hash": entry.content_hash().to_hex(), "problems": [],
            })
            .to_string(),
        );
    } else {
        output::line(&format!(
            "ok: entry {} ({}) is in {} at tree size {}: {} proof hashes lead to root {}",
            args.sequence,
            entry.id(),
            args.context,
            proof.tree_size,
            proof.hashes.len(),
            proof.root_hash
        ));
    }
    Ok(ExitCode::SUCCESS)
}
