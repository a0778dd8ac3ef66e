//! [`FileSource`]: secrets from a local TOML file, the embedded default
//! for trying airlock without Vault.
//!
//! ```toml
//! ["tools/github"]          # the path (quoted: it contains `/`)
//! token = "ghp_..."         # key = value; the ref is tools/github#token
//! ```
//!
//! The file must be readable by its owner only (`chmod 600`). Errors name
//! the file and line and never quote a value (serde's "invalid type"
//! messages would, so the file is read through spanned TOML, not serde).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use zeroize::Zeroizing;

use super::{Fetched, SecretError, SecretRef, SecretSource, SecretValue};

/// Secrets loaded from a TOML file at startup (reload = load again).
pub struct FileSource {
    file: PathBuf,
    /// path → key → value.
    secrets: HashMap<String, HashMap<String, SecretValue>>,
}

impl FileSource {
    /// Reads and checks `file`: owner-only permissions, `["path"]` tables
    /// of string values. Errors name the file and line.
    pub fn load(file: &Path) -> Result<Self, SecretError> {
        let shown = file.display();
        check_mode(file)?;
        let bytes = std::fs::read(file).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (create it with `[\"tools/example\"]` tables of `key = \"value\"`, mode 600)"
            } else {
                ""
            };
            SecretError::Config(format!("secrets file {shown}: cannot read: {e}{hint}"))
        })?;
        let text = Zeroizing::new(String::from_utf8(bytes).map_err(|e| {
            let line = line_of(e.as_bytes(), e.utf8_error().valid_up_to());
            SecretError::Config(format!("{shown}:{line}: secrets file is not UTF-8"))
        })?);
        let secrets = parse(&text).map_err(|(offset, msg)| {
            SecretError::Config(format!(
                "{shown}:{}: {msg}",
                line_of(text.as_bytes(), offset)
            ))
        })?;
        Ok(Self {
            file: file.to_path_buf(),
            secrets,
        })
    }

    /// How many secrets the file holds.
    pub fn len(&self) -> usize {
        self.secrets.values().map(HashMap::len).sum()
    }

    /// True when the file holds no secrets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self, r: &SecretRef) -> Result<Fetched, SecretError> {
        let Some(keys) = self.secrets.get(r.path()) else {
            return Err(SecretError::not_found(
                r,
                format!("no table [\"{}\"] in {}", r.path(), self.file.display()),
            ));
        };
        let Some(value) = keys.get(r.key()) else {
            return Err(SecretError::not_found(
                r,
                format!(
                    "table [\"{}\"] in {} has no key `{}`",
                    r.path(),
                    self.file.display(),
                    r.key()
                ),
            ));
        };
        Ok(Fetched {
            value: value.clone(),
            lease: None,
        })
    }
}

impl SecretSource for FileSource {
    fn fetch<'a>(&'a self, secret: &'a SecretRef) -> BoxFuture<'a, Result<Fetched, SecretError>> {
        Box::pin(std::future::ready(self.read(secret)))
    }

    fn describe(&self) -> String {
        format!("file {}", self.file.display())
    }

    fn health<'a>(&'a self) -> BoxFuture<'a, Result<(), SecretError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(unix)]
