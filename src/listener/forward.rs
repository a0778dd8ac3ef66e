//! One request, judged and forwarded: the same path for requests inside an
//! intercepted tunnel and for absolute-form `http://` requests.
//!
//! Order: authority agreement → framing → path normalisation → policy
//! (method, path, upgrade) → hop-by-hop strip → upstream → response.
//! Every outcome emits one audit event.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{CONTENT_LENGTH, HOST, IF_RANGE, RANGE, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{AuditOnce, Audited, Counted};
use super::scanning::RequestScan;
use crate::audit::{AuditEvent, Kind, Outcome};
use crate::error::ProxyError;
use crate::guard::GuardError;
use crate::host::authority_names;
use crate::policy::{Host, NormalPath, Policy, RequestFacts, Rule, Scheme, decide};
use crate::state::{Generation, State};
use crate::upstream::connector::ConnectError;
use crate::upstream::headers::{is_websocket_upgrade, strip_hop_by_hop};
use crate::upstream::{BoxError, ProxyBody, find_source};

/// The destination a connection (tunnel) or request is bound to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host given to CONNECT (or in the absolute URI).
    pub host: Host,
    /// Its port.
    pub port: u16,
    /// TLS inside the tunnel (https upstream) or plain HTTP.
    pub scheme: Scheme,
    /// Reached through CONNECT (the policy's default port is then 443,
    /// whatever is spoken inside the tunnel).
    pub connect: bool,
    /// The sandbox's address.
    pub client: SocketAddr,
    /// The sandbox identity proven on CONNECT (or on this request).
    pub sandbox: Option<Arc<str>>,
    /// Set when TLS SNI named another host: every request gets 421.
    pub sni_mismatch: Option<String>,
    /// The host as the audit log writes it, when a secret in it went
    /// through (outgoing log mode) or is about to be refused.
    pub audit_host: Option<Arc<str>>,
    /// `host[:port]` as the upstream URI carries it: made at the first
    /// request and shared by a tunnel's later ones ([`upstream_uri`]).
    pub upstream_authority: OnceLock<Authority>,
}

impl Target {
    /// The host as logs write it: redacted when it carries a secret.
    pub(crate) fn shown_host(&self) -> String {
        self.audit_host
            .as_deref()
            .map_or_else(|| self.host.to_string(), str::to_owned)
    }
}

/// An absolute-form request on the proxy port (`GET http://host/path`).
pub(crate) async fn absolute_form(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let scheme = match req.uri().scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => {
            return ProxyError::BadRequest("only http:// and https:// URLs can be proxied".into())
                .into_response();
        }
    };
    let Some(authority) = req.uri().authority().cloned() else {
        return ProxyError::NotProxyRequest.into_response();
    };
    let host = match Host::parse(authority.host()) {
        Ok(h) => h,
        Err(e) => return ProxyError::BadRequest(format!("URL host: {e}")).into_response(),
    };
    let sandbox = match crate::identity::identify(&state.generation().config, req.headers()) {
        Ok(s) => s,
        Err(err) => {
            let mut ev = AuditEvent::new(
                Kind::Request,
                peer,
                host,
                authority.port_u16().unwrap_or(scheme.default_port()),
                Outcome::Deny,
                err.code(),
            );
            ev.method = Some(req.method().clone());
            return super::fail(&state, ev, None, err);
        }
    };
    let port = authority.port_u16().unwrap_or(scheme.default_port());
    let audit_host = redacted_host(&state, &host).map(Arc::from);
    let target = Arc::new(Target {
        host,
        port,
        scheme,
        connect: false,
        sandbox,
        client: peer,
        sni_mismatch: None,
        audit_host,
        upstream_authority: OnceLock::new(),
    });
    forward(state, target, req).await
}

/// What the checks produced for an allowed request.
struct Judged {
    rule: Arc<Rule>,
    path: NormalPath,
    websocket: bool,
    /// The refusal `airlock learn --permissive` overrode.
    permissive: Option<&'static str>,
}

/// What a forwarded request leaves for its audit record: the response to
/// return, the bytes counted upstream, and the budget to charge.
struct Forwarded {
    response: http::response::Parts,
    body: ProxyBody,
    bytes_up: Arc<AtomicU64>,
    budget: Option<(String, Arc<str>)>,
}

