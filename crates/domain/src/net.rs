//! Client addresses and IP rules.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::entities::{IpAction, IpRule};
use crate::ts::Timestamp;

/// The client address of a request, as decided once at the edge and passed along in the
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's address: the TCP peer, or — only when `trusted_hops` proxies sit in front —
/// the entry of `X-Forwarded-For` that the outermost trusted proxy saw, counted from the
/// right. Entries left of that point are client-controlled and never trusted.
#[must_use]
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let hops: Vec<&str> = xff
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // The peer is the last proxy; it appended the address it saw, so with N trusted proxies
    // the client is the N-th entry from the right.
    hops.len()
        .checked_sub(trusted_hops)
        .and_then(|i| hops.get(i))
        .and_then(|s| s.parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// The active IP rules, compiled for lookups. Block rules always win; when any allow rule
/// exists, only matching addresses are admitted (loopback is always admitted so an operator
/// on the machine can never lock themselves out).
#[derive(Debug, Clone, Default)]
pub struct IpRuleSet {
    allow: Vec<IpNet>,
    block: Vec<IpNet>,
}

impl IpRuleSet {
    #[must_use]
    pub fn new(rules: &[IpRule], now: Timestamp) -> Self {
        let mut s = Self::default();
        for r in rules
            .iter()
            .filter(|r| r.expires_at.is_none_or(|e| now < e))
        {
            match r.action {
                IpAction::Allow => s.allow.push(r.cidr),
                IpAction::Block => s.block.push(r.cidr),
            }
        }
        s
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.block.is_empty()
    }

    #[must_use]
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.block.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || ip.is_loopback() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IpRuleId;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_only_trusted_for_configured_hops() {
        let peer = ip("10.0.0.2");
        let xff = Some("6.6.6.6, 1.2.3.4");
        assert_eq!(
            client_ip(peer, xff, 0),
            peer,
            "no trusted proxies: the header is ignored"
        );
        assert_eq!(
            client_ip(peer, xff, 1),
            ip("1.2.3.4"),
            "one proxy: the entry it appended"
        );
        assert_eq!(client_ip(peer, xff, 2), ip("6.6.6.6"));
        assert_eq!(
            client_ip(peer, xff, 3),
            peer,
            "fewer entries than hops: fall back to the peer"
        );
        assert_eq!(client_ip(peer, Some("garbage"), 1), peer);
    }

    fn rule(cidr: &str, action: IpAction, expires_at: Option<Timestamp>) -> IpRule {
        IpRule {
            id: IpRuleId::new(),
            cidr: cidr.parse().unwrap(),
            action,
            note: None,
            expires_at,
            created_by: None,
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn block_wins_allow_restricts_loopback_always_passes() {
        let now = Timestamp(1000);
        let rules = vec![
            rule("10.0.0.0/8", IpAction::Allow, None),
            rule("10.1.0.0/16", IpAction::Block, None),
            rule("192.168.0.0/16", IpAction::Allow, Some(Timestamp(500))),
        ];
        let s = IpRuleSet::new(&rules, now);
        assert!(s.admits(ip("10.2.3.4")));
        assert!(!s.admits(ip("10.1.2.3")));
        assert!(!s.admits(ip("8.8.8.8")), "not on the allow list");
        assert!(!s.admits(ip("192.168.1.1")), "expired allow rule");
        assert!(s.admits(ip("127.0.0.1")));
        assert!(
            s.admits(ip("::ffff:10.2.3.4")),
            "mapped IPv4 matches IPv4 rules"
        );
        assert!(IpRuleSet::new(&[], now).admits(ip("8.8.8.8")));
    }
}
