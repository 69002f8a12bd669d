//! Printing entries and results: text for people, `--json` for scripts; a closed pipe ends
//! the program quietly.

use std::io::{self, Write as _};
use std::sync::Arc;

use converge_core::Entry;

/// Writes a line to stdout; if the reader went away (`| head`), exits 0 quietly.
pub fn line(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(err) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if err.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {err}");
        std::process::exit(2);
    }
}

/// An entry as a JSON object. The payload is given as text when it is UTF-8, and always as hex.
pub fn entry_json(entry: &Entry) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id().to_hex(),
        "sequence": entry.sequence().0,
        "key": entry.key().as_str(),
        "appended_at_ns": entry.appended_at().0,
        "lamport_clock": entry.lamport().0,
        "content_hash": entry.content_hash().to_hex(),
        "metadata": entry.metadata().as_map(),
        "payload": std::str::from_utf8(entry.payload()).ok(),
        "payload_hex": converge_core::hex::encode(entry.payload()),
    })
}

/// An entry as one line of text.
pub fn entry_text(entry: &Entry) -> String {
    let payload = match std::str::from_utf8(entry.payload()) {
        Ok(text) => text.escape_debug().to_string(),
        Err(_) => format!(
            "<{} bytes, hex {}>",
            entry.payload().len(),
            converge_core::hex::encode(&entry.payload()[..entry.payload().len().min(32)])
        ),
    };
    let metadata: Vec<String> =
        entry.metadata().iter().map(|(k, v)| format!("{k}={}", v.escape_debug())).collect();
    let metadata =
        if metadata.is_empty() { String::new() } else { format!(" [{}]", metadata.join(" ")) };
    format!(
        "#{} {} {} lamport={} id={}{metadata} {payload}",
        entry.sequence(),
        utc(entry.appended_at().0),
        entry.key(),
        entry.lamport(),
        entry.id(),
    )
}

/// A listed context as one line of text, or a JSON object.
pub fn context_info(info: &converge_api::ContextInfo, json: bool) -> String {
    if json {
        return serde_json::json!({
            "context_id": info.context_id,
            "tree_size": info.head.tree_size,
            "root_hash": info.head.root_hash.to_hex(),
            "lamport_clock": info.head.lamport_clock,
            "latest_appended_at_ns": info.latest_appended_at_ns,
        })
        .to_string();
    }
    format!(
        "{} size={} root={} lamport={} latest={}",
        info.context_id.escape_debug(),
        info.head.tree_size,
        info.head.root_hash.to_hex(),
        info.head.lamport_clock,
        utc(info.latest_appended_at_ns),
    )
}

/// Prints entries as text or JSON lines.
pub fn entries(entries: &[Arc<Entry>], json: bool) {
    for entry in entries {
        print_entry(entry, json);
    }
}

/// Prints one entry.
pub fn print_entry(entry: &Entry, json: bool) {
    if json {
        line(&entry_json(entry).to_string());
    } else {
        line(&entry_text(entry));
    }
}

/// Nanoseconds since the epoch as an RFC 3339 UTC time with microseconds.
pub fn utc(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let micros = (nanos % 1_000_000_000) / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`, for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(utc(1_764_000_000_000_000_000), "2025-11-24T16:00:00.000000Z");
        assert_eq!(utc(951_782_400_123_456_789), "2000-02-29T00:00:00.123456Z");
    }
}
