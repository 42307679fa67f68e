//! The journal: one spool directory on disk (segments, cursor, lock file,
//! quarantine) and what is known of it in memory: what is written, how far the
//! drain got, how many bytes it holds.
//!
//! Writers append one line per event with one `write` each, so an event the
//! spool accepted is in the operating system even if the process is killed the
//! next instant; a timer and [`Journal::sync`] put it on disk. The drain reads
//! only bytes a writer finished, and deletes a segment once it has drained it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::cursor::{self, Cursor};
use super::quarantine::Quarantine;
use super::segment::{self, Lines, Segment};
use crate::error::{Error, ErrorKind, Result};

const LOCK_NAME: &str = "lock";

/// Segments are rotated at this size (or at an eighth of the spool's bound, when
/// smaller), so drained space is given back while the spool still drains.
const MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

fn segment_max(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(1, MAX_SEGMENT_BYTES)
}

/// What the drain reads next.
#[derive(Debug)]
pub(super) enum Next {
    /// Complete lines of one segment, in order.
    Lines {
        /// The segment they are in.
        segment: u64,
        /// The lines.
        lines: Lines,
    },
    /// Bytes at the end of a finished segment with no newline: a write cut short.
    Torn {
        segment: u64,
        offset: u64,
        end: u64,
        bytes: Vec<u8>,
    },
    /// Nothing to drain now.
    Empty,
}

/// The drain's open segment file.
#[derive(Debug, Default)]
pub(super) struct ReadHandle {
    file: Option<(u64, File)>,
}

impl ReadHandle {
    fn open(&mut self, dir: &Path, index: u64) -> io::Result<&mut File> {
        if self.file.as_ref().is_none_or(|(i, _)| *i != index) {
            self.file = None;
            let f = File::open(segment::path(dir, index))?;
            self.file = Some((index, f));
        }
        match &mut self.file {
            Some((_, f)) => Ok(f),
            None => Err(io::Error::other("segment not open")),
        }
    }
}

#[derive(Debug)]
struct State {
    /// Live segments, oldest first; the writer appends to the last one.
    segments: VecDeque<Segment>,
    writer: Option<Arc<File>>,
    writer_dirty: bool,
    /// Finished segments written since the last fsync.
    unsynced: Vec<Arc<File>>,
    dir_dirty: bool,
    next_index: u64,
    /// Sum of the live segments' lengths.
    disk_bytes: u64,
    /// Complete lines after `read`: events waiting.
    depth: u64,
    /// The next byte to drain.
    read: Cursor,
}

/// One spool directory.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    max_bytes: AtomicU64,
    state: Mutex<State>,
    /// Serialises writes of the cursor file (the drain and `sync`).
    cursor_io: Mutex<()>,
    quarantine: Quarantine,
    refused: AtomicU64,
    /// Wakes the drain: a line was written.
    pub(super) written: Notify,
    /// Wakes `wait_drained`: the journal became empty, or draining stopped.
    pub(super) settled: Notify,
    /// Held (locked) while the journal is open, so one process drains a directory.
    _lock: File,
}

fn io_error(dir: &Path, what: &str, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("fallback spool {}: {what}", dir.display()),
    )
    .with_source(e)
}

