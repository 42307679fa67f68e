//! Segment files: the append-only files of JSON lines, one event per line, that
//! the spool writes to and drains from, oldest index first.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

const PREFIX: &str = "segment-";
const SUFFIX: &str = ".jsonl";

/// Bytes read at once while draining or scanning; a longer line grows the read.
const CHUNK_BYTES: u64 = 1024 * 1024;

/// One segment file: its index (the order of the files) and the bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) index: u64,
    pub(super) len: u64,
}

/// The file of segment `index` in `dir`.
pub(super) fn path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{index:020}{SUFFIX}"))
}

fn index_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first. Other files are left alone.
pub(super) fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(index) = entry.file_name().to_str().and_then(index_of) else {
            continue;
        };
        let meta = entry.metadata()?;
        if meta.is_file() {
            out.push(Segment {
                index,
                len: meta.len(),
            });
        }
    }
    out.sort_by_key(|s| s.index);
    Ok(out)
}

fn read_range(file: &mut File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(to.saturating_sub(from))
        .map_err(|_| io::Error::other("segment range does not fit in memory"))?;
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(from))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// How many complete (newline-terminated) lines lie in `[from, to)`.
pub(super) fn count_lines(file: &mut File, from: u64, to: u64) -> io::Result<u64> {
    let mut n = 0;
    let mut at = from;
    while at < to {
        let end = to.min(at + CHUNK_BYTES);
        let buf = read_range(file, at, end)?;
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        at = end;
    }
    Ok(n)
}

/// The offset just after the last newline in the first `len` bytes (0 when there
/// is none): where the complete lines of a segment end.
pub(super) fn complete_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK_BYTES);
        let buf = read_range(file, start, end)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Whether `offset` is the start of a line: the first byte, or just after a newline.
pub(super) fn starts_line(file: &mut File, offset: u64) -> io::Result<bool> {
    if offset == 0 {
        return Ok(true);
    }
    Ok(read_range(file, offset - 1, offset)? == b"\n")
}

/// The bytes `[from, to)` of a segment, read whole (to set a torn line aside).
pub(super) fn read_bytes(file: &mut File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    read_range(file, from, to)
}

/// Complete lines read from one segment.
#[derive(Debug)]
pub(super) struct Lines {
    buf: Vec<u8>,
    lines: Vec<(u64, Range<usize>)>,
    /// The offset just after the last line returned.
    pub(super) end: u64,
}

impl Lines {
    /// Each line's offset in the segment and its bytes, without the newline.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.lines
            .iter()
            .map(|(offset, range)| (*offset, &self.buf[range.clone()]))
    }

    /// How many lines.
    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when `[from, limit)` held no complete line.
    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Up to `max_lines` complete lines starting at `from`, reading no further than
/// `limit`. When no newline lies in `[from, limit)`, the result is empty.
pub(super) fn read_lines(
    file: &mut File,
    from: u64,
    limit: u64,
    max_lines: usize,
) -> io::Result<Lines> {
    let mut want = CHUNK_BYTES;
    loop {
        let end = limit.min(from.saturating_add(want));
        let buf = read_range(file, from, end)?;
        let mut lines = Vec::new();
        let mut pos = 0;
        while lines.len() < max_lines {
            let Some(i) = buf[pos..].iter().position(|&b| b == b'\n') else {
                break;
            };
            lines.push((from + pos as u64, pos..pos + i));
            pos += i + 1;
        }
        // A line longer than the read: read more, unless the limit is reached.
        if lines.is_empty() && end < limit {
            want = want.saturating_mul(2);
            continue;
        }
        return Ok(Lines {
            buf,
            lines,
            end: from + pos as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn names_round_trip_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for i in [3, 1, 20] {
            File::create(path(dir.path(), i)).unwrap();
        }
        File::create(dir.path().join("segment-x.jsonl")).unwrap();
        File::create(dir.path().join("cursor")).unwrap();
        let found: Vec<u64> = list(dir.path()).unwrap().iter().map(|s| s.index).collect();
        assert_eq!(found, vec![1, 3, 20]);
    }

    #[test]
    fn lines_counts_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), 1);
        let mut f = File::create(&p).unwrap();
        f.write_all(b"{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        let mut f = File::open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        assert_eq!(count_lines(&mut f, 0, len).unwrap(), 2);
        assert_eq!(complete_len(&mut f, len).unwrap(), 16);
        assert!(starts_line(&mut f, 8).unwrap());
        assert!(!starts_line(&mut f, 9).unwrap());
        let lines = read_lines(&mut f, 0, len, 10).unwrap();
        let got: Vec<(u64, &[u8])> = lines.iter().collect();
        assert_eq!(got, vec![(0, &b"{\"a\":1}"[..]), (8, &b"{\"b\":2}"[..])]);
        assert_eq!(lines.end, 16);
        assert!(read_lines(&mut f, 16, len, 10).unwrap().is_empty());
        let one = read_lines(&mut f, 0, len, 1).unwrap();
        assert_eq!((one.len(), one.end), (1, 8));
    }
}
