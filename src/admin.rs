//! The admin listener (loopback by default): `/healthz`, `/readyz`, and
//! `/metrics` in Prometheus text format. With `[proxy] admin_token_file`,
//! everything but `/healthz` requires `Authorization: Bearer <token>`.
//!
//! # Security
//! The admin address is one of airlock's own addresses, which the address
//! guard refuses as a destination: a sandbox cannot reach it through the
//! proxy, whatever the rules say.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::AdminToken;
use crate::error::{full, text_response};
use crate::listener::State;
use crate::upstream::ProxyBody;

/// Serves the admin API until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    token: Option<AdminToken>,
    mut shutdown: watch::Receiver<bool>,
) {
    let token = Arc::new(token);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let state = Arc::clone(&state);
        let token = Arc::clone(&token);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                let token = Arc::clone(&token);
                async move { Ok::<_, Infallible>(route(&state, token.as_ref().as_ref(), &req)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(
    state: &State,
    token: Option<&AdminToken>,
    req: &Request<Incoming>,
) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin_method",
            "GET only\n".into(),
        );
    }
    let path = req.uri().path();
    if path == "/healthz" {
        return ok("ok\n".into(), "text/plain; charset=utf-8");
    }
    if let Some(token) = token {
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|p| token.matches(p)) {
            return text_response(
                StatusCode::UNAUTHORIZED,
                "admin_unauthorized",
                "admin API: bearer token required\n".into(),
            );
        }
    }
    match path {
        "/readyz" => {
            let generation = state.generation();
            ok(
                format!(
                    "ready\nrules {}\nconfig {}\n",
                    generation.config.version, generation.config.source
                ),
                "text/plain; charset=utf-8",
            )
        }
        "/metrics" => {
            let mut text = state.audit.metrics().render();
            let (lookups, minted) = (state.issuer.lookups(), state.issuer.minted());
            text.push_str(&format!(
                "# HELP airlock_cert_cache_hits_total Leaf certificate cache hits.\n\
                 # TYPE airlock_cert_cache_hits_total counter\n\
                 airlock_cert_cache_hits_total {}\n\
                 # HELP airlock_cert_cache_misses_total Leaf certificates minted.\n\
                 # TYPE airlock_cert_cache_misses_total counter\n\
                 airlock_cert_cache_misses_total {minted}\n",
                lookups.saturating_sub(minted)
            ));
            ok(text, "text/plain; version=0.0.4; charset=utf-8")
        }
        _ => text_response(
            StatusCode::NOT_FOUND,
            "admin_not_found",
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

fn ok(body: String, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}
