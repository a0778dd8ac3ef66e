//! The decider: an independent automated check asked about every held
//! request, in parallel with the humans (a rule's own `decider` is asked
//! alone: see `per_rule`).
//!
//! airlock POSTs the [`PendingRequest`](super::PendingRequest) JSON to the
//! configured URL and expects `{"decision": "allow" | "deny", "reason": "..."}`
//! with a 2xx status. Anything else (a refused connection, a timeout, a 500,
//! an unknown word, a body over 64 KiB) is *no decision*: the request keeps
//! waiting for a human, and expires at the rule's timeout (under a rule's
//! own decider: the request is denied). A broken decider can never approve.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rustls::ClientConfig;
use serde::Deserialize;

use super::client::{Call, Endpoint, HttpError, send};
use crate::credentials::SecretValue;

/// The most response body bytes read from the decider.
const ANSWER_LIMIT: usize = 64 * 1024;
/// The most characters of a decider's reason kept.
const REASON_CHARS: usize = 512;

/// Where and how to ask the decider.
#[derive(Clone)]
pub struct DeciderSettings {
    /// `http://...` or `https://...`; the PendingRequest JSON is POSTed here.
    pub url: String,
    /// Bound on each call (connect, TLS, request and answer).
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<SecretValue>,
    /// TLS client config for `https://` deciders; `None` = the webpki roots.
    /// Pass the upstream config (system roots + `extra_upstream_roots`) to
    /// reach a decider behind a corporate CA; its ALPN is replaced with
    /// `http/1.1`.
    pub tls: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for DeciderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeciderSettings")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl DeciderSettings {
    /// Checks a decider URL (for config compile, which adds file:line).
    ///
    /// # Errors
    /// Not `http://host...` or `https://host...`; the message says why.
    pub fn check_url(url: &str) -> Result<(), String> {
        Endpoint::parse(url).map(drop).map_err(|e| e.to_string())
    }
}

/// A decider ready to call: the URL parsed and the TLS config built once.
#[derive(Debug)]
pub(crate) struct Decider {
    endpoint: Endpoint,
    settings: DeciderSettings,
    tls: Option<Arc<ClientConfig>>,
}

/// The decider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) allow: bool,
    pub(crate) reason: Option<String>,
}

/// Why the decider gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum DeciderError {
    /// The URL does not parse.
    #[error("decider URL: {0}")]
    Url(String),
    /// The TLS config could not be built.
    #[error("decider TLS config: {0}")]
    Tls(#[from] rustls::Error),
    /// The call failed.
    #[error("decider call failed: {0}")]
    Call(#[from] HttpError),
    /// No answer within the timeout.
    #[error("decider did not answer within {0:?}")]
    Timeout(Duration),
    /// A non-2xx status.
    #[error("decider answered HTTP {0}")]
    Status(u16),
    /// Not `{"decision": "allow" | "deny"}`.
    #[error("decider answer is malformed: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct RawAnswer {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

impl Decider {
    /// Parses the URL and builds the TLS config if needed.
    pub(crate) fn new(settings: DeciderSettings) -> Result<Self, DeciderError> {
        let endpoint =
            Endpoint::parse(&settings.url).map_err(|e| DeciderError::Url(e.to_string()))?;
        let tls = match (&settings.tls, endpoint.is_tls()) {
            // The client speaks HTTP/1.1 only: a config offering h2 (the
            // upstream one) must not let the decider pick it.
            (Some(c), _) => {
                let mut c = ClientConfig::clone(c);
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(c))
            }
            (None, true) => Some(super::client::webpki_client_config()?),
            (None, false) => None,
        };
        Ok(Self {
            endpoint,
            settings,
            tls,
        })
    }

    /// Asks about one request (`json` is its PendingRequest serialised).
    pub(crate) async fn ask(&self, json: &[u8]) -> Result<Answer, DeciderError> {
        let call = Call {
            method: &Method::POST,
            json: Some(json),
            bearer: self.settings.token.as_ref(),
            limit: ANSWER_LIMIT,
        };
        let timeout = self.settings.timeout;
        let (status, body) =
            tokio::time::timeout(timeout, send(&self.endpoint, self.tls.as_ref(), call))
                .await
                .map_err(|_| DeciderError::Timeout(timeout))??;
        if !status.is_success() {
            return Err(DeciderError::Status(status.as_u16()));
        }
        parse_answer(&body)
    }
}

fn parse_answer(body: &[u8]) -> Result<Answer, DeciderError> {
    let raw: RawAnswer =
        serde_json::from_slice(body).map_err(|e| DeciderError::Malformed(e.to_string()))?;
    let allow = match raw.decision.as_str() {
        "allow" => true,
        "deny" => false,
        other => {
            return Err(DeciderError::Malformed(format!(
                "decision `{}` is not \"allow\" or \"deny\"",
                other.chars().take(32).collect::<String>()
            )));
        }
    };
    let reason = raw
        .reason
        .map(|r| r.chars().take(REASON_CHARS).collect::<String>())
        .filter(|r| !r.is_empty());
    Ok(Answer { allow, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_strictly() {
        assert_eq!(
            parse_answer(br#"{"decision":"allow"}"#).unwrap(),
            Answer {
                allow: true,
                reason: None
            }
        );
        let a = parse_answer(br#"{"decision":"deny","reason":"refunds over $100","x":1}"#).unwrap();
        assert!(!a.allow);
        assert_eq!(a.reason.as_deref(), Some("refunds over $100"));
        for bad in [
            &b"yes"[..],
            br#"{"decision":"ALLOW"}"#,
            br#"{"decision":"approve"}"#,
            br#"{"reason":"x"}"#,
            br#"{"decision":true}"#,
            b"",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let s = DeciderSettings {
            url: "http://127.0.0.1:1/".into(),
            timeout: Duration::from_secs(1),
            token: Some(SecretValue::from_string("decider-t0ken".into())),
            tls: None,
        };
        assert!(!format!("{s:?}").contains("decider-t0ken"));
    }
}
