//! `airlock approvals list | approve ID | deny ID`: the admin API from a
//! terminal.
//!
//! Every field of a held request comes from the sandbox, so it is sanitised
//! before it reaches the terminal (control characters and bidi overrides
//! become `?`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use http::{Method, StatusCode};

use super::client::{Call, Endpoint, send};
use super::{PendingRequest, unix_ms};
use crate::credentials::SecretValue;

/// Bound on each call to the admin API.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most response bytes read from the admin API.
const RESPONSE_LIMIT: usize = 8 * 1024 * 1024;

/// `airlock approvals ...`.
#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
    /// The admin API: `[proxy] admin` (`127.0.0.1:9090`) or a URL (`http://...`).
    #[arg(long, env = "AIRLOCK_ADMIN", global = true)]
    admin: Option<String>,
    /// File holding the admin bearer token (`[proxy] admin_token_file`).
    #[arg(long, env = "AIRLOCK_ADMIN_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum ApprovalsCommand {
    /// List the requests awaiting approval.
    List {
        /// Print the JSON array the admin API returns.
        #[arg(long)]
        json: bool,
    },
    /// Release a held request.
    Approve {
        /// The request id (from `list`).
        id: String,
        /// Also let the same sandbox, method, host and path through for N minutes.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(super::MAX_SCOPE_MINUTES)))]
        minutes: Option<u32>,
        /// A note kept with the decision.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse a held request.
    Deny {
        /// The request id (from `list`).
        id: String,
        /// Why (may be shown to the sandbox).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs one `approvals` command, writing to `out`.
///
/// # Errors
/// No `--admin`, an unreadable token file, the admin API unreachable or
/// refusing.
pub fn main(args: &ApprovalsArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let admin = args
        .admin
        .as_deref()
        .context("give --admin ADDR (the [proxy] admin address) or set AIRLOCK_ADMIN")?;
    let endpoint = admin_endpoint(admin)?;
    let token = args
        .token_file
        .as_ref()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?;
            Ok::<_, anyhow::Error>(SecretValue::from_string(text.trim().to_owned()))
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args.command, &endpoint, token.as_ref(), out))
}

