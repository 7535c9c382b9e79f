use std::time::{Duration, Instant};

use weir_codec::BatchWriter;

use crate::batch::Batch;
use crate::topology::output::Output;
use crate::topology::{StopSignal, TaskError};

/// A deterministic sequence: record `n` has key = `n` in decimal and value = `n`
/// in decimal, or, with `value_size`, a `value_size`-byte value that starts with
/// `n` in decimal and is padded with `x`. Runs are reproducible.
pub struct Generator {
    count: Option<u64>,
    rate: Option<f64>,
    value_size: Option<usize>,
    batch_size: usize,
}

impl Generator {
    pub(super) fn new(
        count: Option<u64>,
        rate: Option<f64>,
        value_size: Option<usize>,
        batch_size: usize,
    ) -> Self {
        Self {
            count,
            rate,
            value_size,
            batch_size,
        }
    }

    pub(super) fn run(self, stop: &StopSignal, output: &mut Output) -> Result<(), TaskError> {
        let start = Instant::now();
        let mut seq: u64 = 0;
        let mut digits = itoa::Buffer::new();
        let mut value = vec![b'x'; self.value_size.unwrap_or(0)];
        let record_bytes = 1 + 4 + 20 + 4 + self.value_size.unwrap_or(20);
        while !stop.is_stopped() {
            let mut n = self.batch_size as u64;
            if let Some(count) = self.count {
                n = n.min(count - seq);
                if n == 0 {
                    break;
                }
            }
            if let Some(rate) = self.rate {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due <= seq {
                    let next_at = Duration::from_secs_f64((seq + 1) as f64 / rate);
                    std::thread::sleep(
                        next_at
                            .saturating_sub(start.elapsed())
                            .min(Duration::from_millis(50)),
                    );
                    continue;
                }
                n = n.min(due - seq);
            }
            let mut batch = BatchWriter::with_capacity(n as usize * record_bytes);
            for _ in 0..n {
                let text = digits.format(seq).as_bytes();
                if self.value_size.is_some() {
                    let len = text.len().min(value.len());
                    value[..len].copy_from_slice(&text[..len]);
                    batch.push(text, &value, None);
                } else {
                    batch.push(text, text, None);
                }
                seq += 1;
            }
            output.send(Batch::from_writer(batch))?;
        }
        Ok(())
    }
}
