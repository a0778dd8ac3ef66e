//! Request paths, decoded and normalised once, so that the path a rule
//! judges is the path that is forwarded.
//!
//! # Security
//! An encoded path must not slip past a path rule (`/public/%2e%2e/admin`,
//! `/public;x/../admin`, `//admin`). [`NormalPath::parse`] percent-decodes
//! each segment, drops `;` parameters, collapses empty segments and resolves
//! dot segments, then re-encodes: airlock forwards exactly the string it
//! judged. Encoded `/` or `\`, NUL and control bytes are refused rather than
//! guessed at, since origins disagree on what they mean.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Bytes re-encoded in a forwarded segment: everything but RFC 3986 `pchar`
/// minus `;` (a decoded `;` must not become a parameter again) and `%`.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Whether `raw` is already normal: it starts with `/`, holds only bytes
/// that neither decode nor encode (RFC 3986 `pchar` without `%` and `;`),
/// and has no empty segment but a last one and no dot segment. Most
/// requests' paths are (`/v1/messages`); they skip the segment walk.
fn is_normal(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    let plain = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'-'
                    | b'.'
                    | b':'
                    | b'='
                    | b'@'
                    | b'_'
                    | b'~'
            )
    };
    if !rest.bytes().all(|b| b == b'/' || plain(b)) {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// A normalised path: `decoded` is what rules see, `encoded` what is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    decoded: String,
    encoded: String,
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not origin-form.
    #[error("the request path must start with `/`")]
    NotAbsolute,
    /// `%2F`, `%5C`: origins disagree on these.
    #[error(
        "the path contains an encoded `/` or `\\`, which airlock refuses because origins disagree on what it means"
    )]
    EncodedSeparator,
    /// NUL or another control byte.
    #[error("the path contains a control character")]
    Control,
    /// Decodes to bytes that are not UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// `..` above the root.
    #[error("the path climbs above `/` with `..`")]
    AboveRoot,
}

