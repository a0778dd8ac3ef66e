use std::path::Path;

use http::Method;

use super::*;
use crate::config::Config;

fn policy(rules: &str) -> Arc<Policy> {
    let text = format!("include = []\n{rules}");
    Config::from_text(&text, "test.toml", Path::new(""))
        .unwrap()
        .policy
}

fn host_ok(p: &Policy, host: &str, port: u16, scheme: Scheme) -> Result<(), Reason> {
    let h = Host::parse(host).map_err(|_| Reason::HostNotAllowed)?;
    p.decide_host(&h, port, scheme)
        .map(|_| ())
        .map_err(|d| d.reason)
}

fn req(p: &Policy, host: &str, method: &str, path: &str) -> Result<String, Reason> {
    let h = Host::parse(host).unwrap();
    let m = p
        .decide_host(&h, 443, Scheme::Https)
        .map_err(|d| d.reason)?;
    let path = NormalPath::parse(path).unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    p.decide_request(&m, host, &method, &path, false)
        .map(|r| r.source.to_string())
        .map_err(|d| d.reason)
}

macro_rules! host_case {
    ($name:ident, $rules:expr, $host:expr, $port:expr, $want:expr) => {
        #[test]
        fn $name() {
            assert_eq!(host_ok(&policy($rules), $host, $port, Scheme::Https), $want);
        }
    };
}

const GH: &str = "[[host]]\nmatch = \"*.github.com\"\n[[host]]\nmatch = \"api.example.test\"\n";

host_case!(exact_allowed, GH, "api.example.test", 443, Ok(()));
host_case!(exact_case_and_dot, GH, "API.example.test.", 443, Ok(()));
host_case!(
    exact_other_port,
    GH,
    "api.example.test",
    8443,
    Err(Reason::PortNotAllowed)
);
host_case!(wildcard_sub, GH, "api.github.com", 443, Ok(()));
host_case!(wildcard_deep, GH, "a.b.github.com", 443, Ok(()));
host_case!(
    wildcard_not_apex,
    GH,
    "github.com",
    443,
    Err(Reason::HostNotAllowed)
);
host_case!(
    wildcard_not_suffix_trick,
    GH,
    "github.com.evil.test",
    443,
    Err(Reason::HostNotAllowed)
);
host_case!(
    wildcard_not_glued,
    GH,
    "evilgithub.com",
    443,
    Err(Reason::HostNotAllowed)
);
host_case!(unknown, GH, "example.org", 443, Err(Reason::HostNotAllowed));
host_case!(
    ip_not_named,
    GH,
    "127.0.0.1",
    443,
    Err(Reason::HostNotAllowed)
);
host_case!(
    idn_rule,
    "[[host]]\nmatch = \"bücher.example\"\n",
    "xn--bcher-kva.example",
    443,
    Ok(())
);
host_case!(
    idn_request,
    "[[host]]\nmatch = \"xn--bcher-kva.example\"\n",
    "BÜCHER.example",
    443,
    Ok(())
);
host_case!(
    ip_rule_any_spelling,
    "[[host]]\nmatch = \"10.0.0.1\"\n",
    "0x0a000001",
    443,
    Ok(())
);

#[test]
fn plain_http_defaults_to_port_80() {
    let p = policy("[[host]]\nmatch = \"a.test\"\n");
    assert_eq!(host_ok(&p, "a.test", 80, Scheme::Http), Ok(()));
    assert_eq!(
        host_ok(&p, "a.test", 443, Scheme::Http),
        Err(Reason::PortNotAllowed)
    );
    assert_eq!(
        host_ok(&p, "a.test", 80, Scheme::Https),
        Err(Reason::PortNotAllowed)
    );
}

#[test]
fn methods_paths_and_access() {
    let p = policy(
        "[[host]]\nmatch = \"a.test\"\naccess = \"read\"\n\
         [[host]]\nmatch = \"a.test\"\nmethods = [\"post\"]\npaths = [\"/repos/*/issues\", \"/upload/**\"]\n",
    );
    assert_eq!(
        req(&p, "a.test", "GET", "/anything/at/all"),
        Ok("test.toml:3".into())
    );
    assert_eq!(req(&p, "a.test", "HEAD", "/"), Ok("test.toml:3".into()));
    assert_eq!(
        req(&p, "a.test", "POST", "/repos/x/issues"),
        Ok("test.toml:6".into())
    );
    assert_eq!(
        req(&p, "a.test", "POST", "/upload/a/b/c"),
        Ok("test.toml:6".into())
    );
    assert_eq!(
        req(&p, "a.test", "POST", "/repos/x/y/issues"),
        Err(Reason::PathNotAllowed)
    );
    assert_eq!(
        req(&p, "a.test", "DELETE", "/repos/x/issues"),
        Err(Reason::MethodNotAllowed)
    );
    assert_eq!(req(&p, "a.test", "TRACE", "/"), Err(Reason::MethodRefused));
    assert_eq!(req(&p, "a.test", "TRACK", "/"), Err(Reason::MethodRefused));
}

#[test]
fn denial_names_the_rule_file_for_unknown_hosts_and_the_rule_otherwise() {
    let p = policy("[[host]]\nmatch = \"a.test\"\nmethods = [\"GET\"]\n");
    let d = p
        .decide_host(&Host::parse("b.test").unwrap(), 443, Scheme::Https)
        .unwrap_err();
    let msg = d.agent_message();
    assert!(
        msg.contains("b.test:443")
            && msg.contains("not on the allowlist")
            && msg.contains("test.toml"),
        "{msg}"
    );
    let m = p
        .decide_host(&Host::parse("a.test").unwrap(), 443, Scheme::Https)
        .unwrap();
    let d = p
        .decide_request(
            &m,
            "a.test:443",
            &Method::POST,
            &NormalPath::parse("/x").unwrap(),
            false,
        )
        .unwrap_err();
    assert!(
        d.agent_message().contains("test.toml:3"),
        "{}",
        d.agent_message()
    );
}

#[test]
fn websocket_needs_a_rule_that_says_so() {
    let p = policy(
        "[[host]]\nmatch = \"a.test\"\n[[host]]\nmatch = \"a.test\"\npaths = [\"/ws\"]\nwebsocket = true\n",
    );
    let m = p
        .decide_host(&Host::parse("a.test").unwrap(), 443, Scheme::Https)
        .unwrap();
    let path = |s| NormalPath::parse(s).unwrap();
    assert!(
        p.decide_request(&m, "a", &Method::GET, &path("/ws"), true)
            .is_ok()
    );
    let d = p
        .decide_request(&m, "a", &Method::GET, &path("/other"), true)
        .unwrap_err();
    assert_eq!(d.reason, Reason::WebsocketNotAllowed);
}

#[test]
fn thousands_of_rules_compile_and_match() {
    let mut rules = String::new();
    for i in 0..5000 {
        rules.push_str(&format!(
            "[[host]]\nmatch = \"h{i}.example.test\"\n[[host]]\nmatch = \"*.w{i}.example.test\"\n"
        ));
    }
    let p = policy(&rules);
    assert_eq!(p.len(), 10_000);
    assert_eq!(
        host_ok(&p, "h4999.example.test", 443, Scheme::Https),
        Ok(())
    );
    assert_eq!(
        host_ok(&p, "x.w17.example.test", 443, Scheme::Https),
        Ok(())
    );
    assert_eq!(
        host_ok(&p, "w17.example.test", 443, Scheme::Https),
        Err(Reason::HostNotAllowed)
    );
}
