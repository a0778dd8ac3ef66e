//! Credentials: where secrets come from (Vault / OpenBao, or a local file)
//! and how they are cached. Adding them to requests is the proxy's side.
//!
//! - [`SecretValue`]: secret bytes that cannot be printed.
//! - [`SecretRef`], [`SecretSource`], [`SecretError`]: the contract every
//!   backend meets.
//! - [`CachedSource`]: TTL cache, one backend read per miss, fail closed.
//!
//! - [`inject`]: the headers a rule adds, built from those secrets, for the
//!   rule's host only.
//!
//! This module does not decide which request gets which secret (policy
//! does).

mod cache;
mod file;
pub mod inject;
mod secret;
mod source;
mod vault;

pub use cache::{CachedSource, FillHook, SecretHandle};
pub use file::FileSource;
pub use secret::SecretValue;
pub use source::{Fetched, InvalidRef, SecretError, SecretRef, SecretSource};
pub use vault::{Env, ProcessEnv, VaultAuth, VaultSettings, VaultSource};
