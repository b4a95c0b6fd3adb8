//! The log streams, requested from the Docker engine directly over its socket and read by the
//! task that follows the container.
//!
//! bollard serves everything else (version negotiation, listing, inspecting, events), but its
//! log stream guesses TTY from the first byte and would misread a daemon error frame as raw
//! output (PROTOCOLS.md); here the caller says whether the container has a TTY. One connection
//! per followed container, as the follow stream is a long-lived response.
//!
//! The request is HTTP/1.0, so the engine sends the stream as it is and closes the connection at
//! its end. Over HTTP/1.1 it sends every message as a chunk of its own, and an HTTP client
//! library hands each chunk to the reader through a channel from its connection task: a task
//! wake-up per line. Here the follower reads the socket itself, when it chooses to: a busy
//! stream's lines gather in the socket for a few milliseconds and come in one read
//! (scripts/bench/docker.py measures it).

use bytes::BytesMut;
use http::StatusCode;
use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

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
    Connect(io::Error),
    #[error("exchange with the Docker engine failed: {0}")]
    Io(#[from] io::Error),
    #[error("the Docker engine's answer is not HTTP: {0}")]
    BadResponse(String),
    #[error("no such container")]
    NotFound,
    #[error("the Docker engine answered {status}: {message}")]
    Status { status: StatusCode, message: String },
}

/// What to ask for.
#[derive(Debug, Clone, Copy)]
pub struct LogsQuery {
    /// Messages at or after this time (nanoseconds since the epoch); all when `None`.
    pub since: Option<i64>,
    pub follow: bool,
    /// Only the last `n` messages.
    pub tail: Option<u32>,
}

/// The most a response head may take.
const MAX_HEAD: usize = 16 * 1024;
/// What one read asks the socket for.
pub const READ_SIZE: usize = 64 * 1024;

/// The engine's socket. Watched, the runtime's poller wakes the reader when bytes arrive;
/// unwatched, it is off the poller while a busy stream is read on the reader's timer, so that the
/// engine's writes (one per message) wake nobody.
enum Connection {
    Unix(UnixStream),
    Tcp(TcpStream),
    UnwatchedUnix(std::os::unix::net::UnixStream),
    UnwatchedTcp(std::net::TcpStream),
}

impl Connection {
    /// Connects and sends `request`.
    async fn open(endpoint: &Endpoint, request: &[u8]) -> io::Result<Connection> {
        async fn sent<S: AsyncWrite + Unpin>(mut socket: S, request: &[u8]) -> io::Result<S> {
            socket.write_all(request).await?;
            Ok(socket)
        }
        Ok(match endpoint {
            Endpoint::Unix(path) => Connection::Unix(sent(UnixStream::connect(path).await?, request).await?),
            Endpoint::Tcp(addr) => Connection::Tcp(sent(TcpStream::connect(addr).await?, request).await?),
        })
    }

    fn watched(self) -> io::Result<Connection> {
        Ok(match self {
            Connection::UnwatchedUnix(s) => Connection::Unix(UnixStream::from_std(s)?),
            Connection::UnwatchedTcp(s) => Connection::Tcp(TcpStream::from_std(s)?),
            watched => watched,
        })
    }

    /// The socket stays non-blocking.
    fn unwatched(self) -> io::Result<Connection> {
        Ok(match self {
            Connection::Unix(s) => Connection::UnwatchedUnix(s.into_std()?),
            Connection::Tcp(s) => Connection::UnwatchedTcp(s.into_std()?),
            unwatched => unwatched,
        })
    }

    /// Waits until a watched socket is readable (an unwatched one is read on a timer: at once).
    async fn readable(&self) -> io::Result<()> {
        match self {
            Connection::Unix(s) => s.readable().await,
            Connection::Tcp(s) => s.readable().await,
            Connection::UnwatchedUnix(_) | Connection::UnwatchedTcp(_) => Ok(()),
        }
    }

    /// Reads what the socket holds, without waiting (`WouldBlock` when it holds nothing).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        match self {
            Connection::Unix(s) => s.try_read(buf),
            Connection::Tcp(s) => s.try_read(buf),
            Connection::UnwatchedUnix(s) => (&*s).read(buf),
            Connection::UnwatchedTcp(s) => (&*s).read(buf),
        }
    }
}

