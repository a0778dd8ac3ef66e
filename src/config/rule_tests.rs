//! `[[test]]` entries, as written → [`RuleTest`]s, each error at file:line.

use std::sync::Arc;

use super::ConfigError;
use super::raw::RawTest;
use crate::policy::RuleRef;
use crate::policy::rule_tests::{Expect, RuleTest};

/// Compiles the `[[test]]`s of one file (`name`, `text`); `sandbox` is the
/// sandbox whose `include` read it, the default for tests that name none.
pub(super) fn compile(
    name: &str,
    text: &str,
    raw: &[RawTest],
    sandbox: Option<&str>,
    out: &mut Vec<RuleTest>,
    errors: &mut Vec<ConfigError>,
) {
    let file: Arc<str> = Arc::from(name);
    for t in raw {
        let err =
            |span: std::ops::Range<usize>, msg: String| ConfigError::at(name, text, span, msg);
        let method = t.method.as_ref().map_or("GET", |m| m.get_ref().as_str());
        let parsed = RuleTest::parse_request(t.url.get_ref(), method);
        let (uri, host, port, scheme, path, method) = match parsed {
            Ok(p) => p,
            Err(msg) => {
                let span = match (&t.method, msg.contains("not an HTTP method")) {
                    (Some(m), true) => m.span(),
                    _ => t.url.span(),
                };
                errors.push(err(span, format!("test: {msg}")));
                continue;
            }
        };
        let expect = match Expect::parse(t.expect.get_ref()) {
            Ok(e) => e,
            Err(msg) => {
                errors.push(err(t.expect.span(), format!("test.expect: {msg}")));
                continue;
            }
        };
        let inject = match &t.inject {
            Some(i) => match i.get_ref().parse::<crate::credentials::SecretRef>() {
                Ok(r) => Some(r.to_string()),
                Err(e) => {
                    errors.push(err(i.span(), format!("test.inject: {e}")));
                    continue;
                }
            },
            None => None,
        };
        if inject.is_some() && expect == Expect::Deny {
            if let Some(i) = &t.inject {
                errors.push(err(
                    i.span(),
                    "test.inject: a denied request injects nothing; expect \"allow\" or \"approval\"".to_owned(),
                ));
            }
            continue;
        }
        let (line, _) = super::error::line_col(text, t.url.span().start);
        out.push(RuleTest {
            source: RuleRef {
                file: Arc::clone(&file),
                line,
            },
            url: t.url.get_ref().clone(),
            uri,
            host,
            port,
            scheme,
            path,
            method,
            sandbox: t
                .sandbox
                .as_ref()
                .map(|s| Arc::from(s.get_ref().as_str()))
                .or_else(|| sandbox.map(Arc::from)),
            expect,
            inject,
        });
    }
}
