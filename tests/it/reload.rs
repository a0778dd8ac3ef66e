use airlock::config::ConfigSource;

use crate::support::client::connect;
use crate::support::eventually;
use crate::support::proxy::{ProxyBuilder, TestProxy};

fn rules(hosts: &[&str]) -> ProxyBuilder {
    let mut b = ProxyBuilder::new()
        .resolve("api.example.test", "127.0.0.2")
        .resolve("other.example.test", "127.0.0.3")
        .allow_loopback();
    for h in hosts {
        b = b.rule(&format!("match = \"{h}\""));
    }
    b
}

/// 200 when the rules open a tunnel to `target`; for a refused tunnel
/// (airlock answers CONNECT with 200 and the refusal inside), the status
/// of the refusal read inside it.
async fn status(proxy: &TestProxy, target: &str) -> u16 {
    let (_s, r) = connect(proxy.addr, target).await;
    if r.status != 200 {
        return r.status;
    }
    let inner = crate::support::client::refused(proxy, target).await;
    if inner.head.contains("airlock-error: host_not_allowed") {
        inner.status
    } else {
        200
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_edit_applies_to_the_next_request_without_restart() {
    let proxy = rules(&["api.example.test"]).start().await;
    proxy
        .server
        .watch_config(ConfigSource::File(proxy.config_path()));
    let before = proxy.server.state().generation().config.version.clone();
    assert_eq!(status(&proxy, "api.example.test:443").await, 200);
    assert_eq!(status(&proxy, "other.example.test:443").await, 403);

    // A tunnel opened under the old rules...
    let (mut old_tunnel, r) = connect(proxy.addr, "api.example.test:443").await;
    assert_eq!(r.status, 200);

    std::fs::write(
        proxy.config_path(),
        rules(&["other.example.test"]).config_text(),
    )
    .unwrap();
    let reload = proxy
        .audit_event("reload applied", |e| {
            e["kind"] == "reload" && e["decision"] == "allow"
        })
        .await;
    assert_ne!(reload["rules_version"], before.as_str());
    eventually("new rules in force", || {
        let v = proxy.server.state().generation().config.version.clone();
        (v != before).then_some(())
    })
    .await;
    assert_eq!(status(&proxy, "other.example.test:443").await, 200);
    assert_eq!(status(&proxy, "api.example.test:443").await, 403);

    // ...is judged by the new rules at its next request: plain HTTP inside
    // the tunnel to a host that is no longer allowed is refused.
    use tokio::io::AsyncWriteExt;
    old_tunnel
        .write_all(b"GET / HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n")
        .await
        .unwrap();
    let r = crate::support::client::read_response(&mut old_tunnel).await;
    assert_eq!(r.status, 403, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edit_is_refused_and_the_last_good_rules_keep_working() {
    let proxy = rules(&["api.example.test"]).start().await;
    proxy
        .server
        .watch_config(ConfigSource::File(proxy.config_path()));
    let good = proxy.server.state().generation().config.version.clone();
    let mut broken = rules(&["other.example.test"]).config_text();
    broken.push_str("\n[[host]]\nmatch = \"evil.*.test\"\n");
    std::fs::write(proxy.config_path(), broken).unwrap();
    let ev = proxy
        .audit_event("reload refused", |e| {
            e["kind"] == "reload" && e["decision"] == "deny"
        })
        .await;
    assert_eq!(ev["reason"], "reload_refused");
    assert_eq!(ev["rules_version"], good.as_str());
    assert_eq!(proxy.server.state().generation().config.version, good);
    assert_eq!(status(&proxy, "api.example.test:443").await, 200);
    assert_eq!(status(&proxy, "other.example.test:443").await, 403);
}

/// A directory laid out as the kubelet lays out a mounted ConfigMap: each
/// key is a symlink `KEY -> ..data/KEY`, `..data` is a symlink to a
/// timestamped directory, and an update writes a new directory, points
/// `..data_tmp` at it and renames that over `..data` (one atomic step),
/// then deletes the old directory and adds or removes the key symlinks.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(dir: std::path::PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mut cm = Self { dir, version: 0 };
        cm.update(files);
        cm
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        self.version += 1;
        let old = format!("..2026_12_03_{:02}", self.version - 1);
        let new = format!("..2026_12_03_{:02}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&new).join(name), text).unwrap();
        }
        symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(self.dir.join(&name)).unwrap();
            }
        }
        for (name, _) in files {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), link).unwrap();
            }
        }
    }
}

fn host_rule(host: &str) -> String {
    format!("[[host]]\nmatch = \"{host}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_by_atomic_symlink_swap_reloads_live() {
    let proxy = rules(&["api.example.test"]).start().await;
    // The same settings, with the paths made absolute (the ConfigMap holds
    // only the config and the rules) and the rules in their own keys.
    let dir = proxy.dir.path();
    let mut config = String::from("include = [\"rules-*.toml\"]\n");
    config.push_str(
        &rules(&[])
            .config_text()
            .replace("\"ca.pem\"", &format!("{:?}", dir.join("ca.pem")))
            .replace("\"ca-key.pem\"", &format!("{:?}", dir.join("ca-key.pem")))
            .replace("\"audit.log\"", &format!("{:?}", dir.join("audit.log"))),
    );
    let api = host_rule("api.example.test");
    let other = host_rule("other.example.test");
    let mut cm = ConfigMapDir::new(
        dir.join("configmap"),
        &[("airlock.toml", &config), ("rules-main.toml", &api)],
    );
    proxy
        .server
        .watch_config(ConfigSource::File(cm.dir.join("airlock.toml")));
    let version = || proxy.server.state().generation().config.version.clone();
    let before = version();

    // The rules key changes: the swap of `..data` alone must be noticed.
    cm.update(&[("airlock.toml", &config), ("rules-main.toml", &other)]);
    eventually("first ConfigMap update in force", || {
        (version() != before).then_some(())
    })
    .await;
    assert_eq!(status(&proxy, "other.example.test:443").await, 200);
    assert_eq!(status(&proxy, "api.example.test:443").await, 403);

    // A new key appears (a new rule file): its symlink is created after
    // the swap, and the include glob picks it up.
    let second = version();
    cm.update(&[
        ("airlock.toml", &config),
        ("rules-main.toml", &other),
        ("rules-extra.toml", &api),
    ]);
    eventually("second ConfigMap update in force", || {
        (version() != second && proxy.server.state().generation().config.rule_files.len() == 2)
            .then_some(())
    })
    .await;
    assert_eq!(status(&proxy, "api.example.test:443").await, 200);
    assert_eq!(status(&proxy, "other.example.test:443").await, 200);

    // A broken update is refused; the last good rules keep working.
    let good = version();
    cm.update(&[
        ("airlock.toml", &config),
        ("rules-main.toml", "[[host]]\nmatch = \"evil.*.test\"\n"),
    ]);
    proxy
        .audit_event("reload refused", |e| {
            e["kind"] == "reload" && e["decision"] == "deny"
        })
        .await;
    assert_eq!(version(), good);
    assert_eq!(status(&proxy, "api.example.test:443").await, 200);
}
