//! `cluster status`, `cluster remove` and `cluster limits`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use converge_proto::cluster::StatusResponse;
use serde_json::json;

use crate::cli::{ClusterLimitsArgs, ClusterRemoveArgs, ClusterStatusArgs};
use crate::commands::connect;
use crate::output;

/// A node id as status prints it.
fn name(id: u64) -> String {
    format!("{id:016x}")
}

pub async fn status(args: ClusterStatusArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.client).await?;
    let status = client
        .cluster_status()
        .await
        .context("cannot read the cluster's status (a node that runs alone has none)")?;
    if args.client.json {
        output::line(&status_json(&status).to_string());
    } else {
        output::line(&status_text(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn status_json(status: &StatusResponse) -> serde_json::Value {
    json!({
        "node": name(status.node),
        "cluster_id": status.cluster_id,
        "nodes": status.nodes.iter().map(|n| json!({
            "id": name(n.id),
            "address": n.address,
            "role": if n.voter { "voter" } else { "learner" },
            "reachable": n.reachable,
        })).collect::<Vec<_>>(),
        "shards": status.shards.iter().map(|s| json!({
            "shard": s.shard,
            "leader": s.leader.map(name),
            "term": s.term,
            "committed": s.committed,
            "applied": s.applied,
            "role": s.role,
        })).collect::<Vec<_>>(),
        "voters_wanted": status.voters_wanted,
        "limits": status.limits.as_ref().map(|l| json!({
            "payload_bytes_max": l.payload_bytes_max,
            "load_bytes_max": l.load_bytes_max,
        })),
    })
}

fn status_text(status: &StatusResponse) -> String {
    let mut out = format!("node {} ({})\n", name(status.node), status.address);
    if !status.cluster_id.is_empty() {
        let _ = writeln!(out, "cluster {}", status.cluster_id);
    }
    out.push_str("\nnodes:\n");
    for n in &status.nodes {
        let _ = writeln!(
            out,
            "  {}  {:<21}  {:<7}  {}",
            name(n.id),
            n.address,
            if n.voter { "voter" } else { "learner" },
            if n.reachable { "reachable" } else { "UNREACHABLE" }
        );
    }
    out.push_str(
        "\nshards:\n  shard  leader            term  committed  applied here  role here\n",
    );
    for s in &status.shards {
        let _ = writeln!(
            out,
            "  {:>5}  {:<16}  {:>4}  {:>9}  {:>12}  {}",
            s.shard,
            s.leader.map_or_else(|| "none".into(), name),
            s.term,
            s.committed,
            s.applied,
            s.role
        );
    }
    if let Some(limits) = &status.limits {
        let _ = write!(
            out,
            "\nlimits (cluster-wide): payload {} bytes, load {} bytes\n",
            limits.payload_bytes_max, limits.load_bytes_max
        );
    }
    out.trim_end().to_string()
}

pub async fn limits(args: ClusterLimitsArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.client).await?;
    let status = client
        .cluster_status()
        .await
        .context("cannot read the cluster's limits (a node that runs alone has none)")?;
    let current = status.limits.unwrap_or_default();
    let wanted = converge_proto::cluster::ClusterLimits {
        payload_bytes_max: args.payload_bytes_max.map_or(current.payload_bytes_max, |v| v as u64),
        load_bytes_max: args.load_bytes_max.map_or(current.load_bytes_max, |v| v as u64),
    };
    client.cluster_set_limits(wanted).await?;
    output::line(&format!(
        "cluster limits: payload {} bytes, load {} bytes",
        wanted.payload_bytes_max, wanted.load_bytes_max
    ));
    Ok(ExitCode::SUCCESS)
}

pub async fn remove(args: ClusterRemoveArgs) -> anyhow::Result<ExitCode> {
    let node = u64::from_str_radix(args.node.trim(), 16).with_context(|| {
        format!("{:?} is not a node id (16 hex digits, as `cluster status` prints)", args.node)
    })?;
    let client = connect(&args.client).await?;
    client.cluster_remove(node).await?;
    output::line(&format!("removed node {}", name(node)));
    Ok(ExitCode::SUCCESS)
}
