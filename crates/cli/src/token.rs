//! `token create`: a new random token, its hash added to the token file, the token printed once.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use converge_server::auth::{Role, token_hash};

use crate::cli::TokenCreateArgs;
use crate::output;

/// Bytes of randomness in a token.
const TOKEN_BYTES: usize = 32;

pub fn create(args: &TokenCreateArgs) -> anyhow::Result<ExitCode> {
    let Some(role) = Role::parse(&args.role) else {
        bail!("--role must be reader, writer or admin, got {:?}", args.role);
    };
    if args.name.chars().any(|c| c.is_control() || c == '#') {
        bail!("--name must be printable text without '#'");
    }
    let mut random = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("cannot read /dev/urandom for the token's randomness")?;
    let token = format!("cvl_{}", converge_core::hex::encode(&random));
    let line = format!(
        "{} {} {}\n",
        converge_core::hex::encode(&token_hash(&token)),
        role.name(),
        args.name
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&args.tokens)
        .with_context(|| format!("cannot open the token file {}", args.tokens.display()))?;
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", args.tokens.display()))?;
    eprintln!(
        "added a token with role {} to {}; it is shown once, keep it secret (send SIGHUP to a running node to load it)",
        role.name(),
        args.tokens.display()
    );
    output::line(&token);
    Ok(ExitCode::SUCCESS)
}