/// Judges and forwards one request. Every phase returns
/// `Result<_, ProxyError>`; the one failure exit is [`super::fail`], which
/// writes the audit record and the response.
pub(crate) async fn forward(
    state: Arc<State>,
    target: Arc<Target>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let mut event = AuditEvent::new(
        Kind::Request,
        target.client,
        target.host.clone(),
        target.port,
        Outcome::Allow,
        "rule_matched",
    );
    event.method = audit_method(&state, req.method());
    if let Some(host) = &target.audit_host {
        event.host = Some(crate::audit::Subject::Redacted(host.to_string()));
    }
    let generation = state.generation();
    event.rules_version = Arc::clone(&generation.version);
    event.sandbox.clone_from(&target.sandbox);
    match phases(&state, &generation, &target, req, &mut event).await {
        Ok(done) => {
            let mut audit = AuditOnce::new(event, state.audit.clone(), done.bytes_up, start);
            if let Some((rule_key, sandbox_key)) = done.budget {
                let st = Arc::clone(&state);
                audit = audit.on_done(Box::new(move |bytes| {
                    st.limiter.spend(&rule_key, &sandbox_key, bytes)
                }));
            }
            Response::from_parts(done.response, Audited::new(done.body, audit).boxed_unsync())
        }
        Err(err) => super::fail(&state, event, Some(start), err),
    }
}

/// Waits for `fut` (the origin's response head) until nothing has gone
/// upstream for `limit` (checked every quarter of it, so the cut comes
/// between `limit` and 1.25 x `limit` after the last byte sent): a request
/// body still streaming upstream (`sent` grows) keeps the wait alive, so a
/// long upload is never cut. `None`: the origin said nothing in time.
async fn until_silent<F: std::future::Future>(
    fut: F,
    sent: &AtomicU64,
    limit: std::time::Duration,
) -> Option<F::Output> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut fut = std::pin::pin!(fut);
    let tick = limit / 4;
    let mut last = sent.load(Relaxed);
    let mut since = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout(tick, &mut fut).await {
            Ok(out) => return Some(out),
            Err(_) => {
                let now = sent.load(Relaxed);
                if now != last {
                    last = now;
                    since = tokio::time::Instant::now();
                } else if since.elapsed() >= limit {
                    return None;
                }
            }
        }
    }
}

