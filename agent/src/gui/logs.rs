//! The GUI's log browser: the rotating files in the log directory, read by byte offset so the
//! page can follow new lines (it asks for what came after its last offset), filtered by level
//! and text on the agent so only matching lines cross the wire.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use http::StatusCode;

use super::{error, json, Resp};
use crate::logging::LOG_FILE;
use crate::supervisor::Supervisor;

/// Most bytes read for one answer.
const MAX_READ: u64 = 1024 * 1024;
/// Bytes from the end a first look (no offset) starts at.
const TAIL_READ: u64 = 256 * 1024;
/// Most lines in one answer.
const MAX_LINES: usize = 2000;

/// One log line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`, or empty for a continuation line.
    pub level: &'static str,
    /// The whole line.
    pub text: String,
}

/// An answer of `GET /v1/logs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogChunk {
    /// The file read.
    pub file: String,
    /// Offset to ask from next time.
    pub offset: u64,
    /// The file was rotated (or truncated) since the given offset: the lines are a fresh tail.
    pub reset: bool,
    /// Matching lines, oldest first.
    pub lines: Vec<LogLine>,
}

fn valid_name(name: &str) -> bool {
    name == LOG_FILE
        || name
            .strip_prefix(LOG_FILE)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn level_of(line: &str) -> &'static str {
    match line.split_whitespace().nth(1) {
        Some("ERROR") => "ERROR",
        Some("WARN") => "WARN",
        Some("INFO") => "INFO",
        Some("DEBUG") => "DEBUG",
        Some("TRACE") => "TRACE",
        _ => "",
    }
}

fn rank(level: &str) -> u8 {
    match level {
        "ERROR" => 5,
        "WARN" => 4,
        "INFO" => 3,
        "DEBUG" => 2,
        "TRACE" => 1,
        _ => 0,
    }
}

/// `GET /v1/logs/files`: the log files, live one first.
pub fn files(control: &Supervisor) -> Resp {
    let dir = control.config().log.dir();
    let mut out: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = e.metadata().ok()?.len();
            valid_name(&name).then_some((name, size))
        })
        .collect();
    out.sort_by_key(|(n, _)| (n.len(), n.clone()));
    let files: Vec<_> = out
        .into_iter()
        .map(|(name, size)| serde_json::json!({"name": name, "size": size}))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({"dir": dir, "files": files}),
    )
}

/// `GET /v1/logs?file=&level=&q=&after=`.
pub fn query(control: &Supervisor, query: &str) -> Resp {
    let mut file = LOG_FILE.to_owned();
    let (mut level, mut text, mut after) = (String::new(), String::new(), None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "file" => file = v.into_owned(),
            "level" => level = v.to_ascii_uppercase(),
            "q" => text = v.into_owned(),
            "after" => after = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    if !valid_name(&file) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "no such log file");
    }
    let path = control.config().log.dir().join(&file);
    match read_chunk(&path, after) {
        Ok((offset, reset, raw)) => {
            let min = rank(&level);
            let needle = text.to_lowercase();
            let mut lines: Vec<LogLine> = raw
                .lines()
                .map(|l| LogLine {
                    level: level_of(l),
                    text: l.to_owned(),
                })
                .filter(|l| min == 0 || rank(l.level) >= min)
                .filter(|l| needle.is_empty() || l.text.to_lowercase().contains(&needle))
                .collect();
            if lines.len() > MAX_LINES {
                lines.drain(..lines.len() - MAX_LINES);
            }
            json(
                StatusCode::OK,
                &LogChunk {
                    file,
                    offset,
                    reset,
                    lines,
                },
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json(
            StatusCode::OK,
            &LogChunk {
                file,
                offset: 0,
                reset: after.is_some_and(|a| a > 0),
                lines: Vec::new(),
            },
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()),
    }
}

/// Read whole lines from `after` (or a tail when none, or when the file shrank below it).
/// Returns (next offset, reset, text).
pub fn read_chunk(path: &Path, after: Option<u64>) -> std::io::Result<(u64, bool, String)> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let (start, reset) = match after {
        Some(a) if a <= size => (a, false),
        other => (size.saturating_sub(TAIL_READ), other.is_some()),
    };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(MAX_READ).read_to_end(&mut buf)?;
    let mut begin = 0;
    if start > 0 && (after.is_none() || reset) {
        // A tail starts mid-line: skip to the next whole one.
        begin = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |p| p + 1);
    }
    let end = buf
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(begin, |p| p + 1)
        .max(begin);
    let text = String::from_utf8_lossy(&buf[begin..end]).into_owned();
    Ok((start + end as u64, reset, text))
}

/// The last `max` bytes of a file as whole lines (for the diagnostics bundle).
pub fn tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let start = size.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let begin = if start > 0 {
        buf.iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |p| p + 1)
    } else {
        0
    };
    Ok(String::from_utf8_lossy(&buf[begin..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_log_file_names_are_served() {
        for ok in ["agent.log", "agent.log.1", "agent.log.12"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "../agent.toml",
            "agent.secret",
            "agent.log.",
            "agent.log.1/../x",
            "agent.log.1234",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn following_returns_only_new_whole_lines_and_resets_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        std::fs::write(&path, "2026 INFO a: one\n2026 WARN a: two\npartial").unwrap();
        let (off, reset, text) = read_chunk(&path, None).unwrap();
        assert_eq!(
            (reset, text.as_str()),
            (false, "2026 INFO a: one\n2026 WARN a: two\n")
        );
        std::fs::write(&path, "2026 INFO a: one\n2026 WARN a: two\npartial line\n").unwrap();
        let (off2, _, text) = read_chunk(&path, Some(off)).unwrap();
        assert_eq!(text, "partial line\n");
        std::fs::write(&path, "x\n").unwrap();
        let (_, reset, text) = read_chunk(&path, Some(off2)).unwrap();
        assert_eq!((reset, text.as_str()), (true, "x\n"));
        assert_eq!(level_of("2026-11-25T03:52:35Z  WARN g2c: x"), "WARN");
    }
}
