//! The address guard: resolve a name (honouring `[dns] resolve`), refuse
//! non-global addresses, and connect to exactly the address that was checked.
//!
//! # Security
//! The only way to get a [`CheckedAddr`] is [`Guard::resolve`], and the
//! upstream connector dials only `CheckedAddr`s: there is no second lookup
//! between check and connect, so DNS rebinding cannot swap the address. If
//! any address a name resolves to is refused, the name is refused (an
//! attacker-controlled zone could otherwise mix a private address in).

pub mod classify;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpStream;

pub use classify::{IpClass, classify};

use crate::policy::Host;

/// `[dns]`, compiled.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// Normalised name → address.
    pub resolve: HashMap<String, IpAddr>,
    /// Refuse non-global addresses.
    pub block_private: bool,
    /// Exceptions to `block_private`.
    pub allow_cidrs: Vec<IpNet>,
}

/// A socket address that passed the guard. Only this module builds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedAddr(SocketAddr);

impl CheckedAddr {
    /// The address.
    pub fn addr(self) -> SocketAddr {
        self.0
    }
}

/// Why the guard refused or could not resolve a destination.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    /// The address is in a range airlock does not connect to.
    #[error("{host} resolves to {addr}, a {class} address, which airlock does not connect to")]
    Blocked {
        /// The host asked for.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// Why.
        class: IpClass,
    },
    /// The destination is airlock's own listener.
    #[error("{host} is airlock itself ({addr}); a request loop was refused")]
    SelfLoop {
        /// The host asked for.
        host: String,
        /// airlock's address.
        addr: SocketAddr,
    },
    /// DNS failed.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host asked for.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// Every checked address refused the connection, or timed out.
    #[error("cannot connect to {host} ({addr}): {reason}")]
    Connect {
        /// The host asked for.
        host: String,
        /// The last address tried.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
}

impl GuardError {
    /// True for refusals (403), false for failures to reach (502).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            GuardError::Blocked { .. } | GuardError::SelfLoop { .. }
        )
    }

    /// Stable code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            GuardError::Blocked { .. } => "blocked_address",
            GuardError::SelfLoop { .. } => "self_loop",
            GuardError::Resolve { .. } => "dns_failure",
            GuardError::Connect { .. } => "connect_failure",
        }
    }
}

/// Resolves and checks destinations.
#[derive(Debug, Clone)]
pub struct Guard {
    resolve: HashMap<String, IpAddr>,
    block_private: bool,
    allow: Vec<IpNet>,
    own: Vec<SocketAddr>,
    timeout: Duration,
}

impl Guard {
    /// A guard from `[dns]`. `own` are airlock's listeners (refused as loops).
    pub fn new(dns: &DnsSettings, own: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self {
            resolve: dns.resolve.clone(),
            block_private: dns.block_private,
            allow: dns.allow_cidrs.clone(),
            own,
            timeout,
        }
    }

