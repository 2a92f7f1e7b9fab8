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
    #[error("cannot write summaries to '{path}': {err}")]
    Io {
        /// Output path.
        path: PathBuf,
        /// The I/O error (in the message, so not also a `source()`).
        err: io::Error,
    },
    /// At exit, summaries kept in memory still could not be spooled.
    #[error("{count} summaries could not be written to the spool '{dir}': {err}")]
    Unspooled {
        /// How many were lost.
        count: usize,
        /// The spool directory.
        dir: PathBuf,
        /// The last I/O error.
        err: io::Error,
    },
}

/// Receives each window's summary, in window order.
pub trait Sink: Send {
    /// Takes one summary (by reference: it can be tens of megabytes, and
    /// the pipeline reuses its memory; a sink may stamp fields into it,
    /// which the sinks after it in a [`Tee`] then see). An error stops the
    /// sensor.
    fn emit(&mut self, summary: &mut Summary) -> Result<(), SinkError>;
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
    /// Opens `path` (`-` is standard output) for appending: `keep` keeps
    /// what it holds (live capture: a restarted sensor goes on where it
    /// stopped), otherwise it is emptied first (a capture file's summaries
    /// replace an earlier run's). Writes always go to the end of the file,
    /// so logrotate's `copytruncate` leaves no hole of NUL bytes where the
    /// old end was.
    pub fn create(path: &Path, keep: bool) -> Result<JsonLines, SinkError> {
        let err = |err| SinkError::Io {
            path: path.to_path_buf(),
            err,
        };
        let w: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(io::stdout())
        } else {
            // Emptied by opening with O_TRUNC, not by truncating the open
            // file: `--out /dev/null` refuses ftruncate.
            if !keep {
                File::create(path).map_err(err)?;
            }
            Box::new(
                File::options()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(err)?,
            )
        };
        Ok(JsonLines {
            path: path.to_path_buf(),
            // Smaller than the chunks `Summary::write_json` hands over, so
            // those go straight to the file instead of through this buffer.
            out: BufWriter::with_capacity(1 << 16, w),
        })
    }

    fn io(&self, err: io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.clone(),
            err,
        }
    }
}

impl Sink for JsonLines {
    fn emit(&mut self, summary: &mut Summary) -> Result<(), SinkError> {
        summary
            .write_json(&mut self.out)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.io(e))?;
        self.out.flush().map_err(|e| self.io(e))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}

/// Hands each summary to several sinks (e.g. a file and the upload spool).
pub struct Tee(pub Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn emit(&mut self, summary: &mut Summary) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.emit(summary))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}

/// Keeps summaries in memory (for library users and tests).
#[derive(Default)]
pub struct Collect(pub std::sync::Arc<std::sync::Mutex<Vec<Summary>>>);

impl Sink for Collect {
    fn emit(&mut self, summary: &mut Summary) -> Result<(), SinkError> {
        if let Ok(mut v) = self.0.lock() {
            v.push(summary.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::tests::summary;
    use darkscope_common::Timestamp;

    /// logrotate's `copytruncate` (deploy/logrotate/darkscope) copies the
    /// file and truncates it while the sensor keeps it open: the next
    /// summary must start the file again, not land at the old offset
    /// behind a run of NUL bytes. A restarted live sensor must not wipe the
    /// file either.
    #[test]
    fn the_summary_file_survives_copytruncate_and_restarts() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("summaries.jsonl");
        let mut out = JsonLines::create(&path, true).unwrap_or_else(|e| panic!("{e}"));
        out.emit(&mut summary(0)).unwrap_or_else(|e| panic!("{e}"));
        out.emit(&mut summary(60_000_000))
            .unwrap_or_else(|e| panic!("{e}"));
        // logrotate: copy, then truncate in place.
        std::fs::copy(&path, dir.path().join("summaries.jsonl.1"))
            .unwrap_or_else(|e| panic!("{e}"));
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .unwrap_or_else(|e| panic!("{e}"));
        out.emit(&mut summary(120_000_000))
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !text.contains('\0'),
            "a hole of NUL bytes before the summary"
        );
        assert_eq!(text.lines().count(), 1);
        let s: Summary = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.window.start, Timestamp(120_000_000));
        // A restarted live sensor appends; a capture file's run replaces.
        drop(out);
        // A new run writing one summary; the file's text after it.
        let run = |keep: bool, start: u64| {
            let mut sink = JsonLines::create(&path, keep).unwrap_or_else(|e| panic!("{e}"));
            sink.emit(&mut summary(start))
                .unwrap_or_else(|e| panic!("{e}"));
            drop(sink);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"))
        };
        let text = run(true, 180_000_000);
        assert_eq!(text.lines().count(), 2, "{text}");
        let text = run(false, 0);
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
