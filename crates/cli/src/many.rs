//! `append --many`: payloads read from stdin, appended in order on one stream, each printed
//! as it is acknowledged. A payload the ledger refuses is reported on stderr with its number
//! and the rest go on; the exit code is then 1.

use std::collections::VecDeque;
use std::process::ExitCode;

use anyhow::Context as _;
use converge_api::{AppendRequest, LedgerApi as _, PendingAppend};
use tokio::sync::mpsc;

use crate::cli::{AppendArgs, Framing};
use crate::commands::{connect, metadata};
use crate::output;

/// Appends waiting for their answer at once.
const WINDOW: usize = 1024;
/// Largest payload a framed stdin may announce (the server's own limit still applies).
const FRAME_BYTES_MAX: u32 = 64 << 20;

pub async fn append_many(args: AppendArgs, framing: Framing) -> anyhow::Result<ExitCode> {
    let metadata = metadata(&args.meta)?;
    let client = connect(&args.client).await?;
    let mut payloads = read_stdin(framing);
    let mut pending: VecDeque<(u64, PendingAppend)> = VecDeque::new();
    let mut failed = 0u64;
    let mut n = 0u64;
    while let Some(payload) = payloads.recv().await {
        let payload = payload?;
        n += 1;
        let request = AppendRequest {
            context_id: args.context.clone(),
            key: args.key.clone(),
            payload: payload.into(),
            metadata: metadata.clone(),
            received_lamport_clock: args.received_lamport_clock,
            append_id: args.append_id.as_ref().map(|id| format!("{id}:{n}")),
        };
        pending.push_back((n, client.append_queued(request).await));
        if pending.len() >= WINDOW
            && let Some((n, wait)) = pending.pop_front()
        {
            failed += u64::from(!report(n, wait.await, args.client.json));
        }
    }
    while let Some((n, wait)) = pending.pop_front() {
        failed += u64::from(!report(n, wait.await, args.client.json));
    }
    if failed > 0 {
        eprintln!("{failed} of {n} entries were not appended");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the entry, or the error with the payload's number; whether it was appended.
fn report(
    n: u64,
    outcome: Result<std::sync::Arc<converge_core::Entry>, converge_api::LedgerError>,
    json: bool,
) -> bool {
    match outcome {
        Ok(entry) => {
            output::print_entry(&entry, json);
            true
        }
        Err(err) => {
            eprintln!("entry {n} of stdin was not appended: {err}");
            false
        }
    }
}

/// Payloads from stdin, read on a thread of their own.
fn read_stdin(framing: Framing) -> mpsc::Receiver<anyhow::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(WINDOW);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let next = match framing {
                Framing::Lines => next_line(&mut stdin),
                Framing::Framed => next_frame(&mut stdin),
            };
            let stop = !matches!(next, Ok(Some(_)));
            if let Some(next) = next.transpose()
                && tx.blocking_send(next).is_err()
            {
                return;
            }
            if stop {
                return;
            }
        }
    });
    rx
}

/// The next line without its ending (`\n` or `\r\n`).
fn next_line(input: &mut impl std::io::BufRead) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if input.read_until(b'\n', &mut line).context("cannot read stdin")? == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(Some(line))
}

/// The next length-prefixed payload.
fn next_frame(input: &mut impl std::io::Read) -> anyhow::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = input.read(&mut length[got..]).context("cannot read stdin")?;
        if n == 0 {
            anyhow::ensure!(got == 0, "stdin ends inside a frame's 4-byte length");
            return Ok(None);
        }
        got += n;
    }
    let length = u32::from_be_bytes(length);
    anyhow::ensure!(
        length <= FRAME_BYTES_MAX,
        "a frame on stdin announces {length} bytes, more than {FRAME_BYTES_MAX}; is stdin framed (4-byte big-endian length, then the payload)?"
    );
    let mut payload = vec![0; length as usize];
    input.read_exact(&mut payload).context("stdin ends inside a frame's payload")?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_drop_their_endings_and_keep_empty_lines() {
        let mut input: &[u8] = b"one\r\ntwo\n\nlast";
        let mut got = Vec::new();
        while let Some(line) = next_line(&mut input).unwrap() {
            got.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(got, ["one", "two", "", "last"]);
    }

    #[test]
    fn frames_are_read_whole_and_a_cut_frame_is_an_error() {
        let mut bytes = Vec::new();
        for payload in [&b"ab"[..], b"", b"\n\x00z"] {
            bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(payload);
        }
        let mut input = &bytes[..];
        let mut got = Vec::new();
        while let Some(frame) = next_frame(&mut input).unwrap() {
            got.push(frame);
        }
        assert_eq!(got, [b"ab".to_vec(), vec![], b"\n\x00z".to_vec()]);
        let cut = &bytes[..bytes.len() - 1];
        let mut input = cut;
        let errors = std::iter::from_fn(|| Some(next_frame(&mut input))).take(3);
        assert!(errors.last().unwrap().is_err());
        let mut short: &[u8] = &[0, 0];
        assert!(next_frame(&mut short).is_err());
        let mut huge: &[u8] = &u32::MAX.to_be_bytes();
        assert!(next_frame(&mut huge).unwrap_err().to_string().contains("announces"));
    }
}
