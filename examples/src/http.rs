//! A small HTTP/1.1 client over `tokio::net::TcpStream`, for the tasks
//! API's tests, demo and load bench: keep-alive, JSON bodies, bearer
//! tokens, `Content-Length` and chunked responses. Not a general client.

use std::io;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON.
    ///
    /// # Errors
    ///
    /// When the body is not JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

/// One keep-alive connection to `addr` (reopened when the server closes
/// it). One request at a time: use one client per concurrent caller.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use cache_examples::http::HttpClient;
///
/// let mut client = HttpClient::new("127.0.0.1:3000".parse().unwrap());
/// let health = client.send("GET", "/health", None, None).await?;
/// println!("{} {}", health.status, health.text());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    /// A client for the server at `addr`; connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient { addr, conn: None }
    }

    /// Sends a request with an optional bearer token and JSON body, and
    /// reads the whole response.
    ///
    /// # Errors
    ///
    /// I/O errors, or a response that is not HTTP/1.1.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        json: Option<&serde_json::Value>,
    ) -> io::Result<Response> {
        let body = json.map(serde_json::Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if json.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        if let Some(token) = bearer {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);

        // A kept-alive connection may have been closed by the server: on
        // a failure before any response byte, retry once on a new one.
        let reused = self.conn.is_some();
        match self.round_trip(request.as_bytes()).await {
            Ok(response) => Ok(response),
            Err(err) if reused && is_stale_connection(&err) => {
                self.conn = None;
                self.round_trip(request.as_bytes()).await
            }
            Err(err) => {
                self.conn = None;
                Err(err)
            }
        }
    }

    async fn round_trip(&mut self, request: &[u8]) -> io::Result<Response> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        conn.get_mut().write_all(request).await?;

        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "closed"));
        }
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad(format!("not an HTTP/1.1 status line: {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {header:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = find("content-length") {
            let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
            body.resize(len, 0);
            conn.read_exact(&mut body).await?;
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                let start = body.len();
                body.resize(start + size, 0);
                conn.read_exact(&mut body[start..]).await?;
                line.clear();
                conn.read_line(&mut line).await?; // the chunk's CRLF
                if size == 0 {
                    break;
                }
            }
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            conn.read_to_end(&mut body).await?;
            self.conn = None;
        }
        if find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.conn = None;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn is_stale_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
