//! Credential injection: the header a rule adds to its host's requests,
//! built from secrets fetched through [`crate::credentials::CachedSource`].
//!
//! Three forms, written in a rule's `inject`:
//!
//! ```toml
//! inject = { header = "Authorization", value = "Bearer {{secret}}", secret = "tools/github#token" }
//! inject = { basic = { username = "tools/jira#user", password = "tools/jira#token" } }
//! inject = { header = "Authorization", placeholder = "AIRLOCK_PLACEHOLDER_GITHUB", secret = "tools/github#token" }
//! ```
//!
//! (or a list of them). A template or basic injection replaces whatever the
//! sandbox sent in that header, so the request carries exactly one
//! credential: airlock's. A placeholder injection swaps the placeholder the
//! sandbox was given for the real value, in that header only.
//!
//! # Security
//! A plan belongs to a rule, and a rule to a host pattern: [`InjectionPlan::apply`]
//! re-checks that the host actually connected to matches the rule before
//! adding anything. Built header values are marked sensitive (never logged
//! by `Debug`, never HPACK-indexed), own their bytes in zeroizing memory
//! (zeroed when the last request using them is done), and are kept with
//! the cached read they came from, so they go when it expires. Placeholders are refused anywhere else:
//! in another header, in the URL, or toward any other host.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::{HeaderMap, Uri};

use crate::credentials::{CachedSource, SecretError, SecretRef};
use crate::host::{Host, HostPattern};

/// One header to add.
#[derive(Debug, Clone)]
pub enum Injection {
    /// `prefix + secret + suffix` (from `value = "Bearer {{secret}}"`).
    Template {
        /// The header set.
        header: HeaderName,
        /// Text before `{{secret}}`.
        prefix: String,
        /// Text after `{{secret}}`.
        suffix: String,
        /// The secret.
        secret: SecretRef,
        /// Its header value is kept with each cached read under this key.
        key: u64,
    },
    /// `Basic base64(username:password)`.
    Basic {
        /// The header set (default `Authorization`).
        header: HeaderName,
        /// The user name secret.
        username: SecretRef,
        /// The password secret.
        password: SecretRef,
    },
    /// Swap `placeholder` for the secret inside `header`.
    Placeholder {
        /// The header the placeholder may appear in.
        header: HeaderName,
        /// The stand-in the sandbox holds.
        placeholder: String,
        /// The secret.
        secret: SecretRef,
    },
}

impl Injection {
    /// The header this injection sets.
    pub fn header(&self) -> &HeaderName {
        match self {
            Injection::Template { header, .. }
            | Injection::Basic { header, .. }
            | Injection::Placeholder { header, .. } => header,
        }
    }

    /// The secrets it reads.
    pub fn secrets(&self) -> Vec<&SecretRef> {
        match self {
            Injection::Template { secret, .. } | Injection::Placeholder { secret, .. } => {
                vec![secret]
            }
            Injection::Basic {
                username, password, ..
            } => vec![username, password],
        }
    }
}

/// Names a template injection's header among the values derived from one
/// cached read ([`crate::credentials::SecretHandle::derive`]); unique per
/// parsed template.
fn next_template_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A rule's injections.
#[derive(Debug, Clone)]
pub struct InjectionPlan {
    /// What to add.
    items: Vec<Injection>,
    /// `danger_inject_over_http`: allow plain-HTTP upstreams.
    pub over_plain_http: bool,
    /// What applying every item did, built once: the usual request shares
    /// it instead of allocating its own lists.
    everything: Applied,
}

/// What [`InjectionPlan::apply`] did, for the audit log and the scanner.
/// Cheap to clone (shared lists).
#[derive(Default, Clone)]
pub struct Applied {
    headers: Option<Arc<[HeaderName]>>,
    secrets: Option<SecretNames>,
    /// Per placeholder swapped: what the sandbox itself wrote in that header
    /// (the placeholder cut out). The header now holds a secret and is not
    /// scanned as a whole, so these are scanned instead. Empty (and not
    /// allocated) for plans without placeholders.
    sandbox_parts: Vec<(HeaderName, Vec<u8>)>,
}

