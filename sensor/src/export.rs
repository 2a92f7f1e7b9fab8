//! Where finished summaries go. [`Sink`] is the seam between the pipeline and
//! the outside world: a JSON-lines file here, the spool and uploader later.

use darkscope_common::Summary;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a sink could not take a summary.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("cannot write summaries to '{path}': {source}")]
    Io {
        /// Output path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// At exit, summaries kept in memory still could not be spooled.
    #[error("{count} summaries could not be written to the spool '{dir}': {source}")]
    Unspooled {
        /// How many were lost.
        count: usize,
        /// The spool directory.
        dir: PathBuf,
        /// The last I/O error.
        source: io::Error,
    },
    /// Serialisation failed (a bug: the wire types always serialise).
    #[error("cannot serialise summary: {0}")]
    Json(#[from] serde_json::Error),
}

/// Receives each window's summary, in window order.
pub trait Sink: Send {
    /// Takes one summary. An error stops the sensor.
    fn emit(&mut self, summary: Summary) -> Result<(), SinkError>;
    /// Flushes buffered output (called at the end of the run).
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Writes one summary per line to a file (or standard output for `-`),
/// flushed after each window so a reader never sees half a line for long.
pub struct JsonLines {
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonLines {
    /// Creates (truncates) `path`; `-` is standard output.
    pub fn create(path: &Path) -> Result<JsonLines, SinkError> {
        let w: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            Box::new(File::create(path).map_err(|source| SinkError::Io {
                path: path.to_path_buf(),
                source,
            })?)
        };
        Ok(JsonLines {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, w),
        })
    }

    fn io(&self, source: io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for JsonLines {
    fn emit(&mut self, summary: Summary) -> Result<(), SinkError> {
        serde_json::to_writer(&mut self.out, &summary)?;
        self.out.write_all(b"\n").map_err(|e| self.io(e))?;
        self.out.flush().map_err(|e| self.io(e))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}

/// Hands each summary to several sinks (e.g. a file and the upload spool).
pub struct Tee(pub Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn emit(&mut self, summary: Summary) -> Result<(), SinkError> {
        if let Some((last, rest)) = self.0.split_last_mut() {
            for s in rest {
                s.emit(summary.clone())?;
            }
            last.emit(summary)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}

/// Keeps summaries in memory (for library users and tests).
#[derive(Default)]
pub struct Collect(pub std::sync::Arc<std::sync::Mutex<Vec<Summary>>>);

impl Sink for Collect {
    fn emit(&mut self, summary: Summary) -> Result<(), SinkError> {
        if let Ok(mut v) = self.0.lock() {
            v.push(summary);
        }
        Ok(())
    }
}
