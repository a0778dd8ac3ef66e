//! Host names and IP literals, normalised once so that every comparison
//! (rule match, SNI, `Host`, `:authority`, the address guard) sees one form,
//! and the host patterns rules are written with.
//!
//! A leaf: policy, injection, TLS, the guard and the connector all use it,
//! and it uses none of them.
//!
//! # Security
//! A host is compared only after: lowercasing, removing one trailing dot,
//! IDNA → punycode, and parsing any IP literal in any encoding a resolver
//! would accept (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`,
//! `[::ffff:127.0.0.1]`) to its canonical address. A name whose last label is
//! numeric but which does not parse as an address is refused, never guessed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a CONNECT target (authority-form) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// `user@host:port`: authority-form has no userinfo (RFC 9110 §9.3.6).
    #[error("a CONNECT target has no user part (`user@`): give host:port")]
    Userinfo,
    /// A scheme, path, query or fragment, or a character no `host:port` has.
    #[error("a CONNECT target is host:port alone (no scheme, path, query or fragment)")]
    NotAuthorityForm,
    /// No port, or not a number from 1 to 65535.
    #[error("a CONNECT target needs a port from 1 to 65535 (host:443)")]
    Port,
    /// The host part is empty, over-long or not a host.
    #[error("CONNECT target: {0}")]
    Host(#[from] HostError),
}

/// Parses a CONNECT request-target strictly as RFC 9110 authority-form,
/// `host:port` and nothing else: no userinfo, scheme, path, query or
/// fragment; a host name of at most 253 characters in labels of at most 63
/// (after IDNA), an IPv4 address, or an IPv6 one in brackets; a port of
/// 1 to 5 digits from 1 to 65535.
///
/// # Errors
/// Anything else, with the reason.
///
/// # Example
/// ```
/// use airlock::policy::{Host, parse_authority_form};
/// assert_eq!(
///     parse_authority_form("API.example.test:443").unwrap(),
///     (Host::parse("api.example.test").unwrap(), 443)
/// );
/// assert!(parse_authority_form("evil.test@api.example.test:443").is_err());
/// ```
pub fn parse_authority_form(target: &str) -> Result<(Host, u16), AuthorityError> {
    if target.contains('@') {
        return Err(AuthorityError::Userinfo);
    }
    if target
        .bytes()
        .any(|b| matches!(b, b'/' | b'?' | b'#' | b'\\' | b'%') || !b.is_ascii_graphic())
    {
        return Err(AuthorityError::NotAuthorityForm);
    }
    let (host, port) = if target.starts_with('[') {
        let end = target.find(']').ok_or(AuthorityError::NotAuthorityForm)?;
        let (host, rest) = target.split_at(end + 1);
        (host, rest.strip_prefix(':').ok_or(AuthorityError::Port)?)
    } else {
        let (host, port) = target.rsplit_once(':').ok_or(AuthorityError::Port)?;
        if host.contains(':') {
            return Err(AuthorityError::NotAuthorityForm);
        }
        (host, port)
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::Port);
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(AuthorityError::Port)?;
    Ok((Host::parse(host)?, port))
}

/// Whether `authority` (`host[:port]`, as a `Host` header or an absolute
/// URI spells it) names `host` on `port`, with `default_port` when it
/// names no port.
///
/// A name spelled exactly as it is stored (lowercase, no trailing dot)
/// with the port in plain digits, or with none on the default port, is
/// what nearly every request's `Host` header carries; that spelling is
/// answered by comparing bytes, since parsing it would give it back
/// unchanged (a `Host::Name` holds only what [`Host::parse`] returned).
/// Any other spelling is parsed: about 2,500 instructions a request saved.
pub fn authority_names(authority: &str, host: &Host, port: u16, default_port: u16) -> bool {
    if let Host::Name(name) = host
        && let Some(rest) = authority.strip_prefix(name.as_str())
    {
        if rest.is_empty() {
            return port == default_port;
        }
        if let Some(digits) = rest.strip_prefix(':')
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u16>() == Ok(port)
        {
            return true;
        }
    }
    authority_parses_to(authority, host, port, default_port)
}