impl std::fmt::Debug for Applied {
    /// Names only: the sandbox's parts may hold a secret it tried to send.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("headers", &self.headers())
            .field("secrets", &self.secrets)
            .field("sandbox_parts", &self.sandbox_parts.len())
            .finish()
    }
}

/// Secret refs by name (`tools/github#token`), never values.
pub type SecretNames = Arc<[Arc<str>]>;

impl Applied {
    fn of<'a>(items: impl IntoIterator<Item = &'a Injection> + Clone) -> Self {
        let headers: Arc<[HeaderName]> = items
            .clone()
            .into_iter()
            .map(|i| i.header().clone())
            .collect();
        if headers.is_empty() {
            return Self::default();
        }
        let secrets = items
            .into_iter()
            .flat_map(Injection::secrets)
            .map(|r| Arc::from(r.to_string()))
            .collect();
        Self {
            headers: Some(headers),
            secrets: Some(secrets),
            sandbox_parts: Vec::new(),
        }
    }

    /// Headers airlock set (skipped by the outgoing header scan).
    pub fn headers(&self) -> &[HeaderName] {
        self.headers.as_deref().unwrap_or(&[])
    }

    /// The secret refs used, if any credential was added.
    pub fn secrets(&self) -> Option<&SecretNames> {
        self.secrets.as_ref()
    }

    /// What the sandbox wrote around each placeholder swapped, by header:
    /// to be scanned like any header it sends.
    pub fn sandbox_parts(&self) -> &[(HeaderName, Vec<u8>)] {
        &self.sandbox_parts
    }
}

/// Why injection did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InjectError {
    /// The secret could not be read (Vault down, missing, denied).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The secret's bytes cannot go in a header (a newline, say).
    #[error(
        "secret {0} cannot be used in a header (it holds characters a header value cannot carry)"
    )]
    NotAHeaderValue(String),
    /// The host connected to is not the rule's host (defence in depth).
    #[error("refusing to inject for {host}: the rule is for {pattern}")]
    WrongHost {
        /// The host.
        host: String,
        /// The rule's pattern.
        pattern: String,
    },
}

impl InjectionPlan {
    /// A plan that adds `items`.
    pub fn new(items: Vec<Injection>, over_plain_http: bool) -> Self {
        let everything = Applied::of(&items);
        Self {
            items,
            over_plain_http,
            everything,
        }
    }

    /// What the plan adds.
    pub fn items(&self) -> &[Injection] {
        &self.items
    }

