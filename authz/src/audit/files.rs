//! The audit files on disk: their names (active, rotated, hidden lock and temporary files),
//! reading a file's header and last complete line back, and making directory changes durable.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, Read},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// `.NAME.SUFFIX` beside `P` (= `DIR/NAME`): hidden, so a shell glob of the audit files
/// (`audit.jsonl*`, `*`) given to `verify` does not pick it up.
pub(crate) fn hidden_sibling(active: &Path, suffix: &str) -> PathBuf {
    let name = active
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    parent_dir(active).join(format!(".{name}.{suffix}"))
}

/// `P.NNNNNN`.
pub(crate) fn rotated_path(active: &Path, file_seq: u64) -> PathBuf {
    let mut name = active.as_os_str().to_owned();
    name.push(format!(".{file_seq:06}"));
    PathBuf::from(name)
}

/// Rotated files of `active`, oldest first.
pub(crate) fn list_rotated(active: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = parent_dir(active);
    let Some(name) = active.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let mut rotated = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if !suffix.is_empty()
            && suffix.bytes().all(|b| b.is_ascii_digit())
            && let Ok(file_seq) = suffix.parse::<u64>()
        {
            rotated.push((file_seq, entry.path()));
        }
    }
    rotated.sort();
    Ok(rotated)
}

pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes a rename or creation in `path`'s directory durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

/// The `file_seq` of the header on the first line, or `None` if the first line is not a
/// complete header record.
pub(crate) fn read_header_file_seq(file: &File) -> io::Result<Option<u64>> {
    let mut first = Vec::new();
    // A header is a few hundred bytes; the limit keeps a garbage file from being read whole.
    BufReader::new(file)
        .take(64 * 1024)
        .read_until(b'\n', &mut first)?;
    if first.last() != Some(&b'\n') {
        return Ok(None);
    }
    let Ok(value) = serde_json::from_slice::<Value>(&first) else {
        return Ok(None);
    };
    if value.get("kind").and_then(Value::as_str) != Some(super::record::KIND_HEADER) {
        return Ok(None);
    }
    Ok(value.get("file_seq").and_then(Value::as_u64))
}

pub(crate) struct Tail {
    /// The last line that ends with a newline (without the newline).
    pub last_line: Option<Vec<u8>>,
    /// Whether the file ends with bytes after the last newline.
    pub torn: bool,
}

/// Reads the end of a file backwards until it holds the last complete line.
pub(crate) fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    let last_byte = if len == 0 {
        None
    } else {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, len - 1)?;
        Some(byte[0])
    };
    let torn = last_byte.is_some_and(|b| b != b'\n');
    let complete_end = if torn {
        rfind_newline(file, len)?.map_or(0, |at| at + 1)
    } else {
        len
    };
    if complete_end == 0 {
        return Ok(Tail {
            last_line: None,
            torn,
        });
    }
    let start = rfind_newline(file, complete_end - 1)?.map_or(0, |at| at + 1);
    let mut line = vec![0u8; (complete_end - 1 - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(Tail {
        last_line: Some(line),
        torn,
    })
}

/// The offset of the last `\n` strictly before `before`, reading backwards in chunks.
fn rfind_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = before;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + at as u64));
        }
        end = start;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn tail_finds_the_last_complete_line_and_the_tear() {
        let (_dir, file) = file_with(b"one\ntwo\nthr");
        let tail = read_tail(&file, 11).unwrap();
        assert_eq!(tail.last_line.as_deref(), Some(&b"two"[..]));
        assert!(tail.torn);

        let (_dir, file) = file_with(b"one\ntwo\n");
        let tail = read_tail(&file, 8).unwrap();
        assert_eq!(tail.last_line.as_deref(), Some(&b"two"[..]));
        assert!(!tail.torn);

        let (_dir, file) = file_with(b"only");
        let tail = read_tail(&file, 4).unwrap();
        assert_eq!(tail.last_line, None);
        assert!(tail.torn);
    }

    #[test]
    fn tail_reads_lines_longer_than_one_chunk() {
        let mut bytes = b"first\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 200_000));
        bytes.push(b'\n');
        let (_dir, file) = file_with(&bytes);
        let tail = read_tail(&file, bytes.len() as u64).unwrap();
        assert_eq!(tail.last_line.unwrap().len(), 200_000);
    }

    #[test]
    fn rotated_files_are_listed_in_number_order() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.jsonl");
        for name in [
            "audit.jsonl.000010",
            "audit.jsonl.000002",
            "audit.jsonl.tmp",
            "other.1",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let listed: Vec<u64> = list_rotated(&active)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(listed, [2, 10]);
        assert_eq!(
            rotated_path(&active, 7),
            dir.path().join("audit.jsonl.000007")
        );
    }
}