/// [`authority_names`] by parsing, whatever the spelling.
fn authority_parses_to(authority: &str, host: &Host, port: u16, default_port: u16) -> bool {
    use std::str::FromStr as _;
    let Ok(a) = http::uri::Authority::from_str(authority) else {
        return false;
    };
    Host::parse(a.host()).is_ok_and(|h| h == *host) && a.port_u16().unwrap_or(default_port) == port
}

/// A normalised host: a DNS name in ASCII lowercase, or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// `api.example.test` (punycode, lowercase, no trailing dot).
    Name(String),
    /// An address; IPv4-mapped IPv6 is stored as IPv4.
    Ip(IpAddr),
}

/// Why a host string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing there.
    #[error("empty host")]
    Empty,
    /// Looks like an IP address but is not a valid one.
    #[error("`{0}` looks like an IP address but is not a valid one")]
    BadIpLiteral(String),
    /// Characters no DNS name has.
    #[error("`{0}` is not a valid host name")]
    BadName(String),
}

impl Host {
    /// Parses and normalises a host as it appears in a CONNECT target, a
    /// `Host` header, SNI, or a rule (brackets around IPv6 allowed).
    ///
    /// # Example
    /// ```
    /// use airlock::policy::Host;
    /// // Every spelling of an address is the same host...
    /// assert_eq!(Host::parse("0x7f.1").unwrap().to_string(), "127.0.0.1");
    /// assert_eq!(Host::parse("[::ffff:127.0.0.1]").unwrap().to_string(), "127.0.0.1");
    /// // ...and names are compared in one form.
    /// assert_eq!(Host::parse("API.Example.TEST.").unwrap().to_string(), "api.example.test");
    /// assert!(Host::parse("1.2.3.999").is_err());
    /// ```
    pub fn parse(input: &str) -> Result<Self, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = input.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| HostError::BadIpLiteral(input.to_owned()))?;
            let v6: Ipv6Addr = inner
                .parse()
                .map_err(|_| HostError::BadIpLiteral(input.to_owned()))?;
            return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
        }
        if input.contains(':') {
            // Bare IPv6 (SNI never carries one, but rules and `Host` may).
            return input
                .parse::<Ipv6Addr>()
                .map(|v6| Host::Ip(canonical_ip(IpAddr::V6(v6))))
                .map_err(|_| HostError::BadIpLiteral(input.to_owned()));
        }
        let lower = input.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.is_empty() {
            return Err(HostError::Empty);
        }
        if looks_numeric(trimmed) {
            return parse_ipv4_loose(trimmed)
                .map(|v4| Host::Ip(IpAddr::V4(v4)))
                .ok_or_else(|| HostError::BadIpLiteral(input.to_owned()));
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_owned()
        } else {
            idna::domain_to_ascii(trimmed).map_err(|_| HostError::BadName(input.to_owned()))?
        };
        // IDNA maps fullwidth digits and full stops and drops ignorable
        // code points, so a name can spell an address only now
        // ("１２７。０。０。１", "\u{34f}2130706433"): judged as that address,
        // as a resolver would read it, never as a name.
        let ascii = match ascii.strip_suffix('.') {
            Some(t) if !t.is_empty() => t.to_owned(),
            Some(_) => return Err(HostError::Empty),
            None => ascii,
        };
        if looks_numeric(&ascii) {
            return parse_ipv4_loose(&ascii)
                .map(|v4| Host::Ip(IpAddr::V4(v4)))
                .ok_or_else(|| HostError::BadIpLiteral(input.to_owned()));
        }
        if !valid_dns_name(&ascii) {
            return Err(HostError::BadName(input.to_owned()));
        }
        Ok(Host::Name(ascii))
    }

    /// The name, if this is one.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address it carries.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// WHATWG URL rule: a host whose last label is a number is an IPv4 address.
fn looks_numeric(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit())))
}

