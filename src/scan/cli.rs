//! `airlock scan FILE...`: run the secret scanner over files or stdin.
//!
//! Files are streamed through a [`ScanState`] in 64 KiB reads, never read
//! whole. Each finding prints as `FILE:LINE:COL: pattern-id  preview`, where
//! the preview shows the first 4 characters of the secret and masks the rest
//! (`ghp_****`), or, with `--json`, as one JSON object per line with `file`,
//! `line`, `column`, `pattern_id`, `confidence` and `preview`. Lines and
//! columns are 1-based; columns count bytes.
//!
//! The patterns are the built-in set unless a file is named. Only
//! `verified` findings are reported unless `min` is `Shaped` (`--all`);
//! a shaped finding's text line ends in `(shaped)`.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use bytes::Bytes;

use super::{Confidence, Finding, PatternSet, ScanMode, ScanState, Scanner};

const READ_SIZE: usize = 64 * 1024;
const PREVIEW_CHARS: usize = 4;

/// Scan `inputs` (empty, or `-`, for stdin) with the patterns in
/// `patterns_file` (`None`: the built-in patterns), writing the findings of
/// confidence `min` or above to `out`. Returns whether anything was found.
///
/// # Errors
/// An unloadable pattern file (with file:line), an unreadable input, or a
/// failed write.
pub fn run(
    patterns_file: Option<&Path>,
    inputs: &[PathBuf],
    json: bool,
    min: Confidence,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let patterns = match patterns_file {
        Some(file) => PatternSet::load(file)?,
        None => PatternSet::builtin()?,
    };
    let scanner = Arc::new(Scanner::new(&patterns, &[])?);
    let stdin = [PathBuf::from("-")];
    let inputs = if inputs.is_empty() {
        &stdin[..]
    } else {
        inputs
    };
    let mut found = false;
    for input in inputs {
        let name = input.display().to_string();
        let reader: Box<dyn Read> = if name == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(input).with_context(|| format!("cannot open {name}"))?)
        };
        found |= scan_reader(&scanner, reader, &name, json, min, out)?;
    }
    Ok(found)
}

fn scan_reader(
    scanner: &Arc<Scanner>,
    mut reader: Box<dyn Read>,
    name: &str,
    json: bool,
    min: Confidence,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let mut state = ScanState::with_min_confidence(scanner.clone(), ScanMode::Log, min);
    let mut lines = Lines::default();
    let mut buf = vec![0u8; READ_SIZE];
    let mut found = false;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {name}")),
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        lines.window.extend_from_slice(&chunk);
        let res = state.push(chunk);
        for f in &res.findings {
            found = true;
            lines.print(f, name, json, out)?;
        }
        lines.trim(state.reported_upto());
    }
    for f in &state.finish().findings {
        found = true;
        lines.print(f, name, json, out)?;
    }
    Ok(found)
}

/// Tracks line numbers and keeps the bytes findings may still point into.
struct Lines {
    /// Stream bytes from `base`.
    window: Vec<u8>,
    base: u64,
    /// Newlines before `cursor` are counted in `line`.
    cursor: u64,
    line: u64,
    line_start: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            window: Vec::new(),
            base: 0,
            cursor: 0,
            line: 1,
            line_start: 0,
        }
    }
}

impl Lines {
    fn advance_to(&mut self, pos: u64) {
        let from = (self.cursor - self.base) as usize;
        let to = ((pos.max(self.cursor) - self.base) as usize).min(self.window.len());
        for (i, &b) in self
            .window
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.base + (from + i) as u64 + 1;
            }
        }
        self.cursor = self.base + to as u64;
    }

    fn trim(&mut self, keep_from: u64) {
        let keep_from = keep_from.min(self.base + self.window.len() as u64);
        if keep_from <= self.base {
            return;
        }
        self.advance_to(keep_from);
        self.window.drain(..(keep_from - self.base) as usize);
        self.base = keep_from;
    }

    fn print(
        &mut self,
        f: &Finding,
        name: &str,
        json: bool,
        out: &mut dyn Write,
    ) -> anyhow::Result<()> {
        self.advance_to(f.start);
        let column = f.start - self.line_start + 1;
        let a = (f.start.saturating_sub(self.base)) as usize;
        let b = (f.end.saturating_sub(self.base)) as usize;
        let secret = self.window.get(a..b.max(a)).unwrap_or_default();
        let preview: String = String::from_utf8_lossy(secret)
            .chars()
            .take(PREVIEW_CHARS)
            .map(|c| if c.is_control() { '.' } else { c })
            .chain("****".chars())
            .collect();
        if json {
            let obj = serde_json::json!({
                "file": name,
                "line": self.line,
                "column": column,
                "pattern_id": &*f.pattern_id,
                "confidence": f.confidence.as_str(),
                "preview": preview,
            });
            writeln!(out, "{obj}")?;
        } else {
            let note = match f.confidence {
                Confidence::Verified => "",
                Confidence::Shaped => " (shaped)",
            };
            writeln!(
                out,
                "{name}:{}:{column}: {}  {preview}{note}",
                self.line, f.pattern_id
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[pattern]]
id = "demo-token"
description = "demo"
keywords = ["dmo_"]
regex = '\bdmo_[a-z0-9]{10}\b'
max_len = 14
examples = ["dmo_abcdef1234"]
"#;

    #[test]
    fn prints_file_line_col_and_masks() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r.toml");
        std::fs::write(&rules, RULES).unwrap();
        let input = dir.path().join("in.txt");
        // put the second secret past the first 64 KiB read
        let mut text = String::from("first line\n  x=dmo_abcdef1234\n");
        text.push_str(&"filler line\n".repeat(7000));
        text.push_str("zzdmo_0123456789 no\ndmo_9876543210\n");
        std::fs::write(&input, &text).unwrap();

        let mut out = Vec::new();
        let found = run(
            Some(&rules),
            std::slice::from_ref(&input),
            false,
            Confidence::Verified,
            &mut out,
        )
        .unwrap();
        assert!(found);
        let out = String::from_utf8(out).unwrap();
        let name = input.display().to_string();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                format!("{name}:2:5: demo-token  dmo_****"),
                format!("{name}:7004:1: demo-token  dmo_****"),
            ]
        );
        assert!(!out.contains("abcdef"));

        let mut out = Vec::new();
        run(
            Some(&rules),
            std::slice::from_ref(&input),
            true,
            Confidence::Verified,
            &mut out,
        )
        .unwrap();
        let first: serde_json::Value =
            serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["line"], 2);
        assert_eq!(first["column"], 5);
        assert_eq!(first["pattern_id"], "demo-token");
        assert_eq!(first["preview"], "dmo_****");
        assert_eq!(first["confidence"], "verified");

        // `--all`: the glued one too, marked shaped.
        let mut out = Vec::new();
        run(
            Some(&rules),
            std::slice::from_ref(&input),
            false,
            Confidence::Shaped,
            &mut out,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            vec![
                format!("{name}:2:5: demo-token  dmo_****"),
                format!("{name}:7003:3: demo-token  dmo_**** (shaped)"),
                format!("{name}:7004:1: demo-token  dmo_****"),
            ]
        );
    }

    #[test]
    fn clean_file_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r.toml");
        std::fs::write(&rules, RULES).unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "nothing here\n").unwrap();
        let mut out = Vec::new();
        assert!(
            !run(
                Some(&rules),
                &[input],
                false,
                Confidence::Verified,
                &mut out
            )
            .unwrap()
        );
        assert!(out.is_empty());
    }
}
