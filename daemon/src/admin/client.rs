//! Reaching a running daemon's admin endpoint from the command line
//! (`weir savepoint`), with errors that say what to fix.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use crate::config;
use crate::diagnostic::Diagnostic;

/// Why a request to the daemon failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The config file cannot be read.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Diagnostic>),
    /// Neither the config nor the command line names an admin address.
    #[error("{}: no [daemon] admin_address, so there is no admin endpoint to reach (or pass --admin)", .0.display())]
    NoAddress(std::path::PathBuf),
    /// The admin address in the config is not an address.
    #[error("{}: [daemon] admin_address `{text}` is not an address and port", .path.display())]
    BadAddress {
        /// The config file.
        path: std::path::PathBuf,
        /// What it says.
        text: String,
    },
    /// The daemon could not be reached.
    #[error("cannot reach the daemon at {address}: {source}")]
    Unreachable {
        /// Where.
        address: SocketAddr,
        /// Why.
        source: ureq::Error,
    },
    /// The daemon answered with an error.
    #[error("the daemon refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its `error` field, or the body.
        message: String,
    },
}

/// The admin address: `explicit`, else the config's `[daemon] admin_address`.
pub fn admin_address(
    config_path: &Path,
    explicit: Option<SocketAddr>,
) -> Result<SocketAddr, ClientError> {
    if let Some(address) = explicit {
        return Ok(address);
    }
    let file = config::load_file(config_path).map_err(ClientError::Config)?;
    let text = file
        .raw
        .daemon
        .admin_address
        .ok_or_else(|| ClientError::NoAddress(config_path.to_path_buf()))?;
    text.get_ref().parse().map_err(|_| ClientError::BadAddress {
        path: config_path.to_path_buf(),
        text: text.into_inner(),
    })
}

/// POSTs `body` to `path` and returns the JSON answer; waits up to `timeout`.
pub fn post(
    address: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let unreachable = |source| ClientError::Unreachable { address, source };
    let mut response = agent
        .post(&format!("http://{address}{path}"))
        .send_json(body)
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(unreachable)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if (200..300).contains(&status) {
        Ok(json)
    } else {
        let message = json
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| json.to_string(), str::to_owned);
        Err(ClientError::Refused { status, message })
    }
}
