//! The secret-source contract: [`SecretRef`] names a secret, a
//! [`SecretSource`] fetches it, [`SecretError`] says why it could not.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::SecretValue;

/// What a valid reference looks like, quoted by every parse error.
const REF_SHAPE: &str = "`PATH#KEY`, e.g. `tools/github#token` (path segments and key of \
     letters, digits and `-_.@+=`; no leading, trailing or doubled `/`, no `.`/`..` segments)";

/// A reference to one secret: a path in the backend and a key inside it,
/// written `tools/github#token`.
///
/// Parsed once (config compile), then cheap to clone (one `Arc`), so it can
/// key the cache. `Display` prints it back as `tools/github#token`; a ref
/// names a secret, it is not one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    text: Arc<str>,
    /// Byte index of the `#` in `text`.
    hash_at: usize,
}

impl SecretRef {
    /// The path, e.g. `tools/github` (relative to the KV mount for Vault).
    pub fn path(&self) -> &str {
        self.text.get(..self.hash_at).unwrap_or_default()
    }

    /// The key inside the path, e.g. `token`.
    pub fn key(&self) -> &str {
        self.text.get(self.hash_at + 1..).unwrap_or_default()
    }

    /// The whole reference, `path#key`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+=".contains(&b))
}

/// Why a string is not a [`SecretRef`]. The message quotes the input (a ref
/// is a name, not a secret) and shows what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret ref `{input}`: {problem}; expected {REF_SHAPE}")]
pub struct InvalidRef {
    input: String,
    problem: &'static str,
}

impl FromStr for SecretRef {
    type Err = InvalidRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |problem| InvalidRef {
            input: s.to_owned(),
            problem,
        };
        let Some((path, key)) = s.split_once('#') else {
            return Err(bad("no `#KEY`"));
        };
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        if !path.split('/').all(valid_name) {
            return Err(bad("bad path"));
        }
        if !valid_name(key) {
            return Err(bad("bad key"));
        }
        Ok(Self {
            text: Arc::from(s),
            hash_at: path.len(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.text)
    }
}

/// One successful read from a backend.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The secret.
    pub value: SecretValue,
    /// How long the backend says the value is good for, when it says so
    /// (a Vault lease). `None` for KV v2 and files: the cache TTL applies.
    pub lease: Option<Duration>,
}

/// Why a secret could not be read. `Display` names the secret ref (or the
/// backend operation) and the reason, and never contains a secret value or
/// a token.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The backend did not answer, answered 5xx, is sealed, or airlock has
    /// no valid login yet. Retried on the next request (never cached).
    #[error("{subject}: secret backend unavailable ({reason})")]
    Unavailable {
        /// `secret tools/github#token`, or an operation (`vault login`).
        subject: String,
        /// What went wrong, without values.
        reason: String,
    },
    /// The path or the key does not exist.
    #[error("{subject}: not found ({reason})")]
    NotFound {
        /// `secret tools/github#token`.
        subject: String,
        /// Which part is missing.
        reason: String,
    },
    /// The backend refused airlock's identity (HTTP 403: policy, or an
    /// expired or revoked token).
    #[error("{subject}: access denied by the secret backend ({reason})")]
    Denied {
        /// `secret tools/github#token`, or an operation.
        subject: String,
        /// What was refused.
        reason: String,
    },
    /// The secret exists but cannot be used as one (not a string).
    #[error("{subject}: {reason}")]
    Invalid {
        /// `secret tools/github#token`.
        subject: String,
        /// Why the value is unusable (its JSON type, never its content).
        reason: String,
    },
    /// The source itself is misconfigured (bad file, unsafe permissions,
    /// bad Vault settings). The message names the file (and line) to fix.
    #[error("{0}")]
    Config(String),
}

impl SecretError {
    /// Stable code for the audit log and the `airlock-error` header.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "secret_unavailable",
            Self::NotFound { .. } => "secret_not_found",
            Self::Denied { .. } => "secret_denied",
            Self::Invalid { .. } => "secret_invalid",
            Self::Config(_) => "secret_config",
        }
    }

    /// [`SecretError::Unavailable`] for the secret `r`.
    pub fn unavailable(r: &SecretRef, reason: impl Into<String>) -> Self {
        Self::Unavailable {
            subject: subject(r),
            reason: reason.into(),
        }
    }

    /// [`SecretError::NotFound`] for the secret `r`.
    pub fn not_found(r: &SecretRef, reason: impl Into<String>) -> Self {
        Self::NotFound {
            subject: subject(r),
            reason: reason.into(),
        }
    }
}

/// How errors name a secret: `secret tools/github#token`.
pub(crate) fn subject(r: &SecretRef) -> String {
    format!("secret {r}")
}

/// Where secrets come from: Vault, a file, or a test fake.
///
/// Implementations do no caching (that is [`super::CachedSource`]'s job)
/// and bound every wait on the network with a timeout.
pub trait SecretSource: Send + Sync + 'static {
    /// Reads one secret from the backend.
    fn fetch<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Fetched, SecretError>>;

    /// One line for logs and `/readyz`, e.g.
    /// `vault http://127.0.0.1:8200 (approle)`. Never contains a secret.
    fn describe(&self) -> String;

    /// `Ok` when the backend answers and airlock's login is valid.
    fn health<'a>(&'a self) -> BoxFuture<'a, Result<(), SecretError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_and_key() {
        let r: SecretRef = "tools/github#token".parse().unwrap();
        assert_eq!(r.path(), "tools/github");
        assert_eq!(r.key(), "token");
        assert_eq!(r.to_string(), "tools/github#token");
        assert_eq!(format!("{r:?}"), "SecretRef(tools/github#token)");
        let r: SecretRef = "a#b".parse().unwrap();
        assert_eq!((r.path(), r.key()), ("a", "b"));
    }

    #[test]
    fn rejects_bad_refs_and_says_what_is_valid() {
        for (input, problem) in [
            ("tools/github", "no `#KEY`"),
            ("#token", "empty path"),
            ("tools/github#", "bad key"),
            ("tools//github#token", "bad path"),
            ("/tools#token", "bad path"),
            ("tools/#token", "bad path"),
            ("tools/../x#token", "bad path"),
            ("tools/gh#to#ken", "bad key"),
            ("tools/gh#to ken", "bad key"),
            ("tools gh#token", "bad path"),
        ] {
            let err = input.parse::<SecretRef>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(problem), "{input}: {msg}");
            assert!(msg.contains(&format!("`{input}`")), "{msg}");
            assert!(msg.contains("tools/github#token"), "{msg}");
        }
    }

    #[test]
    fn error_display_names_ref_and_code() {
        let r: SecretRef = "tools/github#token".parse().unwrap();
        let e = SecretError::not_found(&r, "no key `token`");
        assert_eq!(e.code(), "secret_not_found");
        assert_eq!(
            e.to_string(),
            "secret tools/github#token: not found (no key `token`)"
        );
        let e = SecretError::unavailable(&r, "connection refused");
        assert_eq!(e.code(), "secret_unavailable");
        assert!(e.to_string().contains("tools/github#token"));
    }
}
