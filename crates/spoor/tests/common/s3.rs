//! An S3-compatible object store for tests: moto's standalone server (a PyPI package that
//! `scripts/test` installs in `.venv`), on a free loopback port, killed on drop.
//!
//! Tests that need S3 must run against it rather than skip: a missing moto is a broken test
//! machine, so `Moto::start` panics and says how to install it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto needs a signed-looking request for some operations (DELETE answers 403 without one) but
/// checks no signature, so every request carries this fixed one.
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0000000000000000000000000000000000000000000000000000000000000000";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    addr: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto from `$SPOOR_MOTO_SERVER`, else `<repo>/.venv/bin/moto_server`.
    pub fn start() -> Moto {
        let bin = match std::env::var_os("SPOOR_MOTO_SERVER") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server"),
        };
        Moto::start_binary(&bin)
    }

    /// Starts the given `moto_server` binary; panics if it is missing or does not answer.
    pub fn start_binary(bin: &Path) -> Moto {
        assert!(
            bin.is_file(),
            "moto_server not found at {} (set SPOOR_MOTO_SERVER, or install it: `python3 -m venv .venv && \
             .venv/bin/pip install -r tests/python/requirements.txt`; ./scripts/test does both)",
            bin.display()
        );
        // The port is free when picked but moto binds it a moment later; another process can
        // take it in between, so a server that dies at start is retried on a new port.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let addr = format!("127.0.0.1:{port}");
            let log = tempfile::NamedTempFile::new().expect("moto log file");
            let child = Command::new(bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("moto log file"))
                .stderr(log.reopen().expect("moto log file"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut moto = Moto { endpoint: format!("http://{addr}"), addr, child, log };
            match moto.wait_ready() {
                Ok(()) => return moto,
                Err(e) => last_log = format!("{e}\n{}", moto.log()),
            }
        }
        panic!("moto_server ({}) did not start:\n{last_log}", bin.display());
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("moto_server exited with {status}"));
            }
            // Any HTTP answer means it is serving.
            if self.request("GET", "/", b"").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("moto_server not answering on {} after {START_TIMEOUT:?}", self.addr))
    }

    /// moto's own output (its request log), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn create_bucket(&self, name: &str) {
        self.expect_ok("PUT", &format!("/{name}"), b"");
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        self.expect_ok("PUT", &format!("/{bucket}/{}", encode(key, false)), body);
    }

    /// The object's bytes, or `None` if there is no such key.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let path = format!("/{bucket}/{}", encode(key, false));
        let (status, body) = self.request("GET", &path, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"));
        match status {
            200 => Some(body),
            404 => None,
            _ => panic!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body)),
        }
    }

    pub fn delete_key(&self, bucket: &str, key: &str) {
        self.expect_ok("DELETE", &format!("/{bucket}/{}", encode(key, false)), b"");
    }

    /// Every key in `bucket` starting with `prefix`, in S3's (lexicographic) order.
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.list_keys_paged(bucket, prefix, 1000)
    }

    /// `list_keys` with a page size, so tests can exercise continuation tokens.
    pub fn list_keys_paged(&self, bucket: &str, prefix: &str, page: usize) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&max-keys={page}&prefix={}", encode(prefix, true));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", encode(t, true)));
            }
            let body = self.expect_ok("GET", &path, b"");
            let xml = String::from_utf8(body).expect("ListObjectsV2 answer is UTF-8");
            keys.extend(elements(&xml, "Key"));
            let truncated = elements(&xml, "IsTruncated").first().is_some_and(|t| t == "true");
            token = elements(&xml, "NextContinuationToken").into_iter().next();
            match (truncated, &token) {
                (false, _) => return keys,
                (true, Some(_)) => {}
                (true, None) => panic!("truncated listing without a continuation token:\n{xml}"),
            }
        }
    }

    /// The `SPOOR__…` variables pointing a server's block storage at `bucket` in this moto.
    pub fn s3_env(&self, bucket: &str) -> Vec<(String, String)> {
        s3_env_at(&self.endpoint, bucket)
    }

    fn expect_ok(&self, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        match self.request(method, path, body) {
            Ok((status, body)) if (200..300).contains(&status) => body,
            Ok((status, body)) => {
                panic!("{method} {path}: HTTP {status}: {}\n{}", String::from_utf8_lossy(&body), self.log())
            }
            Err(e) => panic!("{method} {path}: {e}\n{}", self.log()),
        }
    }

    /// One HTTP/1.1 request on a fresh connection; returns status and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut stream = TcpStream::connect(&self.addr).map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {AUTHORIZATION}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
        parse_response(&raw)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `SPOOR__…` variables for an S3 endpoint, e.g. a `FaultProxy` in front of moto.
pub fn s3_env_at(endpoint: &str, bucket: &str) -> Vec<(String, String)> {
    [
        ("SPOOR__STORAGE__BACKEND", "s3"),
        ("SPOOR__STORAGE__S3__BUCKET", bucket),
        ("SPOOR__STORAGE__S3__ENDPOINT", endpoint),
        ("SPOOR__STORAGE__S3__REGION", "us-east-1"),
        ("SPOOR__STORAGE__S3__ACCESS_KEY_ID", "test"),
        ("SPOOR__STORAGE__S3__SECRET_ACCESS_KEY", "test"),
        ("SPOOR__STORAGE__S3__ALLOW_HTTP", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(format!("bad status line: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(body)? } else { body.to_vec() }))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size = String::from_utf8_lossy(&body[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).ok_or("truncated chunk")?);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// Percent-encoding for a path (`/` kept) or a query value (`/` encoded too).
fn encode(s: &str, query: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !query => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The text of every `<name>…</name>` element, XML entities decoded. S3 listings are flat enough
/// that this needs no XML parser.
fn elements(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[..=semi]),
        }
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    out
}