    /// Checks one address.
    ///
    /// # Errors
    /// [`GuardError::Blocked`] or [`GuardError::SelfLoop`].
    pub fn check(&self, host: &Host, addr: SocketAddr) -> Result<CheckedAddr, GuardError> {
        let ip = crate::host::canonical_ip(addr.ip());
        let addr = SocketAddr::new(ip, addr.port());
        if self.is_own(addr) {
            return Err(GuardError::SelfLoop {
                host: host.to_string(),
                addr,
            });
        }
        let class = classify(ip);
        if self.block_private
            && class != IpClass::Public
            && !self.allow.iter().any(|n| n.contains(&ip))
        {
            return Err(GuardError::Blocked {
                host: host.to_string(),
                addr: ip,
                class,
            });
        }
        Ok(CheckedAddr(addr))
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || (own.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
        })
    }

    /// Resolves `host` and checks every address.
    ///
    /// # Errors
    /// A refusal if any address is refused; [`GuardError::Resolve`] if DNS fails.
    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<CheckedAddr>, GuardError> {
        let addrs: Vec<SocketAddr> = match host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => match self.resolve.get(name) {
                Some(ip) => vec![SocketAddr::new(*ip, port)],
                None => {
                    let lookup = tokio::net::lookup_host((name.as_str(), port));
                    match tokio::time::timeout(self.timeout, lookup).await {
                        Ok(Ok(it)) => it.collect(),
                        Ok(Err(e)) => {
                            return Err(GuardError::Resolve {
                                host: name.clone(),
                                reason: e.to_string(),
                            });
                        }
                        Err(_) => {
                            return Err(GuardError::Resolve {
                                host: name.clone(),
                                reason: "timed out".into(),
                            });
                        }
                    }
                }
            },
        };
        if addrs.is_empty() {
            return Err(GuardError::Resolve {
                host: host.to_string(),
                reason: "no addresses".into(),
            });
        }
        addrs.into_iter().map(|a| self.check(host, a)).collect()
    }

    /// Resolves, checks, and connects to the first checked address that answers.
    ///
    /// # Errors
    /// Any [`GuardError`].
    pub async fn connect(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<(TcpStream, CheckedAddr), GuardError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for checked in addrs {
            match tokio::time::timeout(self.timeout, TcpStream::connect(checked.0)).await {
                Ok(Ok(stream)) => {
                    // Small requests and responses must not wait for Nagle.
                    let _nodelay = stream.set_nodelay(true);
                    return Ok((stream, checked));
                }
                Ok(Err(e)) => last = Some((checked.0, e.to_string())),
                Err(_) => last = Some((checked.0, "timed out".to_owned())),
            }
        }
        let (addr, reason) =
            last.unwrap_or_else(|| (SocketAddr::from(([0, 0, 0, 0], port)), "no address".into()));
        Err(GuardError::Connect {
            host: host.to_string(),
            addr,
            reason,
        })
    }
}

impl fmt::Display for CheckedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str], own: &[&str]) -> Guard {
        let dns = DnsSettings {
            resolve: HashMap::new(),
            block_private: true,
            allow_cidrs: allow.iter().map(|c| c.parse().unwrap()).collect(),
        };
        Guard::new(
            &dns,
            own.iter().map(|a| a.parse().unwrap()).collect(),
            Duration::from_secs(1),
        )
    }

    fn check(g: &Guard, addr: &str) -> Result<CheckedAddr, GuardError> {
        g.check(&Host::Name("x.test".into()), addr.parse().unwrap())
    }

    #[test]
    fn self_loop_refused_even_when_loopback_is_allowed() {
        let g = guard(&["127.0.0.0/8"], &["127.0.0.1:3128", "0.0.0.0:9090"]);
        assert!(matches!(
            check(&g, "127.0.0.1:3128"),
            Err(GuardError::SelfLoop { .. })
        ));
        assert!(matches!(
            check(&g, "127.0.0.1:9090"),
            Err(GuardError::SelfLoop { .. })
        ));
        assert!(check(&g, "127.0.0.1:8080").is_ok());
    }

    #[test]
    fn allow_cidrs_open_only_what_they_name() {
        let g = guard(&["127.0.0.0/8"], &[]);
        assert!(check(&g, "127.0.0.9:443").is_ok());
        assert!(
            check(&g, "[::ffff:127.0.0.9]:443").is_ok(),
            "mapped form is the same address"
        );
        assert!(matches!(
            check(&g, "169.254.169.254:80"),
            Err(GuardError::Blocked {
                class: IpClass::LinkLocal,
                ..
            })
        ));
        assert!(matches!(
            check(&g, "[::1]:443"),
            Err(GuardError::Blocked { .. })
        ));
        assert!(check(&g, "93.184.216.34:443").is_ok());
    }

    #[tokio::test]
    async fn one_refused_address_refuses_the_name() {
        let mut dns = DnsSettings {
            block_private: true,
            ..Default::default()
        };
        dns.resolve
            .insert("mixed.test".into(), "10.0.0.1".parse().unwrap());
        let g = Guard::new(&dns, vec![], Duration::from_secs(1));
        let err = g
            .resolve(&Host::Name("mixed.test".into()), 443)
            .await
            .unwrap_err();
        assert!(err.is_refusal());
        assert!(
            err.to_string().contains("10.0.0.1") && err.to_string().contains("private"),
            "{err}"
        );
    }
}