/// The request path, phase by phase; `event` gathers what the audit
/// record says (path, rule, secrets).
async fn phases(
    state: &Arc<State>,
    generation: &Generation,
    target: &Target,
    mut req: Request<Incoming>,
    event: &mut AuditEvent,
) -> Result<Forwarded, ProxyError> {
    let policy = generation
        .config
        .policy_for(target.sandbox.as_deref())
        .ok_or(ProxyError::ProxyAuth(
            "this tunnel's sandbox is no longer configured",
        ))?;
    // A decision that cannot be recorded is not made, when the operator
    // says so (`[audit] on_failure = "deny"`).
    if generation.config.audit_deny_on_failure && state.audit.failing() {
        return Err(ProxyError::AuditUnavailable);
    }
    let permissive = generation.config.learn_permissive;
    let judged = match judge(policy, target, &req, permissive) {
        Ok(j) => j,
        Err(err) => {
            event.path = NormalPath::parse(req.uri().path())
                .ok()
                .map(|p| audit_path(state, p.decoded()));
            return Err(err);
        }
    };
    // The record's path is scanned before it is written: in the request
    // head's scan when nothing records or fails before it (one scan fewer
    // per request), alone otherwise. Until then it stays out of the event.
    let path = judged.path.decoded();
    let settle = |event: &mut AuditEvent| {
        if event.path.is_none() {
            event.path = Some(audit_path(state, path));
        }
    };
    let early = |event: &mut AuditEvent, err: ProxyError| {
        settle(event);
        err
    };
    match judged.permissive {
        Some(reason) => crate::learn::permissive::mark(event, reason),
        None => event.rule = Some(judged.rule.source.clone()),
    }
    let budget = admit(state, target, &judged, &req).map_err(|e| early(event, e))?;

    let client_upgrade = judged.websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, judged.websocket);
    if judged.websocket && state.scanner().is_some() {
        // Compressed frames could not be scanned: offer no extensions.
        parts.headers.remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
    }
    parts.headers.remove(HOST);
    let injects = judged.rule.inject.is_some();
    if injects {
        // An origin that echoes the credential could be asked for it in
        // slices too short to recognise: the whole response is fetched,
        // scanned and redacted instead.
        parts.headers.remove(RANGE);
        parts.headers.remove(IF_RANGE);
    }
    parts.uri =
        upstream_uri(target, &judged.path, parts.uri.query()).map_err(|e| early(event, e))?;
    // The pooled client picks h2 or http/1.1 by ALPN; it wants 1.1 here.
    parts.version = Version::HTTP_11;
    let mut body: ProxyBody = body.map_err(BoxError::from).boxed_unsync();

    if judged.rule.approval {
        // Held before any secret is fetched or byte sent upstream. Boxed:
        // its futures are large and only approval rules need them. Its
        // records carry the path.
        settle(event);
        body = Box::pin(hold_for_approval(
            state, generation, target, &judged, &parts, body, event,
        ))
        .await?;
    }

    let injected = inject(state, target, &judged, &mut parts.headers, event)
        .await
        .map_err(|e| early(event, e))?;
    // Loaded after injecting: a secret fetched just now is already among
    // the values the scanner looks for.
    let scanner = state.scanner();
    let head_clean = scanner.as_ref().is_some_and(|scanner| {
        super::scanning::head_is_clean(
            scanner,
            &parts.uri,
            &parts.headers,
            injected.headers(),
            path,
        )
    });
    if head_clean {
        event.path.get_or_insert_with(|| path.to_owned());
    }
    // Else scanned alone (as written when there is no scanner at all).
    settle(event);
    if let Some(names) = injected.secrets() {
        state.audit.emit_derived(
            event,
            (Kind::Inject, Outcome::Inject, "credential_added"),
            |ev| ev.secrets = Some(names.clone()),
        );
    }
    let scan = scanner.map(|scanner| {
        let s = &generation.config.scan;
        RequestScan::new(scanner, s, state.audit.clone(), event).skipping(&judged.rule.scan_skip)
    });
    if let Some(scan) = &scan {
        if !target.connect {
            // A tunnel's host was scanned at its CONNECT.
            scan.request_host(&target.host)?;
        }
        scan.request_method(&parts.method)?;
        if !head_clean {
            scan.request_head(&mut parts.uri, &mut parts.headers, injected.headers())?;
        }
        scan.request_placeholder_parts(injected.sandbox_parts())?;
        scan.limit_accept_encoding(&mut parts.headers);
        // A small body is judged whole before anything goes upstream.
        body = scan
            .request_body_judged(
                &mut parts.headers,
                body,
                generation.config.scan.prejudge_bytes,
                generation.config.proxy.header_read_timeout,
            )
            .await?;
    }
    let bytes_up = Arc::new(AtomicU64::new(0));
    let body = Counted::new(body, Arc::clone(&bytes_up)).boxed_unsync();
    let outgoing = Request::from_parts(parts, body);

    let client = if judged.websocket {
        &generation.upstream.h1
    } else {
        &generation.upstream.any
    };
    let response_timeout = generation.config.proxy.response_timeout;
    let head = until_silent(client.request(outgoing), &bytes_up, response_timeout).await;
    let Some(head) = head else {
        return Err(ProxyError::UpstreamTimeout(format!(
            "the origin sent no response within {} s of the last byte sent to it",
            response_timeout.as_secs()
        )));
    };
    let mut response = match head {
        Ok(r) => r,
        Err(e) => {
            let err = scan
                .as_ref()
                .and_then(|s| s.body_failure())
                .unwrap_or_else(|| upstream_error(&e));
            tracing::debug!(host = %target.shown_host(), error = %err, "upstream request failed");
            return Err(err);
        }
    };

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_upgrade) if switching => {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let ws = scan.as_ref().map(RequestScan::websocket);
            tokio::spawn(splice_upgrade(client_upgrade, upstream_upgrade, ws));
        }
        _ => {}
    }
    if injects && response.status() == StatusCode::PARTIAL_CONTENT {
        return Err(ProxyError::PartialForInjected);
    }
    let (mut parts, body) = response.into_parts();
    // An h1 origin's own reason phrase would be written back as it came,
    // unscanned (an echo of the injected credential fits in one): the
    // sandbox gets the standard phrase for the status.
    parts.extensions.remove::<hyper::ext::ReasonPhrase>();
    event.status = Some(parts.status.as_u16());
    strip_hop_by_hop(&mut parts.headers, judged.websocket && switching);
    let mut body: ProxyBody = body.map_err(BoxError::from).boxed_unsync();
    if let Some(scan) = &scan {
        // A 101's headers too (its messages are the relay's to scan): an
        // origin could echo a credential there.
        scan.response_headers(&mut parts.headers)?;
        if !switching {
            body = scan.response_body(&mut parts.headers, body)?;
        }
    }
    Ok(Forwarded {
        response: parts,
        body,
        bytes_up,
        budget,
    })
}

