use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_codec::BatchWriter;

use super::{Barriers, SourceError, trim_newline};
use crate::batch::Batch;
use crate::topology::StopSignal;
use crate::topology::output::Output;

/// How often a followed file is checked for new data.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Reads a file line by line: one record per line, empty key, value = the line
/// without its newline.
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    follow: bool,
    batch_size: usize,
    offset: u64,
    /// `weir_source_lag_bytes`: what is left to read.
    lag: Option<prometheus::IntGauge>,
}

impl FileSource {
    /// Opens `path` to read from byte `offset` (a checkpointed position).
    pub(super) fn open(
        path: &Path,
        follow: bool,
        batch_size: usize,
        offset: u64,
    ) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let offset = if len < offset {
            if !follow {
                return Err(std::io::Error::other(format!(
                    "the checkpoint resumes at byte {offset}, but the file has only {len}: it was replaced or truncated"
                )));
            }
            tracing::warn!(path = %path.display(), offset, len, "followed file is shorter than the checkpointed position: it was truncated; reading it from the start");
            0
        } else {
            offset
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 * 1024, file),
            follow,
            batch_size,
            offset,
            lag: None,
        })
    }

    /// Reports the bytes left to read in `gauge`, as it goes.
    pub(super) fn set_lag_gauge(&mut self, gauge: prometheus::IntGauge) {
        self.lag = Some(gauge);
    }

    fn report_lag(&self) {
        if let Some(gauge) = &self.lag
            && let Ok(meta) = self.reader.get_ref().metadata()
        {
            let left = meta.len().saturating_sub(self.offset);
            gauge.set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }

    /// Reads until the end (or a stop); returns the position after the last
    /// record sent.
    pub(super) fn run(
        mut self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<u64, SourceError> {
        let mut batch = BatchWriter::with_capacity(64 * 1024);
        let mut line = Vec::new();
        while !stop.is_stopped() {
            let n = self.reader.read_until(b'\n', &mut line)?;
            self.offset += n as u64;
            let complete = line.ends_with(b"\n");
            if n == 0 || (!complete && self.follow) {
                self.report_lag();
                // End of the data for now. A followed file may still grow, so a
                // partial last line waits for the rest of it.
                if !batch.is_empty() {
                    output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                }
                if !self.follow {
                    if !line.is_empty() {
                        batch.push(b"", &line, None);
                        line.clear();
                    }
                    break;
                }
                barriers.poll(self.offset - line.len() as u64, output)?;
                std::thread::sleep(FOLLOW_POLL);
                self.reopen_if_truncated(&mut line)?;
                continue;
            }
            batch.push(b"", trim_newline(&line), None);
            line.clear();
            if batch.len() as usize >= self.batch_size {
                output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                self.report_lag();
                barriers.poll(self.offset, output)?;
            }
        }
        if !batch.is_empty() {
            output.send(Batch::from_writer(batch))?;
        }
        Ok(self.offset - line.len() as u64)
    }

    /// A followed file that shrank was truncated (or rotated by copy-truncate):
    /// start again from its beginning.
    fn reopen_if_truncated(&mut self, partial: &mut Vec<u8>) -> std::io::Result<()> {
        let len = std::fs::metadata(&self.path)?.len();
        if len < self.offset {
            tracing::info!(path = %self.path.display(), "followed file was truncated; reading it from the start");
            self.reader.seek(SeekFrom::Start(0))?;
            self.offset = 0;
            partial.clear();
        }
        Ok(())
    }
}
