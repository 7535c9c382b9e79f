use std::io::Read;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, bounded};
use weir_codec::BatchWriter;

use super::timestamp::{Stamper, stamp};
use super::{Barriers, SourceError, is_full, record_too_long, trim_newline};
use crate::batch::Batch;
use crate::checkpoint::SourcePosition;
use crate::topology::StopSignal;
use crate::topology::output::Output;

/// Reads standard input line by line: one record per line, empty key.
pub struct StdinSource {
    batch_size: usize,
    max_record: u64,
    stamper: Option<Stamper>,
}

impl StdinSource {
    pub(super) fn new(batch_size: usize, max_record: u64, stamper: Option<Stamper>) -> Self {
        Self {
            batch_size,
            max_record,
            stamper,
        }
    }

    /// The event time of the line that starts at byte `at` of the input.
    fn stamp(&self, line: &[u8], at: u64) -> std::io::Result<Option<i64>> {
        stamp(self.stamper.as_ref(), line, at, &"standard input")
    }

    /// Reads until end of input (or a stop); returns the bytes consumed.
    pub(super) fn run(
        self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<SourcePosition, SourceError> {
        // A blocking read cannot be interrupted, so a helper thread reads and this
        // one stays free to notice a stop. The helper ends with the process.
        let (tx, rx) = bounded::<std::io::Result<Vec<u8>>>(16);
        std::thread::Builder::new()
            .name("weir-stdin".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                loop {
                    let mut chunk = vec![0u8; 64 * 1024];
                    match stdin.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            chunk.truncate(n);
                            if tx.send(Ok(chunk)).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
            })?;
        let mut batch = BatchWriter::with_capacity(64 * 1024);
        let mut pending: Vec<u8> = Vec::new();
        // Bytes of `pending` already searched for a newline: a long line is
        // scanned once, not again with every chunk.
        let mut scanned = 0;
        let mut consumed = 0u64;
        while !stop.is_stopped() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(chunk) => {
                    let chunk = chunk?;
                    consumed += chunk.len() as u64;
                    pending.extend_from_slice(&chunk);
                    let mut start = 0;
                    while let Some(end) = pending[scanned..].iter().position(|&b| b == b'\n') {
                        let line = &pending[start..scanned + end + 1];
                        let at = consumed - (pending.len() - start) as u64;
                        if trim_newline(line).len() as u64 > self.max_record {
                            return Err(record_too_long(self.max_record, at).into());
                        }
                        let record = trim_newline(line);
                        batch.push(b"", record, self.stamp(record, at)?);
                        start = scanned + end + 1;
                        scanned = start;
                        if is_full(&batch, self.batch_size) {
                            output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                        }
                    }
                    scanned = pending.len();
                    pending.drain(..start);
                    scanned -= start;
                    if pending.len() as u64 > self.max_record {
                        let at = consumed - pending.len() as u64;
                        return Err(record_too_long(self.max_record, at).into());
                    }
                    // Interactive input: send what there is once the reader has
                    // nothing more queued, rather than waiting for a full batch.
                    if rx.is_empty() && !batch.is_empty() {
                        output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                    }
                    if batch.is_empty() {
                        let at = SourcePosition::Offset(consumed - pending.len() as u64);
                        barriers.poll(at, output)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if batch.is_empty() {
                        let at = SourcePosition::Offset(consumed - pending.len() as u64);
                        barriers.poll(at, output)?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if !pending.is_empty() {
                        let at = consumed - pending.len() as u64;
                        batch.push(b"", &pending, self.stamp(&pending, at)?);
                        pending.clear();
                    }
                    break;
                }
            }
        }
        if !batch.is_empty() {
            output.send(Batch::from_writer(batch))?;
        }
        if stop.is_stopped() && !pending.is_empty() {
            // Said, not dropped silently: the line had no newline yet.
            tracing::warn!(
                bytes = pending.len(),
                "standard input: stopped in the middle of a line; its first {} bytes were not sent",
                pending.len()
            );
        }
        Ok(SourcePosition::Offset(consumed - pending.len() as u64))
    }
}