    /// Every secret the plan reads.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        self.items.iter().flat_map(Injection::secrets)
    }

    /// Every placeholder the plan swaps.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.items.iter().filter_map(|i| match i {
            Injection::Placeholder { placeholder, .. } => Some(placeholder.as_str()),
            _ => None,
        })
    }

    /// Adds the credentials to `headers`, for `host` only.
    ///
    /// # Errors
    /// A secret is unavailable (the request must then fail closed), or the
    /// host does not match the rule.
    pub async fn apply(
        &self,
        pattern: &HostPattern,
        host: &Host,
        headers: &mut HeaderMap,
        secrets: &CachedSource,
    ) -> Result<Applied, InjectError> {
        if !pattern.matches(host) {
            return Err(InjectError::WrongHost {
                host: host.to_string(),
                pattern: pattern.to_string(),
            });
        }
        // How many items in a row, from the first, were applied; the rest is
        // only tracked once one was not (a placeholder the sandbox did not
        // send), which is the uncommon case.
        let mut leading = 0;
        let mut partial: Option<Vec<&Injection>> = None;
        let mut sandbox_parts = Vec::new();
        for item in &self.items {
            let value = match item {
                Injection::Template {
                    prefix,
                    suffix,
                    secret,
                    key,
                    ..
                } => {
                    // Built once per cached read and shared by every
                    // request that read serves.
                    let read = secrets.get_shared(secret).await?;
                    Some(read.derive(*key, |v| {
                        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(
                            prefix.len() + v.len() + suffix.len(),
                        ));
                        bytes.extend_from_slice(prefix.as_bytes());
                        bytes.extend_from_slice(v);
                        bytes.extend_from_slice(suffix.as_bytes());
                        sensitive(bytes, secret)
                    })?)
                }
                Injection::Basic {
                    username, password, ..
                } => {
                    let (u, p) = (secrets.get(username).await?, secrets.get(password).await?);
                    let mut pair =
                        zeroize::Zeroizing::new(Vec::with_capacity(u.len() + p.len() + 1));
                    pair.extend_from_slice(u.expose_secret());
                    pair.push(b':');
                    pair.extend_from_slice(p.expose_secret());
                    Some(sensitive(basic_value(&pair), password)?)
                }
                Injection::Placeholder {
                    header,
                    placeholder,
                    secret,
                } => {
                    match headers.get(header).map(|v| v.as_bytes().to_vec()) {
                        Some(current) if contains(&current, placeholder.as_bytes()) => {
                            let v = secrets.get(secret).await?;
                            sandbox_parts.push((
                                header.clone(),
                                replace(&current, placeholder.as_bytes(), b" "),
                            ));
                            Some(sensitive(
                                zeroize::Zeroizing::new(replace(
                                    &current,
                                    placeholder.as_bytes(),
                                    v.expose_secret(),
                                )),
                                secret,
                            )?)
                        }
                        // The sandbox did not ask for this credential.
                        _ => None,
                    }
                }
            };
            match (value, &mut partial) {
                (Some(value), partial) => {
                    // Exactly one credential, airlock's: `insert` drops
                    // every value the sandbox sent under this name.
                    headers.insert(item.header().clone(), value);
                    match partial {
                        Some(done) => done.push(item),
                        None => leading += 1,
                    }
                }
                (None, None) => partial = Some(self.items[..leading].iter().collect()),
                (None, Some(_)) => {}
            }
        }
        let mut applied = match partial {
            None => self.everything.clone(),
            Some(done) => Applied::of(done.iter().copied()),
        };
        applied.sandbox_parts = sandbox_parts;
        Ok(applied)
    }
}

/// The first placeholder (of `all`) found where it must not be: in any
/// header other than the ones `own` allows, or in the URL.
pub fn misplaced_placeholder<'a>(
    all: &'a [Arc<str>],
    own: Option<&InjectionPlan>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<&'a str> {
    if all.is_empty() {
        return None;
    }
    let allowed = |name: &HeaderName, placeholder: &str| {
        own.is_some_and(|plan| {
            plan.items.iter().any(|i| matches!(i, Injection::Placeholder { header, placeholder: p, .. } if header == name && p == placeholder))
        })
    };
    let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("");
    all.iter().map(AsRef::as_ref).find(|p: &&str| {
        target.contains(*p)
            || headers
                .iter()
                .any(|(name, v)| contains(v.as_bytes(), p.as_bytes()) && !allowed(name, p))
    })
}