impl Journal {
    /// Opens (creating when needed) the spool in `dir`: takes its lock, finds what
    /// earlier runs left after the cursor, and sets a torn last line aside.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<Journal> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e: io::Error| io_error(dir, &what, e)
        };
        std::fs::create_dir_all(dir).map_err(err("cannot create the directory"))?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_NAME))
            .map_err(err("cannot open the lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "fallback spool {}: the directory is in use by another process",
                        dir.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(err("cannot lock the directory")(e)),
        }

        let saved = cursor::read(dir).unwrap_or_default();
        let mut segments = segment::list(dir).map_err(err("cannot list the segments"))?;
        // Segments below the cursor were drained; a crash came before their deletion.
        segments.retain(|s| {
            if s.index >= saved.segment {
                return true;
            }
            if let Err(e) = std::fs::remove_file(segment::path(dir, s.index)) {
                tracing::warn!(code = "io_error", segment = s.index, error = %e,
                    spool = %dir.display(), "cannot delete a drained segment");
            }
            false
        });
        let quarantine = Quarantine::new(dir);
        if let Some(last) = segments.last_mut() {
            repair_torn_tail(dir, last, &quarantine)
                .map_err(err("cannot repair the last segment"))?;
        }
        let next_index = segments
            .last()
            .map_or(1, |s| s.index + 1)
            .max(saved.segment + 1);

        let mut read = Cursor {
            segment: next_index,
            offset: 0,
        };
        let mut depth = 0;
        for (i, s) in segments.iter().enumerate() {
            let mut f =
                File::open(segment::path(dir, s.index)).map_err(err("cannot read a segment"))?;
            let mut from = 0;
            if i == 0 {
                if s.index == saved.segment {
                    from = checked_offset(dir, &mut f, *s, saved.offset)
                        .map_err(err("cannot read a segment"))?;
                }
                read = Cursor {
                    segment: s.index,
                    offset: from,
                };
            }
            depth +=
                segment::count_lines(&mut f, from, s.len).map_err(err("cannot read a segment"))?;
        }
        let mut disk_bytes: u64 = segments.iter().map(|s| s.len).sum();
        if depth == 0 {
            // Drained, or only a torn line: nothing to keep.
            for s in segments.drain(..) {
                let _ = std::fs::remove_file(segment::path(dir, s.index));
            }
            disk_bytes = 0;
            read = Cursor {
                segment: next_index,
                offset: 0,
            };
        } else {
            tracing::info!(
                spool = %dir.display(),
                depth,
                bytes = disk_bytes,
                "the fallback spool holds events from an earlier run; draining them in the background"
            );
        }
        cursor::write(dir, read, false).map_err(err("cannot write the cursor"))?;

        Ok(Journal {
            dir: dir.to_owned(),
            max_bytes: AtomicU64::new(max_bytes),
            state: Mutex::new(State {
                segments: segments.into(),
                writer: None,
                writer_dirty: false,
                unsynced: Vec::new(),
                dir_dirty: true,
                next_index,
                disk_bytes,
                depth,
                read,
            }),
            cursor_io: Mutex::new(()),
            quarantine,
            refused: AtomicU64::new(0),
            written: Notify::new(),
            settled: Notify::new(),
            _lock: lock,
        })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn depth(&self) -> u64 {
        self.state.lock().depth
    }

    pub(super) fn bytes(&self) -> u64 {
        self.state.lock().disk_bytes
    }

    pub(super) fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    pub(super) fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Counts one refused event and returns the new total.
    pub(super) fn count_refused(&self) -> u64 {
        self.refused.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(super) fn skipped_total(&self) -> u64 {
        self.quarantine.total()
    }

    /// Appends one line (ending in a newline). Returns true when the journal was
    /// empty before: spooling starts with this line.
    pub(super) fn append(&self, line: &[u8]) -> Result<bool> {
        let max = self.max_bytes();
        let need = line.len() as u64;
        let mut st = self.state.lock();
        if st.disk_bytes.saturating_add(need) > max {
            return Err(Error::new(
                ErrorKind::Full,
                format!(
                    "fallback spool {} is full ({} of {max} bytes used, {} events waiting); \
                     the event was not spooled",
                    self.dir.display(),
                    st.disk_bytes,
                    st.depth
                ),
            ));
        }
        let back_len = st.segments.back().map_or(0, |s| s.len);
        if st.writer.is_some() && back_len > 0 && back_len + need > segment_max(max) {
            seal(&mut st);
        }
        let file = match &st.writer {
            Some(f) => f.clone(),
            None => {
                let index = st.next_index;
                let f = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(segment::path(&self.dir, index))
                    .map_err(|e| io_error(&self.dir, "cannot create a segment", e))?;
                let f = Arc::new(f);
                st.next_index += 1;
                st.segments.push_back(Segment { index, len: 0 });
                st.writer = Some(f.clone());
                st.dir_dirty = true;
                f
            }
        };
        if let Err(e) = (&*file).write_all(line) {
            // Cut a partial write off, so the next line starts on a line; if that
            // fails too, start a new segment and let the drain set the tail aside.
            if file.set_len(back_len_of(&st)).is_err() {
                seal(&mut st);
            }
            return Err(io_error(&self.dir, "cannot write an event", e));
        }
        if let Some(back) = st.segments.back_mut() {
            back.len += need;
        }
        st.disk_bytes += need;
        st.depth += 1;
        st.writer_dirty = true;
        let started = st.depth == 1;
        drop(st);
        self.written.notify_one();
        Ok(started)
    }

    /// The next lines to drain, at most `max_lines`. Deletes segments the drain
    /// has finished.
    pub(super) fn next(&self, handle: &mut ReadHandle, max_lines: usize) -> io::Result<Next> {
        loop {
            let (index, offset, limit, open) = {
                let mut st = self.state.lock();
                let read = st.read;
                let Some(pos) = st.segments.iter().position(|s| s.index >= read.segment) else {
                    return Ok(Next::Empty);
                };
                let seg = st.segments[pos];
                if seg.index > read.segment {
                    st.read = Cursor {
                        segment: seg.index,
                        offset: 0,
                    };
                }
                let open = pos + 1 == st.segments.len() && st.writer.is_some();
                if st.read.offset < seg.len {
                    (seg.index, st.read.offset, seg.len, open)
                } else if open {
                    return Ok(Next::Empty);
                } else {
                    st.segments.remove(pos);
                    st.disk_bytes -= seg.len;
                    st.read = Cursor {
                        segment: seg.index + 1,
                        offset: 0,
                    };
                    st.dir_dirty = true;
                    drop(st);
                    handle.file = None;
                    self.delete_segment(seg.index);
                    continue;
                }
            };
            let file = handle.open(&self.dir, index)?;
            let lines = segment::read_lines(file, offset, limit, max_lines)?;
            if !lines.is_empty() {
                return Ok(Next::Lines {
                    segment: index,
                    lines,
                });
            }
            if open {
                // Writers finish every line before its bytes count: not reached.
                return Ok(Next::Empty);
            }
            let bytes = segment::read_bytes(file, offset, limit)?;
            return Ok(Next::Torn {
                segment: index,
                offset,
                end: limit,
                bytes,
            });
        }
    }

    fn delete_segment(&self, index: u64) {
        if let Err(e) = std::fs::remove_file(segment::path(&self.dir, index))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(code = "io_error", segment = index, error = %e,
                spool = %self.dir.display(), "cannot delete a drained segment");
        }
    }

    /// The engine took `lines` lines of `segment`, up to `end`. Returns true when
    /// the journal is empty now (its files are then deleted).
    pub(super) fn commit(&self, segment: u64, end: u64, lines: u64) -> bool {
        let _io = self.cursor_io.lock();
        let mut st = self.state.lock();
        if st.read.segment == segment {
            st.read.offset = end;
        }
        st.depth = st.depth.saturating_sub(lines);
        let emptied = st.depth == 0;
        let mut gone = Vec::new();
        if emptied {
            st.writer = None;
            st.writer_dirty = false;
            st.unsynced.clear();
            gone = st.segments.drain(..).map(|s| s.index).collect();
            st.disk_bytes = 0;
            st.read = Cursor {
                segment: st.next_index,
                offset: 0,
            };
            st.dir_dirty = true;
        }
        let read = st.read;
        if !emptied {
            drop(st);
        }
        // Saved before the files go: a crash in between leaves segments below
        // the cursor, which the next open deletes as drained.
        if let Err(e) = cursor::write(&self.dir, read, false) {
            tracing::warn!(code = "io_error", error = %e, spool = %self.dir.display(),
                "cannot save the spool cursor; a restart would send some events again");
        }
        for index in gone {
            self.delete_segment(index);
        }
        emptied
    }

    /// Moves the drain past `[.., end)` of `segment` without delivering anything
    /// (a torn tail set aside).
    pub(super) fn skip(&self, segment: u64, end: u64) {
        let mut st = self.state.lock();
        if st.read.segment == segment {
            st.read.offset = st.read.offset.max(end);
        }
    }

    /// Sets a line aside in the quarantine file.
    pub(super) fn set_aside(
        &self,
        segment: u64,
        offset: u64,
        line: &[u8],
        code: &str,
        reason: &str,
        expected: bool,
    ) {
        self.quarantine
            .put(segment, offset, line, code, reason, expected);
    }

    /// Files written since the last call, and whether the directory changed.
    pub(super) fn take_unsynced(&self) -> (Vec<Arc<File>>, bool) {
        let mut st = self.state.lock();
        let mut files = std::mem::take(&mut st.unsynced);
        if st.writer_dirty {
            if let Some(w) = &st.writer {
                files.push(w.clone());
            }
            st.writer_dirty = false;
        }
        (files, std::mem::take(&mut st.dir_dirty))
    }

    /// Puts everything written, and the cursor, on disk.
    pub(super) fn sync(&self) -> Result<()> {
        let (files, dir_dirty) = self.take_unsynced();
        for f in files {
            f.sync_data()
                .map_err(|e| io_error(&self.dir, "cannot sync a segment", e))?;
        }
        if dir_dirty {
            cursor::sync_dir(&self.dir)
                .map_err(|e| io_error(&self.dir, "cannot sync the directory", e))?;
        }
        let _io = self.cursor_io.lock();
        let read = self.state.lock().read;
        cursor::write(&self.dir, read, true)
            .map_err(|e| io_error(&self.dir, "cannot write the cursor", e))
    }
}

