//! The log streams, requested from the Docker engine directly over its socket.
//!
//! bollard serves everything else (version negotiation, listing, inspecting, events), but its
//! log stream guesses TTY from the first byte and would misread a daemon error frame as raw
//! output (PROTOCOLS.md); here the caller says whether the container has a TTY, and the bytes
//! go to [`super::frames::FrameReader`] as they arrive. One connection per followed container,
//! as the follow stream is a long-lived response.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// From a `DOCKER_HOST`-style address: `unix:///path`, `tcp://host:port`, `http://host:port`.
    pub fn parse(host: &str) -> Result<Endpoint, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            return Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()));
        }
        Err(format!("`{host}` is not a Docker host address (unix:///var/run/docker.sock or tcp://host:2375)"))
    }

    /// The address as bollard takes it.
    pub fn as_host(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp(a) => format!("tcp://{a}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the Docker engine: {0}")]
    Connect(std::io::Error),
    #[error("HTTP exchange with the Docker engine failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("no such container")]
    NotFound,
    #[error("the Docker engine answered {status}: {message}")]
    Status { status: StatusCode, message: String },
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub struct LogsQuery {
    /// Messages at or after this time (nanoseconds since the epoch); all when `None`.
    pub since: Option<i64>,
    pub follow: bool,
    /// Only the last `n` messages.
    pub tail: Option<u32>,
}

/// Opens `GET /v<api>/containers/<id>/logs` with timestamps, stdout and stderr.
pub async fn open_logs(
    endpoint: &Endpoint,
    api_version: &str,
    id: &str,
    query: LogsQuery,
) -> Result<Incoming, ClientError> {
    let io: Box<dyn Io> = match endpoint {
        Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await.map_err(ClientError::Connect)?),
        Endpoint::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await.map_err(ClientError::Connect)?),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Ends when the response body is dropped or the engine closes the stream.
        let _ = connection.await;
    });
    let mut uri = format!(
        "/v{api_version}/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&follow={}",
        u8::from(query.follow)
    );
    if let Some(since) = query.since.filter(|s| *s > 0) {
        uri.push_str(&format!("&since={}.{:09}", since.div_euclid(1_000_000_000), since.rem_euclid(1_000_000_000)));
    }
    if let Some(tail) = query.tail {
        uri.push_str(&format!("&tail={tail}"));
    }
    let request = Request::get(uri)
        .header(http::header::HOST, "docker")
        .header(http::header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Status { status: StatusCode::BAD_REQUEST, message: e.to_string() })?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Err(ClientError::NotFound);
    }
    if !status.is_success() {
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(ClientError::Status {
            status,
            message: String::from_utf8_lossy(&body).trim().chars().take(300).collect(),
        });
    }
    Ok(response.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_host() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(Endpoint::parse("tcp://10.0.0.1:2375").unwrap(), Endpoint::Tcp("10.0.0.1:2375".into()));
        assert!(Endpoint::parse("ssh://x").is_err());
        assert_eq!(Endpoint::parse("tcp://h:1").unwrap().as_host(), "tcp://h:1");
    }
}
