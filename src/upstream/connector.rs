//! The connector the pooled client dials through: guard, TCP, TLS.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::guard::{Guard, GuardError};
use crate::policy::Host;

/// Why an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The guard refused or could not reach the address.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// The URI had no usable host.
    #[error("upstream URI has no valid host: {0}")]
    BadUri(String),
    /// The TLS handshake failed (untrusted certificate, name mismatch, ...).
    #[error("TLS to {host} failed: {source}")]
    Tls {
        /// The host.
        host: String,
        /// The TLS error.
        source: io::Error,
    },
    /// TLS did not complete in time.
    #[error("TLS to {host} timed out")]
    TlsTimeout {
        /// The host.
        host: String,
    },
}

/// Dials `scheme://host:port` via the guard, then TLS for https.
#[derive(Clone)]
pub struct Connector {
    guard: Arc<Guard>,
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector using `tls` for https upstreams.
    pub fn new(guard: Arc<Guard>, tls: Arc<ClientConfig>, timeout: Duration) -> Self {
        Self {
            guard,
            tls: TlsConnector::from(tls),
            timeout,
        }
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<UpstreamStream>, ConnectError> {
        let https = uri.scheme_str() == Some("https");
        let authority = uri
            .authority()
            .ok_or_else(|| ConnectError::BadUri(uri.to_string()))?;
        let host =
            Host::parse(authority.host()).map_err(|e| ConnectError::BadUri(e.to_string()))?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let (tcp, _checked) = self.guard.connect(&host, port).await?;
        if !https {
            return Ok(TokioIo::new(UpstreamStream::Plain(tcp)));
        }
        let server_name = match &host {
            Host::Name(n) => {
                ServerName::try_from(n.clone()).map_err(|e| ConnectError::BadUri(e.to_string()))?
            }
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let handshake = self.tls.connect(server_name, tcp);
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(tls)) => Ok(TokioIo::new(UpstreamStream::Tls(Box::new(tls)))),
            Ok(Err(source)) => Err(ConnectError::Tls {
                host: host.to_string(),
                source,
            }),
            Err(_) => Err(ConnectError::TlsTimeout {
                host: host.to_string(),
            }),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A plain or TLS upstream connection.
pub enum UpstreamStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(_) => Connected::new(),
            UpstreamStream::Tls(tls) => {
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
