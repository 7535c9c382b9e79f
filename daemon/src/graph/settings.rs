//! The daemon-wide tables: `[daemon]`, `[state]`, `[checkpoint]`, `[restart]`.

use std::net::SocketAddr;
use std::time::Duration;

use super::builder::Builder;
use super::{
    CheckpointSettings, DEFAULT_CHECKPOINT_TIMEOUT, DEFAULT_RETAIN, DEFAULT_ROCKSDB_BUFFER,
    DEFAULT_STATE_CACHE, RestartSettings, StateSettings,
};
use crate::config::BackendKind;
use crate::diagnostic::Diagnostic;
use crate::partition::{DEFAULT_MAX_PARALLELISM, MAX_KEY_GROUPS};

impl Builder<'_> {
    /// `[checkpoint]`, when present.
    pub(super) fn checkpoint(&mut self) -> Option<CheckpointSettings> {
        let c = self.file.raw.checkpoint.as_ref()?;
        Some(CheckpointSettings {
            interval: c.interval.filter(|i| !i.is_zero()),
            timeout: c.timeout.unwrap_or(DEFAULT_CHECKPOINT_TIMEOUT),
            retain: c.retain.unwrap_or(DEFAULT_RETAIN).max(1),
            incremental: c.incremental.unwrap_or(true),
        })
    }

    /// `[restart]`, defaults applied.
    pub(super) fn restart(&mut self) -> RestartSettings {
        let r = &self.file.raw.restart;
        RestartSettings {
            max_failures: r.max_failures.unwrap_or(3),
            window: r.window.unwrap_or(Duration::from_secs(300)),
            backoff: r.backoff.unwrap_or(Duration::from_secs(1)),
            max_backoff: r.max_backoff.unwrap_or(Duration::from_secs(60)),
        }
    }

    /// `[daemon] admin_token_file`: a readable file holding a token.
    pub(super) fn check_admin_token(&mut self) {
        let Some(path) = &self.file.raw.daemon.admin_token_file else {
            return;
        };
        let resolved = self.resolve(path.get_ref());
        let problem = match crate::admin::token::read(&resolved) {
            Ok(_) => return,
            Err(e) => e,
        };
        let e = self.at(path, "[daemon]", format!("`admin_token_file`: {problem}"));
        self.errors.push(e);
    }

    /// `[daemon] admin_address`: an IP address and port (no host names, so
    /// what it binds is never a surprise).
    pub(super) fn admin_address(&mut self) -> Option<SocketAddr> {
        let text = self.file.raw.daemon.admin_address.as_ref()?;
        match text.get_ref().parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                let e = self.at(
                    text,
                    "daemon.admin_address",
                    format!(
                        "`{}` is not an address and port, e.g. \"127.0.0.1:9187\"",
                        text.get_ref()
                    ),
                );
                self.errors.push(e);
                None
            }
        }
    }

    pub(super) fn max_parallelism(&self) -> u32 {
        self.file
            .raw
            .state
            .max_parallelism
            .unwrap_or(DEFAULT_MAX_PARALLELISM)
            .clamp(1, MAX_KEY_GROUPS)
    }

    /// `[state]`, defaults applied.
    pub(super) fn state(&mut self) -> StateSettings {
        let raw = &self.file.raw.state;
        if let Some(max) = raw
            .max_parallelism
            .filter(|m| *m == 0 || *m > MAX_KEY_GROUPS)
        {
            self.errors.push(Diagnostic::file(
                &self.file.path,
                format!(
                    "[state] max_parallelism must be between 1 and {MAX_KEY_GROUPS}, not {max}"
                ),
            ));
        }
        let backend = raw.backend.unwrap_or_default();
        if backend == BackendKind::Rocksdb && !cfg!(feature = "rocksdb") {
            self.errors.push(Diagnostic::file(
                &self.file.path,
                "[state] backend = \"rocksdb\" is not available: this weir was built without the `rocksdb` feature",
            ));
        }
        let size = |s: Option<bytesize::ByteSize>| s.map_or(DEFAULT_ROCKSDB_BUFFER, |b| b.as_u64());
        StateSettings {
            backend,
            max_parallelism: self.max_parallelism(),
            block_cache: size(raw.block_cache),
            write_buffer: size(raw.write_buffer),
            cache: raw
                .cache
                .map_or(DEFAULT_STATE_CACHE, |b| b.as_u64())
                .max(64 * 1024),
        }
    }
}
