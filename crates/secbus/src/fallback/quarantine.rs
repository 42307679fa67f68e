//! The quarantine file: spool lines the drain could not deliver (a torn write, a
//! corrupt line, an event the engine refuses for good), set aside so the drain
//! goes on and nothing disappears without a trace.
//!
//! Each entry is one JSON line: `{"time", "segment", "offset", "code", "reason",
//! "line"}` where `line` holds the bytes as text (invalid UTF-8 replaced).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

const NAME: &str = "quarantine.jsonl";

/// Past this size the quarantine file is not grown; lines set aside are then only
/// logged and counted.
const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Lines set aside from one spool directory.
#[derive(Debug)]
pub(super) struct Quarantine {
    path: PathBuf,
    written: Mutex<u64>,
    total: AtomicU64,
}

impl Quarantine {
    pub(super) fn new(dir: &Path) -> Quarantine {
        let path = dir.join(NAME);
        let written = std::fs::metadata(&path).map_or(0, |m| m.len());
        Quarantine {
            path,
            written: Mutex::new(written),
            total: AtomicU64::new(0),
        }
    }

    /// Lines set aside since the spool was opened.
    pub(super) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Sets `line` (found at `segment`/`offset`) aside, with why, and logs it: as
    /// a warning when `expected` (a write cut short by a crash), else as an error.
    pub(super) fn put(
        &self,
        segment: u64,
        offset: u64,
        line: &[u8],
        code: &str,
        reason: &str,
        expected: bool,
    ) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339(),
            "segment": segment,
            "offset": offset,
            "code": code,
            "reason": reason,
            "line": String::from_utf8_lossy(line),
        });
        let mut bytes = entry.to_string().into_bytes();
        bytes.push(b'\n');
        let kept = match self.keep(&bytes) {
            Ok(()) => format!("moved to {}", self.path.display()),
            Err(why) => format!("not kept ({why})"),
        };
        if expected {
            tracing::warn!(
                code,
                segment,
                offset,
                bytes = line.len(),
                skipped_total = total,
                kept = %kept,
                reason,
                "skipped a spooled line that cannot be delivered"
            );
        } else {
            tracing::error!(
                code,
                segment,
                offset,
                bytes = line.len(),
                skipped_total = total,
                kept = %kept,
                reason,
                "skipped a spooled line that cannot be delivered"
            );
        }
    }

    fn keep(&self, entry: &[u8]) -> Result<(), String> {
        let mut written = self.written.lock();
        if *written + entry.len() as u64 > MAX_BYTES {
            return Err(format!(
                "the quarantine file holds {MAX_BYTES} bytes already"
            ));
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(entry))
            .map_err(|e| e.to_string())?;
        *written += entry.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_json_lines_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path());
        q.put(3, 120, b"{\"torn", "malformed_json", "torn write", true);
        q.put(3, 200, &[0xff, b'x'], "malformed_json", "not UTF-8", false);
        assert_eq!(q.total(), 2);
        let text = std::fs::read_to_string(dir.path().join(NAME)).unwrap();
        let entries: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["line"], "{\"torn");
        assert_eq!(entries[1]["offset"], 200);
    }
}
