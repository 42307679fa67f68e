//! Checking a trail: every record's hash, its link to the record before, and
//! the sequence without gaps, across the files of a tenant. The first record
//! that fails is named with its file, line and sequence, and why.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::files::{file_index, trail_files};
use super::record::{GENESIS, StoredRecord, is_hash, record_hash};
use crate::error::{Error, Result};

/// Why a record breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breakage {
    /// The stored hash is not the hash of the record.
    HashMismatch {
        /// The hash in the line.
        stored: String,
        /// The hash of what the line holds.
        computed: String,
    },
    /// `prev` is not the hash of the record before.
    PrevMismatch {
        /// The hash of the record before.
        expected: String,
        /// The `prev` in the line.
        found: String,
    },
    /// The sequence is not the one after the record before (a record was
    /// removed, moved, or inserted).
    SeqGap {
        /// The sequence that should come here.
        expected: u64,
        /// The sequence in the line.
        found: u64,
    },
    /// The line is not a trail record.
    Malformed(String),
}

impl fmt::Display for Breakage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breakage::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch: stored {stored}, computed {computed}")
            }
            Breakage::PrevMismatch { expected, found } => write!(
                f,
                "prev mismatch: the record before hashes to {expected}, prev is {found}"
            ),
            Breakage::SeqGap { expected, found } => {
                write!(f, "seq gap: expected seq {expected}, found {found}")
            }
            Breakage::Malformed(why) => write!(f, "malformed: {why}"),
        }
    }
}

impl Breakage {
    /// A stable code: `hash_mismatch`, `prev_mismatch`, `seq_gap`, `malformed`.
    pub fn code(&self) -> &'static str {
        match self {
            Breakage::HashMismatch { .. } => "hash_mismatch",
            Breakage::PrevMismatch { .. } => "prev_mismatch",
            Breakage::SeqGap { .. } => "seq_gap",
            Breakage::Malformed(_) => "malformed",
        }
    }
}

/// The first record that breaks a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRecord {
    /// The file it is in.
    pub file: PathBuf,
    /// Its line in the file, from 1.
    pub line: u64,
    /// Its sequence, when the line could be read.
    pub seq: Option<u64>,
    /// Why.
    pub why: Breakage,
}

impl fmt::Display for BrokenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.why)
    }
}

/// What checking one chain (a tenant's trail, or one file) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// The tenant directory or the file checked.
    pub path: PathBuf,
    /// Files read.
    pub files: usize,
    /// Records that checked out, before the first broken one.
    pub records: u64,
    /// The sequence and hash of the last record that checked out: keep them
    /// elsewhere to tell later that nothing was cut from the end.
    pub last: Option<(u64, String)>,
    /// The first broken record, if any.
    pub broken: Option<BrokenRecord>,
}

impl ChainCheck {
    /// Whether the chain is intact.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Checks `path`: a trail file, a tenant directory (its files in order, as one
/// chain from seq 1), or a trail root (every tenant directory in it). An error
/// only when `path` cannot be read or holds no trail; a broken chain is a
/// [`ChainCheck`] with `broken` set.
pub fn verify_path(path: impl AsRef<Path>) -> Result<Vec<ChainCheck>> {
    let path = path.as_ref();
    if path.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The first file of a trail starts the chain; any other file is checked
        // on its own, from whatever record it starts with.
        let from_start = file_index(name) == Some(1);
        return Ok(vec![check_files(path, &[path.to_path_buf()], from_start)?]);
    }
    if !path.is_dir() {
        return Err(Error::config(format!(
            "{} is neither a trail file nor a directory",
            path.display()
        )));
    }
    let files = trail_files(path)?;
    if !files.is_empty() {
        let paths: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).collect();
        return Ok(vec![check_files(path, &paths, true)?]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let mut tenants: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    tenants.sort();
    let mut checks = Vec::new();
    for dir in tenants {
        let files = trail_files(&dir)?;
        if !files.is_empty() {
            let paths: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).collect();
            checks.push(check_files(&dir, &paths, true)?);
        }
    }
    if checks.is_empty() {
        return Err(Error::config(format!(
            "{} holds no audit trail (no audit-NNNNNN.jsonl files)",
            path.display()
        )));
    }
    Ok(checks)
}

/// Where the chain stands while checking.
struct Cursor {
    expected: Option<(u64, String)>,
}

fn check_files(path: &Path, files: &[PathBuf], from_start: bool) -> Result<ChainCheck> {
    let mut check = ChainCheck {
        path: path.to_path_buf(),
        files: 0,
        records: 0,
        last: None,
        broken: None,
    };
    let mut cursor = Cursor {
        expected: from_start.then(|| (1, GENESIS.to_owned())),
    };
    for file in files {
        check.files += 1;
        if let Some(broken) = check_file(file, &mut cursor, &mut check)? {
            check.broken = Some(broken);
            break;
        }
    }
    Ok(check)
}

fn check_file(
    path: &Path,
    cursor: &mut Cursor,
    check: &mut ChainCheck,
) -> Result<Option<BrokenRecord>> {
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if n == 0 {
            return Ok(None);
        }
        number += 1;
        let broken = |seq, why| {
            Some(BrokenRecord {
                file: path.to_path_buf(),
                line: number,
                seq,
                why,
            })
        };
        let Some(body) = line.strip_suffix(b"\n") else {
            return Ok(broken(
                None,
                Breakage::Malformed("the last line is cut short (no newline)".into()),
            ));
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return Ok(broken(None, Breakage::Malformed("not UTF-8".into())));
        };
        let rec: StoredRecord<'_> = match serde_json::from_str(text) {
            Ok(rec) => rec,
            Err(e) => {
                return Ok(broken(
                    None,
                    Breakage::Malformed(format!("not a trail record: {e}")),
                ));
            }
        };
        if !is_hash(&rec.hash) || !is_hash(&rec.prev) {
            return Ok(broken(
                Some(rec.seq),
                Breakage::Malformed("prev and hash must be 64 lowercase hex digits".into()),
            ));
        }
        if let Some((seq, prev)) = &cursor.expected {
            if rec.seq != *seq {
                return Ok(broken(
                    Some(rec.seq),
                    Breakage::SeqGap {
                        expected: *seq,
                        found: rec.seq,
                    },
                ));
            }
            if rec.prev != *prev {
                return Ok(broken(
                    Some(rec.seq),
                    Breakage::PrevMismatch {
                        expected: prev.clone(),
                        found: rec.prev.clone(),
                    },
                ));
            }
        }
        let computed = record_hash(&rec.prev, rec.seq, rec.event.get().as_bytes());
        if computed != rec.hash {
            return Ok(broken(
                Some(rec.seq),
                Breakage::HashMismatch {
                    stored: rec.hash.clone(),
                    computed,
                },
            ));
        }
        check.records += 1;
        check.last = Some((rec.seq, rec.hash.clone()));
        cursor.expected = Some((rec.seq + 1, rec.hash));
    }
}