/// A sensitive header value over `bytes` themselves, not a copy: the
/// value's memory is zeroized when its last clone (cached read, requests in
/// flight) is dropped.
fn sensitive(
    bytes: zeroize::Zeroizing<Vec<u8>>,
    secret: &SecretRef,
) -> Result<HeaderValue, InjectError> {
    let mut v = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(bytes))
        .map_err(|_| InjectError::NotAHeaderValue(secret.to_string()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `Basic base64(pair)`, written straight into zeroizing memory (no
/// intermediate `String` holding the encoded credential).
fn basic_value(pair: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    const PREFIX: &[u8] = b"Basic ";
    let engine = &base64::engine::general_purpose::STANDARD;
    let encoded_len = base64::encoded_len(pair.len(), true).unwrap_or(0);
    let mut out = zeroize::Zeroizing::new(vec![0_u8; PREFIX.len() + encoded_len]);
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    let written = engine
        .encode_slice(pair, &mut out[PREFIX.len()..])
        .unwrap_or(0);
    out.truncate(PREFIX.len() + written);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    // Sized exactly, so growing never leaves a copy of `with` behind in
    // freed memory.
    let count = if needle.is_empty() {
        0
    } else {
        let mut n = 0;
        let mut i = 0;
        while i + needle.len() <= hay.len() {
            if hay[i..].starts_with(needle) {
                n += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        n
    };
    let mut out = Vec::with_capacity(hay.len() - count * needle.len() + count * with.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Parses a rule's `inject` value (a table or a list of tables).
///
/// # Errors
/// What is wrong and what would be valid.
pub fn parse(value: &toml::Value) -> Result<Vec<Injection>, String> {
    match value {
        toml::Value::Table(t) => Ok(vec![parse_one(t)?]),
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_table().ok_or_else(|| "each entry must be a table".to_owned()).and_then(parse_one))
            .collect(),
        _ => Err("expected a table like { header = \"Authorization\", value = \"Bearer {{secret}}\", secret = \"tools/x#token\" } or a list of them".into()),
    }
}

fn parse_one(t: &toml::Table) -> Result<Injection, String> {
    const KEYS: [&str; 5] = ["header", "value", "secret", "basic", "placeholder"];
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{k}`; expected one of {}",
            KEYS.join(", ")
        ));
    }
    let string = |k: &str| -> Result<Option<&str>, String> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{k}` must be a string")),
        }
    };
    let secret_ref = |s: &str| -> Result<SecretRef, String> {
        s.parse::<SecretRef>().map_err(|e| e.to_string())
    };
    let header = string("header")?
        .map(|h| {
            HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("`{h}` is not a header name"))
        })
        .transpose()?;
    if let Some(h) = &header
        && (h == http::header::HOST
            || h.as_str().starts_with("proxy-")
            || h == http::header::CONNECTION)
    {
        return Err(format!("airlock will not inject into `{h}`"));
    }

    if let Some(basic) = t.get("basic") {
        let b = basic
            .as_table()
            .ok_or("`basic` must be { username = \"path#key\", password = \"path#key\" }")?;
        let get = |k: &str| {
            b.get(k)
                .and_then(toml::Value::as_str)
                .ok_or_else(|| format!("`basic.{k}` must be a secret ref like \"tools/x#{k}\""))
        };
        if t.contains_key("value") || t.contains_key("secret") || t.contains_key("placeholder") {
            return Err("`basic` stands alone: remove `value`, `secret` and `placeholder`".into());
        }
        return Ok(Injection::Basic {
            header: header.unwrap_or(AUTHORIZATION),
            username: secret_ref(get("username")?)?,
            password: secret_ref(get("password")?)?,
        });
    }
    let secret = secret_ref(
        string("secret")?.ok_or("`secret` is required (a ref like \"tools/github#token\")")?,
    )?;
    let header = header.ok_or("`header` is required (e.g. \"Authorization\")")?;
    match (string("value")?, string("placeholder")?) {
        (Some(_), Some(_)) => Err("give either `value` or `placeholder`, not both".into()),
        (Some(v), None) => {
            let (prefix, suffix) = v
                .split_once("{{secret}}")
                .ok_or("`value` must contain {{secret}} where the secret goes")?;
            if suffix.contains("{{secret}}") {
                return Err("`value` may contain {{secret}} only once".into());
            }
            Ok(Injection::Template {
                header,
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
                secret,
                key: next_template_key(),
            })
        }
        (None, Some(p)) => {
            if p.len() < 12
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err("`placeholder` must be at least 12 characters of A-Z, a-z, 0-9, _ or - (e.g. AIRLOCK_PLACEHOLDER_GITHUB)".into());
            }
            Ok(Injection::Placeholder {
                header,
                placeholder: p.to_owned(),
                secret,
            })
        }
        (None, None) => Ok(Injection::Template {
            header,
            prefix: String::new(),
            suffix: String::new(),
            secret,
            key: next_template_key(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Result<Injection, String> {
        let v: toml::Value =
            toml::from_str::<toml::Table>(&format!("x = {src}")).unwrap()["x"].clone();
        parse(&v).map(|mut v| v.remove(0))
    }

    #[test]
    fn parses_the_three_forms() {
        assert!(
            matches!(one(r#"{ header = "Authorization", value = "Bearer {{secret}}", secret = "tools/gh#token" }"#), Ok(Injection::Template { ref prefix, .. }) if prefix == "Bearer ")
        );
        assert!(
            matches!(one(r#"{ basic = { username = "t/j#u", password = "t/j#p" } }"#), Ok(Injection::Basic { ref header, .. }) if header == AUTHORIZATION)
        );
        assert!(matches!(
            one(
                r#"{ header = "x-api-key", placeholder = "AIRLOCK_PLACEHOLDER_X", secret = "t/x#k" }"#
            ),
            Ok(Injection::Placeholder { .. })
        ));
        assert!(
            matches!(one(r#"{ header = "x-api-key", secret = "t/x#k" }"#), Ok(Injection::Template { ref prefix, ref suffix, .. }) if prefix.is_empty() && suffix.is_empty())
        );
    }

    #[test]
    fn refuses_what_would_be_ambiguous_or_unsafe() {
        for (src, says) in [
            (
                r#"{ header = "Authorization", value = "Bearer", secret = "t/x#k" }"#,
                "{{secret}}",
            ),
            (
                r#"{ header = "Authorization", value = "{{secret}}", secret = "no-key" }"#,
                "#",
            ),
            (
                r#"{ value = "{{secret}}", secret = "t/x#k" }"#,
                "`header` is required",
            ),
            (
                r#"{ header = "Proxy-Authorization", secret = "t/x#k" }"#,
                "will not inject",
            ),
            (
                r#"{ header = "a", secret = "t/x#k", placeholder = "short" }"#,
                "at least 12",
            ),
            (
                r#"{ header = "a", secret = "t/x#k", extra = 1 }"#,
                "unknown key `extra`",
            ),
        ] {
            let err = one(src).unwrap_err();
            assert!(err.contains(says), "{src}: {err}");
        }
    }

    #[test]
    fn wildcard_host_match_is_subdomains_only() {
        let p = HostPattern::Subdomains("example.test".into());
        assert!(p.matches(&Host::Name("a.example.test".into())));
        assert!(!p.matches(&Host::Name("example.test".into())));
        assert!(!p.matches(&Host::Name("evilexample.test".into())));
    }

    #[test]
    fn replace_swaps_every_occurrence() {
        assert_eq!(
            replace(b"Bearer PH and PH", b"PH", b"s3"),
            b"Bearer s3 and s3"
        );
    }
}

#[cfg(test)]
mod apply_tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::credentials::{Fetched, SecretSource, SecretValue};

    struct Fake(Mutex<&'static str>);

    impl SecretSource for Fake {
        fn fetch<'a>(&'a self, _: &'a SecretRef) -> BoxFuture<'a, Result<Fetched, SecretError>> {
            let value = SecretValue::new(self.0.lock().unwrap().as_bytes().to_vec());
            Box::pin(async move { Ok(Fetched { value, lease: None }) })
        }
        fn describe(&self) -> String {
            "fake".into()
        }
        fn health<'a>(&'a self) -> BoxFuture<'a, Result<(), SecretError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn plan() -> InjectionPlan {
        let v: toml::Value = toml::from_str(
            r#"x = { header = "Authorization", value = "Bearer {{secret}}", secret = "t/a#k" }"#,
        )
        .unwrap();
        InjectionPlan::new(parse(&v["x"]).unwrap(), false)
    }

    async fn injected(plan: &InjectionPlan, cache: &CachedSource) -> String {
        let host = Host::parse("api.test").unwrap();
        let pattern = HostPattern::Exact(host.clone());
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sandbox"));
        plan.apply(&pattern, &host, &mut headers, cache)
            .await
            .unwrap();
        let values: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(values.len(), 1, "exactly one credential");
        assert!(values[0].is_sensitive());
        values[0].to_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn applied_names_only_what_was_added() {
        let v: toml::Value = toml::from_str(
            r#"x = [
                { header = "x-first", value = "{{secret}}", secret = "t/a#k" },
                { header = "x-token", placeholder = "AIRLOCK_PLACEHOLDER_T", secret = "t/b#k" },
                { header = "x-last", value = "{{secret}}", secret = "t/c#k" },
            ]"#,
        )
        .unwrap();
        let plan = InjectionPlan::new(parse(&v["x"]).unwrap(), false);
        let cache = CachedSource::new(Arc::new(Fake(Mutex::new("v"))), Duration::from_secs(300));
        let host = Host::parse("api.test").unwrap();
        let pattern = HostPattern::Exact(host.clone());
        fn names(a: &Applied) -> (Vec<&str>, Vec<String>) {
            let headers = a.headers().iter().map(HeaderName::as_str).collect();
            let secrets = a.secrets().map_or(Vec::new(), |s| {
                s.iter().map(|n| n.as_ref().to_owned()).collect()
            });
            (headers, secrets)
        }

        // (what the sandbox sends in x-token, headers and secrets named,
        // x-token as sent upstream)
        let cases: [(&'static str, &[&str], &[&str], &str); 2] = [
            // The placeholder was not sent: its header is the sandbox's own
            // and stays scanned; its secret was not used.
            ("mine", &["x-first", "x-last"], &["t/a#k", "t/c#k"], "mine"),
            // Every item applied: the plan's shared lists.
            (
                "AIRLOCK_PLACEHOLDER_T",
                &["x-first", "x-token", "x-last"],
                &["t/a#k", "t/b#k", "t/c#k"],
                "v",
            ),
        ];
        for (sent, want_headers, want_secrets, upstream) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("x-token", HeaderValue::from_static(sent));
            let a = plan
                .apply(&pattern, &host, &mut headers, &cache)
                .await
                .unwrap();
            let (got_headers, got_secrets) = names(&a);
            assert_eq!(got_headers, want_headers, "sandbox sent {sent}");
            assert_eq!(got_secrets, want_secrets, "sandbox sent {sent}");
            assert_eq!(headers["x-token"], upstream);
        }

        // Only a placeholder, not sent: nothing was added.
        let v: toml::Value = toml::from_str(
            r#"x = { header = "x-token", placeholder = "AIRLOCK_PLACEHOLDER_T", secret = "t/b#k" }"#,
        )
        .unwrap();
        let plan = InjectionPlan::new(parse(&v["x"]).unwrap(), false);
        let a = plan
            .apply(&pattern, &host, &mut HeaderMap::new(), &cache)
            .await
            .unwrap();
        assert_eq!(names(&a), (vec![], vec![]));
        assert!(a.secrets().is_none());
    }

    #[test]
    fn built_values_live_in_the_zeroizing_memory_they_were_built_in() {
        let secret: SecretRef = "t/a#k".parse().unwrap();
        let bytes = zeroize::Zeroizing::new(b"Bearer v1".to_vec());
        let at = bytes.as_ptr();
        let v = sensitive(bytes, &secret).unwrap();
        // Not a copy: dropping the last clone zeroizes these very bytes.
        assert_eq!(v.as_bytes().as_ptr(), at);
        assert!(v.is_sensitive());
        assert!(sensitive(zeroize::Zeroizing::new(b"a\nb".to_vec()), &secret).is_err());

        assert_eq!(basic_value(b"user:pass").as_slice(), b"Basic dXNlcjpwYXNz");
        assert_eq!(basic_value(b"").as_slice(), b"Basic ");
    }

    #[tokio::test]
    async fn a_reused_header_follows_every_new_read() {
        let fake = Arc::new(Fake(Mutex::new("v1")));
        let cache = CachedSource::new(fake.clone(), Duration::from_secs(300));
        let plan = plan();
        assert_eq!(injected(&plan, &cache).await, "Bearer v1");
        *fake.0.lock().unwrap() = "v2";
        // Same cached read: the built value is reused.
        assert_eq!(injected(&plan, &cache).await, "Bearer v1");
        // A new read (here: the cache emptied) builds it again.
        cache.invalidate_all();
        assert_eq!(injected(&plan, &cache).await, "Bearer v2");

        // No caching at all: every request reads, and sees the new value.
        let uncached = CachedSource::new(fake.clone(), Duration::ZERO);
        assert_eq!(injected(&plan, &uncached).await, "Bearer v2");
        *fake.0.lock().unwrap() = "v3";
        assert_eq!(injected(&plan, &uncached).await, "Bearer v3");
    }
}
