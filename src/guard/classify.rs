//! Address classes: which addresses are global, and what the others are.
//!
//! IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64,
//! 6to4) are classified by the IPv4 address inside, so `[::ffff:10.0.0.1]`
//! or `[64:ff9b::a9fe:a9fe]` cannot reach what `10.0.0.1` or
//! `169.254.169.254` cannot.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of address this is. Only [`IpClass::Public`] is reachable by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpClass {
    /// Globally routable.
    Public,
    /// 127/8, ::1.
    Loopback,
    /// RFC 1918.
    Private,
    /// 169.254/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 100.64/10.
    Cgnat,
    /// fc00::/7.
    UniqueLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation ranges: 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32.
    Documentation,
    /// Benchmarking, reserved and other non-global ranges.
    Reserved,
}

impl IpClass {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            IpClass::Public => "public",
            IpClass::Loopback => "loopback",
            IpClass::Private => "private",
            IpClass::LinkLocal => "link-local",
            IpClass::Cgnat => "carrier-grade NAT",
            IpClass::UniqueLocal => "unique-local",
            IpClass::Multicast => "multicast",
            IpClass::Unspecified => "unspecified",
            IpClass::Broadcast => "broadcast",
            IpClass::Documentation => "documentation",
            IpClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for IpClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address.
pub fn classify(ip: IpAddr) -> IpClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> IpClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => IpClass::Unspecified,
        (127, _, _) => IpClass::Loopback,
        (10, _, _) => IpClass::Private,
        (172, 16..=31, _) => IpClass::Private,
        (192, 168, _) => IpClass::Private,
        (169, 254, _) => IpClass::LinkLocal,
        (100, 64..=127, _) => IpClass::Cgnat,
        (224..=239, _, _) => IpClass::Multicast,
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => IpClass::Broadcast,
        (240..=255, _, _) => IpClass::Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => IpClass::Documentation,
        (192, 0, 0) | (192, 88, 99) => IpClass::Reserved,
        (198, 18..=19, _) => IpClass::Reserved,
        _ => IpClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> IpClass {
    if ip.is_unspecified() {
        return IpClass::Unspecified;
    }
    if ip.is_loopback() {
        return IpClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    match s[0] {
        0xfe80..=0xfebf => IpClass::LinkLocal,
        0xfc00..=0xfdff => IpClass::UniqueLocal,
        0xff00..=0xffff => IpClass::Multicast,
        0xfec0..=0xfeff => IpClass::Reserved, // deprecated site-local
        // Global unicast is 2000::/3; Teredo (2001::/32) and documentation
        // (2001:db8::/32) within it are not destinations.
        0x2001 if s[1] == 0xdb8 => IpClass::Documentation,
        0x2001 if s[1] == 0 => IpClass::Reserved,
        0x2000..=0x3fff => IpClass::Public,
        _ => IpClass::Reserved,
    }
}

/// The IPv4 address inside an IPv6 address, for the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible (deprecated) ::a.b.c.d
    if s[..6].iter().all(|&x| x == 0) {
        return Some(low);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some(low);
    }
    // 6to4 2002:AABB:CCDD::/48
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! class {
        ($name:ident, $ip:expr, $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(classify($ip.parse().unwrap()), $want);
            }
        };
    }

    class!(public_v4, "93.184.216.34", IpClass::Public);
    class!(loopback, "127.0.0.1", IpClass::Loopback);
    class!(loopback_other, "127.255.0.9", IpClass::Loopback);
    class!(rfc1918_10, "10.1.2.3", IpClass::Private);
    class!(rfc1918_172, "172.31.255.255", IpClass::Private);
    class!(not_rfc1918_172, "172.32.0.1", IpClass::Public);
    class!(rfc1918_192, "192.168.1.1", IpClass::Private);
    class!(metadata, "169.254.169.254", IpClass::LinkLocal);
    class!(cgnat, "100.100.100.200", IpClass::Cgnat);
    class!(zero, "0.0.0.0", IpClass::Unspecified);
    class!(multicast, "239.1.1.1", IpClass::Multicast);
    class!(broadcast, "255.255.255.255", IpClass::Broadcast);
    class!(doc, "192.0.2.1", IpClass::Documentation);
    class!(doc_2, "198.51.100.7", IpClass::Documentation);
    class!(v6_loopback, "::1", IpClass::Loopback);
    class!(v6_unspecified, "::", IpClass::Unspecified);
    class!(v6_mapped_private, "::ffff:10.0.0.1", IpClass::Private);
    class!(v6_compat_loopback, "::127.0.0.1", IpClass::Loopback);
    class!(v6_nat64_metadata, "64:ff9b::a9fe:a9fe", IpClass::LinkLocal);
    class!(v6_6to4_private, "2002:c0a8:0101::1", IpClass::Private);
    class!(v6_link_local, "fe80::1", IpClass::LinkLocal);
    class!(v6_ula, "fd12:3456::1", IpClass::UniqueLocal);
    class!(v6_multicast, "ff02::1", IpClass::Multicast);
    class!(v6_public, "2606:4700::1111", IpClass::Public);
    class!(v6_teredo, "2001:0:4136:e378::1", IpClass::Reserved);
    class!(v6_doc, "2001:db8::1", IpClass::Documentation);
}
