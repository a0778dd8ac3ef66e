//! An in-process airlock, configured through the same TOML users write.

use std::net::SocketAddr;
use std::path::PathBuf;

use airlock::config::Config;
use airlock::server::Server;
use airlock::tls::ca::{CaFiles, CertificateAuthority};
use tempfile::TempDir;

use super::ca::TestCa;

pub struct TestProxy {
    pub server: Server,
    pub addr: SocketAddr,
    pub dir: TempDir,
    /// airlock's CA certificate (what the sandbox trusts).
    pub ca_pem_path: PathBuf,
    pub ca_pem: String,
    pub audit_path: PathBuf,
}

#[derive(Default)]
pub struct ProxyBuilder {
    proxy_lines: Vec<String>,
    dns_lines: Vec<String>,
    resolve: Vec<(String, String)>,
    rules: Vec<String>,
    trust: Vec<String>,
    scan_lines: Vec<String>,
    secrets_lines: Vec<String>,
    files: Vec<(String, String)>,
    tail: Vec<String>,
    /// `[audit]` lines other than the default `output = "audit.log"`.
    audit_lines: Vec<String>,
}

impl ProxyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The usual setup: `api.example.test` at 127.0.0.2 (loopback opened),
    /// `ca` trusted upstream, and one rule allowing that host on `port`.
    pub fn for_origin(ca: &TestCa, port: u16) -> Self {
        Self::new()
            .resolve("api.example.test", "127.0.0.2")
            .allow_loopback()
            .trust(ca)
            .rule(&format!("match = \"api.example.test\"\nports = [{port}]"))
    }

    /// Adds a `[[host]]` rule (the body, without the header line).
    pub fn rule(mut self, body: &str) -> Self {
        self.rules.push(body.to_owned());
        self
    }

    pub fn resolve(mut self, name: &str, ip: &str) -> Self {
        self.resolve.push((name.to_owned(), ip.to_owned()));
        self
    }

    /// Origins live on loopback: open 127.0.0.0/8 (tests of the default don't call this).
    pub fn allow_loopback(mut self) -> Self {
        self.dns_lines
            .push("allow_cidrs = [\"127.0.0.0/8\"]".into());
        self
    }

    /// A raw line in `[proxy]`, e.g. `header_read_timeout = "1s"`.
    pub fn proxy_line(mut self, line: &str) -> Self {
        self.proxy_lines.push(line.to_owned());
        self
    }

    /// Scans with the shipped `rules/secrets.toml`, plus raw `[scan]` lines
    /// (e.g. `incoming = "block"`).
    pub fn scan(mut self, lines: &[&str]) -> Self {
        let patterns = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
        self.scan_lines
            .push(format!("patterns = \"{}\"", patterns.display()));
        self.scan_lines
            .extend(lines.iter().map(|l| (*l).to_owned()));
        self
    }

    /// Raw `[scan]` lines without naming a pattern file: the built-in
    /// patterns.
    pub fn scan_settings(mut self, lines: &[&str]) -> Self {
        self.scan_lines
            .extend(lines.iter().map(|l| (*l).to_owned()));
        self
    }

    /// Raw lines in `[secrets]` (e.g. `backend = "vault"`, `vault.address = "..."`).
    pub fn secrets(mut self, lines: &[&str]) -> Self {
        self.secrets_lines
            .extend(lines.iter().map(|l| (*l).to_owned()));
        self
    }

    /// A file written (mode 0600) next to the config before it is loaded.
    pub fn file(mut self, name: &str, content: &str) -> Self {
        self.files.push((name.to_owned(), content.to_owned()));
        self
    }

    /// Replaces the `[audit]` table's body (default: `output = "audit.log"`).
    pub fn audit_line(mut self, line: &str) -> Self {
        self.audit_lines.push(line.to_owned());
        self
    }

    /// Raw TOML appended at the end of the config (e.g. `[[sandbox]]` tables).
    pub fn raw(mut self, text: &str) -> Self {
        self.tail.push(text.to_owned());
        self
    }

    /// Trusts `ca` for upstream TLS.
    pub fn trust(mut self, ca: &TestCa) -> Self {
        self.trust.push(ca.pem.clone());
        self
    }

    pub fn config_text(&self) -> String {
        let mut t = String::from("[proxy]\nlisten = \"127.0.0.1:0\"\n");
        for l in &self.proxy_lines {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str(
            "\n[tls]\nca_cert = \"ca.pem\"\nca_key = \"ca-key.pem\"\nupstream_roots = \"webpki\"\n",
        );
        let roots: Vec<String> = (0..self.trust.len())
            .map(|i| format!("\"upstream-ca-{i}.pem\""))
            .collect();
        t.push_str(&format!("extra_upstream_roots = [{}]\n", roots.join(", ")));
        t.push_str("\n[dns]\n");
        let resolve: Vec<String> = self
            .resolve
            .iter()
            .map(|(n, ip)| format!("\"{n}\" = \"{ip}\""))
            .collect();
        t.push_str(&format!("resolve = {{ {} }}\n", resolve.join(", ")));
        for l in &self.dns_lines {
            t.push_str(l);
            t.push('\n');
        }
        if !self.scan_lines.is_empty() {
            t.push_str("\n[scan]\n");
            for l in &self.scan_lines {
                t.push_str(l);
                t.push('\n');
            }
        }
        if !self.secrets_lines.is_empty() {
            t.push_str("\n[secrets]\n");
            for l in &self.secrets_lines {
                t.push_str(l);
                t.push('\n');
            }
        }
        if self.audit_lines.is_empty() {
            t.push_str("\n[audit]\noutput = \"audit.log\"\n");
        } else {
            t.push_str("\n[audit]\n");
            for l in &self.audit_lines {
                t.push_str(l);
                t.push('\n');
            }
        }
        for r in &self.rules {
            t.push_str("\n[[host]]\n");
            t.push_str(r);
            t.push('\n');
        }
        for raw in &self.tail {
            t.push('\n');
            t.push_str(raw);
            t.push('\n');
        }
        t
    }

    pub async fn start(self) -> TestProxy {
        super::init();
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles::in_dir(dir.path());
        CertificateAuthority::init(&files, false).unwrap();
        for (i, pem) in self.trust.iter().enumerate() {
            std::fs::write(dir.path().join(format!("upstream-ca-{i}.pem")), pem).unwrap();
        }
        for (name, content) in &self.files {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(dir.path().join(name))
                .unwrap();
            std::io::Write::write_all(&mut f, content.as_bytes()).unwrap();
        }
        let text = self.config_text();
        let path = dir.path().join("airlock.toml");
        std::fs::write(&path, &text).unwrap();
        let config =
            Config::load(&path).unwrap_or_else(|e| panic!("test config refused: {e}\n{text}"));
        let server = Server::start(config).await.unwrap();
        let addr = server.local_addr();
        let ca_pem = std::fs::read_to_string(&files.cert).unwrap();
        TestProxy {
            server,
            addr,
            audit_path: dir.path().join("audit.log"),
            ca_pem_path: files.cert,
            ca_pem,
            dir,
        }
    }
}

