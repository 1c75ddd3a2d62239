//! A node's captured output: one file that rotates when it reaches its cap (`node.log` →
//! `node.log.1` → … → `node.log.<keep>`, the oldest dropped), as logrotate or Docker's
//! `json-file` driver (`max-size`, `max-file`) do, so that a chatty or hostile node cannot fill
//! the provider's disk; and its last lines, read across the rotated files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where a process's output goes and how much of it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    /// A file is rotated before it would grow past this (at a line end when the line fits).
    pub max_bytes: u64,
    /// Rotated files kept (`<path>.1` is the newest); at most `(keep + 1) × max_bytes` in all.
    pub keep: u32,
}

impl LogFile {
    pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
    pub const DEFAULT_KEEP: u32 = 2;

    /// `path` with the default cap: 16 MiB, two rotated files (48 MiB in all).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            keep: Self::DEFAULT_KEEP,
        }
    }

    /// The `i`th rotated file (`0`: the live one).
    pub fn rotated(&self, i: u32) -> PathBuf {
        rotated(&self.path, i)
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    if i == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

impl From<PathBuf> for LogFile {
    fn from(path: PathBuf) -> Self {
        Self::new(path)
    }
}

impl From<&PathBuf> for LogFile {
    fn from(path: &PathBuf) -> Self {
        Self::new(path.clone())
    }
}

impl From<&Path> for LogFile {
    fn from(path: &Path) -> Self {
        Self::new(path)
    }
}

/// The open live file of a [`LogFile`], and how big it is.
#[derive(Debug)]
pub(crate) struct RotatingLog {
    config: LogFile,
    file: File,
    size: u64,
}

impl RotatingLog {
    pub(crate) fn open(config: LogFile) -> io::Result<Self> {
        let file = append(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            config: LogFile {
                max_bytes: config.max_bytes.max(1),
                ..config
            },
            file,
            size,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.config.path
    }

    /// Appends `bytes`, rotating first wherever they would take the file past its cap: what
    /// fits up to its last line end stays in the full file (all of it if a single line is longer
    /// than the cap), the rest goes to a fresh one.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = self.config.max_bytes.saturating_sub(self.size) as usize;
            if bytes.len() <= room {
                self.file.write_all(bytes)?;
                self.size += bytes.len() as u64;
                return Ok(());
            }
            let fits = match bytes[..room].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                // A line longer than a whole file: cut it where the file is full.
                None if self.size == 0 => room,
                None => 0,
            };
            self.file.write_all(&bytes[..fits])?;
            self.size += fits as u64;
            bytes = &bytes[fits..];
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.config.keep;
        if keep == 0 {
            fs::remove_file(&self.config.path)?;
        } else {
            let _ = fs::remove_file(self.config.rotated(keep));
            for i in (1..keep).rev() {
                let from = self.config.rotated(i);
                if from.exists() {
                    fs::rename(&from, self.config.rotated(i + 1))?;
                }
            }
            fs::rename(&self.config.path, self.config.rotated(1))?;
        }
        self.file = append(&self.config.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The longest line [`capture`] holds back waiting for its end; a longer one is written cut.
const MAX_LINE: u64 = 64 * 1024;

/// Copies `from` (e.g. the read end of a child's stderr pipe) into `log`, rotating at its cap,
/// whole lines at a time, on a thread of its own until `from` closes.
pub fn capture(
    from: impl Read + Send + 'static,
    log: LogFile,
) -> io::Result<std::thread::JoinHandle<()>> {
    use std::io::BufRead;
    let mut log = RotatingLog::open(log)?;
    Ok(std::thread::spawn(move || {
        let mut from = io::BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut from).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                // A failing disk drops output; the writer never blocks on it.
                Ok(_) => drop(log.write(&line)),
            }
        }
    }))
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// How much of a log's end [`tail_lines`] reads at most.
const TAIL_WINDOW: u64 = 256 * 1024;
/// Rotated files [`tail_lines`] looks into at most.
const TAIL_FILES: u32 = 16;

/// The last `n` lines of a log file, continued into its rotated files (`<path>.1`, …) when the
/// live one holds fewer (reads at most the last 256 KiB in all).
pub fn tail_lines(path: &Path, n: usize) -> io::Result<String> {
    // Newest first: the live file (which must exist), then the rotated ones while they exist.
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let (mut total, mut lines) = (0u64, 0usize);
    for i in 0..=TAIL_FILES {
        let mut file = match File::open(rotated(path, i)) {
            Ok(f) => f,
            Err(e) if i > 0 && e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let want = (TAIL_WINDOW - total).min(len);
        file.seek(SeekFrom::Start(len - want))?;
        let mut buf = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut buf)?;
        total += buf.len() as u64;
        lines += buf.iter().filter(|b| **b == b'\n').count();
        parts.push(buf);
        if total >= TAIL_WINDOW || lines > n {
            break;
        }
    }
    let bytes: Vec<u8> = parts.into_iter().rev().flatten().collect();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = lines[skip..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn log(dir: &Path, max_bytes: u64, keep: u32) -> RotatingLog {
        RotatingLog::open(LogFile {
            path: dir.join("node.log"),
            max_bytes,
            keep,
        })
        .unwrap()
    }

    fn read(dir: &Path, name: &str) -> Option<String> {
        fs::read_to_string(dir.join(name)).ok()
    }

    #[test]
    fn rotates_at_line_ends_within_the_cap_and_keeps_so_many_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = log(dir.path(), 10, 2);
        // Whole lines (as the pumps write them) stay together; no file passes 10 bytes.
        for chunk in ["aaa\nbbb\n", "ccc\n", "dddd\neeee\n", "ff\n"] {
            l.write(chunk.as_bytes()).unwrap();
        }
        assert_eq!(read(dir.path(), "node.log").as_deref(), Some("eeee\nff\n"));
        assert_eq!(
            read(dir.path(), "node.log.1").as_deref(),
            Some("ccc\ndddd\n")
        );
        assert_eq!(
            read(dir.path(), "node.log.2").as_deref(),
            Some("aaa\nbbb\n")
        );
        l.write(b"gggggg\n").unwrap();
        // The oldest is gone.
        assert_eq!(
            read(dir.path(), "node.log.2").as_deref(),
            Some("ccc\ndddd\n")
        );
        assert_eq!(read(dir.path(), "node.log.3"), None);
        // The last lines read straight across the files.
        assert_eq!(
            tail_lines(&dir.path().join("node.log"), 4).unwrap(),
            "dddd\neeee\nff\ngggggg\n"
        );
        assert_eq!(
            tail_lines(&dir.path().join("node.log"), 100).unwrap(),
            "ccc\ndddd\neeee\nff\ngggggg\n"
        );
    }

    #[test]
    fn a_line_longer_than_a_file_is_cut_and_nothing_is_kept_with_keep_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = log(dir.path(), 4, 0);
        l.write(b"0123456789\n").unwrap();
        assert_eq!(read(dir.path(), "node.log").as_deref(), Some("89\n"));
        assert_eq!(read(dir.path(), "node.log.1"), None);
        // An existing file is appended to, its size counted.
        drop(l);
        let mut l = log(dir.path(), 4, 1);
        l.write(b"ab\n").unwrap();
        assert_eq!(read(dir.path(), "node.log.1").as_deref(), Some("89\n"));
        assert_eq!(read(dir.path(), "node.log").as_deref(), Some("ab\n"));
    }

    #[test]
    fn a_captured_stream_rotates_and_ends_with_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let path = dir.path().join("runtime.log");
        let config = LogFile {
            path: path.clone(),
            max_bytes: 100,
            keep: 1,
        };
        let pump = capture(reader, config).unwrap();
        for i in 0..1000 {
            writeln!(writer, "line {i:04}").unwrap();
        }
        drop(writer);
        pump.join().unwrap();
        // 10-byte lines: 10 per file, the last 20 kept.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 10);
        assert_eq!(tail_lines(&path, 1).unwrap(), "line 0999\n");
        assert_eq!(tail_lines(&path, 100).unwrap().lines().count(), 20);
        assert!(!dir.path().join("runtime.log.2").exists());
    }

    #[test]
    fn tail_of_a_missing_log_is_an_error_and_of_an_empty_one_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tail_lines(&dir.path().join("nope"), 3).is_err());
        fs::write(dir.path().join("empty"), "").unwrap();
        assert_eq!(tail_lines(&dir.path().join("empty"), 3).unwrap(), "");
    }
}
