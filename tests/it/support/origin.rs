//! Real origins: hyper servers on 127.0.0.x:0, TLS from the test CA (or
//! plain), recording everything they receive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::ca::TestCa;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// Path and query, exactly as received.
    pub target: String,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body, or None when reading it failed (client aborted).
    pub body: Option<Bytes>,
}

#[derive(Default)]
pub struct Recorder {
    pub received: Mutex<Vec<Received>>,
}

impl Recorder {
    /// Records a request whose body is not read (an upgrade, say).
    pub fn record_head<B>(&self, req: &Request<B>) {
        self.received.lock().unwrap().push(Received {
            method: req.method().clone(),
            target: req.uri().path().to_owned(),
            version: req.version(),
            headers: req.headers().clone(),
            body: None,
        });
    }
}

pub type Handler = Arc<
    dyn Fn(Request<Incoming>, Arc<Recorder>) -> BoxFuture<'static, Response<Body>> + Send + Sync,
>;

/// An origin's `101 Switching Protocols` to a WebSocket upgrade.
pub fn switching_to_websocket() -> Response<Body> {
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(full(Bytes::new()))
        .unwrap()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// Records the request (reading its body) and answers "hello from NAME".
pub fn echo(name: &'static str) -> Handler {
    Arc::new(move |req, rec| {
        Box::pin(async move {
            let r = record(req, &rec).await;
            let mut resp = Response::new(full(format!(
                "hello from {name}: {} {}",
                r.method, r.target
            )));
            resp.headers_mut().insert("x-origin", name.parse().unwrap());
            resp
        })
    })
}

/// Reads the whole body (origins in tests are small) and stores the request.
pub async fn record(req: Request<Incoming>, rec: &Recorder) -> Received {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.ok().map(|c| c.to_bytes());
    let r = Received {
        method: parts.method,
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers,
        body,
    };
    rec.received.lock().unwrap().push(r.clone());
    r
}

pub struct Origin {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far (a refused request opens none).
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.recorder.received.lock().unwrap().clone()
    }

    /// An HTTPS origin on `ip:0` with a leaf for `name` from `ca`, offering `alpn`.
    pub async fn https(ca: &TestCa, name: &str, ip: &str, handler: Handler) -> Self {
        Self::https_alpn(ca, name, ip, handler, &[b"h2", b"http/1.1"]).await
    }

    pub async fn https_alpn(
        ca: &TestCa,
        name: &str,
        ip: &str,
        handler: Handler,
        alpn: &[&[u8]],
    ) -> Self {
        let (chain, key) = ca.leaf(&[name]);
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(Recorder::default());
        let rec = Arc::clone(&recorder);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let handler = Arc::clone(&handler);
                let rec = Arc::clone(&rec);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    serve(TokioIo::new(tls), handler, rec).await;
                });
            }
        });
        Self {
            addr,
            recorder,
            connections,
            task,
        }
    }

    /// A plain-HTTP origin on `ip:0`.
    pub async fn plain(ip: &str, handler: Handler) -> Self {
        let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Arc::new(Recorder::default());
        let rec = Arc::clone(&recorder);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = Arc::clone(&handler);
                let rec = Arc::clone(&rec);
                tokio::spawn(serve(TokioIo::new(tcp), handler, rec));
            }
        });
        Self {
            addr,
            recorder,
            connections,
            task,
        }
    }
}

async fn serve<I>(io: TokioIo<I>, handler: Handler, rec: Arc<Recorder>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let handler = Arc::clone(&handler);
        let rec = Arc::clone(&rec);
        async move { Ok::<_, Infallible>(handler(req, rec).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, svc)
        .await;
}
