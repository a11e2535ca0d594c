//! CIDR allowlists for public TCP ports (`10.0.0.0/8`, `127.0.0.1/32`, `2001:db8::/32`).
//!
//! IPv4-mapped IPv6 networks (`::ffff:203.0.113.5`, what a dual-stack listener shows for an IPv4
//! caller) are stored in their IPv4 form with the prefix moved down by 96, and mapped callers are
//! matched as IPv4, so both spellings of one network mean the same thing. Every shift and
//! subtraction here is checked: a wrong prefix can only ever narrow a match, never widen it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One network, always in canonical form: an IPv4 network is never stored as mapped IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string is invalid.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    /// Not ADDRESS or ADDRESS/PREFIX.
    #[error("invalid CIDR {0:?}: use ADDRESS/PREFIX such as 203.0.113.0/24")]
    Syntax(String),
    /// An IPv4-mapped network whose prefix is shorter than the mapping itself (/96): it would
    /// cover IPv6 addresses outside `::ffff:0:0/96`, which no caller can have as an IPv4 peer.
    #[error("invalid CIDR {0:?}: an IPv4-mapped network needs a prefix of /96 or longer")]
    MappedPrefix(String),
}

/// The prefix length that `::ffff:0:0/96` spends on the mapping.
const MAPPED_PREFIX: u8 = 96;

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| syntax())?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            // `u8::from_str` accepts a leading '+'; a prefix is digits only.
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(syntax())
            }
            Some(p) => p.parse::<u8>().map_err(|_| syntax())?,
            None => max,
        };
        if prefix > max {
            return Err(syntax());
        }
        match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    let prefix = prefix
                        .checked_sub(MAPPED_PREFIX)
                        .ok_or_else(|| CidrError::MappedPrefix(s.to_owned()))?;
                    Ok(Self {
                        addr: IpAddr::V4(v4),
                        prefix,
                    })
                }
                None => Ok(Self { addr, prefix }),
            },
            IpAddr::V4(_) => Ok(Self { addr, prefix }),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// A caller's address as the allowlist sees it: IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The top `prefix` bits set. A prefix beyond the width gives the full mask (an exact match).
fn mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(prefix)))
        .unwrap_or(0)
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_v4(net, ip, mask_v4(self.prefix)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_v6(net, ip, mask_v6(self.prefix)),
            _ => false,
        }
    }
}

fn same_v4(net: Ipv4Addr, ip: Ipv4Addr, mask: u32) -> bool {
    u32::from(net) & mask == u32::from(ip) & mask
}

fn same_v6(net: Ipv6Addr, ip: Ipv6Addr, mask: u128) -> bool {
    u128::from(net) & mask == u128::from(ip) & mask
}

/// Whether any network in `list` contains `ip` (an empty list allows nobody).
pub fn allowed(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests;
