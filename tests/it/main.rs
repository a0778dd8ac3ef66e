//! airlock's integration tests: one binary, real sockets everywhere.
//! Origins are real TLS servers on 127.0.0.x with certificates from a test
//! CA; clients are reqwest, curl and raw sockets; airlock runs in-process
//! from the same TOML a user writes.

// Test support code panics on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

/// /healthz, /readyz, /metrics, the token, and unreachable through the proxy.
mod admin;
/// The approval gate: held writes, approve/deny/expiry, scopes, a decider URL.
mod approval;
/// A full disk under the audit log: counted by default, traffic refused with on_failure = "deny".
mod audit_failure;
/// Per-rule approval_timeout and decider, falling back to [approval].
mod approval_rules;
/// Broken neighbours: an origin dying mid-response or never answering, a client leaving mid-download, 10x max_connections.
mod faults;
/// The finding model on the path: shaped blocks outgoing, verified-only
/// redaction incoming, per-direction confidence, built-in patterns.
mod barrier;
/// The airlock binary: check, explain, ca init, curl through `serve`, SIGTERM.
mod cli;
/// Allow/deny at CONNECT: hosts, wildcards, ports, the 403 text.
mod connect;
/// Decode, then scan: base64, hex, percent, forms, multipart, JSON escapes, nested.
mod encoded;
/// IP literals in every encoding, private and metadata addresses.
mod guard;
/// Credentials from a real OpenBao, injected for their own host only.
mod inject;
/// Inside the tunnel: SNI, Host, method/path, h2, trailers, SSE, WebSocket, framing.
mod intercept;
/// The secret barrier's flow: no trace of a refused small request, encoded bodies,
/// large and trickled bodies cut before the secret, Range slices.
mod no_trace;
/// The financial pack: cards blocked out, masked in, opt-out per rule, look-alike ids untouched.
mod packs;
/// `[[test]]` in rule files, learn → propose → apply, replay.
mod policy_tools;
/// The shape of src/: no cycle between top-level modules.
mod modules;
/// Absolute-form http://, origin-form refused, proxy credentials stripped.
mod plain_http;
/// Refused tunnels: a denied CONNECT explained inside TLS, Proxy-Status, bounds.
mod refused;
/// Rule edits apply without a restart; a broken edit keeps the last good rules.
mod reload;
/// Slow clients, silent tunnels, aborted bodies, untrusted or dead upstreams.
mod resilience;
/// `airlock run`: proxy and CA variables, exit status and signals, `--isolate` (network namespace).
mod run;
/// Two replicas behind one address: shared CA and decider, approvals held per replica.
mod replicas;
/// Sandbox identities (407, own hosts and secrets), rate limits, byte budgets.
mod sandbox;
/// The scanner on the path: outgoing leaks blocked, incoming secrets redacted.
mod scan;
/// Mixed traffic through a real airlock process for SOAK_SECONDS (default 120): nothing grows without bound.
mod soak;
/// The Vault/OpenBao source itself: token, AppRole re-login, renewal, outage
/// and recovery, timeout, not found/denied, single-flight.
mod vault;
/// Vault login methods for containers and clusters: JWT, Kubernetes.
mod vault_login;
