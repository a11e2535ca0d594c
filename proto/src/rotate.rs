//! A size-rotated append-only file: `audit.log`, then `audit.log.1` .. `audit.log.N-1`, never
//! more than `max_files` files in all and never a line split across two files.
//!
//! Not wire format, but the one piece of file handling both binaries share (the gateway's audit
//! log, the agent's log files), so it lives in the crate both already depend on.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An open, rotating log file.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: io::BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Open (append) `path`, rotating once it would pass `max_bytes`, keeping `max_files` files
    /// (the live one included; at least 1).
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file: io::BufWriter::new(file),
            size,
        })
    }

    /// Append one line (a newline is added). Rotates first if the line would not fit, unless
    /// the file is empty (a line longer than `max_bytes` still gets written, alone).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    /// Push buffered lines to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.max_files == 1 {
            self.file = io::BufWriter::new(
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&self.path)?,
            );
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.numbered(self.max_files - 1));
        for n in (1..self.max_files - 1).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        self.file = io::BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o640);
    }
    o.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_size_and_keeps_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = RotatingFile::open(&path, 100, 3).unwrap();
        for i in 0..50 {
            f.write_line(&format!("line {i:04} ............")).unwrap(); // 23 bytes each
        }
        f.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.log", "audit.log.1", "audit.log.2"]);
        for n in &names {
            let text = std::fs::read_to_string(dir.path().join(n)).unwrap();
            assert!(text.len() <= 100, "{n} is {} bytes", text.len());
            assert!(
                text.lines().all(|l| l.starts_with("line ")),
                "whole lines only"
            );
        }
        // Four lines fit in 100 bytes: the live file holds 48-49, .1 holds 44-47.
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.starts_with("line 0048") && live.ends_with("line 0049 ............\n"));
        let one = std::fs::read_to_string(dir.path().join("audit.log.1")).unwrap();
        assert!(one.starts_with("line 0044") && one.ends_with("line 0047 ............\n"));
    }

    #[test]
    fn a_line_longer_than_the_limit_is_written_whole_in_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = RotatingFile::open(&path, 10, 3).unwrap();
        f.write_line("short").unwrap();
        let long = "x".repeat(50);
        f.write_line(&long).unwrap();
        f.write_line("after").unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.2")).unwrap(),
            "short\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(),
            format!("{long}\n")
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        {
            let mut f = RotatingFile::open(&path, 30, 2).unwrap();
            f.write_line("0123456789012345678").unwrap(); // 20 bytes
            f.flush().unwrap();
        }
        let mut f = RotatingFile::open(&path, 30, 2).unwrap();
        f.write_line("abcdefghijklmnopqrs").unwrap(); // would pass 30: rotates first
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(),
            "0123456789012345678\n"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "abcdefghijklmnopqrs\n"
        );
    }
}