/// Rate limit and byte budget: admits the request, and returns the budget
/// key to charge when it is done (when the rule has a budget).
fn admit(
    state: &State,
    target: &Target,
    judged: &Judged,
    req: &Request<Incoming>,
) -> Result<Option<(String, Arc<str>)>, ProxyError> {
    let limits = &judged.rule.limits;
    if limits.is_unlimited() {
        return Ok(None);
    }
    let rule_key = judged.rule.source.to_string();
    let sandbox_key: Arc<str> = target.sandbox.clone().unwrap_or_else(|| Arc::from(""));
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let len = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    state
        .limiter
        .admit(&rule_key, &sandbox_key, limits, write, len)?;
    Ok(limits.budget.is_some().then_some((rule_key, sandbox_key)))
}

/// Adds the rule's credentials for this host (fail closed: no backend or
/// no secret, no request), and records the secret names.
async fn inject(
    state: &State,
    target: &Target,
    judged: &Judged,
    headers: &mut http::HeaderMap,
    event: &mut AuditEvent,
) -> Result<crate::credentials::inject::Applied, ProxyError> {
    let Some(plan) = &judged.rule.inject else {
        return Ok(crate::credentials::inject::Applied::default());
    };
    let secrets = state.secrets().ok_or_else(|| {
        ProxyError::Credential(crate::credentials::inject::InjectError::Secret(
            crate::credentials::SecretError::Config(
                "no secret backend is configured (the secrets file is missing)".into(),
            ),
        ))
    })?;
    let applied = plan
        .apply(&judged.rule.pattern, &target.host, headers, &secrets)
        .await?;
    let Some(names) = applied.secrets() else {
        // Nothing was added: nothing of it is exempt from the scan.
        return Ok(crate::credentials::inject::Applied::default());
    };
    // The `inject` record itself is written by the caller, once the
    // record's path is scanned.
    event.secrets = Some(names.clone());
    Ok(applied)
}

/// Holds an approval rule's request until someone decides: the body's
/// first bytes (scanned and redacted) are shown, then replayed.
async fn hold_for_approval(
    state: &State,
    generation: &Generation,
    target: &Target,
    judged: &Judged,
    parts: &http::request::Parts,
    body: ProxyBody,
    event: &AuditEvent,
) -> Result<ProxyBody, ProxyError> {
    let (preview, more, rest) = read_preview(body, crate::approval::BODY_PREVIEW_LIMIT).await;
    // The hold comes before the request's own scan, and what it shows goes
    // to the admin API and to a decider URL: everything shown is redacted
    // first (URL, header values, body preview), not only the body.
    let scanner = state.scanner();
    let redact = |bytes: &[u8]| -> Vec<u8> {
        match &scanner {
            Some(s) => s.redact(bytes).0,
            None => bytes.to_vec(),
        }
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(&redact(bytes)).into_owned();
    let mut headers = http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        // A name can carry a secret too: such a header is not shown.
        if redact(name.as_str().as_bytes()) != name.as_str().as_bytes() {
            continue;
        }
        let shown = redact(value.as_bytes());
        let value = if shown == value.as_bytes() {
            value.clone()
        } else {
            http::HeaderValue::from_bytes(&shown)
                .unwrap_or(http::HeaderValue::from_static("[REDACTED]"))
        };
        headers.append(name.clone(), value);
    }
    let rule = judged.rule.source.to_string();
    let host = target.shown_host();
    let method = match audit_method(state, &parts.method) {
        Some(_) => parts.method.as_str(),
        None => "[REDACTED]",
    };
    let path = text(judged.path.encoded().as_bytes());
    let query = parts.uri.query().map(|q| text(q.as_bytes()));
    let pending = crate::approval::PendingRequest::new(&crate::approval::RequestFacts {
        sandbox: target.sandbox.as_deref(),
        method,
        scheme: target.scheme.as_str(),
        host: &host,
        port: target.port,
        path: &path,
        query: query.as_deref(),
        rule: &rule,
    })
    .with_headers(&headers)
    .with_body_preview(&redact(&preview), more);
    let timeout = judged
        .rule
        .approval_timeout
        .unwrap_or(generation.config.approval.timeout);
    let by = judged.rule.decider.as_ref();
    match state
        .approvals()
        .decide_by(pending, timeout, event, by)
        .await
    {
        crate::approval::Verdict::Approved { .. } => Ok(rest),
        crate::approval::Verdict::Denied { reason, .. } => Err(ProxyError::ApprovalDenied(reason)),
        crate::approval::Verdict::Expired => Err(ProxyError::ApprovalExpired(timeout.as_secs())),
    }
}

