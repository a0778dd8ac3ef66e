//! The one place a failure becomes a response to the sandbox.
//!
//! Every refusal is a short plain-text body written for the agent reading
//! it, plus an `airlock-error` header with a stable code. No variant holds
//! a header value, a body or a secret, so no response can echo one.

use std::fmt;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::guard::GuardError;
use crate::policy::{Denied, PathError, Reason, Refusal};
use crate::scan::ScanError;
use crate::upstream::ProxyBody;

/// The response header carrying the stable error code.
pub const ERROR_HEADER: &str = "airlock-error";

/// Which message: the sandbox's request (outgoing) or the origin's
/// response (incoming).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// What the sandbox sends.
    Request,
    /// What comes back to it.
    Response,
}

impl Side {
    /// `"request"` or `"response"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in a message a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The request target (path and query).
    Url,
    /// One header, by name (its name and value are read as one line).
    Header(HeaderName),
    /// One trailer (a header sent after the body), by name; `None` when
    /// the name itself holds the secret.
    Trailer(Option<HeaderName>),
    /// The request method (an extension method is any token).
    Method,
    /// The host name (under a wildcard rule, the agent's to choose).
    Host,
    /// The body.
    Body(Side),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Url => f.write_str("URL"),
            Place::Header(name) => write!(f, "header {name}"),
            Place::Trailer(Some(name)) => write!(f, "trailer {name}"),
            Place::Trailer(None) => f.write_str("a trailer's name"),
            Place::Method => f.write_str("method"),
            Place::Host => f.write_str("host name"),
            Place::Body(side) => write!(f, "{side} body"),
        }
    }
}

/// Why a request did not go through. The variant decides the status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// No rule allows it (403; 405 for TRACE/TRACK).
    #[error("denied: {0}")]
    Denied(Box<Denied>),
    /// The guard refused the address (403) or could not reach it (502).
    #[error("{0}")]
    Guard(#[from] GuardError),
    /// Host / :authority / SNI disagree with the CONNECT host (421).
    #[error("misdirected: {0}")]
    Misdirected(String),
    /// A request airlock will not interpret (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The path could not be normalised safely (400).
    #[error("bad path: {0}")]
    Path(#[from] PathError),
    /// An origin-form request sent to the proxy port (400).
    #[error("not a proxy request")]
    NotProxyRequest,
    /// A method a forward proxy does not serve (405).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A credential could not be added (503 when the secret is unavailable:
    /// fail closed). Names the secret ref, never its value.
    #[error("credential: {0}")]
    Credential(#[from] crate::credentials::inject::InjectError),
    /// A placeholder outside the one header of the one host it stands in for (403).
    #[error("placeholder {0} used outside its header or host")]
    Placeholder(String),
    /// The rule injects a credential but the request is plain HTTP (403).
    #[error("the rule injects a credential, and this request is unencrypted HTTP")]
    InjectOverHttp,
    /// A person or the decider refused a held request (403).
    #[error("approval denied")]
    ApprovalDenied(Option<String>),
    /// Nobody decided on a held request in time (403).
    #[error("approval not given within {0} s")]
    ApprovalExpired(u64),
    /// The client did not prove a sandbox identity (407).
    #[error("proxy authentication: {0}")]
    ProxyAuth(&'static str),
    /// `[audit] on_failure = "deny"` and the audit log cannot be written (503).
    #[error("the audit log cannot be written, and [audit] on_failure = \"deny\"")]
    AuditUnavailable,
    /// A rate limit or byte budget was reached (429 + Retry-After).
    #[error(transparent)]
    Limited(#[from] crate::limits::Limited),
    /// A secret in what the sandbox sent (403). Names the pattern, never the value.
    #[error("secret in {place} (pattern {pattern})")]
    Leak {
        /// Pattern id or `held:<id>`.
        pattern: String,
        /// The URL, a header or the request body.
        place: Place,
    },
    /// A body airlock cannot scan (unknown Content-Encoding, bad
    /// compression, decompression bomb): refused, not forwarded unscanned (400/502).
    #[error("cannot scan {side} body: {reason}")]
    Unscannable {
        /// The request's body or the response's.
        side: Side,
        /// Why.
        reason: String,
    },
    /// A secret in the response while `[scan] incoming = "block"` (502).
    #[error("secret in the response {place} (pattern {pattern})")]
    ResponseLeak {
        /// Pattern id or `held:<id>`.
        pattern: String,
        /// Where.
        place: Place,
    },
    /// A small request body, read whole to be judged before anything is
    /// sent, did not arrive in time (408).
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// A 206 from a host airlock injects a credential for, to a request it
    /// sent without a range (502): slices could reassemble an echoed
    /// credential too short to recognise in any one of them.
    #[error(
        "the origin answered 206 Partial Content; airlock forwards requests to a host it injects a credential for without Range, and refuses partial answers from it"
    )]
    PartialForInjected,
    /// Upstream TLS or connection failure (502).
    #[error("upstream: {0}")]
    Upstream(String),
    /// Upstream took too long (504).
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
}

impl From<Denied> for ProxyError {
    fn from(d: Denied) -> Self {
        ProxyError::Denied(Box::new(d))
    }
}

/// The one conversion of a body scanner's failure: a leak in block mode,
/// or a body that cannot be scanned (refused, never passed unscanned).
impl From<(ScanError, Side)> for ProxyError {
    fn from((e, side): (ScanError, Side)) -> Self {
        match e {
            ScanError::Blocked(b) if side == Side::Request => ProxyError::Leak {
                pattern: b.label(),
                place: Place::Body(side),
            },
            ScanError::Blocked(b) => ProxyError::ResponseLeak {
                pattern: b.label(),
                place: Place::Body(side),
            },
            ScanError::Trailer { name, leak } if side == Side::Request => ProxyError::Leak {
                pattern: leak.label(),
                place: Place::Trailer(name),
            },
            ScanError::Trailer { name, leak } => ProxyError::ResponseLeak {
                pattern: leak.label(),
                place: Place::Trailer(name),
            },
            other => ProxyError::Unscannable {
                side,
                reason: other.to_string(),
            },
        }
    }
}

impl From<Refusal> for ProxyError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Denied(d) => ProxyError::Denied(d),
            Refusal::Placeholder(p) => ProxyError::Placeholder(p.to_string()),
            Refusal::InjectOverHttp(_) => ProxyError::InjectOverHttp,
        }
    }
}

