use std::io::Read;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, bounded};
use weir_codec::BatchWriter;

use super::{Barriers, SourceError, trim_newline};
use crate::batch::Batch;
use crate::topology::StopSignal;
use crate::topology::output::Output;

/// Reads standard input line by line: one record per line, empty key.
pub struct StdinSource {
    batch_size: usize,
}

impl StdinSource {
    pub(super) fn new(batch_size: usize) -> Self {
        Self { batch_size }
    }

    /// Reads until end of input (or a stop); returns the bytes consumed.
    pub(super) fn run(
        self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<u64, SourceError> {
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
        let mut consumed = 0u64;
        while !stop.is_stopped() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(chunk) => {
                    let chunk = chunk?;
                    consumed += chunk.len() as u64;
                    pending.extend_from_slice(&chunk);
                    let mut start = 0;
                    while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                        batch.push(b"", trim_newline(&pending[start..start + end + 1]), None);
                        start += end + 1;
                        if batch.len() as usize >= self.batch_size {
                            output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                        }
                    }
                    pending.drain(..start);
                    // Interactive input: send what there is once the reader has
                    // nothing more queued, rather than waiting for a full batch.
                    if rx.is_empty() && !batch.is_empty() {
                        output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
                    }
                    if batch.is_empty() {
                        barriers.poll(consumed - pending.len() as u64, output)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if batch.is_empty() {
                        barriers.poll(consumed - pending.len() as u64, output)?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if !pending.is_empty() {
                        batch.push(b"", &pending, None);
                    }
                    break;
                }
            }
        }
        if !batch.is_empty() {
            output.send(Batch::from_writer(batch))?;
        }
        Ok(consumed)
    }
}