fn judge(
    policy: &Policy,
    target: &Target,
    req: &Request<Incoming>,
    permissive: bool,
) -> Result<Judged, ProxyError> {
    if let Some(sni) = &target.sni_mismatch {
        return Err(ProxyError::Misdirected(format!(
            "TLS SNI `{sni}` does not match the CONNECT host `{}`",
            target.host
        )));
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::Unsupported(
            "CONNECT inside a tunnel or proxied request is not supported".into(),
        ));
    }
    check_authority(target, req)?;
    check_framing(req)?;
    let path = NormalPath::parse(req.uri().path())?;
    let websocket = is_websocket_upgrade(req.headers());
    if req.headers().contains_key(http::header::UPGRADE) && !websocket {
        return Err(ProxyError::BadRequest(
            "only WebSocket upgrades are supported".into(),
        ));
    }
    if websocket && req.version() != Version::HTTP_11 {
        return Err(ProxyError::BadRequest(
            "WebSocket upgrades need HTTP/1.1".into(),
        ));
    }
    // The host is judged again on every request, by the rules in force now:
    // a host removed by a reload is cut off at a tunnel's next request.
    let rule = decide(
        policy,
        &RequestFacts {
            host: &target.host,
            port: target.port,
            scheme: target.scheme,
            connect: target.connect,
            method: req.method(),
            path: &path,
            websocket,
            headers: req.headers(),
            uri: req.uri(),
        },
    );
    let (rule, overridden) = match rule {
        Ok(rule) => (rule, None),
        Err(refusal) if permissive => {
            match crate::learn::permissive::override_refusal(&refusal, &target.host) {
                Some((rule, reason)) => (rule, Some(reason)),
                None => return Err(refusal.into()),
            }
        }
        Err(refusal) => return Err(refusal.into()),
    };
    Ok(Judged {
        rule,
        path,
        websocket,
        permissive: overridden,
    })
}

/// `Host`, `:authority` and an absolute-form URI must all name the target.
fn check_authority(target: &Target, req: &Request<Incoming>) -> Result<(), ProxyError> {
    let default_port = target.scheme.default_port();
    let same = |s: &str| authority_names(s, &target.host, target.port, default_port);
    if let Some(a) = req.uri().authority()
        && !same(a.as_str())
    {
        return Err(ProxyError::Misdirected(format!(
            "the request names `{a}` but this connection is for `{}:{}`",
            target.host, target.port
        )));
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    if let Some(h) = hosts.next() {
        if hosts.next().is_some() {
            return Err(ProxyError::BadRequest("more than one Host header".into()));
        }
        let s = h
            .to_str()
            .map_err(|_| ProxyError::BadRequest("Host header is not ASCII".into()))?;
        if !same(s) {
            return Err(ProxyError::Misdirected(format!(
                "the Host header names `{s}` but this connection is for `{}:{}`",
                target.host, target.port
            )));
        }
    }
    Ok(())
}

/// Ambiguous framing is refused, never guessed at (request smuggling).
///
/// For HTTP/1.1, hyper already refuses differing Content-Length values and
/// resolves Content-Length + Transfer-Encoding the RFC 9112 way (chunked
/// wins, the connection closes after the request); airlock re-frames every
/// body toward the origin, so the origin never sees the ambiguity. This
/// check refuses what reaches here by other routes (h2 carries headers as
/// data, and a CR, LF or NUL there must not be forwarded).
fn check_framing(req: &Request<Incoming>) -> Result<(), ProxyError> {
    let h = req.headers();
    let lengths = h.get_all(CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Err(ProxyError::BadRequest(
            "more than one Content-Length header".into(),
        ));
    }
    if lengths == 1 && h.contains_key(TRANSFER_ENCODING) {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding".into(),
        ));
    }
    for (name, value) in h {
        if value
            .as_bytes()
            .iter()
            .any(|&b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(ProxyError::BadRequest(format!(
                "header `{name}` contains CR, LF or NUL"
            )));
        }
    }
    Ok(())
}

