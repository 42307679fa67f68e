//! The cursor file: how far the drain got, as `<segment> <offset>`.
//!
//! Everything before the cursor is in the engine. The cursor moves after each
//! batch the engine took, so a crash re-sends at most the last batch, which the
//! engine's dedup by event id absorbs. Segments with an index below the cursor's
//! are drained; a segment the cursor names that is gone was drained too.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const NAME: &str = "cursor";
const TEMP_NAME: &str = "cursor.tmp";

/// A position in the spool: the next byte to drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Cursor {
    pub(super) segment: u64,
    pub(super) offset: u64,
}

fn file(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// The cursor saved in `dir`; `None` when there is none or it cannot be read,
/// in which case draining starts at the oldest segment (a re-send, not a loss).
pub(super) fn read(dir: &Path) -> Option<Cursor> {
    let text = match std::fs::read_to_string(file(dir)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                code = "io_error",
                spool = %dir.display(),
                error = %e,
                "cannot read the spool cursor; draining from the oldest segment"
            );
            return None;
        }
    };
    let mut parts = text.split_ascii_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset)), None) => Some(Cursor { segment, offset }),
        _ => {
            tracing::warn!(
                code = "io_error",
                spool = %dir.display(),
                cursor = %text.escape_debug(),
                "the spool cursor is corrupt; draining from the oldest segment"
            );
            None
        }
    }
}

/// Saves `cursor` by writing a new file and renaming it over the old one, so a
/// crash leaves the old cursor or the new one, never half of one. With `durable`,
/// the file and the directory are synced to disk too.
pub(super) fn write(dir: &Path, cursor: Cursor, durable: bool) -> io::Result<()> {
    let temp = dir.join(TEMP_NAME);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    f.write_all(format!("{} {}\n", cursor.segment, cursor.offset).as_bytes())?;
    if durable {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&temp, file(dir))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    // Directories cannot be opened as files on every platform; where they cannot,
    // the file system orders metadata itself and there is nothing to do.
    match File::open(dir) {
        Ok(d) => d
            .sync_all()
            .or_else(|e| if cfg!(unix) { Err(e) } else { Ok(()) }),
        Err(_) if !cfg!(unix) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let c = Cursor {
            segment: 7,
            offset: 4096,
        };
        write(dir.path(), c, true).unwrap();
        assert_eq!(read(dir.path()), Some(c));
        std::fs::write(dir.path().join(NAME), "7 x\n").unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
