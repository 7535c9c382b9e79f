//! What the Kafka and NATS connectors share: client settings, how partitions
//! are spread over a source's instances, and retrying an unreachable broker.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

use crate::config::ClientOptions;

/// A librdkafka client configuration: Weir's settings for `brokers`, then
/// the user's `options` (which win).
pub fn kafka_config(brokers: &[String], options: &ClientOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers.join(","))
        // librdkafka logs through its own logger; Weir reports what matters.
        .set("log_level", "3");
    for (k, v) in options {
        config.set(k, v);
    }
    config
}

/// Which of `parallelism` instances reads partition `partition` of `topic`:
/// consecutive partitions of a topic go to consecutive instances, starting
/// from one the topic's name picks (Flink's `KafkaTopicPartitionAssigner`),
/// so several topics spread evenly. The same on every run and every daemon.
pub fn owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    // FNV-1a: fixed, unlike the standard library's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for b in topic.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let start = hash % parallelism.max(1);
    let partition = u32::try_from(partition).unwrap_or(0);
    (start + partition % parallelism.max(1)) % parallelism.max(1)
}

/// Exponential backoff between attempts to reach a broker: 200 ms doubling
/// to 30 s, reset by a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    next: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: Self::FIRST,
            next: None,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    /// Whether an attempt is due now.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|n| now >= n)
    }

    /// An attempt failed: the next waits longer. Returns the wait.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.delay;
        self.next = Some(now + wait);
        self.delay = (self.delay * 2).min(Self::MAX);
        wait
    }

    /// An attempt succeeded; the next may come at `next`.
    pub fn succeeded(&mut self, next: Instant) {
        self.delay = Self::FIRST;
        self.next = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_and_stably() {
        for parallelism in 1..=5 {
            let mut counts = vec![0; parallelism as usize];
            for p in 0..20 {
                counts[owner("orders", p, parallelism) as usize] += 1;
            }
            let (min, max) = (counts.iter().min(), counts.iter().max());
            assert!(
                max.unwrap() - min.unwrap() <= 1,
                "{parallelism}: {counts:?}"
            );
        }
        assert_eq!(owner("orders", 3, 4), owner("orders", 3, 4));
        assert_eq!(owner("t", 0, 1), 0);
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(b.due(now));
        assert_eq!(b.failed(now), Duration::from_millis(200));
        assert!(!b.due(now));
        assert_eq!(b.failed(now), Duration::from_millis(400));
        for _ in 0..20 {
            b.failed(now);
        }
        assert_eq!(b.failed(now), Duration::from_secs(30));
        b.succeeded(now);
        assert_eq!(b.failed(now), Duration::from_millis(200));
    }
}