async fn run(
    command: &ApprovalsCommand,
    endpoint: &Endpoint,
    token: Option<&SecretValue>,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match command {
        ApprovalsCommand::List { json } => {
            let body = call(endpoint, "/approvals", &Method::GET, None, token).await?;
            if *json {
                out.write_all(&body)?;
                out.write_all(b"\n")?;
            } else {
                let list: Vec<PendingRequest> = serde_json::from_slice(&body)
                    .context("the admin API answered something other than a list")?;
                out.write_all(render_table(&list, unix_ms()).as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve {
            id,
            minutes,
            reason,
        } => {
            let scope = match minutes {
                Some(m) => serde_json::json!({ "minutes": m }),
                None => serde_json::json!("once"),
            };
            let body =
                serde_json::json!({ "decision": "approve", "scope": scope, "reason": reason });
            decide(endpoint, id, &body, token).await?;
            let how = match minutes {
                Some(m) => format!(" and its route for {m} minutes"),
                None => String::new(),
            };
            writeln!(out, "approved {}{how}", sanitize(id))?;
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Deny { id, reason } => {
            let body = serde_json::json!({ "decision": "deny", "reason": reason });
            decide(endpoint, id, &body, token).await?;
            writeln!(out, "denied {}", sanitize(id))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `127.0.0.1:9090` or `http://127.0.0.1:9090`.
fn admin_endpoint(admin: &str) -> anyhow::Result<Endpoint> {
    let url = if admin.contains("://") {
        admin.to_owned()
    } else {
        format!("http://{admin}")
    };
    Ok(Endpoint::parse(&url)?)
}

async fn decide(
    endpoint: &Endpoint,
    id: &str,
    body: &serde_json::Value,
    token: Option<&SecretValue>,
) -> anyhow::Result<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        anyhow::bail!(
            "`{}` is not a request id (see `airlock approvals list`)",
            sanitize(id)
        );
    }
    let json = serde_json::to_vec(body)?;
    call(
        endpoint,
        &format!("/approvals/{id}"),
        &Method::POST,
        Some(&json),
        token,
    )
    .await?;
    Ok(())
}

async fn call(
    endpoint: &Endpoint,
    path: &str,
    method: &Method,
    json: Option<&[u8]>,
    token: Option<&SecretValue>,
) -> anyhow::Result<bytes::Bytes> {
    let target = endpoint.with_path(path);
    let call = Call {
        method,
        json,
        bearer: token,
        limit: RESPONSE_LIMIT,
    };
    let (status, body) = tokio::time::timeout(CALL_TIMEOUT, send(&target, None, call))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the admin API at {} did not answer within {CALL_TIMEOUT:?}",
                endpoint.authority()
            )
        })?
        .with_context(|| format!("cannot reach the admin API at {}", endpoint.authority()))?;
    let text = || sanitize(String::from_utf8_lossy(&body).trim());
    match status {
        s if s.is_success() => Ok(body),
        StatusCode::NOT_FOUND if method == Method::POST => anyhow::bail!(
            "no request awaiting approval has that id (already decided, expired, or its client went away)"
        ),
        StatusCode::UNAUTHORIZED => {
            anyhow::bail!(
                "the admin API wants its bearer token: pass --token-file (the [proxy] admin_token_file)"
            )
        }
        s => anyhow::bail!("the admin API answered {s}: {}", text()),
    }
}

/// The table `list` prints: one line per request, then a count.
fn render_table(list: &[PendingRequest], now_ms: u64) -> String {
    if list.is_empty() {
        return "no requests awaiting approval\n".to_owned();
    }
    let header = [
        "ID",
        "SANDBOX",
        "METHOD",
        "URL",
        "RULE",
        "AGE",
        "EXPIRES IN",
        "BODY",
    ];
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|r| {
            let body = r.body_preview.lines().next().unwrap_or("");
            let more = r.body_truncated || r.body_preview.lines().nth(1).is_some();
            [
                sanitize(&r.id),
                sanitize(r.sandbox.as_deref().unwrap_or("-")),
                sanitize(&r.method),
                clip(&sanitize(&r.url), 70),
                sanitize(&r.rule),
                duration(now_ms.saturating_sub(r.created_unix_ms)),
                if r.expires_unix_ms > now_ms {
                    duration(r.expires_unix_ms - now_ms)
                } else {
                    "expired".to_owned()
                },
                format!(
                    "{}{}",
                    clip(&sanitize(body), 50),
                    if more { " …" } else { "" }
                ),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    // Each replica lists only the requests it holds.
    let on = match list.first().map(|r| r.replica.as_str()) {
        Some(name) if !name.is_empty() => format!(" on replica {}", sanitize(name)),
        _ => String::new(),
    };
    out.push_str(&format!(
        "{} awaiting approval{on}: `airlock approvals approve ID [--minutes N]` or `deny ID [--reason R]`\n",
        list.len()
    ));
    out
}

/// Text from the sandbox, made safe for a terminal.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::RequestFacts;

    #[test]
    fn table_is_readable_and_sanitised() {
        let mut r = PendingRequest::new(&RequestFacts {
            sandbox: Some("agent-a"),
            method: "POST",
            scheme: "https",
            host: "api.stripe.test",
            port: 443,
            path: "/v1/refunds",
            query: None,
            rule: "rules/pay.toml:3",
        })
        .with_body_preview(b"amount=5000\x1b[31m&currency=usd\nsecond line", false);
        r.id = "0123456789abcdef0123456789abcdef".into();
        r.created_unix_ms = 1_000;
        r.expires_unix_ms = 301_000;
        let t = render_table(&[r], 76_000);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID "), "{t}");
        assert!(lines[0].contains("EXPIRES IN"), "{t}");
        assert!(lines[1].contains("0123456789abcdef0123456789abcdef"), "{t}");
        assert!(lines[1].contains("agent-a"), "{t}");
        assert!(
            lines[1].contains("https://api.stripe.test/v1/refunds"),
            "{t}"
        );
        assert!(lines[1].contains("rules/pay.toml:3"), "{t}");
        assert!(lines[1].contains("1m15s"), "{t}");
        assert!(lines[1].contains("3m45s"), "{t}");
        assert!(lines[1].contains("amount=5000?[31m&currency=usd …"), "{t}");
        assert!(!t.contains('\x1b'), "{t}");
        assert!(!t.contains("second line"), "{t}");
        assert!(lines[2].starts_with("1 awaiting approval"), "{t}");
        assert_eq!(render_table(&[], 0), "no requests awaiting approval\n");
    }

    #[test]
    fn sanitize_strips_terminal_tricks() {
        assert_eq!(sanitize("a\u{1b}]0;x\u{7}b\u{202e}c\r\n"), "a?]0;x?b?c??");
    }

    #[test]
    fn admin_address_forms() {
        assert!(admin_endpoint("127.0.0.1:9090").is_ok());
        assert!(admin_endpoint("http://127.0.0.1:9090").is_ok());
        assert!(admin_endpoint("ftp://127.0.0.1:9090").is_err());
    }
}
