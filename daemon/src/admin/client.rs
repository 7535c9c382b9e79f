//! Reaching a running daemon's admin endpoint from the command line
//! (`weir reload`, `weir savepoint`): through its Unix socket, found from the
//! config, or at `--admin ADDR` over TCP; with errors that say what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// The daemon could not be reached.
    #[error("cannot reach the daemon at {endpoint}: {message}")]
    Unreachable {
        /// Where.
        endpoint: Endpoint,
        /// Why.
        message: String,
    },
    /// The token file cannot be read.
    #[error("{0}")]
    Token(String),
    /// The daemon answered with an error.
    #[error("the daemon refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its `error` field, or the body.
        message: String,
    },
}

/// Where a daemon's admin endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Its Unix socket.
    Socket(PathBuf),
    /// An address given with `--admin`, and the token to send there.
    Tcp(SocketAddr, Option<String>),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket(path) => write!(f, "{}", path.display()),
            Self::Tcp(address, _) => write!(f, "{address}"),
        }
    }
}

/// The daemon that `config_path` configures: `--admin ADDR` if given (with
/// `[daemon] admin_token_file`'s token), else its admin socket.
pub fn endpoint(config_path: &Path, explicit: Option<SocketAddr>) -> Result<Endpoint, ClientError> {
    let file = config::load_file(config_path).map_err(ClientError::Config)?;
    match explicit {
        Some(address) => {
            let token = match &file.raw.daemon.admin_token_file {
                Some(path) => Some(
                    super::token::read(&file.resolve(path.get_ref()))
                        .map_err(ClientError::Token)?,
                ),
                None => None,
            };
            Ok(Endpoint::Tcp(address, token))
        }
        None => Ok(Endpoint::Socket(file.admin_socket())),
    }
}

/// POSTs `body` to `path` and returns the JSON answer; waits up to `timeout`.
pub fn post(
    endpoint: &Endpoint,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let unreachable = |message: String| ClientError::Unreachable {
        endpoint: endpoint.clone(),
        message,
    };
    let (status, text) = match endpoint {
        Endpoint::Socket(socket) => {
            post_socket(socket, path, body, timeout).map_err(unreachable)?
        }
        Endpoint::Tcp(address, token) => {
            post_tcp(*address, token.as_deref(), path, body, timeout).map_err(unreachable)?
        }
    };
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

fn post_tcp(
    address: SocketAddr,
    token: Option<&str>,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(&format!("http://{address}{path}"));
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.send_json(body).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// One HTTP/1.1 request over the admin socket, with hyper (axum's own
/// HTTP implementation) on a small runtime of its own.
fn post_socket(
    socket: &Path,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let exchange = async {
            let stream =
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            format!("{e} (is `weir run` running with this config?)")
                        }
                        _ => e.to_string(),
                    })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = hyper::Request::post(path)
                .header(hyper::header::HOST, "weir")
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
    })
}