/// What [`LogStream::fill`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many bytes were taken (maybe 0: nothing had arrived).
    Bytes(usize),
    /// The engine ended the stream; what came before the end was taken.
    End,
}

thread_local! {
    /// Where [`LogStream::fill`] reads: one buffer per runtime thread instead of one per
    /// followed container (an idle container holds no read buffer).
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// The body of a logs response, read from the engine's socket.
pub struct LogStream {
    /// `None` once a change between watched and unwatched failed (the stream is then broken).
    connection: Option<Connection>,
    /// Body bytes that came with the response head.
    early: BytesMut,
}

impl LogStream {
    fn connection(&self) -> io::Result<&Connection> {
        self.connection.as_ref().ok_or_else(socket_lost)
    }

    fn change(&mut self, to: fn(Connection) -> io::Result<Connection>) -> io::Result<()> {
        let connection = self.connection.take().ok_or_else(socket_lost)?;
        self.connection = Some(to(connection)?);
        Ok(())
    }

    /// Waits until the engine sent something (or ended the stream), with the socket watched.
    pub async fn ready(&mut self) -> io::Result<()> {
        self.change(Connection::watched)?;
        if !self.early.is_empty() {
            return Ok(());
        }
        self.connection()?.readable().await
    }

    /// Takes the socket off the runtime's poller until the next [`LogStream::ready`]: for a busy
    /// stream that the caller reads on its own timer with [`LogStream::fill`].
    pub fn unwatch(&mut self) -> io::Result<()> {
        self.change(Connection::unwatched)
    }

    /// Hands `take` what the engine sent so far, without waiting, until about `limit` bytes
    /// were taken.
    pub fn fill(&mut self, limit: usize, mut take: impl FnMut(&[u8])) -> io::Result<Fill> {
        let mut taken = self.early.len();
        if taken > 0 {
            take(&std::mem::take(&mut self.early));
        }
        let connection = self.connection()?;
        READ_BUFFER.with_borrow_mut(|buffer| {
            while taken < limit {
                match connection.try_read(buffer) {
                    Ok(0) => return Ok(Fill::End),
                    Ok(n) => {
                        taken += n;
                        take(&buffer[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Fill::Bytes(taken))
        })
    }

    /// Appends at least one more byte to `buf` (0: the end of the stream).
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.ready().await?;
            buf.reserve(READ_SIZE);
            let read = match self.connection()? {
                Connection::Unix(s) => s.try_read_buf(buf),
                Connection::Tcp(s) => s.try_read_buf(buf),
                Connection::UnwatchedUnix(_) | Connection::UnwatchedTcp(_) => continue,
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// The whole body of a stream that ends by itself (not followed).
    pub async fn read_to_end(mut self) -> io::Result<BytesMut> {
        let mut body = std::mem::take(&mut self.early);
        while self.read_buf(&mut body).await? > 0 {}
        Ok(body)
    }
}

fn socket_lost() -> io::Error {
    io::Error::other("the log stream's socket was lost")
}

/// Opens `GET /v<api>/containers/<id>/logs` with timestamps, stdout and stderr.
pub async fn open_logs(
    endpoint: &Endpoint,
    api_version: &str,
    id: &str,
    query: LogsQuery,
) -> Result<LogStream, ClientError> {
    let mut target = format!(
        "/v{api_version}/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&follow={}",
        u8::from(query.follow)
    );
    if let Some(since) = query.since.filter(|s| *s > 0) {
        target.push_str(&format!("&since={}.{:09}", since.div_euclid(1_000_000_000), since.rem_euclid(1_000_000_000)));
    }
    if let Some(tail) = query.tail {
        target.push_str(&format!("&tail={tail}"));
    }
    let request =
        format!("GET {target} HTTP/1.0\r\nHost: docker\r\nUser-Agent: sluice/{}\r\n\r\n", env!("CARGO_PKG_VERSION"));
    let connection = Connection::open(endpoint, request.as_bytes()).await.map_err(ClientError::Connect)?;
    let mut stream = LogStream { connection: Some(connection), early: BytesMut::new() };
    let mut received = BytesMut::new();
    let (status, head_len) = loop {
        if stream.read_buf(&mut received).await? == 0 {
            return Err(ClientError::BadResponse("the connection closed before the response head".into()));
        }
        if let Some(head) = parse_head(&received)? {
            break head;
        }
    };
    // Copied out: the head's buffer is not kept alive by an idle stream.
    stream.early = BytesMut::from(&received[head_len..]);
    if status == StatusCode::NOT_FOUND {
        return Err(ClientError::NotFound);
    }
    if !status.is_success() {
        let body = stream.read_to_end().await.unwrap_or_default();
        return Err(ClientError::Status {
            status,
            message: String::from_utf8_lossy(&body).trim().chars().take(300).collect(),
        });
    }
    Ok(stream)
}

/// The status and length of a response head, once `received` holds all of it.
fn parse_head(received: &[u8]) -> Result<Option<(StatusCode, usize)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(received) {
        Ok(httparse::Status::Complete(len)) => {
            let code = response.code.unwrap_or_default();
            let status =
                StatusCode::from_u16(code).map_err(|_| ClientError::BadResponse(format!("status code {code}")))?;
            let chunked = response.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding") && !h.value.eq_ignore_ascii_case(b"identity")
            });
            if chunked {
                // An HTTP/1.0 request is never answered in chunks by the engine (or a proxy that
                // follows the protocol); reading chunk headers as log frames would corrupt lines.
                return Err(ClientError::BadResponse("a transfer-encoded answer to an HTTP/1.0 request".into()));
            }
            Ok(Some((status, len)))
        }
        Ok(httparse::Status::Partial) if received.len() < MAX_HEAD => Ok(None),
        Ok(httparse::Status::Partial) => Err(ClientError::BadResponse(format!("a head longer than {MAX_HEAD} bytes"))),
        Err(e) => Err(ClientError::BadResponse(e.to_string())),
    }
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

    /// Reads a request from `socket`, answers with `reply`'s pieces (a pause between them),
    /// closes; gives back the request.
    async fn answer(
        mut socket: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        reply: Vec<&[u8]>,
    ) -> String {
        use tokio::io::AsyncReadExt;
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            socket.read_exact(&mut byte).await.unwrap();
            request.push(byte[0]);
        }
        for piece in reply {
            socket.write_all(piece).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        String::from_utf8(request).unwrap()
    }

    /// A one-connection engine on a Unix socket.
    async fn engine(reply: Vec<&'static [u8]>) -> (Endpoint, tokio::task::JoinHandle<String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let served = tokio::spawn(async move { answer(listener.accept().await.unwrap().0, reply).await });
        (Endpoint::Unix(path), served, dir)
    }

    /// A one-connection engine on TCP (`DOCKER_HOST=tcp://...`).
    async fn tcp_engine(reply: Vec<&'static [u8]>) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { answer(listener.accept().await.unwrap().0, reply).await });
        Endpoint::Tcp(address)
    }

    const QUERY: LogsQuery = LogsQuery { since: Some(1_700_000_000_000_000_123), follow: true, tail: None };

    /// Everything a stream hands over, until its end.
    async fn drain(mut stream: LogStream) -> (Vec<u8>, usize) {
        let (mut body, mut fills) = (Vec::new(), 0);
        loop {
            stream.ready().await.unwrap();
            fills += 1;
            if stream.fill(READ_SIZE, |bytes| body.extend_from_slice(bytes)).unwrap() == Fill::End {
                return (body, fills);
            }
        }
    }

    #[tokio::test]
    async fn reads_the_body_after_a_head_split_over_reads() {
        let (endpoint, served, _dir) = engine(vec![
            b"HTTP/1.0 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r",
            b"\n\r\nearly bytes|",
            b"later bytes",
        ])
        .await;
        let stream = open_logs(&endpoint, "1.41", "abc", QUERY).await.unwrap();
        let (body, fills) = drain(stream).await;
        assert_eq!(String::from_utf8(body).unwrap(), "early bytes|later bytes");
        assert!(fills >= 2, "the body came in two writes, 20 ms apart: {fills} fills");
        let request = served.await.unwrap();
        assert_eq!(
            request,
            format!(
                "GET /v1.41/containers/abc/logs?stdout=1&stderr=1&timestamps=1&follow=1&since=1700000000.000000123 \
                 HTTP/1.0\r\nHost: docker\r\nUser-Agent: sluice/{}\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[tokio::test]
    async fn an_unwatched_stream_is_read_on_the_callers_timer_and_watched_again() {
        let reply: Vec<&[u8]> = vec![b"HTTP/1.0 200 OK\r\n\r\n", b"one|", b"two|", b"three|", b"four"];
        let (unix, _served, _dir) = engine(reply.clone()).await;
        for endpoint in [unix, tcp_engine(reply.clone()).await] {
            read_unwatched_and_watched(&endpoint).await;
        }
    }

    async fn read_unwatched_and_watched(endpoint: &Endpoint) {
        let mut stream = open_logs(endpoint, "1.41", "abc", QUERY).await.unwrap();
        let mut body = Vec::new();
        stream.ready().await.unwrap();
        stream.fill(READ_SIZE, |bytes| body.extend_from_slice(bytes)).unwrap();
        stream.unwatch().unwrap();
        // The engine writes every 20 ms; off the poller, reads still find what arrived.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            matches!(stream.fill(READ_SIZE, |bytes| body.extend_from_slice(bytes)).unwrap(), Fill::Bytes(n) if n > 0)
        );
        stream.unwatch().unwrap();
        let (rest, _) = drain(stream).await;
        body.extend_from_slice(&rest);
        assert_eq!(String::from_utf8(body).unwrap(), "one|two|three|four", "{endpoint:?}");
    }

    #[tokio::test]
    async fn a_fill_stops_at_its_limit_and_the_rest_waits() {
        let (endpoint, _served, _dir) = engine(vec![b"HTTP/1.0 200 OK\r\n\r\n", &[7u8; 300_000]]).await;
        let mut stream = open_logs(&endpoint, "1.41", "abc", QUERY).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut taken = 0;
        let first = stream.fill(1000, |bytes| taken += bytes.len()).unwrap();
        assert_eq!(first, Fill::Bytes(taken));
        assert!((1000..=READ_SIZE).contains(&taken), "one read past the limit at most: {taken}");
        let (rest, _) = drain(stream).await;
        assert_eq!(taken + rest.len(), 300_000);
    }

    #[tokio::test]
    async fn error_answers_carry_the_engine_message() {
        let (endpoint, _served, _dir) = engine(vec![
            b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"message\":\"No such container\"}",
        ])
        .await;
        assert!(matches!(open_logs(&endpoint, "1.41", "abc", QUERY).await, Err(ClientError::NotFound)));
        let (endpoint, _served, _dir) = engine(vec![
            b"HTTP/1.0 500 Internal Server Error\r\n\r\n",
            b"{\"message\":\"configured logging driver does not support reading\"}\n",
        ])
        .await;
        match open_logs(&endpoint, "1.41", "abc", QUERY).await {
            Err(ClientError::Status { status, message }) => {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert_eq!(message, r#"{"message":"configured logging driver does not support reading"}"#);
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn answers_that_are_not_a_log_stream_are_refused() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nContent-Type: appl",
        ] {
            let (endpoint, _served, _dir) = engine(vec![reply]).await;
            let answer = open_logs(&endpoint, "1.41", "abc", QUERY).await;
            assert!(matches!(answer, Err(ClientError::BadResponse(_))), "{:?}", String::from_utf8_lossy(reply));
        }
        let mut long_head = b"HTTP/1.0 200 OK\r\nX-Padding: ".to_vec();
        long_head.resize(MAX_HEAD + 1, b'a');
        assert!(matches!(parse_head(&long_head[..MAX_HEAD - 1]), Ok(None)), "a partial head waits for more");
        assert!(matches!(parse_head(&long_head), Err(ClientError::BadResponse(m)) if m.contains("longer than")));
    }
}