impl ProxyError {
    /// Stable code for the audit log and the `airlock-error` header.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Denied(d) => d.reason.as_str(),
            ProxyError::Guard(g) => g.code(),
            ProxyError::Misdirected(_) => "misdirected",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::Path(_) => "bad_path",
            ProxyError::NotProxyRequest => "not_proxy_request",
            ProxyError::Unsupported(_) => "unsupported",
            ProxyError::Credential(crate::credentials::inject::InjectError::Secret(e)) => e.code(),
            ProxyError::Credential(_) => "inject_refused",
            ProxyError::Placeholder(_) => "placeholder_misuse",
            ProxyError::InjectOverHttp => "inject_over_http",
            ProxyError::ProxyAuth(_) => "proxy_auth_required",
            ProxyError::AuditUnavailable => "audit_unavailable",
            ProxyError::ApprovalDenied(_) => "approval_denied",
            ProxyError::ApprovalExpired(_) => "approval_expired",
            ProxyError::Limited(_) => "rate_limited",
            ProxyError::Leak { .. } => "secret_blocked",
            ProxyError::Unscannable { .. } => "unscannable_body",
            ProxyError::ResponseLeak { .. } => "secret_in_response",
            ProxyError::BodyTimeout(_) => "body_timeout",
            ProxyError::PartialForInjected => "partial_content_refused",
            ProxyError::Upstream(_) => "upstream_error",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    /// The RFC 9209 error type for `Proxy-Status` (the registered types
    /// only; `None` where none fits: a response airlock withheld).
    pub fn proxy_status_error(&self) -> Option<&'static str> {
        use crate::credentials::inject::InjectError;
        Some(match self {
            ProxyError::Guard(g) if g.is_refusal() => "destination_ip_prohibited",
            ProxyError::Guard(GuardError::Resolve { .. }) => "dns_error",
            ProxyError::Guard(_) => "destination_unavailable",
            ProxyError::Denied(_)
            | ProxyError::Placeholder(_)
            | ProxyError::InjectOverHttp
            | ProxyError::ApprovalDenied(_)
            | ProxyError::ApprovalExpired(_)
            | ProxyError::ProxyAuth(_)
            | ProxyError::Limited(_)
            | ProxyError::Leak { .. }
            | ProxyError::Credential(InjectError::WrongHost { .. }) => "http_request_denied",
            ProxyError::Misdirected(_)
            | ProxyError::BadRequest(_)
            | ProxyError::Path(_)
            | ProxyError::NotProxyRequest
            | ProxyError::Unsupported(_)
            | ProxyError::BodyTimeout(_)
            | ProxyError::Unscannable {
                side: Side::Request,
                ..
            } => "http_request_error",
            ProxyError::Credential(_) | ProxyError::AuditUnavailable => "proxy_internal_error",
            ProxyError::Unscannable {
                side: Side::Response,
                ..
            } => "http_response_content_coding",
            ProxyError::Upstream(_) => "destination_unavailable",
            ProxyError::UpstreamTimeout(_) => "http_response_timeout",
            ProxyError::ResponseLeak { .. } | ProxyError::PartialForInjected => return None,
        })
    }

    /// The status the sandbox sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Denied(d) if d.reason == Reason::MethodRefused => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::Guard(g) if g.is_refusal() => StatusCode::FORBIDDEN,
            ProxyError::Guard(_)
            | ProxyError::Upstream(_)
            | ProxyError::ResponseLeak { .. }
            | ProxyError::PartialForInjected => StatusCode::BAD_GATEWAY,
            ProxyError::ProxyAuth(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::ApprovalDenied(_) | ProxyError::ApprovalExpired(_) => StatusCode::FORBIDDEN,
            ProxyError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Leak { .. } | ProxyError::Placeholder(_) | ProxyError::InjectOverHttp => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Credential(crate::credentials::inject::InjectError::WrongHost {
                ..
            }) => StatusCode::FORBIDDEN,
            ProxyError::Credential(_) | ProxyError::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Unscannable {
                side: Side::Response,
                ..
            } => StatusCode::BAD_GATEWAY,
            ProxyError::Unscannable {
                side: Side::Request,
                ..
            } => StatusCode::BAD_REQUEST,
            ProxyError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::BadRequest(_) | ProxyError::Path(_) | ProxyError::NotProxyRequest => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// True when this is a refusal by policy (deny) rather than a failure.
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            ProxyError::ResponseLeak { .. } | ProxyError::PartialForInjected
        ) || !matches!(
            self.status(),
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE
        )
    }

    /// The text the agent reads.
    pub fn agent_message(&self) -> String {
        match self {
            ProxyError::Denied(d) => d.agent_message(),
            ProxyError::Guard(g) if g.is_refusal() => format!(
                "airlock denied this request: {g}.\n\
                 Nothing was sent. Private, loopback, link-local and metadata addresses are never \
                 reachable through airlock; retrying with another name or encoding will be denied too.\n"
            ),
            ProxyError::Misdirected(m) => format!(
                "airlock refused this request: {m}.\n\
                 Inside a tunnel, the Host header, :authority, the URL and TLS SNI must all name the \
                 host given to CONNECT. Open a new connection to the host you mean.\n"
            ),
            ProxyError::Leak { pattern, place } => format!(
                "airlock blocked this request: the {place} carries a secret (pattern {pattern}).\n\
                 No byte of the secret was sent upstream. Credentials must not leave the sandbox in \
                 requests; airlock adds the credentials a tool needs itself. Sending it another way \
                 (another encoding, header, or host) will be blocked too.\n"
            ),
            ProxyError::ResponseLeak { pattern, place } => format!(
                "airlock withheld this response: its {place} carried a secret (pattern {pattern}).\n"
            ),
            ProxyError::Credential(crate::credentials::inject::InjectError::Secret(e)) => format!(
                "airlock could not add the credential this request needs: {e}.\n\
                 The request was not sent. This is on airlock's side (the secret store); retrying \
                 later may work, changing the request will not.\n"
            ),
            ProxyError::Placeholder(p) => format!(
                "airlock refused this request: it carries the credential placeholder {p} somewhere \
                 other than the header of the host it stands in for.\nNothing was sent.\n"
            ),
            ProxyError::ApprovalDenied(reason) => format!(
                "airlock held this request for approval, and it was denied{}.\nNothing was sent.\n",
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            ProxyError::ApprovalExpired(secs) => format!(
                "airlock held this request for approval, and nobody approved it within {secs} s.\n\
                 Nothing was sent. Ask the operator to approve it (airlock approvals list), then retry.\n"
            ),
            ProxyError::BodyTimeout(secs) => format!(
                "airlock refused this request: its body did not arrive within {secs} s.\n\
                 Nothing was sent. airlock reads a small body whole and scans it before the \
                 request goes upstream; send the body promptly.\n"
            ),
            ProxyError::AuditUnavailable => {
                "airlock refused this request: its decision could not be recorded (the audit log \
                 cannot be written), and airlock is set to refuse traffic then.\n\
                 Nothing was sent. This is on airlock's side; retrying later may work.\n"
                    .to_owned()
            }
            ProxyError::NotProxyRequest => {
                "airlock is a forward proxy: send requests to it as a proxy \
                 (HTTPS_PROXY=http://this-address), with CONNECT or an absolute http:// URL.\n"
                    .to_owned()
            }
            other => format!("airlock: {other}\n"),
        }
    }

    /// Builds the response.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let code = self.code();
        let retry_after = match &self {
            ProxyError::Limited(l) => Some(l.retry_after_secs),
            _ => None,
        };
        let message = self.agent_message();
        let proxy_status = proxy_status(self.proxy_status_error(), code, &message);
        let mut resp = text_response(status, code, message);
        resp.headers_mut().insert(PROXY_STATUS_HEADER, proxy_status);
        if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            resp.headers_mut().insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"airlock\""),
            );
        }
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The RFC 9209 `Proxy-Status` header on every response airlock makes
/// for a failure: `airlock; error=<type>; details="<code>: <first line>"`.
pub const PROXY_STATUS_HEADER: &str = "proxy-status";

