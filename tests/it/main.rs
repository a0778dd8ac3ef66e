//! airlock's integration tests: one binary, real sockets everywhere.
//! Origins are real TLS servers on 127.0.0.x with certificates from a test
//! CA; clients are reqwest, curl and raw sockets; airlock runs in-process
//! from the same TOML a user writes.

// Test support code panics on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod cli;
mod connect; // allow/deny at CONNECT: hosts, wildcards, ports, the 403 text
mod guard; // IP literals in every encoding, private and metadata addresses
mod intercept; // inside the tunnel: SNI, Host, method/path, h2, SSE, WebSocket, framing
mod plain_http; // absolute-form http://, origin-form refused
mod resilience; // slow clients, aborted bodies, untrusted upstreams // the airlock binary: check, ca init, curl through serve
