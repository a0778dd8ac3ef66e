//! A small HTTP/1.1 client for airlock's own out-of-band calls: the approval
//! decider and the `airlock approvals` CLI talking to the admin API.
//!
//! It is not for sandbox traffic: that goes through [`crate::upstream`], the
//! address guard and the scanner. Here the destination is one the operator
//! configured, so it is dialed directly. One request per connection
//! (`Connection: close`), the response body capped, and nothing spawned: if
//! the caller drops the future (or its timeout fires), the connection goes
//! with it.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::credentials::SecretValue;

/// Why a call failed. Never carries a token or a body.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://host[:port]/...` or `https://...`.
    #[error("bad URL `{url}`: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// TCP connect failed.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS with {authority}: {source}")]
    Tls {
        /// `host:port`.
        authority: String,
        /// The handshake error.
        source: std::io::Error,
    },
    /// HTTP framing or connection error.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a header value with control bytes).
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    /// The response body exceeded the cap, or broke off.
    #[error("response body: {0}")]
    Body(String),
}

/// Where a call goes: parsed once from a URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    tls: bool,
    /// Host as dialed (IPv6 without brackets).
    host: String,
    port: u16,
    /// `host[:port]` as written, for the `Host` header.
    authority: String,
    /// The path and query of the URL (`/` if none).
    path: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/path]` or `https://...`.
    ///
    /// # Errors
    /// Another scheme, no host, or unparsable text.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why| HttpError::Url {
            url: url.to_owned(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("use http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info in the URL is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        Ok(Self {
            tls,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
        })
    }

    /// The same server, another path (`/approvals/ID`).
    pub fn with_path(&self, path: &str) -> Self {
        Self {
            path: path.to_owned(),
            ..self.clone()
        }
    }

    /// Whether the URL is `https://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `host[:port]`, for messages.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// A ClientConfig trusting the webpki (Mozilla) roots, HTTP/1.1 only.
///
/// # Errors
/// The ring provider refuses the default protocol versions (it does not).
pub fn webpki_client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    crate::install_crypto_provider();
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A JSON body, or none.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The method.
    pub method: &'a Method,
    /// A JSON body (sent with `Content-Type: application/json`).
    pub json: Option<&'a [u8]>,
    /// Sent as `Authorization: Bearer ...`.
    pub bearer: Option<&'a SecretValue>,
    /// The most response body bytes read.
    pub limit: usize,
}

/// Sends one request and reads the whole (capped) response. Not bounded in
/// time: wrap it in `tokio::time::timeout`.
///
/// # Errors
/// Connect, TLS, HTTP, or a response body over `call.limit`.
pub async fn send(
    endpoint: &Endpoint,
    tls: Option<&Arc<ClientConfig>>,
    call: Call<'_>,
) -> Result<(StatusCode, Bytes), HttpError> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| HttpError::Connect {
            authority: endpoint.authority.clone(),
            source,
        })?;
    let _nodelay = tcp.set_nodelay(true);
    let request = build(endpoint, call)?;
    if !endpoint.tls {
        return exchange(tcp, request, call.limit).await;
    }
    let config = match tls {
        Some(c) => Arc::clone(c),
        None => webpki_client_config().map_err(|e| HttpError::Tls {
            authority: endpoint.authority.clone(),
            source: std::io::Error::other(e),
        })?,
    };
    let tls_err = |source| HttpError::Tls {
        authority: endpoint.authority.clone(),
        source,
    };
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| tls_err(std::io::Error::other(e)))?;
    let stream = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(tls_err)?;
    exchange(stream, request, call.limit).await
}

fn build(endpoint: &Endpoint, call: Call<'_>) -> Result<Request<Full<Bytes>>, HttpError> {
    let body = call.json.map(Bytes::copy_from_slice).unwrap_or_default();
    let mut builder = Request::builder()
        .method(call.method.clone())
        .uri(endpoint.path.as_str())
        .header(HOST, endpoint.authority.as_str())
        .header(CONNECTION, "close")
        .header(ACCEPT, "application/json");
    if call.json.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    if let Some(token) = call.bearer {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(token.expose_secret());
        let mut value = HeaderValue::from_bytes(&value).map_err(http::Error::from)?;
        value.set_sensitive(true);
        builder = builder.header(AUTHORIZATION, value);
    }
    Ok(builder.body(Full::new(body))?)
}

async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(StatusCode, Bytes), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let mut conn = std::pin::pin!(conn);
    let mut call = std::pin::pin!(async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| HttpError::Body(e.to_string()))?;
        Ok::<_, HttpError>((status, body.to_bytes()))
    });
    // The connection future drives the socket; the call reads from it. When
    // the server closes after its response, the connection may finish first
    // with the body already delivered: then the call completes on its own.
    tokio::select! {
        biased;
        r = &mut call => r,
        c = &mut conn => {
            c?;
            call.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:9090").unwrap();
        assert!(!e.is_tls());
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 9090, "/")
        );
        let e = Endpoint::parse("https://decide.example.test/v1/check?x=1").unwrap();
        assert!(e.is_tls());
        assert_eq!((e.port, e.path.as_str()), (443, "/v1/check?x=1"));
        let e = Endpoint::parse("http://[::1]:8080/a").unwrap();
        assert_eq!((e.host.as_str(), e.authority()), ("::1", "[::1]:8080"));
        for bad in [
            "ftp://x/",
            "127.0.0.1:9090",
            "http://u:p@host/",
            "not a url",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
