//! A container health probe with no dependencies: `httpprobe URL` exits 0 when an HTTP GET of
//! `http://HOST:PORT/PATH` answers 2xx within two seconds, and 1 (saying why) otherwise.
//!
//! The runtime images are distroless (no shell, no curl), so `HEALTHCHECK` and compose health
//! checks run this instead. Built with plain `rustc` in the image's build stage; plain HTTP only,
//! because it only ever probes the container's own loopback admin port.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(2);
/// The status line is all we read; a bounded buffer keeps a misbehaving server harmless.
const MAX_RESPONSE_HEAD: usize = 1024;

fn probe(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: httpprobe\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(MAX_RESPONSE_HEAD);
    let mut buf = [0u8; 256];
    while head.len() < MAX_RESPONSE_HEAD && !head.contains(&b'\n') {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", line.lines().next().unwrap_or("")))?;
    Ok(status)
}

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: httpprobe http://HOST:PORT/PATH");
        return ExitCode::from(2);
    };
    match probe(&url) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("httpprobe: {url}: HTTP {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("httpprobe: {e}");
            ExitCode::FAILURE
        }
    }
}