/// The URI the upstream client is sent: the target's scheme and
/// authority, the normalised path, the query as the sandbox wrote it.
///
/// Built from parts, on the authority the target keeps: writing the host
/// out and parsing the whole string again cost about 2,800 instructions a
/// request. A long or unusual path and query go the parsing way, which
/// says what is wrong with them (a test holds the two ways equal).
fn upstream_uri(
    target: &Target,
    path: &NormalPath,
    query: Option<&str>,
) -> Result<Uri, ProxyError> {
    let len = path.encoded().len() + query.map_or(0, |q| q.len() + 1);
    if len <= FROM_PARTS_MAX
        && let Some(authority) = upstream_authority(target)
    {
        let mut path_and_query = String::with_capacity(len);
        path_and_query.push_str(path.encoded());
        if let Some(q) = query {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let scheme = match target.scheme {
            Scheme::Https => http::uri::Scheme::HTTPS,
            Scheme::Http => http::uri::Scheme::HTTP,
        };
        if let Ok(uri) = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
        {
            return Ok(uri);
        }
    }
    parsed_upstream_uri(target, path, query)
}

/// The longest path and query [`upstream_uri`] builds from parts. Parsing
/// the whole URI also enforces `http`'s limit on a URI's length (65,534
/// bytes), which re-encoding can push a path past (`é`: 2 bytes in, 6 out);
/// anything near it goes that way.
const FROM_PARTS_MAX: usize = 4096;

/// The target's `host[:port]`, made once.
fn upstream_authority(target: &Target) -> Option<Authority> {
    if let Some(authority) = target.upstream_authority.get() {
        return Some(authority.clone());
    }
    let mut s = String::with_capacity(64);
    write_authority(target, &mut s);
    let authority = Authority::try_from(s.as_str()).ok()?;
    Some(target.upstream_authority.get_or_init(|| authority).clone())
}

/// `host[:port]` onto `s`, the port left out when it is the scheme's
/// default; written in place, no temporary string.
fn write_authority(target: &Target, s: &mut String) {
    let _ = write!(s, "{}", target.host);
    if target.port != target.scheme.default_port() {
        let _ = write!(s, ":{}", target.port);
    }
}

/// [`upstream_uri`] by writing the whole URI out and parsing it.
fn parsed_upstream_uri(
    target: &Target,
    path: &NormalPath,
    query: Option<&str>,
) -> Result<Uri, ProxyError> {
    let scheme = target.scheme.as_str();
    let mut s = String::with_capacity(64);
    s.push_str(scheme);
    s.push_str("://");
    write_authority(target, &mut s);
    s.push_str(path.encoded());
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Uri::try_from(s)
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream URL: {e}")))
}

fn upstream_error(e: &hyper_util::client::legacy::Error) -> ProxyError {
    if let Some(failed) = find_source::<ProxyError>(e) {
        // The request body's scanner stopped it (see `RequestScan::body_failure`).
        return failed.clone();
    }
    if let Some(c) = find_source::<ConnectError>(e) {
        return match c {
            ConnectError::Guard(g) => ProxyError::Guard(g.clone()),
            ConnectError::TlsTimeout { .. } => ProxyError::UpstreamTimeout(c.to_string()),
            other => ProxyError::Upstream(other.to_string()),
        };
    }
    if let Some(g) = find_source::<GuardError>(e) {
        return ProxyError::Guard(g.clone());
    }
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    ProxyError::Upstream(msg)
}

async fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    scan: Option<super::websocket::WsScan>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Some(scan) = scan {
        super::websocket::relay(client, upstream, scan).await;
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "WebSocket tunnel ended");
    }
}

