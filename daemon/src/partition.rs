//! Key groups: how a key picks the parallel instance that owns it.
//!
//! As in Flink, a key hashes into one of `max_parallelism` (`[state]`, default 128) key groups, and each
//! instance of an operator with parallelism `p` owns a contiguous range of key
//! groups. The key group of a key never changes, so state kept per key group can
//! later move between instances when the parallelism changes.
//!
//! The hash is FNV-1a (64-bit) of the key bytes, finished with the MurmurHash3
//! 64-bit finaliser so that the low bits are well mixed:
//! `key_group = fmix64(fnv1a64(key)) % max_parallelism`, and
//! `instance = key_group * parallelism / max_parallelism`.

/// Default number of key groups, and so the most instances one operator may
/// have (`[state] max_parallelism`).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// Most key groups: a key group must fit the 16 bits storage keys give it.
pub const MAX_KEY_GROUPS: u32 = 1 << 15;

/// The stable 64-bit hash of a key.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // MurmurHash3 fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The key group of a key.
#[inline]
pub fn key_group(key: &[u8], max_parallelism: u32) -> u32 {
    // The remainder is below max_parallelism, a u32.
    (key_hash(key) % u64::from(max_parallelism)) as u32
}

/// The instance, out of `parallelism`, that owns a key group.
#[inline]
pub fn instance_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    // Below parallelism: key_group < max_parallelism.
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // Pinned: changing the hash would send keys to other instances than their
        // checkpointed state.
        assert_eq!(key_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(key_group(b"hello", 128), 68);
        assert_eq!(key_group(b"word", 128), key_group(b"word", 128));
    }

    #[test]
    fn key_groups_spread_and_ranges_are_contiguous() {
        let mut counts = [0u32; 128];
        for i in 0..128_000u32 {
            counts[key_group(i.to_string().as_bytes(), 128) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..1300).contains(&c)),
            "{counts:?}"
        );
        for p in 1..=128 {
            let owners: Vec<u32> = (0..128)
                .map(|g| instance_for_key_group(g, 128, p))
                .collect();
            assert!(owners.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= 1));
            assert_eq!(owners[0], 0);
            assert_eq!(owners[127], p - 1);
        }
    }
}