impl NormalPath {
    /// Normalises the path part of a request target (no query).
    ///
    /// # Example
    /// ```
    /// use airlock::policy::NormalPath;
    /// let p = NormalPath::parse("/public/%2e%2e//admin;x=1").unwrap();
    /// assert_eq!(p.decoded(), "/admin"); // what rules judge, and what is forwarded
    /// assert!(NormalPath::parse("/a%2Fb").is_err());
    /// ```
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if is_normal(raw) {
            // Decoding and re-encoding would give it back unchanged.
            return Ok(Self {
                decoded: raw.to_owned(),
                encoded: raw.to_owned(),
            });
        }
        Self::parse_segments(raw)
    }

    /// [`NormalPath::parse`] segment by segment, whatever the path.
    fn parse_segments(raw: &str) -> Result<Self, PathError> {
        let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        // Segments are appended to `decoded` as they are judged, and `..`
        // cuts back to the last `/`: a decoded segment holds no `/` (that
        // is refused below), so that removes exactly one segment. A segment
        // without `%` is borrowed, not copied: no allocation per segment.
        let mut decoded = String::with_capacity(raw.len() + 1);
        let mut trailing_slash = false;
        for raw_segment in rest.split('/') {
            trailing_slash = false;
            let without_params = raw_segment.split(';').next().unwrap_or("");
            let bytes: Cow<'_, [u8]> = percent_decode_str(without_params).into();
            if bytes.iter().any(|&b| b == b'/' || b == b'\\') {
                return Err(PathError::EncodedSeparator);
            }
            if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err(PathError::Control);
            }
            let segment = std::str::from_utf8(&bytes).map_err(|_| PathError::NotUtf8)?;
            match segment {
                "" | "." => trailing_slash = true,
                ".." => {
                    let last = decoded.rfind('/').ok_or(PathError::AboveRoot)?;
                    decoded.truncate(last);
                    trailing_slash = true;
                }
                _ => {
                    decoded.push('/');
                    decoded.push_str(segment);
                }
            }
        }
        let mut encoded = String::with_capacity(decoded.len() + 1);
        for s in decoded.split('/').skip(1) {
            encoded.push('/');
            encoded.extend(utf8_percent_encode(s, SEGMENT));
        }
        if trailing_slash || decoded.is_empty() {
            decoded.push('/');
            encoded.push('/');
        }
        Ok(Self { decoded, encoded })
    }

    /// What rules match against: decoded, no parameters, no dot segments.
    pub fn decoded(&self) -> &str {
        &self.decoded
    }

    /// What is forwarded upstream: `decoded`, re-encoded.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn judged(raw: &str) -> Result<(String, String), PathError> {
        NormalPath::parse(raw).map(|p| (p.decoded, p.encoded))
    }

    macro_rules! norm {
        ($name:ident, $raw:expr, $decoded:expr, $encoded:expr) => {
            #[test]
            fn $name() {
                assert_eq!(judged($raw), Ok(($decoded.into(), $encoded.into())));
            }
        };
    }

    norm!(root, "/", "/", "/");
    norm!(plain, "/repos/a/b", "/repos/a/b", "/repos/a/b");
    norm!(trailing, "/repos/", "/repos/", "/repos/");
    norm!(duplicate_slashes, "//admin//x", "/admin/x", "/admin/x");
    norm!(dot_segments, "/public/./../admin", "/admin", "/admin");
    norm!(encoded_dots, "/public/%2e%2E/admin", "/admin", "/admin");
    norm!(params_dropped, "/public;x=1/../admin;y", "/admin", "/admin");
    norm!(unreserved_decoded, "/%61dmin", "/admin", "/admin");
    norm!(space_reencoded, "/a%20b", "/a b", "/a%20b");
    norm!(encoded_semicolon_stays_data, "/a%3Bb", "/a;b", "/a%3Bb");
    norm!(utf8, "/caf%C3%A9", "/café", "/caf%C3%A9");
    norm!(trailing_dotdot, "/a/b/..", "/a/", "/a/");

    norm!(dotdot_to_root, "/a/b/../../c", "/c", "/c");
    norm!(dotdot_keeps_earlier, "/a/bb/../c/./d/..", "/a/c/", "/a/c/");
    norm!(dotdot_after_empty, "/a//..//b", "/b", "/b");
    norm!(dotdot_of_encoded, "/a%20b/c/..", "/a b/", "/a%20b/");

    /// The segment-list normaliser this one replaced: one `String` per
    /// segment, `..` pops the list. Kept as the reference.
    fn by_segments(raw: &str) -> Result<(String, String), PathError> {
        let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        let mut segments: Vec<String> = Vec::new();
        let mut trailing_slash = false;
        for raw_segment in rest.split('/') {
            trailing_slash = false;
            let without_params = raw_segment.split(';').next().unwrap_or("");
            let bytes: Vec<u8> = percent_decode_str(without_params).collect();
            if bytes.iter().any(|&b| b == b'/' || b == b'\\') {
                return Err(PathError::EncodedSeparator);
            }
            if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err(PathError::Control);
            }
            let segment = String::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
            match segment.as_str() {
                "" | "." => trailing_slash = true,
                ".." => {
                    segments.pop().ok_or(PathError::AboveRoot)?;
                    trailing_slash = true;
                }
                _ => segments.push(segment),
            }
        }
        let (mut decoded, mut encoded) = (String::new(), String::new());
        for s in &segments {
            decoded.push('/');
            decoded.push_str(s);
            encoded.push('/');
            encoded.extend(utf8_percent_encode(s, SEGMENT));
        }
        if trailing_slash || segments.is_empty() {
            decoded.push('/');
            encoded.push('/');
        }
        Ok((decoded, encoded))
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_segment_list_normaliser(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![
                        "", ".", "..", "%2e", "%2E%2e", ".;x", "..;y=1", "%2F", "%5c", "%00",
                        "%ff", "%C3%A9", "a%20b", "%3B", ";p", "%", "%4", "é", "a.b",
                    ]).prop_map(str::to_owned),
                    "[a-c]{1,3}",
                ],
                0..8,
            ),
            lead in proptest::bool::ANY,
        ) {
            let raw = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
            proptest::prop_assert_eq!(judged(&raw), by_segments(&raw), "{}", raw);
        }
    }

    /// The shortcut for paths already normal answers as the segment walk
    /// does, for every ASCII byte inside a segment and at its edges, and
    /// for the segment shapes it must leave to the walk.
    #[test]
    fn the_normal_path_shortcut_agrees_with_the_segment_walk() {
        let mut paths: Vec<String> = (0u8..128)
            .flat_map(|b| {
                let c = char::from(b);
                [
                    format!("/a{c}b"),
                    format!("/{c}"),
                    format!("/a/{c}/"),
                    format!("/{c}{c}"),
                ]
            })
            .collect();
        paths.extend(
            [
                "/", "//", "/a//b", "/a/", "/a//", "/.", "/..", "/a/.", "/a/..", "/./a", "/../a",
                "/.a", "/a.", "/..a", "/a/.../b", "/é", "a", "", "/a;b", "/a%41",
            ]
            .map(str::to_owned),
        );
        let mut shortcut = 0;
        for raw in &paths {
            shortcut += usize::from(is_normal(raw));
            assert_eq!(
                NormalPath::parse(raw),
                NormalPath::parse_segments(raw),
                "{raw:?}"
            );
        }
        // The shortcut is taken, not just harmless: each of the 78 plain
        // bytes in the four shapes but `.` in the three that make it a dot
        // segment, `/a/b` (the byte `/` in the first), and `/`, `/a/`,
        // `/.a`, `/a.`, `/..a`, `/a/.../b`.
        assert_eq!(shortcut, 78 * 4 - 3 + 1 + 6, "paths that took the shortcut");
    }

    #[test]
    fn refusals() {
        assert_eq!(judged("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(judged("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(judged("/a%00b"), Err(PathError::Control));
        assert_eq!(judged("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(judged("/../etc"), Err(PathError::AboveRoot));
        assert_eq!(judged("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(judged("/a/%2e%2e/%2E%2E/b"), Err(PathError::AboveRoot));
        // The first refusal met decides, as before: a separator before bad UTF-8.
        assert_eq!(judged("/%ff%2F"), Err(PathError::EncodedSeparator));
        assert_eq!(judged("relative"), Err(PathError::NotAbsolute));
    }
}
