//! Logging of the running agent: structured `tracing` lines to stderr and to a size-rotated
//! `agent.log` in the log directory (bounded count), so a service's history survives restarts
//! and the GUI can browse it. A log directory that cannot be written never stops the agent: it
//! says so on stderr and logs there alone.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use g2c_proto::rotate::RotatingFile;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogConfig;

/// Name of the live log file in the log directory.
pub const LOG_FILE: &str = "agent.log";

/// A `MakeWriter` over one shared rotating file; each event is one line, flushed at once.
#[derive(Clone)]
pub struct RotatingWriter(Arc<Mutex<RotatingFile>>);

impl RotatingWriter {
    /// Open `dir/agent.log` with the config's limits.
    pub fn open(dir: &Path, config: &LogConfig) -> io::Result<Self> {
        let file = RotatingFile::open(&dir.join(LOG_FILE), config.max_bytes, config.max_files)?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }
}

/// The file writer of this process, once `init` opened one (for `reconfigure`).
static FILE_WRITER: std::sync::OnceLock<RotatingWriter> = std::sync::OnceLock::new();

/// Apply new log settings to the running process: the files move to the new directory and
/// limits. Fails when file logging was never set up (then only a restart applies them).
pub fn reconfigure(config: &LogConfig) -> io::Result<()> {
    let writer = FILE_WRITER
        .get()
        .ok_or_else(|| io::Error::other("file logging is not active"))?;
    let dir = config.dir();
    std::fs::create_dir_all(&dir)?;
    let file = RotatingFile::open(&dir.join(LOG_FILE), config.max_bytes, config.max_files)?;
    *writer.0.lock().map_err(|_| io::Error::other("log lock"))? = file;
    Ok(())
}

impl Write for RotatingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let mut file = self.0.lock().map_err(|_| io::Error::other("log lock"))?;
        for line in text.lines() {
            file.write_line(line)?;
        }
        file.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingWriter {
    type Writer = RotatingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Install the global subscriber: stderr, plus rotating files when `config` is given and its
/// directory is usable. The level comes from `G2C_LOG` (default `info`). Returns the live log
/// file's path when file logging is on.
pub fn init(config: Option<&LogConfig>) -> Option<PathBuf> {
    let filter = || EnvFilter::try_from_env("G2C_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_filter(filter());
    let file = config.and_then(|c| {
        let dir = c.dir();
        match std::fs::create_dir_all(&dir).and_then(|()| RotatingWriter::open(&dir, c)) {
            Ok(w) => Some((dir.join(LOG_FILE), w)),
            Err(e) => {
                eprintln!(
                    "g2c-agent: cannot write logs to {}: {e}; logging to stderr only",
                    dir.display()
                );
                None
            }
        }
    });
    let (path, file_layer) = match file {
        Some((path, w)) => (
            {
                let _ = FILE_WRITER.set(w.clone());
                Some(path)
            },
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(w)
                    .with_filter(filter()),
            ),
        ),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .init();
    path
}
