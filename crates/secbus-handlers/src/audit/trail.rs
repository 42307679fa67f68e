//! The writer of one tenant's trail: appends chained records, rotates by
//! size with the chain going on in the next file, syncs on request, and on
//! open resumes from the last record on disk.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{file_name, trail_files};
use super::record::{GENESIS, StoredRecord, encode_line, is_hash, record_hash};
use crate::error::{Error, ErrorKind, Result};

/// The chain position after the last record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The sequence the next record gets (1 for an empty trail).
    pub next_seq: u64,
    /// The hash of the last record ([`super::GENESIS`] for an empty trail).
    pub last_hash: String,
}

/// One tenant's audit trail, open for appending.
#[derive(Debug)]
pub struct AuditTrail {
    dir: PathBuf,
    max_file_bytes: u64,
    file: Arc<File>,
    index: u32,
    file_bytes: u64,
    head: ChainHead,
}

impl AuditTrail {
    /// Opens the trail in `dir` (created when absent), continuing the chain of
    /// the last record stored. A last line cut short by a crash (no newline)
    /// is removed: its record was never synced, so never acknowledged. A last
    /// record that is whole but does not hash right is refused with
    /// [`ErrorKind::BrokenTrail`]: a damaged trail is not extended.
    pub fn open(dir: impl AsRef<Path>, max_file_bytes: u64) -> Result<AuditTrail> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let files = trail_files(&dir)?;
        let mut head = ChainHead {
            next_seq: 1,
            last_hash: GENESIS.to_owned(),
        };
        // The newest file holding a record gives the head; newer empty files
        // (created just before a crash) are written to from their start.
        for (_, path) in files.iter().rev() {
            if let Some(found) = last_record(path)? {
                head = found;
                break;
            }
        }
        let index = files.last().map_or(1, |(i, _)| *i);
        let (file, file_bytes) = open_append(&dir, index)?;
        Ok(AuditTrail {
            dir,
            max_file_bytes: max_file_bytes.max(1),
            file: Arc::new(file),
            index,
            file_bytes,
            head,
        })
    }

    /// Appends a record holding `event` (its JSON bytes) and returns its
    /// sequence. The line is handed to the OS; it is durable after [`Self::sync`].
    pub fn append(&mut self, event: &[u8]) -> Result<u64> {
        let seq = self.head.next_seq;
        let (line, hash) = encode_line(&self.head.last_hash, seq, event);
        if self.file_bytes > 0 && self.file_bytes + line.len() as u64 > self.max_file_bytes {
            self.rotate()?;
        }
        (&*self.file)
            .write_all(&line)
            .map_err(|e| Error::io(format!("cannot write to {}", self.path().display()), e))?;
        self.file_bytes += line.len() as u64;
        self.head = ChainHead {
            next_seq: seq + 1,
            last_hash: hash,
        };
        Ok(seq)
    }

    /// Makes every record appended so far durable (fsync).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("cannot sync {}", self.path().display()), e))
    }

    /// The file records are appended to now, to sync without holding the trail:
    /// records appended before a rotation were synced by the rotation.
    pub fn current_file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Where the chain stands.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The path of the file being appended to.
    pub fn path(&self) -> PathBuf {
        self.dir.join(file_name(self.index))
    }

    fn rotate(&mut self) -> Result<()> {
        // The old file is complete: make it durable before the chain moves on.
        self.sync()?;
        let (file, bytes) = open_append(&self.dir, self.index + 1)?;
        self.index += 1;
        self.file = Arc::new(file);
        self.file_bytes = bytes;
        Ok(())
    }
}

/// Opens (creating) trail file `index` for appending, with the directory
/// entry made durable when the file is new.
fn open_append(dir: &Path, index: u32) -> Result<(File, u64)> {
    let path = dir.join(file_name(index));
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    if !existed && let Ok(d) = File::open(dir) {
        // Best effort: not every platform can sync a directory.
        let _ = d.sync_all();
    }
    let bytes = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    Ok((file, bytes))
}

/// The head after the last record of `path`, or `None` when it holds none.
/// Cuts a trailing partial line.
fn last_record(path: &Path) -> Result<Option<ChainHead>> {
    let io = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    // Read back from the end, more each time, until a whole line is in view.
    let mut window = 64 * 1024u64;
    loop {
        let len = file.metadata().map_err(io)?.len();
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        (&mut file)
            .take(len - start)
            .read_to_end(&mut tail)
            .map_err(io)?;
        let complete = match tail.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        if complete < tail.len() {
            let keep = start + complete as u64;
            tracing::warn!(
                file = %path.display(),
                cut_bytes = len - keep,
                "the audit trail ends in a partial line (a write cut short); removing it"
            );
            file.set_len(keep).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let body = &tail[..complete];
        if body.is_empty() {
            if start == 0 {
                return Ok(None);
            }
            window *= 4;
            continue;
        }
        let body = &body[..body.len() - 1];
        let line_start = match body.iter().rposition(|&b| b == b'\n') {
            Some(p) => p + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        return parse_head(path, &body[line_start..]).map(Some);
    }
}

fn parse_head(path: &Path, line: &[u8]) -> Result<ChainHead> {
    let broken = |why: &str| {
        Error::new(
            ErrorKind::BrokenTrail,
            format!(
                "the last record of {} {why}; run `secbus audit verify` on it",
                path.display()
            ),
        )
    };
    let text = std::str::from_utf8(line).map_err(|_| broken("is not UTF-8"))?;
    let rec: StoredRecord<'_> =
        serde_json::from_str(text).map_err(|_| broken("is not a trail record"))?;
    if !is_hash(&rec.hash)
        || record_hash(&rec.prev, rec.seq, rec.event.get().as_bytes()) != rec.hash
    {
        return Err(broken("does not match its hash"));
    }
    Ok(ChainHead {
        next_seq: rec.seq + 1,
        last_hash: rec.hash,
    })
}