/// Builds a `Proxy-Status` value. `details` is an RFC 8941 string: only
/// printable ASCII, with `"` and `\` escaped; anything else becomes `?`.
pub fn proxy_status(error: Option<&'static str>, code: &str, message: &str) -> HeaderValue {
    let first = message.lines().next().unwrap_or_default();
    let mut details = String::with_capacity(code.len() + first.len() + 2);
    details.push_str(code);
    details.push_str(": ");
    details.push_str(first);
    let mut value = String::with_capacity(details.len() + 48);
    value.push_str("airlock");
    if let Some(error) = error {
        value.push_str("; error=");
        value.push_str(error);
    }
    value.push_str("; details=\"");
    for c in details.chars().take(300) {
        match c {
            '"' | '\\' => {
                value.push('\\');
                value.push(c);
            }
            ' '..='~' => value.push(c),
            _ => value.push('?'),
        }
    }
    value.push('"');
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("airlock"))
}

/// A plain-text response with the `airlock-error` code.
pub fn text_response(status: StatusCode, code: &'static str, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(ERROR_HEADER, HeaderValue::from_static(code));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// A complete body from bytes.
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 9209 error type for each kind of failure, as the README lists it.
    #[test]
    fn proxy_status_error_types() {
        let guard_refusal = ProxyError::Guard(GuardError::Blocked {
            host: "h".into(),
            addr: "10.0.0.1".parse().unwrap(),
            class: crate::guard::IpClass::Private,
        });
        let dns = ProxyError::Guard(GuardError::Resolve {
            host: "h".into(),
            reason: "r".into(),
        });
        let cases: Vec<(ProxyError, Option<&str>)> = vec![
            (guard_refusal, Some("destination_ip_prohibited")),
            (dns, Some("dns_error")),
            (ProxyError::ApprovalExpired(1), Some("http_request_denied")),
            (ProxyError::ProxyAuth("x"), Some("http_request_denied")),
            (
                ProxyError::Leak {
                    pattern: "p".into(),
                    place: Place::Url,
                },
                Some("http_request_denied"),
            ),
            (
                ProxyError::Misdirected("m".into()),
                Some("http_request_error"),
            ),
            (ProxyError::BodyTimeout(1), Some("http_request_error")),
            (
                ProxyError::Upstream("u".into()),
                Some("destination_unavailable"),
            ),
            (
                ProxyError::UpstreamTimeout("t".into()),
                Some("http_response_timeout"),
            ),
            (
                ProxyError::Unscannable {
                    side: Side::Response,
                    reason: "r".into(),
                },
                Some("http_response_content_coding"),
            ),
            (ProxyError::PartialForInjected, None),
        ];
        for (err, want) in cases {
            assert_eq!(err.proxy_status_error(), want, "{err:?}");
            let resp = err.into_response();
            let value = resp.headers()[PROXY_STATUS_HEADER]
                .to_str()
                .unwrap()
                .to_owned();
            match want {
                Some(t) => assert!(
                    value.starts_with(&format!("airlock; error={t}; details=\"")),
                    "{value}"
                ),
                None => assert!(value.starts_with("airlock; details=\""), "{value}"),
            }
        }
    }

    #[test]
    fn proxy_status_details_are_an_sf_string() {
        let v = proxy_status(None, "c", "a \"quoted\" \\ caf\u{e9}\nsecond line");
        assert_eq!(
            v.to_str().unwrap(),
            "airlock; details=\"c: a \\\"quoted\\\" \\\\ caf?\""
        );
    }
}
