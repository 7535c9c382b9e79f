//! The rules for metrics a plugin declares (`weir:operator/metrics`), one
//! copy for the host, which enforces them, and the SDK's native stand-in,
//! which must refuse what the host refuses.

use alloc::format;
use alloc::string::String;

/// Most metrics one plugin instance may declare.
pub const MAX_METRICS: usize = 64;
/// Longest metric name.
pub const MAX_NAME: usize = 64;

/// Prometheus's rules, narrowed: `[a-z][a-z0-9_]*`, 1 to [`MAX_NAME`] bytes,
/// so every plugin metric reads the same and none can pose as one of Weir's.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a metric name: 1 to {MAX_NAME} of a-z, 0-9 and _, starting with a letter",
            name.chars().take(80).collect::<String>()
        ))
    }
}
