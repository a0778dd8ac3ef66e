//! What the command's environment says: where the proxy is, that nothing
//! bypasses it, and which CA to trust, in the variables real toolchains read.
//!
//! See the module docs of [`crate::run`] for the list and the reasons.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Proxy variables, both cases: curl reads only lowercase `http_proxy`
/// (the uppercase one is ignored on purpose, "httpoxy"), most other tools
/// read either.
pub const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Bypass lists, set to empty so nothing skips the proxy.
pub const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// Variables that *replace* a tool's trust store: they point at the bundle
/// (airlock's CA + the system roots), so the tool keeps trusting what it
/// trusted before and trusts airlock too.
pub const BUNDLE_VARS: [(&str, &str); 15] = [
    (
        "SSL_CERT_FILE",
        "OpenSSL's default file (Python ssl/urllib/httpx, Ruby, PHP, wget, uv), Go, rustls-native-certs",
    ),
    ("REQUESTS_CA_BUNDLE", "Python requests (and pip through it)"),
    ("CURL_CA_BUNDLE", "the curl tool; Python requests"),
    ("GIT_SSL_CAINFO", "git over https"),
    ("PIP_CERT", "pip (otherwise its own certifi/truststore)"),
    ("CARGO_HTTP_CAINFO", "cargo"),
    ("AWS_CA_BUNDLE", "AWS CLI and SDKs (botocore)"),
    ("DENO_CERT", "Deno"),
    ("HTTPLIB2_CA_CERTS", "httplib2 (Google API clients)"),
    (
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        "gRPC core (grpcio, C++, Ruby)",
    ),
    (
        "NPM_CONFIG_CAFILE",
        "npm (its `cafile` replaces the CA list)",
    ),
    ("BUNDLE_SSL_CA_CERT", "Ruby Bundler"),
    ("YARN_HTTPS_CA_FILE_PATH", "Yarn 2+"),
    ("NIX_SSL_CERT_FILE", "OpenSSL and curl built by Nix"),
    (
        "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
        "gcloud (Google Cloud SDK)",
    ),
];

/// Variables that *add* to a tool's built-in roots: airlock's CA alone.
pub const CA_ONLY_VARS: [(&str, &str); 1] = [(
    "NODE_EXTRA_CA_CERTS",
    "Node.js (added to its bundled roots; read at start)",
)];

/// Other fixed settings.
pub const OTHER_VARS: [(&str, &str); 1] = [(
    // Node 24+ honours the proxy variables for fetch/http only with this.
    "NODE_USE_ENV_PROXY",
    "1",
)];

/// Prefixes of airlock's own settings and credentials (`VAULT_TOKEN`,
/// `BAO_TOKEN`, `VAULT_ADDR`, ...): never passed to the command, in any case.
pub const SCRUBBED_PREFIXES: [&str; 3] = ["VAULT_", "BAO_", "AIRLOCK_"];

/// What `--env-clear` keeps of airlock's environment.
pub const BASE_VARS: [&str; 4] = ["PATH", "HOME", "TERM", "LANG"];

/// Whether `name` is one of airlock's own variables (see [`SCRUBBED_PREFIXES`]).
pub fn is_scrubbed(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    SCRUBBED_PREFIXES.iter().any(|p| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes()))
    })
}

/// Checks the `--env` names: a scrubbed one is refused (airlock never hands
/// its own credentials to the command, even when asked).
///
/// # Errors
/// A name is empty, contains `=`, or is one of airlock's own variables.
pub fn check_passed(names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            anyhow::bail!("--env `{name}`: give a variable name (NAME, no `=`)");
        }
        if is_scrubbed(std::ffi::OsStr::new(name)) {
            anyhow::bail!(
                "--env {name}: refused: airlock never passes its own settings and credentials \
                 ({}*) to the command",
                SCRUBBED_PREFIXES.join("*, ")
            );
        }
    }
    Ok(())
}

