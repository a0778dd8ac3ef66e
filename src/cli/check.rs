//! `airlock check`'s look at the files a config names, the way `serve`
//! would read them: the CA (with the `airlock ca init` hint serve gives)
//! and the file backend's secrets file (owner-only mode, the same check).
//! Each problem names the config file and the line of the setting.

use crate::config::{Config, EMBEDDED_NAME, SecretBackend};
use crate::credentials::FileSource;
use crate::tls::ca::{CaFiles, CertificateAuthority};

/// The problems `serve` would refuse to start with, each a line to print.
pub(super) fn files(config: &Config) -> Vec<String> {
    let text = std::fs::read_to_string(&config.source).unwrap_or_default();
    let at = |key: &str| match line_of(&text, key) {
        Some(line) => format!("{}:{line}", config.source),
        None => config.source.clone(),
    };
    let mut problems = Vec::new();
    let files = CaFiles {
        cert: config.tls.ca_cert.clone(),
        key: config.tls.ca_key.clone(),
    };
    if !files.cert.exists() && !files.key.exists() {
        if config.source != EMBEDDED_NAME {
            let dir = files
                .cert
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            problems.push(format!(
                "{}: tls.ca_cert: CA {} not found: run `airlock ca init --dir {dir}`",
                at("ca_cert"),
                files.cert.display()
            ));
        }
    } else {
        crate::install_crypto_provider();
        if let Err(e) = CertificateAuthority::load(&files) {
            problems.push(format!("{}: CA: {e}", at("ca_cert")));
        }
    }
    if let SecretBackend::File(path) = &config.secrets.backend {
        let needed = config.policy.rules().iter().any(|r| r.inject.is_some())
            || config
                .sandboxes
                .iter()
                .any(|s| s.policy.rules().iter().any(|r| r.inject.is_some()));
        if (path.exists() || needed)
            && let Err(e) = FileSource::load(path)
        {
            problems.push(format!("{}: secrets.file: {e}", at("file")));
        }
    }
    problems
}

/// The 1-based line where `key = ` is set, if the text sets it.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}
