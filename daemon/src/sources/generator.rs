use std::time::{Duration, Instant};

use weir_codec::BatchWriter;

use super::Barriers;
use crate::batch::Batch;
use crate::checkpoint::SourcePosition;
use crate::topology::output::Output;
use crate::topology::{StopSignal, TaskError};

/// What a generator produces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sequence {
    /// How many records; endless when `None`.
    pub(crate) count: Option<u64>,
    /// Records per second; unthrottled when `None`.
    pub(crate) rate: Option<f64>,
    /// Value size; the sequence number as text when `None`.
    pub(crate) value_size: Option<usize>,
    /// Distinct keys; key = the sequence number when `None`.
    pub(crate) keys: Option<u64>,
    /// Event time, if records get any.
    pub(crate) event_time: Option<crate::config::GeneratorTime>,
}

/// Record `n`'s event time under `time`: its place in the sequence, less a
/// delay drawn from `n` (splitmix64), so it is the same on every run.
pub(crate) fn event_time(time: &crate::config::GeneratorTime, n: u64) -> i64 {
    let place = time
        .start_ms
        .saturating_add(i64::try_from(n / time.per_ms.max(1)).unwrap_or(i64::MAX));
    let max = time
        .max_delay
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    if max == 0 {
        return place;
    }
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    place.saturating_sub(i64::try_from(z % (max + 1)).unwrap_or(0))
}

/// A deterministic sequence: record `n` has key = `n` in decimal (or, with
/// `keys`, `n % keys` as 16 zero-padded digits) and value = `n` in decimal, or,
/// with `value_size`, a `value_size`-byte value that starts with `n` in decimal
/// and is padded with `x`. Runs are reproducible.
pub struct Generator {
    sequence: Sequence,
    batch_size: usize,
    /// The first sequence number (a checkpointed position).
    first: u64,
}

impl Generator {
    pub(super) fn new(sequence: Sequence, batch_size: usize, first: u64) -> Self {
        Self {
            sequence,
            batch_size,
            first,
        }
    }

    /// Generates until the count (or a stop); returns the next sequence number.
    pub(super) fn run(
        self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<SourcePosition, TaskError> {
        let Sequence {
            count,
            rate,
            value_size,
            keys,
            event_time: time,
        } = self.sequence;
        let start = Instant::now();
        let first = self.first;
        let mut seq: u64 = first;
        let mut digits = itoa::Buffer::new();
        let mut key_digits = itoa::Buffer::new();
        let mut key = [b'0'; 16];
        let mut value = vec![b'x'; value_size.unwrap_or(0)];
        let record_bytes = 1 + 4 + 20 + 4 + value_size.unwrap_or(20);
        while !stop.is_stopped() {
            let per_batch = (super::MAX_BATCH_BYTES / record_bytes).max(1);
            let mut n = self.batch_size.min(per_batch) as u64;
            barriers.poll(SourcePosition::Offset(seq), output)?;
            if let Some(count) = count {
                n = n.min(count.saturating_sub(seq));
                if n == 0 {
                    break;
                }
            }
            if let Some(rate) = rate {
                let due = first + (start.elapsed().as_secs_f64() * rate) as u64;
                if due <= seq {
                    let next_at = Duration::from_secs_f64((seq + 1 - first) as f64 / rate);
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
                let at = time.as_ref().map(|t| event_time(t, seq));
                let text = digits.format(seq).as_bytes();
                let k: &[u8] = match keys {
                    Some(keys) => {
                        let d = key_digits.format(seq % keys).as_bytes();
                        let pad = 16usize.saturating_sub(d.len());
                        key[..pad].fill(b'0');
                        key[pad..].copy_from_slice(&d[d.len().saturating_sub(16)..]);
                        &key
                    }
                    None => text,
                };
                if value_size.is_some() {
                    let len = text.len().min(value.len());
                    value[..len].copy_from_slice(&text[..len]);
                    batch.push(k, &value, at);
                } else {
                    batch.push(k, text, at);
                }
                seq += 1;
            }
            output.send(Batch::from_writer(batch))?;
        }
        Ok(SourcePosition::Offset(seq))
    }
}