/// The command's whole environment: airlock's own (`parent`) without the
/// scrubbed variables, or only [`BASE_VARS`] with `clear`; plus the `pass`
/// names; then `set` (airlock's proxy and trust variables) over all of it.
pub fn command_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    clear: bool,
    pass: &[String],
    set: &[(&'static str, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(k, _)| !is_scrubbed(k))
        .filter(|(k, _)| {
            !clear || BASE_VARS.iter().any(|b| k == b) || pass.iter().any(|p| k == p.as_str())
        })
        .filter(|(k, _)| !set.iter().any(|(s, _)| k == s))
        .collect();
    out.extend(set.iter().map(|(k, v)| (OsString::from(k), v.clone())));
    out
}

/// Where distributions keep the system bundle (the list Go uses).
pub const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Gentoo, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL 6
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7+
    "/etc/ssl/cert.pem",                  // Alpine, macOS
];

/// The trust files written for the command.
#[derive(Debug, Clone)]
pub struct TrustFiles {
    /// airlock's CA certificate alone.
    pub ca: PathBuf,
    /// airlock's CA followed by the base bundle.
    pub bundle: PathBuf,
    /// Where the base bundle came from, if any.
    pub base: Option<PathBuf>,
}

/// Writes `dir/airlock-ca.pem` and `dir/ca-bundle.pem` from airlock's CA
/// (`ca_pem`, read from `ca_path`). The base bundle is the one the user's
/// own `SSL_CERT_FILE` names, else the first system bundle that exists.
///
/// # Errors
/// `ca_pem` is not a PEM certificate, or the files cannot be written.
pub fn write_trust_files(
    dir: &Path,
    ca_path: &Path,
    ca_pem: &str,
    user_ssl_cert_file: Option<&Path>,
) -> anyhow::Result<TrustFiles> {
    CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", ca_path.display()))?;
    let ca = dir.join("airlock-ca.pem");
    let bundle = dir.join("ca-bundle.pem");
    write_file(&ca, &[ca_pem.as_bytes()])?;

    let candidates = user_ssl_cert_file
        .into_iter()
        .map(Path::to_path_buf)
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    let mut base = None;
    for path in candidates {
        if let Ok(text) = std::fs::read(&path)
            && !text.is_empty()
        {
            base = Some((path, text));
            break;
        }
    }
    let mut parts: Vec<&[u8]> = vec![ca_pem.as_bytes()];
    if !ca_pem.ends_with('\n') {
        parts.push(b"\n");
    }
    if let Some((_, text)) = &base {
        parts.push(text);
    }
    write_file(&bundle, &parts)?;
    Ok(TrustFiles {
        ca,
        bundle,
        base: base.map(|(p, _)| p),
    })
}

