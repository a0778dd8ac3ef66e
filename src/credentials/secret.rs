//! [`SecretValue`]: secret bytes that cannot be printed by accident.

use std::fmt;

use zeroize::Zeroizing;

/// The bytes of a secret (an API token, a password, a Vault token).
///
/// - `Debug` prints `SecretValue(<redacted, N bytes>)`; there is no
///   `Display` and no `Serialize`, so a secret cannot reach a log line or a
///   response through formatting.
/// - The bytes are zeroed when the last copy is dropped ([`Zeroizing`]).
///   Every `clone` is a separate allocation, zeroed on its own drop.
/// - Reading the bytes is one greppable call, [`SecretValue::expose_secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps `bytes`; they are zeroed when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Wraps the bytes of `text` without copying them.
    pub fn from_string(text: String) -> Self {
        Self::new(text.into_bytes())
    }

    /// The secret bytes. Call this only where the value is used (building
    /// an injected header, feeding the secret scanner, authenticating to
    /// Vault), never to format it.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the secret has no bytes (an empty string in the backend).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretValue::new(b"ghp_supersecret".to_vec());
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert_eq!(format!("{s:?}"), "SecretValue(<redacted, 15 bytes>)");
    }

    #[test]
    fn exposes_bytes_and_len() {
        let s = SecretValue::from_string("abc".to_owned());
        assert_eq!(s.expose_secret(), b"abc");
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert_eq!(s.clone(), s);
    }
}
