//! Real clients: reqwest through the proxy, curl, and raw sockets for the
//! edge cases a well-behaved client never produces.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::proxy::TestProxy;

/// reqwest through airlock, trusting only airlock's CA.
pub fn reqwest(proxy: &TestProxy) -> reqwest::Client {
    reqwest_builder(proxy).build().unwrap()
}

pub fn reqwest_builder(proxy: &TestProxy) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .tls_certs_only([ca])
        .timeout(std::time::Duration::from_secs(20))
}

/// A raw response: status code, head text, body bytes.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (Content-Length framed, or to EOF).
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> RawResponse {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap())
    });
    let mut body = vec![0u8; len.unwrap_or(0)];
    if len.is_some() {
        s.read_exact(&mut body).await.unwrap();
    }
    RawResponse { status, head, body }
}

/// Sends `CONNECT target` and returns the stream and the response head.
pub async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, RawResponse) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    (s, r)
}

/// CONNECT, then TLS inside with `sni`, trusting airlock's CA. With
/// `verify_name = false` the certificate's name is not checked (to send an
/// SNI that differs from the CONNECT host).
pub async fn tls_tunnel(
    proxy: &TestProxy,
    target: &str,
    sni: &str,
    alpn: &[&[u8]],
    verify_name: bool,
) -> TlsStream<TcpStream> {
    tls_tunnel_via(proxy.addr, &proxy.ca_pem, target, sni, alpn, verify_name).await
}

/// [`tls_tunnel`] through any airlock (`proxy`), trusting `ca_pem`.
pub async fn tls_tunnel_via(
    proxy: SocketAddr,
    ca_pem: &str,
    target: &str,
    sni: &str,
    alpn: &[&[u8]],
    verify_name: bool,
) -> TlsStream<TcpStream> {
    let (s, r) = connect(proxy, target).await;
    assert_eq!(r.status, 200, "CONNECT {target}: {}", r.text());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !verify_name {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAny));
    }
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), s)
        .await
        .unwrap()
}

/// An h2 client inside a verified tunnel to `target`, offering `alpn`.
pub async fn h2_tunnel(
    proxy: &TestProxy,
    target: &str,
    alpn: &[&[u8]],
) -> hyper::client::conn::http2::SendRequest<super::origin::Body> {
    let tls = tls_tunnel(proxy, target, "api.example.test", alpn, true).await;
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

use rustls::pki_types::pem::PemObject;

/// CONNECT to a target airlock refuses: the tunnel opens (`200`), TLS is
/// completed with airlock's leaf, and the response to `GET /` inside is
/// returned (the refusal: 403, its explanation, `Proxy-Status`).
pub async fn refused(proxy: &TestProxy, target: &str) -> RawResponse {
    let mut tls = tls_tunnel(proxy, target, "refused.test", &[b"http/1.1"], false).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: refused.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut tls).await
}

#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs the curl CLI; returns (exit code, stdout, stderr).
pub async fn curl(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .await
        .expect("curl must be installed (.ci/run installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