fn write_file(path: &Path, parts: &[&[u8]]) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    for p in parts {
        f.write_all(p)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The variables set on the command: proxy URL, empty bypass lists, trust.
pub fn child_env(proxy_url: &str, trust: &TrustFiles) -> Vec<(&'static str, OsString)> {
    let mut env: Vec<(&'static str, OsString)> = Vec::new();
    env.extend(PROXY_VARS.iter().map(|k| (*k, OsString::from(proxy_url))));
    env.extend(NO_PROXY_VARS.iter().map(|k| (*k, OsString::new())));
    env.extend(
        BUNDLE_VARS
            .iter()
            .map(|(k, _)| (*k, trust.bundle.clone().into_os_string())),
    );
    env.extend(
        CA_ONLY_VARS
            .iter()
            .map(|(k, _)| (*k, trust.ca.clone().into_os_string())),
    );
    env.extend(OTHER_VARS.iter().map(|(k, v)| (*k, OsString::from(*v))));
    env
}

/// A proxy address given with `--proxy`: `host:port` or
/// `http://[user:pass@]host:port[/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddr {
    /// `user:pass` (sandbox identity), kept in the URL the command sees.
    pub userinfo: Option<String>,
    /// Host or IP literal (IPv6 in brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl ProxyAddr {
    /// Parses `--proxy`.
    ///
    /// # Errors
    /// Not `host:port` or an `http://` URL of one.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "--proxy `{s}`: give HOST:PORT or http://HOST:PORT (airlock's proxy port speaks plain HTTP)"
            )
        };
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad()),
            None => s,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, rest),
        };
        let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.contains('/') || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            userinfo,
            host: host.to_owned(),
            port,
        })
    }

    /// `host:port`, for connecting.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The proxy URL the command sees, pointing at `host` (the real host,
    /// or the loopback address inside an isolated namespace).
    pub fn url_via(&self, host: &str) -> String {
        match &self.userinfo {
            Some(u) => format!("http://{u}@{host}:{}", self.port),
            None => format!("http://{host}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn proxy_addr_forms() {
        let p = ProxyAddr::parse("127.0.0.1:3128").unwrap();
        assert_eq!(p.authority(), "127.0.0.1:3128");
        assert_eq!(p.url_via(&p.host), "http://127.0.0.1:3128");
        let p = ProxyAddr::parse("http://agent-a:tok@localhost:3128/").unwrap();
        assert_eq!(p.userinfo.as_deref(), Some("agent-a:tok"));
        assert_eq!(p.url_via("127.0.0.1"), "http://agent-a:tok@127.0.0.1:3128");
        let p = ProxyAddr::parse("[::1]:8080").unwrap();
        assert_eq!(p.authority(), "[::1]:8080");
        for bad in ["3128", "https://x:1", "x:0", ":1", "x:99999", "x:1/path"] {
            assert!(ProxyAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn command_env_scrubs_and_clears() {
        let parent = || {
            [
                ("PATH", "/bin"),
                ("VAULT_TOKEN", "t"),
                ("bao_token", "t"),
                ("AIRLOCK_X", "x"),
                ("EDITOR", "vi"),
                ("KEEP", "k"),
                ("HTTPS_PROXY", "http://elsewhere:1"),
            ]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        };
        let set = [("HTTPS_PROXY", OsString::from("http://127.0.0.1:1"))];
        let names = |env: Vec<(OsString, OsString)>| -> Vec<String> {
            env.into_iter()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect()
        };
        assert_eq!(
            names(command_env(parent(), false, &[], &set)),
            [
                "PATH=/bin",
                "EDITOR=vi",
                "KEEP=k",
                "HTTPS_PROXY=http://127.0.0.1:1"
            ]
        );
        assert_eq!(
            names(command_env(parent(), true, &["KEEP".into()], &set)),
            ["PATH=/bin", "KEEP=k", "HTTPS_PROXY=http://127.0.0.1:1"]
        );
        assert!(check_passed(&["KEEP".into()]).is_ok());
        for bad in ["VAULT_TOKEN", "Bao_Token", "AIRLOCK_", "", "A=B"] {
            assert!(check_passed(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn bundle_has_the_ca_first_then_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::ca::CaFiles::in_dir(dir.path());
        crate::tls::ca::CertificateAuthority::init(&ca, false).unwrap();
        let pem = std::fs::read_to_string(&ca.cert).unwrap();
        let base = dir.path().join("base.pem");
        std::fs::write(&base, "BASE\n").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let t = write_trust_files(&out, &ca.cert, &pem, Some(&base)).unwrap();
        assert_eq!(t.base.as_deref(), Some(base.as_path()));
        let bundle = std::fs::read_to_string(&t.bundle).unwrap();
        assert!(bundle.starts_with(&pem) && bundle.ends_with("BASE\n"));
        assert_eq!(std::fs::read_to_string(&t.ca).unwrap(), pem);
        assert!(write_trust_files(&out, &base, "BASE\n", None).is_err());
        let env = child_env("http://127.0.0.1:1", &t);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("http_proxy").unwrap(), "http://127.0.0.1:1");
        assert_eq!(get("NO_PROXY").unwrap(), "");
        assert_eq!(get("SSL_CERT_FILE").unwrap(), t.bundle.as_os_str());
        assert_eq!(get("NODE_EXTRA_CA_CERTS").unwrap(), t.ca.as_os_str());
    }
}