/// Reads up to `limit` bytes of a body for an approval preview, and returns
/// them, whether more follows, and a body that replays them then continues:
/// the origin receives the body byte for byte. Waits at most 10 s for the
/// preview (a slow client gets a shorter preview, not a stuck hold).
async fn read_preview(mut body: ProxyBody, limit: usize) -> (Vec<u8>, bool, ProxyBody) {
    use http_body::Body as _;
    let mut frames = Vec::new();
    let mut preview = Vec::new();
    let mut ended = body.is_end_stream();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ended && preview.len() < limit {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    preview.extend_from_slice(&d[..d.len().min(limit - preview.len())]);
                }
                frames.push(Ok(frame));
            }
            Ok(Some(Err(e))) => {
                frames.push(Err(e));
                ended = true;
            }
            Ok(None) => ended = true,
            Err(_) => break,
        }
    }
    let more = !ended || preview.len() >= limit;
    let replay = futures_util::stream::iter(frames);
    let rest = http_body_util::BodyStream::new(body);
    let chained = futures_util::StreamExt::chain(replay, rest);
    (
        preview,
        more,
        http_body_util::StreamBody::new(chained).boxed_unsync(),
    )
}

/// The path as the audit log records it: a secret in a path segment is
/// replaced by its marker, so the log never holds the value even when the
/// request carrying it is refused.
pub(crate) fn audit_path(state: &State, path: &str) -> String {
    redacted(state, path).unwrap_or_else(|| path.to_owned())
}

/// The method as the audit log writes it: `None` for an extension method
/// that carries a secret (the finding's pattern says what it was).
fn audit_method(state: &State, method: &Method) -> Option<Method> {
    if !super::scanning::is_standard(method)
        && let Some(scanner) = state.scanner()
        && !scanner.scan(method.as_str().as_bytes()).is_empty()
    {
        return None;
    }
    Some(method.clone())
}

/// A host name fit for the audit log: `None` when it carries no secret;
/// else with the secret replaced by its marker, or, when the secret is
/// split across labels, `[REDACTED:<id>]` for the whole name.
pub(crate) fn redacted_host(state: &State, host: &crate::policy::Host) -> Option<String> {
    let scanner = state.scanner()?;
    let text = super::scanning::host_text(host)?;
    let first = scanner.scan(&text).into_iter().next()?;
    redacted(state, host.as_name()?).or_else(|| Some(format!("[REDACTED:{}]", first.pattern_id)))
}

/// A host as logs write it: redacted when it carries a secret.
pub(crate) fn shown_host(state: &State, host: &crate::policy::Host) -> String {
    redacted_host(state, host).unwrap_or_else(|| host.to_string())
}

/// `text` with every secret the scanner finds replaced by its marker;
/// `None` when there is none (or no scanner).
pub(crate) fn redacted(state: &State, text: &str) -> Option<String> {
    let (redacted, findings) = state.scanner()?.redact(text.as_bytes());
    (!findings.is_empty()).then(|| String::from_utf8_lossy(&redacted).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, scheme: Scheme) -> Target {
        Target {
            host: Host::parse(host).unwrap(),
            port,
            scheme,
            connect: true,
            client: SocketAddr::from(([127, 0, 0, 1], 1)),
            sandbox: None,
            sni_mismatch: None,
            audit_host: None,
            upstream_authority: OnceLock::new(),
        }
    }

    /// Built from parts or written out and parsed whole, the upstream URI
    /// is the same, and the target keeps the authority for its next
    /// request.
    #[test]
    fn the_upstream_uri_from_parts_equals_the_parsed_one() {
        let targets = [
            target("api.example.test", 443, Scheme::Https),
            target("api.example.test", 8443, Scheme::Https),
            target("10.1.2.3", 80, Scheme::Http),
            target("10.1.2.3", 8080, Scheme::Http),
            target("[::1]", 443, Scheme::Https),
            target("[2001:db8::1]", 9443, Scheme::Https),
        ];
        let long = "q".repeat(5000);
        let queries = [
            None,
            Some(""),
            Some("a=1&b=%20"),
            Some("x=%22y%22"),
            Some(&*long),
        ];
        for t in &targets {
            for raw in ["/", "/v1/messages", "/a%20b/%C3%A9", "/a/../b/", "/a;p/x"] {
                let path = NormalPath::parse(raw).unwrap();
                for q in queries {
                    let parts = upstream_uri(t, &path, q).unwrap();
                    let parsed = parsed_upstream_uri(t, &path, q).unwrap();
                    assert_eq!(parts, parsed, "{raw} ? {q:?}");
                    assert_eq!(parts.to_string(), parsed.to_string());
                }
            }
            let kept = t.upstream_authority.get().expect("the authority is kept");
            assert_eq!(
                Some(kept),
                parsed_upstream_uri(t, &NormalPath::parse("/").unwrap(), None)
                    .unwrap()
                    .authority()
            );
        }
    }
}
