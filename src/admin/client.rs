//! A deliberately tiny HTTP/1.1 client for the CLI's admin commands: one request per
//! connection (`Connection: close`), bounded in time and size. The admin API is local, plain
//! HTTP and answers small JSON bodies, which does not justify a full HTTP client dependency.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted: `/metrics` of a busy proxy stays far below this.
const MAX_RESPONSE: usize = 64 << 20;

/// How long a request may take, connecting included, unless the caller sets another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the admin API failed; each message names the address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("the admin API at {addr} did not answer within {secs:.1} s")]
    Timeout { addr: String, secs: f64 },
    #[error("the admin API at {addr} sent a malformed response: {msg}")]
    Malformed { addr: String, msg: String },
    #[error("the admin API at {addr} answered {status}: {message}")]
    Status {
        addr: String,
        status: u16,
        message: String,
    },
}

/// A response: its status and body (headers are not needed by any caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `{"error": "..."}` message of a failed request, or the body as text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| self.text().trim().to_string())
    }
}

/// Talks to one admin address with one token.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// `addr` is `host:port`; without a token no `Authorization` header is sent.
    pub fn new(addr: impl Into<String>, token: Option<String>) -> Self {
        Client {
            addr: addr.into(),
            token,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and returns the response whatever its status.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        json_body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, json_body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr.clone(),
                secs: self.timeout.as_secs_f64(),
            }),
        }
    }

    /// Sends one request; a status other than 2xx is an error carrying the server's message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        json_body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let r = self.send(method, path, json_body).await?;
        if (200..300).contains(&r.status) {
            Ok(r)
        } else {
            Err(ClientError::Status {
                addr: self.addr.clone(),
                status: r.status,
                message: r.error_message(),
            })
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        json_body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        let mut stream = TcpStream::connect(&self.addr).await.map_err(unreachable)?;
        stream
            .write_all(&self.request_bytes(method, path, json_body))
            .await
            .map_err(unreachable)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await.map_err(unreachable)?;
            if n > 0 {
                buf.extend_from_slice(&chunk[..n]);
            }
            if buf.len() > MAX_RESPONSE {
                return Err(self.malformed(format!("more than {MAX_RESPONSE} bytes")));
            }
            match parse(&buf, n == 0).map_err(|m| self.malformed(m))? {
                Some(r) => return Ok(r),
                None if n == 0 => return Err(self.malformed("the connection closed early".into())),
                None => {}
            }
        }
    }

    fn request_bytes(&self, method: &str, path: &str, json_body: Option<&[u8]>) -> Vec<u8> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\n\
             User-Agent: shardgate/{}\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = &self.token {
            head += &format!("Authorization: Bearer {t}\r\n");
        }
        let body = json_body.unwrap_or_default();
        if json_body.is_some() {
            head += "Content-Type: application/json\r\n";
        }
        head += &format!("Content-Length: {}\r\n\r\n", body.len());
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }

    fn malformed(&self, msg: String) -> ClientError {
        ClientError::Malformed {
            addr: self.addr.clone(),
            msg,
        }
    }
}

/// The response in `buf` if it is complete (`eof`: nothing more will come), `None` if more
/// bytes are needed, or why it can never be a response.
fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>().as_slice() {
        [version, code, ..] if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| format!("bad status line '{status_line}'"))?,
        _ => return Err(format!("bad status line '{status_line}'")),
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line '{line}'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length '{value}'"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &buf[end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(b) => b,
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return Ok(None);
        }
        rest[..n].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// The body of a complete chunked encoding, `None` while its last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size '{size_text}'"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line; none are used here.
            return Ok(find(rest, b"\r\n").map(|_| body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false)
            .expect("valid")
            .expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok", false),
            Ok(None)
        );
        let chunked = b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n\
                        4\r\nwron\r\n1\r\ng\r\n0\r\n\r\n";
        let r = parse(chunked, false).expect("valid").expect("complete");
        assert_eq!((r.status, r.text().as_str()), (401, "wrong"));
        assert_eq!(parse(&chunked[..chunked.len() - 5], false), Ok(None));
        let r = parse(b"HTTP/1.0 200 OK\r\n\r\nall", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(r.text(), "all");
        assert!(parse(b"SMTP nonsense\r\n\r\n", true).is_err());
    }

    #[test]
    fn error_messages_come_from_the_json_body() {
        let r = Response {
            status: 409,
            body: br#"{"error":"the result cache is off"}"#.to_vec(),
        };
        assert_eq!(r.error_message(), "the result cache is off");
        let r = Response {
            status: 502,
            body: b"Bad gateway\n".to_vec(),
        };
        assert_eq!(r.error_message(), "Bad gateway");
    }
}