fn back_len_of(st: &State) -> u64 {
    st.segments.back().map_or(0, |s| s.len)
}

/// Stops appending to the last segment; the next line starts a new one.
fn seal(st: &mut State) {
    if let Some(w) = st.writer.take()
        && std::mem::take(&mut st.writer_dirty)
    {
        st.unsynced.push(w);
    }
}

/// Where in segment `s` a saved cursor offset may resume: the offset itself
/// when it starts a line, else the segment's start (sending some events again is
/// safe, skipping some is not).
fn checked_offset(dir: &Path, f: &mut File, s: Segment, offset: u64) -> io::Result<u64> {
    if offset <= s.len && segment::starts_line(f, offset)? {
        return Ok(offset);
    }
    tracing::warn!(
        code = "io_error",
        spool = %dir.display(),
        segment = s.index,
        offset,
        len = s.len,
        "the spool cursor is not at a line of its segment; draining the segment from its start"
    );
    Ok(0)
}

/// A crash in the middle of a write leaves the last line without its newline:
/// that event was never accepted, so it is set aside and cut off.
fn repair_torn_tail(dir: &Path, seg: &mut Segment, quarantine: &Quarantine) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment::path(dir, seg.index))?;
    let complete = segment::complete_len(&mut f, seg.len)?;
    if complete == seg.len {
        return Ok(());
    }
    let torn = segment::read_bytes(&mut f, complete, seg.len)?;
    quarantine.put(
        seg.index,
        complete,
        &torn,
        ErrorKind::MalformedJson.code(),
        "the last line of the spool has no end: a write cut short by a crash",
        true,
    );
    f.set_len(complete)?;
    f.sync_data()?;
    seg.len = complete;
    Ok(())
}
