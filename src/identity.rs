//! Client identity: which sandbox a request comes from.
//!
//! Without `[[sandbox]]` entries every client shares one policy and no
//! credentials are asked for. With them, every client must send
//! `Proxy-Authorization: Basic base64(<sandbox id>:<token>)` (on CONNECT, or
//! on each absolute-form request); the token's SHA-256 must match the
//! config. A missing or wrong credential gets `407` and nothing else: the
//! sandbox's rules (and so its hosts and secrets) apply only once it has
//! proven who it is.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use http::header::PROXY_AUTHORIZATION;

use crate::config::Config;
use crate::error::ProxyError;

/// The sandbox a client proved to be, or `None` when no sandboxes are configured.
///
/// # Errors
/// [`ProxyError::ProxyAuth`] when sandboxes are configured and the client
/// did not authenticate as one of them.
pub fn identify(config: &Config, headers: &HeaderMap) -> Result<Option<Arc<str>>, ProxyError> {
    if config.sandboxes.is_empty() {
        return Ok(None);
    }
    let value = headers
        .get(PROXY_AUTHORIZATION)
        .ok_or(ProxyError::ProxyAuth(
            "this airlock requires Proxy-Authorization: Basic <sandbox id>:<token>",
        ))?;
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .ok_or(ProxyError::ProxyAuth(
            "Proxy-Authorization must use the Basic scheme",
        ))?;
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| ProxyError::ProxyAuth("Proxy-Authorization is not valid base64"))?,
    );
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(ProxyError::ProxyAuth(
            "Proxy-Authorization must be <sandbox id>:<token>",
        ))?;
    let (id, token) = (&decoded[..colon], &decoded[colon + 1..]);
    let sandbox = config.sandboxes.iter().find(|s| s.id.as_bytes() == id);
    // Hash the token even for an unknown id, so timing does not tell which ids exist.
    let matched = match sandbox {
        Some(s) => s.token_matches(token),
        None => {
            let _ = config.sandboxes.first().map(|s| s.token_matches(token));
            false
        }
    };
    match sandbox {
        Some(s) if matched => Ok(Some(Arc::clone(&s.id))),
        _ => Err(ProxyError::ProxyAuth("unknown sandbox or wrong token")),
    }
}
