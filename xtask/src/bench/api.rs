//! A minimal HTTP/1.1 client for netd's API on its UNIX socket, with one kept-alive
//! connection. Publishing thousands of ports through it costs one request each and no
//! process start, so the programming-latency numbers measure the daemon, not `fork`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// A connection to the daemon's API, reopened when the server closes it.
pub struct ApiClient {
    socket: PathBuf,
    conn: Option<BufReader<UnixStream>>,
}

impl ApiClient {
    pub fn new(socket: &Path) -> Self {
        ApiClient {
            socket: socket.to_path_buf(),
            conn: None,
        }
    }

    pub fn get(&mut self, path: &str) -> Result<Value> {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &Value) -> Result<Value> {
        self.request("POST", path, Some(body))
    }

    pub fn delete(&mut self, path: &str) -> Result<Value> {
        self.request("DELETE", path, None)
    }

    /// One request; retried once on a fresh connection if the kept-alive one was closed
    /// before anything was sent back.
    fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let had_conn = self.conn.is_some();
        match self.exchange(&req) {
            Ok(reply) => Ok(reply),
            Err(Exchange::Closed) if had_conn => {
                self.conn = None;
                self.exchange(&req).map_err(|e| e.into_anyhow(method, path))
            }
            Err(e) => {
                self.conn = None;
                Err(e.into_anyhow(method, path))
            }
        }
        .and_then(|(status, value)| {
            if (200..300).contains(&status) {
                Ok(value)
            } else {
                let msg = value
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                bail!(
                    "netd API {method} {path}: HTTP {status}: {}",
                    msg.unwrap_or_else(|| value.to_string())
                )
            }
        })
    }

    fn exchange(&mut self, req: &str) -> Result<(u16, Value), Exchange> {
        if self.conn.is_none() {
            let stream = UnixStream::connect(&self.socket).map_err(|e| Exchange::Io(e.into()))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(120)))
                .map_err(|e| Exchange::Io(e.into()))?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connection opened above");
        conn.get_mut()
            .write_all(req.as_bytes())
            .map_err(|_| Exchange::Closed)?;
        let mut status_line = String::new();
        if conn
            .read_line(&mut status_line)
            .map_err(|_| Exchange::Closed)?
            == 0
        {
            return Err(Exchange::Closed);
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Exchange::Io(anyhow::anyhow!("bad status line {status_line:?}")))?;
        let (len, close) = read_headers(conn).map_err(Exchange::Io)?;
        let mut body = vec![0; len];
        conn.read_exact(&mut body)
            .map_err(|e| Exchange::Io(e.into()))?;
        if close {
            self.conn = None;
        }
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| Exchange::Io(e.into()))?
        };
        Ok((status, value))
    }
}

/// The body length and whether the server will close the connection. Chunked replies
/// are not expected: netd's server sends whole JSON bodies.
fn read_headers(conn: &mut BufReader<UnixStream>) -> Result<(usize, bool)> {
    let (mut len, mut close) = (0, false);
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((len, close));
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => len = value.parse().context("bad Content-Length")?,
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                bail!("chunked replies are not supported by the bench client")
            }
            _ => {}
        }
    }
}

enum Exchange {
    /// The kept-alive connection was gone before a reply started.
    Closed,
    Io(anyhow::Error),
}

impl Exchange {
    fn into_anyhow(self, method: &str, path: &str) -> anyhow::Error {
        match self {
            Exchange::Closed => {
                anyhow::anyhow!("netd API {method} {path}: the daemon closed the connection")
            }
            Exchange::Io(e) => e.context(format!("netd API {method} {path}")),
        }
    }
}