/// `inet_aton` semantics: 1 to 4 parts, each decimal, `0x` hex or `0` octal;
/// the last part fills the remaining bytes.
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        nums.push(parse_ipv4_part(p)?);
    }
    let (last, init) = nums.split_last()?;
    let mut value: u64 = 0;
    for (i, n) in init.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        value |= n << (8 * (3 - i));
    }
    let remaining_bits = 8 * (4 - init.len());
    if remaining_bits < 64 && *last >= (1u64 << remaining_bits) {
        return None;
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() || p.len() > 12 {
        return None;
    }
    if let Some(hex) = p.strip_prefix("0x") {
        if hex.is_empty() {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if p.len() > 1 && p.starts_with('0') {
        return u64::from_str_radix(&p[1..], 8).ok();
    }
    p.parse().ok()
}

fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `api.github.com` (exact) or `*.github.com` (any subdomain, not the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This name or address only.
    Exact(Host),
    /// Any name ending in `.` + this suffix.
    Subdomains(String),
}

impl HostPattern {
    /// True when `host` is one of this pattern's hosts: equal to an exact
    /// pattern, or a proper subdomain of a `*.` suffix (never the apex, never
    /// an IP literal).
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Exact(h), host) => h == host,
            (HostPattern::Subdomains(suffix), Host::Name(name)) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            (HostPattern::Subdomains(_), Host::Ip(_)) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => write!(f, "{h}"),
            HostPattern::Subdomains(s) => write!(f, "*.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte comparison answers as parsing would, for every spelling an
    /// attacker might try on the fast path's edges.
    #[test]
    fn authority_names_agrees_with_parsing() {
        let targets = [
            (Host::parse("api.example.test").unwrap(), 443, 443),
            (Host::parse("api.example.test").unwrap(), 8443, 443),
            (Host::parse("api.example.test").unwrap(), 80, 80),
            (Host::parse("10.1.2.3").unwrap(), 443, 443),
            (Host::parse("[::1]").unwrap(), 443, 443),
        ];
        let spellings = [
            "api.example.test",
            "api.example.test:443",
            "api.example.test:8443",
            "api.example.test:80",
            "api.example.test:0443",
            "api.example.test:+443",
            "api.example.test:443:",
            "api.example.test:",
            "api.example.test:65979",
            "api.example.test:4430",
            "api.example.test.",
            "api.example.test.:443",
            "API.example.test:443",
            "api.example.test.evil.test",
            "api.example.test.evil.test:443",
            "api.example.testx:443",
            "api.example.test@evil.test",
            "api.example.test:443@evil.test",
            "user@api.example.test:443",
            "api.example.test:443/x",
            "api.example.test :443",
            "api.example.tes",
            "10.1.2.3",
            "10.1.2.3:443",
            "0x0a.1.2.3:443",
            "[::1]:443",
            "[::1]",
            "[::ffff:10.1.2.3]:443",
            "",
            ":443",
        ];
        for (host, port, default_port) in &targets {
            for raw in spellings {
                assert_eq!(
                    authority_names(raw, host, *port, *default_port),
                    authority_parses_to(raw, host, *port, *default_port),
                    "{raw:?} against {host}:{port} (default {default_port})"
                );
            }
        }
        let api = Host::parse("api.example.test").unwrap();
        assert!(authority_names("api.example.test:8443", &api, 8443, 443));
        assert!(authority_names("api.example.test", &api, 443, 443));
        assert!(authority_names("API.example.test.:443", &api, 443, 443));
        assert!(!authority_names("api.example.test", &api, 8443, 443));
        assert!(!authority_names("api.example.test:4430", &api, 443, 443));
        assert!(!authority_names(
            "api.example.test.evil.test",
            &api,
            443,
            443
        ));
    }

    macro_rules! ip {
        ($name:ident, $input:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(Host::parse($input), Ok(Host::Ip($want.parse().unwrap())));
            }
        };
    }

    ip!(dotted, "127.0.0.1", "127.0.0.1");
    ip!(decimal, "2130706433", "127.0.0.1");
    ip!(hex_whole, "0x7f000001", "127.0.0.1");
    ip!(hex_parts, "0x7f.0x0.0x0.0x1", "127.0.0.1");
    ip!(octal, "0177.0.0.01", "127.0.0.1");
    ip!(short_two, "127.1", "127.0.0.1");
    ip!(short_three, "10.0.258", "10.0.1.2");
    ip!(metadata, "169.254.169.254", "169.254.169.254");
    ip!(trailing_dot, "127.0.0.1.", "127.0.0.1");
    ip!(mapped_v6, "[::ffff:127.0.0.1]", "127.0.0.1");
    ip!(mapped_v6_hex, "[::ffff:7f00:1]", "127.0.0.1");
    ip!(bracketed_v6, "[::1]", "::1");
    ip!(bare_v6, "fd00::1", "fd00::1");
    // Found by the `authority` fuzz target: IDNA mapping makes these
    // numeric only after the first check; they are addresses, not names.
    ip!(
        fullwidth_digits,
        "\u{ff11}\u{ff12}\u{ff17}\u{ff0e}\u{ff10}\u{ff0e}\u{ff10}\u{ff0e}\u{ff11}",
        "127.0.0.1"
    );
    ip!(
        ideographic_stops,
        "127\u{3002}0\u{3002}0\u{3002}1",
        "127.0.0.1"
    );
    ip!(ignorable_then_decimal, "\u{34f}2130706433", "127.0.0.1");

    #[test]
    fn a_name_that_maps_to_a_bad_address_is_refused() {
        assert!(matches!(
            Host::parse("\u{34f}44444444444444444444444"),
            Err(HostError::BadIpLiteral(_))
        ));
        // A trailing ideographic full stop is a trailing dot.
        assert_eq!(
            Host::parse("api.example.test\u{3002}"),
            Ok(Host::Name("api.example.test".into()))
        );
    }

    #[test]
    fn names_are_lowercased_and_trailing_dot_removed() {
        assert_eq!(
            Host::parse("API.Example.TEST."),
            Ok(Host::Name("api.example.test".into()))
        );
    }

    #[test]
    fn idn_becomes_punycode() {
        assert_eq!(
            Host::parse("bücher.example"),
            Ok(Host::Name("xn--bcher-kva.example".into()))
        );
    }

    #[test]
    fn bad_numeric_hosts_are_refused() {
        for bad in [
            "256.0.0.1",
            "1.2.3.4.5",
            "0x",
            "09.1.1.1",
            "example.123",
            "1.2.3.999",
        ] {
            assert!(
                matches!(Host::parse(bad), Err(HostError::BadIpLiteral(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn authority_form_is_strict() {
        let ok = |t: &str| parse_authority_form(t).unwrap();
        assert_eq!(ok("a.test:443"), (Host::Name("a.test".into()), 443));
        assert_eq!(ok("[::1]:8443").1, 8443);
        assert_eq!(ok("127.0.0.1:1").0, Host::Ip("127.0.0.1".parse().unwrap()));
        let long_label = format!("{}.test:443", "a".repeat(64));
        let long_name = format!("{}test:443", "abcdefghi.".repeat(25));
        for (bad, want) in [
            ("evil.test@a.test:443", AuthorityError::Userinfo),
            ("u:p@a.test:443", AuthorityError::Userinfo),
            ("a.test:443/x", AuthorityError::NotAuthorityForm),
            ("a.test:443?q", AuthorityError::NotAuthorityForm),
            ("a.test:443#f", AuthorityError::NotAuthorityForm),
            ("http://a.test:443", AuthorityError::NotAuthorityForm),
            ("a.test:443:1", AuthorityError::NotAuthorityForm),
            ("a.test", AuthorityError::Port),
            ("a.test:", AuthorityError::Port),
            ("a.test:0", AuthorityError::Port),
            ("a.test:65536", AuthorityError::Port),
            ("a.test:+443", AuthorityError::Port),
            ("a.test:000443", AuthorityError::Port),
            ("[::1]", AuthorityError::Port),
            (":443", AuthorityError::Host(HostError::Empty)),
        ] {
            assert_eq!(parse_authority_form(bad), Err(want), "{bad}");
        }
        for bad in [
            long_label.as_str(),
            long_name.as_str(),
            "[::1:443",
            "bad host:443",
        ] {
            assert!(parse_authority_form(bad).is_err(), "{bad}");
        }
        assert_eq!(long_name.len(), 254 + 4, "one over the 253 limit");
    }

    #[test]
    fn junk_names_are_refused() {
        for bad in [
            "",
            ".",
            "a b.test",
            "a..b",
            "evil.test/x",
            "a%2e.test",
            "[::1",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
    }
}
