//! `airlock healthcheck [URL]`: one GET of the admin API's `/healthz` (or
//! `/readyz`), for a container's HEALTHCHECK or an exec probe, where the
//! image has no shell and no curl. Plain HTTP on purpose: the admin API
//! listens on loopback or a pod address, never behind TLS.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// The default: the admin address the shipped container config uses.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/healthz";

/// Bound on connecting, sending and reading the answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Exit 0 when `url` answers 200, else 1 with one line on stderr saying why.
pub fn healthcheck(url: &str) -> ExitCode {
    match probe(url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("airlock healthcheck {url}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs (the admin API has no TLS)".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    // The status line is all that matters; read a little more than it.
    let mut head = [0u8; 256];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            // A reset after the status line still carries the answer.
            Err(_) if got > 0 => break,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        if head[..got].windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let status = line.lines().next().unwrap_or("").trim().to_owned();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        Some(_) => Err(format!("answered `{status}`")),
        None => Err("no HTTP answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_probe_with_a_reason() {
        assert!(
            probe("https://127.0.0.1:1/healthz")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(probe("not a url").unwrap_err().contains("not a URL"));
        // Port 1 on loopback: nothing listens.
        assert!(probe("http://127.0.0.1:1/healthz").is_err());
    }

    #[test]
    fn passes_on_200_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let answers = [
            "HTTP/1.1 200 OK\r\n\r\nok\n",
            "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            "",
        ];
        let server = std::thread::spawn(move || {
            for answer in answers {
                let (mut c, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
                // Read the whole request head first: closing with unread
                // bytes would reset the connection under the answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 512];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = c.write_all(answer.as_bytes());
                let _ = c.shutdown(std::net::Shutdown::Write);
            }
        });
        let url = format!("http://{addr}/healthz");
        assert_eq!(probe(&url), Ok(()));
        assert!(probe(&url).unwrap_err().contains("503"));
        assert_eq!(probe(&url).unwrap_err(), "no HTTP answer");
        server.join().unwrap_or_else(|_| panic!("server thread"));
    }
}
