//! Lines of a file, optionally followed as it grows, as `tail -F` follows it:
//! by path and by identity (device and inode). A followed file that is
//! rotated by rename (logrotate's default) is read to its end, then the new
//! file at the path is read from its start; one that shrank in place was
//! truncated (copy-truncate) and is read again from its start. Positions in
//! checkpoints name the file's identity, so a restore after a rotation
//! finishes the rotated file (found beside the path) before the new one.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_codec::BatchWriter;

use super::timestamp::{Stamper, stamp};
use super::{Barriers, SourceError, is_full, read_line, trim_newline};
use crate::batch::Batch;
use crate::checkpoint::SourcePosition;
use crate::topology::StopSignal;
use crate::topology::output::Output;

/// How often a followed file is checked for new data.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// A file's identity: (device, inode).
type Identity = (u64, u64);

fn identity(meta: &std::fs::Metadata) -> Identity {
    (meta.dev(), meta.ino())
}

/// Reads a file line by line: one record per line, empty key, value = the line
/// without its newline.
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    /// The identity of the file being read (which the path may no longer name).
    identity: Identity,
    /// A followed file was rotated: the new file at the path, read once the
    /// old one is finished.
    next: Option<File>,
    follow: bool,
    batch_size: usize,
    max_record: u64,
    offset: u64,
    /// `weir_source_lag_bytes`: what is left to read.
    lag: Option<prometheus::IntGauge>,
    /// Reads each record's event time from its line, if configured.
    stamper: Option<Stamper>,
}

impl FileSource {
    /// Opens `path` to resume at `position` (a checkpointed one), or at its
    /// start.
    pub(super) fn open(
        path: &Path,
        follow: bool,
        batch_size: usize,
        max_record: u64,
        position: Option<SourcePosition>,
    ) -> std::io::Result<Self> {
        let mut file = File::open(path)?;
        let mut next = None;
        let mut offset = position.as_ref().map_or(0, SourcePosition::offset);
        if let Some(SourcePosition::File { device, inode, .. }) = position
            && identity(&file.metadata()?) != (device, inode)
        {
            match follow
                .then(|| find_rotated(path, (device, inode)))
                .flatten()
            {
                Some(rotated) => {
                    tracing::info!(path = %path.display(), rotated = %rotated.display(), "the checkpointed file was rotated; finishing it before the new one");
                    next = Some(file);
                    file = File::open(&rotated)?;
                }
                None if follow => {
                    tracing::warn!(path = %path.display(), "the checkpointed file was replaced and its rotated copy is not beside it; reading the new file from the start (what the old one held after the checkpoint is not read)");
                    offset = 0;
                }
                None => {
                    return Err(std::io::Error::other(
                        "the checkpoint was taken of another file at this path: it was replaced",
                    ));
                }
            }
        }
        let len = file.metadata()?.len();
        if len < offset {
            if !follow {
                return Err(std::io::Error::other(format!(
                    "the checkpoint resumes at byte {offset}, but the file has only {len}: it was replaced or truncated"
                )));
            }
            tracing::warn!(path = %path.display(), offset, len, "followed file is shorter than the checkpointed position: it was truncated; reading it from the start");
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            path: path.to_path_buf(),
            identity: identity(&file.metadata()?),
            reader: BufReader::with_capacity(256 * 1024, file),
            next,
            follow,
            batch_size,
            max_record,
            offset,
            lag: None,
            stamper: None,
        })
    }

    /// Gives each record the event time `stamper` reads from its line.
    pub(super) fn set_stamper(&mut self, stamper: Stamper) {
        self.stamper = Some(stamper);
    }

    /// The event time of the line that starts at byte `at`.
    fn stamp(&self, line: &[u8], at: u64) -> std::io::Result<Option<i64>> {
        stamp(self.stamper.as_ref(), line, at, &self.path.display())
    }

    /// Reports the bytes left to read in `gauge`, as it goes.
    pub(super) fn set_lag_gauge(&mut self, gauge: prometheus::IntGauge) {
        self.lag = Some(gauge);
    }

    fn report_lag(&self) {
        if let Some(gauge) = &self.lag
            && let Ok(meta) = self.reader.get_ref().metadata()
        {
            let mut left = meta.len().saturating_sub(self.offset);
            if let Some(Ok(next)) = self.next.as_ref().map(File::metadata) {
                left += next.len();
            }
            gauge.set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }

    fn position(&self, offset: u64) -> SourcePosition {
        SourcePosition::File {
            offset,
            device: self.identity.0,
            inode: self.identity.1,
        }
    }

    /// Reads until the end (or a stop); returns the position after the last
    /// record sent.
    pub(super) fn run(
        mut self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<SourcePosition, SourceError> {
        let mut batch = BatchWriter::with_capacity(64 * 1024);
        let mut line = Vec::new();
        while !stop.is_stopped() {
            let start = self.offset - line.len() as u64;
            let n = read_line(&mut self.reader, &mut line, self.max_record, start)?;
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
                        let at = self.offset - line.len() as u64;
                        batch.push(b"", &line, self.stamp(&line, at)?);
                        line.clear();
                    }
                    break;
                }
                if let Some(next) = self.next.take() {
                    // The rotated file is read to its end: its partial last
                    // line is all there will be of it.
                    if !line.is_empty() {
                        let at = self.offset - line.len() as u64;
                        batch.push(b"", &line, self.stamp(&line, at)?);
                        line.clear();
                        output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                    }
                    self.switch_to(next)?;
                    barriers.poll(self.position(0), output)?;
                    continue;
                }
                barriers.poll(self.position(self.offset - line.len() as u64), output)?;
                std::thread::sleep(FOLLOW_POLL);
                self.check_path(&mut line)?;
                continue;
            }
            let record = trim_newline(&line);
            batch.push(b"", record, self.stamp(record, start)?);
            line.clear();
            if is_full(&batch, self.batch_size) {
                output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                self.report_lag();
                barriers.poll(self.position(self.offset), output)?;
            }
        }
        if !batch.is_empty() {
            output.send(Batch::from_writer(batch))?;
        }
        Ok(self.position(self.offset - line.len() as u64))
    }

    /// Reads `file` (the new file at the path) from its start from now on.
    fn switch_to(&mut self, file: File) -> std::io::Result<()> {
        self.identity = identity(&file.metadata()?);
        self.reader = BufReader::with_capacity(256 * 1024, file);
        self.offset = 0;
        tracing::info!(path = %self.path.display(), "finished the rotated file; reading the new one");
        Ok(())
    }

    /// At the end of a followed file: has the path been given to a new file
    /// (rotated: finish this one, then read that), or has this one shrunk
    /// (truncated: read it again from its start)?
    fn check_path(&mut self, partial: &mut Vec<u8>) -> std::io::Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Between logrotate's rename and the new file: keep reading this one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if identity(&meta) != self.identity {
            let file = File::open(&self.path)?;
            tracing::info!(path = %self.path.display(), "followed file was rotated; reading the rest of the old one first");
            self.next = Some(file);
        } else if meta.len() < self.offset {
            tracing::warn!(path = %self.path.display(), "followed file was truncated; reading it from the start");
            self.reader.seek(SeekFrom::Start(0))?;
            self.offset = 0;
            partial.clear();
        }
        Ok(())
    }
}

/// The file beside `path` with identity `wanted`: where logrotate moved the
/// file a checkpoint was taken of (`app.log.1`, say).
fn find_rotated(path: &Path, wanted: Identity) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && identity(&m) == wanted)
        })
        .map(|e| e.path())
}
