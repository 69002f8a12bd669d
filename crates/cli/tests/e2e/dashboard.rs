//! The Grafana dashboard and the Prometheus alert rules in `deploy/` name only metrics, and
//! label values, that a node exports: a real node (a one-node cluster, so the Raft metrics are
//! there too) is scraped, and any name the files use that it does not export fails the test.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::bootstrap;

const DASHBOARD: &str = include_str!("../../../../deploy/grafana/converge-ledger.json");
const ALERTS: &str = include_str!("../../../../deploy/prometheus/alerts.yml");

/// Metric families and their types, from the `# TYPE` lines of an exposition.
fn families(metrics: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// A label matcher: key, operator, value.
type Matcher = (String, String, String);

/// Every `converge_…` name in `text`, each with the label matchers in braces right after it.
fn uses(text: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("converge_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..len].to_string();
        let mut matchers = Vec::new();
        if let Some(braced) = tail[len..].strip_prefix('{')
            && let Some(end) = braced.find('}')
        {
            for matcher in braced[..end].split(',') {
                let matcher = matcher.replace("\\\"", "\"");
                let op = ["=~", "!=", "="].into_iter().find(|op| matcher.contains(op));
                if let Some(op) = op {
                    let (key, value) = matcher.split_once(op).expect("has the operator");
                    let value = value.trim().trim_matches('"').to_string();
                    matchers.push((key.trim().to_string(), op.to_string(), value));
                }
            }
        }
        found.push((name, matchers));
        rest = &tail[len..];
    }
    found
}

/// The family a sample name belongs to: itself, or a histogram's `_bucket`/`_sum`/`_count`.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].into_iter().find_map(|suffix| {
        let family = name.strip_suffix(suffix)?;
        (families.get(family).map(String::as_str) == Some("histogram")).then_some(family)
    })
}

/// What `text` uses that `metrics` does not export: unknown names, labels no sample of the
/// metric carries, and exact label values no sample has.
fn unknown(text: &str, metrics: &str) -> BTreeSet<String> {
    let families = families(metrics);
    let mut missing = BTreeSet::new();
    for (name, matchers) in uses(text) {
        let Some(_) = family_of(&name, &families) else {
            missing.insert(name);
            continue;
        };
        let samples: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name.as_str()))
            .collect();
        for (key, op, value) in matchers {
            // Labels the scraper adds, and the dashboard's own variables.
            if key == "instance" || key == "job" {
                continue;
            }
            if !samples.iter().any(|s| s.contains(&format!("{key}=\""))) {
                missing.insert(format!("{name}{{{key}}}"));
            } else if op == "="
                && !samples.iter().any(|s| s.contains(&format!("{key}=\"{value}\"")))
            {
                missing.insert(format!("{name}{{{key}=\"{value}\"}}"));
            }
        }
    }
    missing
}

#[test]
fn the_checker_reports_names_labels_and_values_a_node_does_not_export() {
    let metrics = "# TYPE converge_x_seconds histogram\nconverge_x_seconds_bucket{method=\"Append\",le=\"1\"} 1\n# TYPE converge_y_total counter\nconverge_y_total 3\n";
    assert!(
        unknown(
            "rate(converge_y_total[1m]) + converge_x_seconds_bucket{method=\"Append\"}",
            metrics
        )
        .is_empty()
    );
    let missing = unknown(
        "converge_z_total + converge_y_total{shard=\"1\"} + converge_x_seconds_bucket{method=\"Get\"} + converge_y_total_sum",
        metrics,
    );
    let expected: BTreeSet<String> = [
        "converge_z_total",
        "converge_y_total{shard}",
        "converge_x_seconds_bucket{method=\"Get\"}",
        "converge_y_total_sum",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(missing, expected);
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_one_a_node_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("every target has a query"))
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let alerts = ALERTS.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(alerts >= 10, "{alerts} alert rules");

    let dir = tempfile::tempdir().unwrap();
    let node = bootstrap(dir.path(), &[]).await;
    let (code, metrics) = node.http_get("/metrics");
    assert_eq!(code, 200);
    let used: BTreeSet<String> =
        uses(DASHBOARD).into_iter().chain(uses(ALERTS)).map(|(name, _)| name).collect();
    assert!(used.len() >= 15, "the files use {} metrics: {used:?}", used.len());
    let missing: BTreeSet<String> =
        unknown(DASHBOARD, &metrics).into_iter().chain(unknown(ALERTS, &metrics)).collect();
    assert!(missing.is_empty(), "deploy/ uses what the node does not export: {missing:?}");
}
