//! The allowlist's parser and matcher: fixed cases, the mapped-address hole, and random
//! networks and addresses compared with the `ipnet` crate as the reference.

use super::*;
use rand::{Rng, SeedableRng};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn matching() {
    let c: Cidr = "127.0.0.1/32".parse().unwrap();
    assert!(c.contains(ip("127.0.0.1")));
    assert!(!c.contains(ip("127.0.0.2")));
    assert!(c.contains(ip("::ffff:127.0.0.1")), "mapped IPv4 matches");
    let n: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(n.contains(ip("10.200.1.1")));
    assert!(!n.contains(ip("11.0.0.1")));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(ip("8.8.8.8")));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains(ip("2001:db8::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert_eq!(
        "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
        "192.0.2.7/32"
    );
    assert!(!allowed(&[], ip("127.0.0.1")), "empty allowlist is closed");
}

/// The hole: `::ffff:203.0.113.5` (no prefix, so /128) matched every IPv4 caller in a release
/// build and panicked in a debug one.
#[test]
fn a_mapped_address_allows_only_itself() {
    let c: Cidr = "::ffff:203.0.113.5".parse().unwrap();
    assert_eq!(c.to_string(), "203.0.113.5/32", "stored in its IPv4 form");
    assert!(c.contains(ip("203.0.113.5")));
    assert!(c.contains(ip("::ffff:203.0.113.5")));
    for other in ["203.0.113.6", "8.8.8.8", "0.0.0.0", "::ffff:1.2.3.4", "::1"] {
        assert!(!c.contains(ip(other)), "{other} must not match");
    }
    let net: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
    assert_eq!(net.to_string(), "10.0.0.0/8");
    assert!(net.contains(ip("10.9.9.9")) && !net.contains(ip("11.0.0.1")));
    let all_v4: Cidr = "::ffff:0.0.0.0/96".parse().unwrap();
    assert_eq!(
        all_v4.to_string(),
        "0.0.0.0/0",
        "the operator asked for all of IPv4"
    );
    assert!(!all_v4.contains(ip("2001:db8::1")), "but not for IPv6");
}

#[test]
fn rejects_garbage() {
    for bad in [
        "",
        "1.2.3.4/33",
        "abc",
        "1.2.3.4/x",
        "::/129",
        "1.2.3/8",
        "1.2.3.4/",
        "1.2.3.4/+8",
        "1.2.3.4/-1",
        "1.2.3.4/256",
        "::ffff:1.2.3.4/95",
        "::ffff:1.2.3.4/0",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
    assert!(matches!(
        "::ffff:1.2.3.4/64".parse::<Cidr>(),
        Err(CidrError::MappedPrefix(_))
    ));
}

fn random_v4(rng: &mut impl Rng) -> std::net::Ipv4Addr {
    // Half the time near 203.0.113.0 so that matches are common, not only misses.
    if rng.gen_bool(0.5) {
        std::net::Ipv4Addr::from(0xCB00_7100u32 | rng.gen_range(0..=0xFFu32))
    } else {
        std::net::Ipv4Addr::from(rng.gen::<u32>())
    }
}

fn random_v6(rng: &mut impl Rng) -> std::net::Ipv6Addr {
    let base = 0x2001_0db8_u128 << 96;
    let v = if rng.gen_bool(0.5) {
        base | u128::from(rng.gen::<u16>())
    } else {
        rng.gen::<u128>()
    };
    std::net::Ipv6Addr::from(v)
}

/// Random IPv4 networks, written plainly and as mapped IPv6, against random callers written
/// both ways: the answer is always ipnet's.
#[test]
fn ipv4_and_mapped_agree_with_ipnet() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6732_6331);
    for _ in 0..20_000 {
        let net = random_v4(&mut rng);
        let prefix: u8 = rng.gen_range(0..=32);
        let caller = random_v4(&mut rng);
        let want = ipnet::Ipv4Net::new(net, prefix).unwrap().contains(&caller);
        let plain: Cidr = format!("{net}/{prefix}").parse().unwrap();
        let mapped: Cidr = format!("{}/{}", net.to_ipv6_mapped(), u32::from(prefix) + 96)
            .parse()
            .unwrap();
        assert_eq!(plain, mapped, "{net}/{prefix}");
        for who in [IpAddr::V4(caller), IpAddr::V6(caller.to_ipv6_mapped())] {
            assert_eq!(plain.contains(who), want, "{net}/{prefix} vs {who}");
        }
        let v6 = random_v6(&mut rng);
        assert!(
            !plain.contains(IpAddr::V6(v6)),
            "an IPv4 network never holds {v6}"
        );
    }
}

/// Random IPv6 networks against random IPv6 callers, and every mapped prefix shorter than /96
/// refused.
#[test]
fn ipv6_agrees_with_ipnet() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6732_6332);
    for _ in 0..20_000 {
        let net = random_v6(&mut rng);
        let prefix: u8 = rng.gen_range(0..=128);
        let caller = random_v6(&mut rng);
        let parsed = format!("{net}/{prefix}").parse::<Cidr>();
        if net.to_ipv4_mapped().is_some() {
            assert_eq!(parsed.is_ok(), prefix >= 96, "{net}/{prefix}");
            continue;
        }
        let c = parsed.unwrap();
        let want = ipnet::Ipv6Net::new(net, prefix).unwrap().contains(&caller);
        if caller.to_ipv4_mapped().is_none() {
            assert_eq!(
                c.contains(IpAddr::V6(caller)),
                want,
                "{net}/{prefix} vs {caller}"
            );
        }
        assert_eq!(
            c.to_string().parse::<Cidr>().unwrap(),
            c,
            "Display round-trips"
        );
    }
    for prefix in 0..96u8 {
        let s = format!("::ffff:192.0.2.1/{prefix}");
        assert!(s.parse::<Cidr>().is_err(), "{s}");
    }
}