fn check_mode(file: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = file.display();
    let meta = std::fs::metadata(file)
        .map_err(|e| SecretError::Config(format!("secrets file {shown}: cannot read: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Config(format!(
            "secrets file {shown} is readable by others (mode {mode:03o}); run `chmod 600 {shown}`"
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_file: &Path) -> Result<(), SecretError> {
    Ok(())
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &[u8], offset: usize) -> usize {
    text.iter().take(offset).filter(|&&b| b == b'\n').count() + 1
}

type Parsed = HashMap<String, HashMap<String, SecretValue>>;

/// Parses the file; an error is (byte offset, message without values).
fn parse(text: &str) -> Result<Parsed, (usize, String)> {
    let doc = DeTable::parse(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        // `message()` only: `Display` would quote the offending line.
        (at, format!("invalid TOML: {}", e.message()))
    })?;
    let mut out = Parsed::new();
    for (path, table) in doc.into_inner() {
        let at = path.span().start;
        let path = path.into_inner();
        let DeValue::Table(keys) = table.into_inner() else {
            return Err((
                at,
                format!("`{path}` must be a table: write [\"{path}\"] then key = \"value\" lines"),
            ));
        };
        if keys
            .values()
            .any(|v| matches!(v.get_ref(), DeValue::Table(_)))
        {
            return Err((
                at,
                format!(
                    "nested table under `{path}`: write the whole path as one quoted name, e.g. [\"tools/github\"]"
                ),
            ));
        }
        let mut values = HashMap::new();
        for (key, value) in keys {
            let key_at = key.span().start;
            let key = key.into_inner().into_owned();
            let r = format!("{path}#{key}");
            if r.parse::<SecretRef>().is_err() {
                return Err((
                    key_at,
                    format!(
                        "`{r}` is not a valid secret ref (path segments and key of letters, digits and `-_.@+=`)"
                    ),
                ));
            }
            let value = secret_string(value).map_err(|kind| {
                (
                    key_at,
                    format!("`{r}`: value must be a string, found {kind}"),
                )
            })?;
            values.insert(key, value);
        }
        out.insert(path.into_owned(), values);
    }
    Ok(out)
}

fn secret_string(v: Spanned<DeValue<'_>>) -> Result<SecretValue, &'static str> {
    match v.into_inner() {
        DeValue::String(s) => Ok(SecretValue::from_string(s.into_owned())),
        DeValue::Integer(_) => Err("an integer (quote it)"),
        DeValue::Float(_) => Err("a float (quote it)"),
        DeValue::Boolean(_) => Err("a boolean (quote it)"),
        DeValue::Datetime(_) => Err("a datetime (quote it)"),
        DeValue::Array(_) => Err("an array"),
        DeValue::Table(_) => Err("a table"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    fn load_err(text: &str) -> String {
        let f = write(text, 0o600);
        let err = FileSource::load(f.path()).err().unwrap();
        assert_eq!(err.code(), "secret_config");
        let msg = err.to_string();
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        msg
    }

    #[tokio::test]
    async fn reads_path_and_key() {
        let f = write(
            "[\"tools/github\"]\ntoken = \"ghp_abc\"\nuser = \"bot\"\n\n[\"x\"]\nk = \"v\"\n",
            0o600,
        );
        let src = FileSource::load(f.path()).unwrap();
        assert_eq!(src.len(), 3);
        let r: SecretRef = "tools/github#token".parse().unwrap();
        let got = src.fetch(&r).await.unwrap();
        assert_eq!(got.value.expose_secret(), b"ghp_abc");
        assert_eq!(got.lease, None);
        assert!(src.describe().starts_with("file "));
        src.health().await.unwrap();
    }

    #[tokio::test]
    async fn missing_path_or_key_is_not_found_naming_the_ref() {
        let f = write("[\"tools/github\"]\ntoken = \"ghp_abc\"\n", 0o600);
        let src = FileSource::load(f.path()).unwrap();
        for r in ["tools/gitlab#token", "tools/github#nope"] {
            let err = src.fetch(&r.parse().unwrap()).await.unwrap_err();
            assert_eq!(err.code(), "secret_not_found");
            let msg = err.to_string();
            assert!(msg.contains(r), "{msg}");
            assert!(!msg.contains("ghp_abc"), "{msg}");
        }
    }

    #[test]
    fn refuses_group_or_world_readable_file() {
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let f = write("[\"a\"]\nk = \"v\"\n", mode);
            let msg = FileSource::load(f.path()).err().unwrap().to_string();
            assert!(
                msg.contains(&format!("chmod 600 {}", f.path().display())),
                "{msg}"
            );
        }
        let f = write("[\"a\"]\nk = \"v\"\n", 0o400);
        FileSource::load(f.path()).unwrap();
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        let msg = FileSource::load(&path).err().unwrap().to_string();
        assert!(msg.contains("secrets.toml"), "{msg}");
        assert!(msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn parse_errors_name_line_and_never_quote_values() {
        let msg = load_err("[\"a\"]\nk = \"v\"\n\n[\"b\"]\nn = 42\n");
        assert!(
            msg.contains(":5:") && msg.contains("b#n") && msg.contains("integer"),
            "{msg}"
        );

        let msg = load_err("token = \"ghp_toplevel\"\n");
        assert!(
            msg.contains(":1:") && msg.contains("must be a table"),
            "{msg}"
        );
        assert!(!msg.contains("ghp_toplevel"), "{msg}");

        let msg = load_err("[\"a\"]\nk = \"ghp_unterminated\n");
        assert!(msg.contains(":2:") && msg.contains("invalid TOML"), "{msg}");
        assert!(!msg.contains("ghp_unterminated"), "{msg}");

        let msg = load_err("[tools.github]\ntoken = \"ghp_x\"\n");
        assert!(msg.contains("nested table"), "{msg}");
        assert!(!msg.contains("ghp_x"), "{msg}");

        let msg = load_err("[\"a b\"]\nk = \"v\"\n");
        assert!(
            msg.contains(":2:") && msg.contains("not a valid secret ref"),
            "{msg}"
        );
    }
}
