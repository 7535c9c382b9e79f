//! The admin routes. Each answers JSON (or plain text for the probes); an
//! error is `{"error": "..."}` with a status that says whose fault it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;

use super::Shared;
use crate::supervisor::reload::{Request, Trigger};

/// The body of `POST /savepoints`; empty means all defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointRequest {
    /// Absolute directory to write; default: a new one under
    /// `[checkpoint] savepoint_dir`.
    pub directory: Option<PathBuf>,
}

/// Every route, reading `shared`; with a `token`, the routes that change
/// the daemon answer 401 to requests without it.
pub fn router(shared: Arc<Shared>, token: Option<Arc<str>>) -> Router {
    let mut changes = Router::new()
        .route("/savepoints", post(savepoints))
        .route("/reload", post(reload));
    if let Some(token) = token {
        changes = changes.route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let token = token.clone();
                async move {
                    let header = request
                        .headers()
                        .get(axum::http::header::AUTHORIZATION)
                        .map(axum::http::HeaderValue::as_bytes);
                    if super::token::accepts(header, &token) {
                        next.run(request).await
                    } else {
                        error(
                            StatusCode::UNAUTHORIZED,
                            "this request changes the daemon: send `Authorization: Bearer <token>` \
                             with the token of [daemon] admin_token_file, or use the admin socket",
                        )
                    }
                }
            },
        ));
    }
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/topology", get(topology))
        .merge(changes)
        .with_state(shared)
}

/// Binds `address`, so a taken port fails the start, before any pipeline runs.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves the routes on TCP `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, token: Option<Arc<str>>) {
    super::listen::serve(listener, router(shared, token)).await;
}

/// Serves every route on the admin socket until the runtime ends.
pub async fn serve_socket(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    super::listen::serve(listener, router(shared, None)).await;
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics().render(),
    )
        .into_response()
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let metrics = shared.metrics();
    if let Some(trouble) = metrics
        .checkpoints_failing()
        .or_else(|| metrics.broker_trouble())
    {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {trouble}\n"),
        )
            .into_response()
    } else if shared.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn topology(State(shared): State<Arc<Shared>>) -> Response {
    match shared.topology() {
        Some(view) => Json(view.as_ref().clone()).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no topology has started yet",
        ),
    }
}

async fn savepoints(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: SavepointRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SavepointRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"directory\": \"/absolute/path\"}}: {e}"),
                );
            }
        }
    };
    let Some(control) = shared.checkpoints() else {
        return if shared.is_ready() {
            error(
                StatusCode::CONFLICT,
                "checkpoints are off: a savepoint needs a [checkpoint] table in the config",
            )
        } else {
            error(StatusCode::SERVICE_UNAVAILABLE, "no topology is running")
        };
    };
    if let Some(dir) = &request.directory
        && let Err(e) = control.check_target(dir)
    {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    match control.savepoint(request.directory).await {
        Ok(Ok(taken)) => Json(taken).into_response(),
        Ok(Err(message)) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline ended before the savepoint was written",
        ),
    }
}

/// Answers once the reload is applied (200, what changed and the pause) or
/// refused (422, why; the old topology runs on).
async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    let Some(reloads) = shared.reloads() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is starting");
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = Request {
        trigger: Trigger::Http,
        reply: Some(reply),
    };
    if reloads.send(request).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping");
    }
    match answer.await {
        Ok(Ok(outcome)) => Json(outcome).into_response(),
        Ok(Err(message)) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before the reload was applied",
        ),
    }
}
