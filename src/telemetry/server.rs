//! The agent's HTTP server: `/metrics`, `/health`, `/ready` and `POST /-/reload` (with the
//! Prometheus-style aliases `/-/healthy` and `/-/ready`).
//!
//! A reload request is handed to the application loop, which answers 200, or 400 with every
//! config error as `FILE:LINE:COL: message` lines.

use super::Telemetry;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A reload asked for over HTTP, with where to send the answer.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

pub struct ServerState {
    pub telemetry: Arc<Telemetry>,
    pub reload: mpsc::Sender<ReloadRequest>,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

async fn handle(state: Arc<ServerState>, request: http::Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut response = text(StatusCode::OK, state.telemetry.render());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
            );
            response
        }
        (&Method::GET | &Method::HEAD, "/health" | "/-/healthy") => text(StatusCode::OK, "OK\n"),
        (&Method::GET | &Method::HEAD, "/ready" | "/-/ready") => {
            let waiting = state.telemetry.readiness.not_ready();
            if waiting.is_empty() {
                text(StatusCode::OK, "Ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("Not ready: {}\n", waiting.join(", ")))
            }
        }
        (&Method::POST | &Method::PUT, "/-/reload") => {
            let (tx, rx) = oneshot::channel();
            if state.reload.send(tx).await.is_err() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
            }
            match rx.await {
                Ok(Ok(())) => text(StatusCode::OK, "OK\n"),
                Ok(Err(errors)) => text(StatusCode::BAD_REQUEST, format!("{errors}\n")),
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            }
        }
        (_, "/-/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /health, /ready or POST /-/reload\n"),
    }
}

/// Serves until `cancel`.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, cancel: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "http server: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = cancel.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}
