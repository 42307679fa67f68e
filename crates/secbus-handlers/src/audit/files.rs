//! Where a tenant's trail lives: `<root>/<tenant>/audit-000001.jsonl`, ...

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The file name of trail file number `index`.
pub(crate) fn file_name(index: u32) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The number in a trail file name, or `None` for any other file.
pub(crate) fn file_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&i| i > 0)
}

/// The trail files of a tenant directory, in chain order.
pub(crate) fn trail_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        if let Some(index) = entry.file_name().to_str().and_then(file_index)
            && entry.path().is_file()
        {
            files.push((index, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        assert_eq!(file_name(7), "audit-000007.jsonl");
        assert_eq!(file_index("audit-000007.jsonl"), Some(7));
        assert_eq!(file_index("audit-1234567.jsonl"), Some(1_234_567));
        assert_eq!(file_index("audit-000000.jsonl"), None);
        assert_eq!(file_index("audit-7.jsonl"), None);
        assert_eq!(file_index("notes.txt"), None);
    }
}
