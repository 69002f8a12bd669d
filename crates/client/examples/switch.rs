//! An engine written against `LedgerApi` runs the ledger in-process or talks to a node: the
//! choice is the one line that builds `ledger` below.
//!
//! In-process (default): `cargo run -p converge-client --example switch`
//! Against a node:       `cargo run -p converge-client --example switch -- http://127.0.0.1:50051`

use converge_api::{AppendRequest, GetRequest, LedgerApi, LedgerError};

/// The engine: it only knows the trait.
async fn engine(ledger: &impl LedgerApi) -> Result<(), LedgerError> {
    let fact = AppendRequest::new("growth-strategy-001", "facts", "market_size: 2.4B")
        .with_metadata("agent", "researcher");
    let entry = ledger.append(fact).await?;
    println!("appended entry {} ({})", entry.sequence(), entry.id());
    let all = ledger.get(GetRequest::all("growth-strategy-001")).await?;
    let head = ledger.tree_head("growth-strategy-001").await?;
    let proof = ledger.prove_inclusion("growth-strategy-001", entry.sequence().0, 0).await?;
    proof.verify(&entry.content_hash()).map_err(|e| LedgerError::Verification(e.to_string()))?;
    println!(
        "{} entries; tree size {}, root {}; inclusion proof checked",
        all.entries.len(),
        head.tree_size,
        head.root_hash
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1) {
        // The one line: a node over gRPC, verifying everything it sends...
        Some(server) => {
            engine(
                &converge_client::Client::connect_with(
                    converge_client::ClientConfig::new(server).verifying(),
                )
                .await?,
            )
            .await?;
        }
        // ...or the same ledger in-process (memory here; `LedgerConfig::disk(dir)` for durable).
        None => {
            engine(&converge_ledger::Ledger::open(converge_ledger::LedgerConfig::memory())?)
                .await?;
        }
    }
    Ok(())
}