impl TestProxy {
    /// The config file the proxy was started from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every audit event written so far.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for an audit event matching `pred`.
    pub async fn audit_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        super::eventually(what, || self.audit().into_iter().find(|e| pred(e))).await
    }
}

/// `airlock serve` as a child process (its RSS, descriptors and limits are
/// its own), from a [`ProxyBuilder`]'s config.
pub struct ChildProxy {
    pub dir: TempDir,
    pub child: tokio::process::Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub ca_pem: String,
}

impl ChildProxy {
    /// Writes the config of `builder` (trusting the origin CA `ca`) and a
    /// new airlock CA to a fresh directory, and starts `airlock serve`
    /// there, run by bash after `shell_prefix` (e.g. `ulimit -n 64 &&`);
    /// stderr goes to `stderr.log` in that directory.
    pub async fn start(builder: &ProxyBuilder, ca: &TestCa, shell_prefix: &str) -> ChildProxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("airlock.toml"), builder.config_text()).unwrap();
        std::fs::write(dir.path().join("upstream-ca-0.pem"), &ca.pem).unwrap();
        CertificateAuthority::init(&CaFiles::in_dir(dir.path()), false).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = tokio::process::Command::new("bash")
            .args([
                "-c",
                &format!(
                    "{shell_prefix} exec {} serve --config airlock.toml",
                    env!("CARGO_BIN_EXE_airlock")
                ),
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let addr =
            super::eventually_async(
                "airlock listening",
                || async move { super::listening_port(pid) },
            )
            .await;
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        ChildProxy {
            dir,
            child,
            pid,
            addr,
            ca_pem,
        }
    }

    /// A reqwest client that uses this airlock and trusts its CA.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{}", self.addr)).unwrap())
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .timeout(timeout)
            .build()
            .unwrap()
    }
}
