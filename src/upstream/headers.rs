//! Hop-by-hop headers: what never crosses airlock in either direction.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Headers that belong to one connection (RFC 9110 §7.6.1) or to the
/// proxy hop. `Proxy-Authorization` is the sandbox's credential for airlock
/// and must never reach an origin.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// Removes hop-by-hop headers, and every header `Connection` names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (an
/// allowed WebSocket handshake). `TE: trailers` survives (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names (a few
    // comparisons each) rules that out, where ten lookups (a hash each)
    // would remove nothing. Without `Connection`, no other header is named.
    if !keep_upgrade && !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
    if te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
}

/// True when the request asks to switch to WebSocket.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    upgrade && connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_proxy_auth_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::PROXY_AUTHORIZATION, "Basic eA==".parse().unwrap());
        h.insert(header::CONNECTION, "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert(header::TE, "trailers, gzip".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert!(h.contains_key("x-keep"));
    }

    /// The quick check that a message carries none of them misses none:
    /// each alone (a custom name too) is still removed, and a message with
    /// none keeps every header as it was.
    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert("x-keep", "1".parse().unwrap());
            h.insert(name.clone(), "keep-alive".parse().unwrap());
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
            assert!(h.contains_key("x-keep"));
        }
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        h.append("x-many", "1".parse().unwrap());
        h.append("x-many", "2".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }
}
