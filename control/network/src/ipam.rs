//! Address management for subnets: CIDR checks, default gateway and
//! allocation pools, picking a free address, and SLAAC (EUI-64) addresses.
//! Addresses are handled as `u128` with their IP version so that IPv4 and
//! IPv6 share one code path.

use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use ursa_core::error::{Error, Result};

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

pub fn version(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        4
    } else {
        6
    }
}

/// A subnet's CIDR: valid; an IPv4 one with host bits set names its
/// network (`10.99.99.0/16` is `10.99.0.0/16`, as Neutron takes it), an
/// IPv6 one must name the network itself (Neutron refuses those).
pub fn parse_cidr(s: &str) -> Result<IpNet> {
    let mut net: IpNet = s.parse().map_err(|_| {
        Error::BadRequest(format!(
            "Invalid input for cidr. Reason: '{s}' is not a valid IP subnet."
        ))
    })?;
    if net.max_prefix_len() == 32 {
        net = net.trunc();
    }
    if net.trunc() != net {
        return Err(Error::BadRequest(format!(
            "Invalid input for cidr. Reason: '{s}' isn't a recommended CIDR; use '{}' instead.",
            net.trunc()
        )));
    }
    let hostbits = net.max_prefix_len() - net.prefix_len();
    if hostbits < 2 && net.max_prefix_len() == 32 || hostbits < 1 {
        return Err(Error::BadRequest(format!(
            "Invalid input for cidr. Reason: {s} has no room for addresses."
        )));
    }
    Ok(net)
}

pub fn parse_ip(s: &str, what: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| {
        Error::BadRequest(format!(
            "Invalid input for {what}. Reason: '{s}' is not a valid IP address."
        ))
    })
}

/// First and last address a port may have (IPv4 skips the network and
/// broadcast addresses; IPv6 skips the subnet-router anycast address).
pub fn host_range(net: &IpNet) -> (u128, u128) {
    let first = to_u128(net.network());
    let last = to_u128(net.broadcast());
    if net.max_prefix_len() == 32 {
        (first + 1, last - 1)
    } else {
        (first + 1, last)
    }
}

pub fn contains(net: &IpNet, ip: &IpAddr) -> bool {
    net.contains(ip)
}

/// Inclusive ranges of addresses.
pub type Pools = Vec<(u128, u128)>;

/// The default pools: every host address except the gateway.
pub fn default_pools(net: &IpNet, gateway: Option<u128>) -> Pools {
    let (lo, hi) = host_range(net);
    match gateway {
        Some(g) if g >= lo && g <= hi => {
            let mut out = Vec::new();
            if g > lo {
                out.push((lo, g - 1));
            }
            if g < hi {
                out.push((g + 1, hi));
            }
            out
        }
        _ => vec![(lo, hi)],
    }
}

/// Checks pools given by a client against the subnet and its gateway.
pub fn check_pools(net: &IpNet, pools: &Pools, gateway: Option<u128>) -> Result<()> {
    let (lo, hi) = host_range(net);
    let mut sorted = pools.clone();
    sorted.sort();
    for (i, (s, e)) in sorted.iter().enumerate() {
        if s > e {
            return Err(Error::BadRequest(format!(
                "The allocation pool {} - {} is not a valid range.",
                from_u128(*s, v(net)),
                from_u128(*e, v(net))
            )));
        }
        if *s < lo || *e > hi {
            return Err(Error::BadRequest(format!(
                "The allocation pool {} - {} spans beyond the subnet cidr {net}.",
                from_u128(*s, v(net)),
                from_u128(*e, v(net))
            )));
        }
        if i > 0 && sorted[i - 1].1 >= *s {
            return Err(Error::BadRequest(format!(
                "Found overlapping allocation pools: {} - {} and {} - {} for subnet {net}.",
                from_u128(sorted[i - 1].0, v(net)),
                from_u128(sorted[i - 1].1, v(net)),
                from_u128(*s, v(net)),
                from_u128(*e, v(net))
            )));
        }
        if let Some(g) = gateway {
            if g >= *s && g <= *e {
                return Err(Error::Conflict(format!(
                    "Gateway ip {} conflicts with allocation pool {} - {}.",
                    from_u128(g, v(net)),
                    from_u128(*s, v(net)),
                    from_u128(*e, v(net))
                )));
            }
        }
    }
    Ok(())
}

fn v(net: &IpNet) -> u8 {
    if net.max_prefix_len() == 32 {
        4
    } else {
        6
    }
}

/// The first pool address nobody uses.
pub fn first_free(pools: &Pools, used: &BTreeSet<u128>) -> Option<u128> {
    for (s, e) in pools {
        let mut a = *s;
        // Each step skips one used address, so this ends after at most
        // used.len() + 1 steps per pool.
        loop {
            if a > *e {
                break;
            }
            if !used.contains(&a) {
                return Some(a);
            }
            a += 1;
        }
    }
    None
}

/// How many addresses the pools hold (saturating).
pub fn pool_size(pools: &Pools) -> u128 {
    pools
        .iter()
        .fold(0u128, |acc, (s, e)| acc.saturating_add(e - s + 1))
}

/// The SLAAC address of a MAC in a /64 (modified EUI-64).
pub fn eui64(net: &IpNet, mac: &str) -> Option<IpAddr> {
    let b: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    if b.len() != 6 || net.max_prefix_len() != 128 {
        return None;
    }
    let iid: u64 = u64::from_be_bytes([b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]]);
    let prefix = to_u128(net.network()) & !((1u128 << 64) - 1);
    Some(from_u128(prefix | iid as u128, 6))
}

/// A random locally administered unicast MAC with OpenStack's `fa:16:3e`
/// prefix.
pub fn random_mac() -> String {
    let r: [u8; 3] = rand::random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", r[0], r[1], r[2])
}

pub fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
        && s != "00:00:00:00:00:00"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_must_name_the_network() {
        assert!(parse_cidr("10.0.0.0/24").is_ok());
        assert_eq!(
            parse_cidr("10.99.99.0/16").unwrap().to_string(),
            "10.99.0.0/16"
        );
        assert!(parse_cidr("2001:db8::5/64").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("bogus").is_err());
        assert!(parse_cidr("2001:db8::/64").is_ok());
    }

    #[test]
    fn pools_skip_the_gateway() {
        let n: IpNet = "10.0.0.0/29".parse().unwrap();
        let g = to_u128("10.0.0.1".parse().unwrap());
        let p = default_pools(&n, Some(g));
        assert_eq!(p, vec![(g + 1, g + 5)]);
        assert_eq!(pool_size(&p), 5);
        let used: BTreeSet<u128> = [g + 1, g + 2].into();
        assert_eq!(first_free(&p, &used), Some(g + 3));
        assert!(check_pools(&n, &vec![(g, g + 2)], Some(g)).is_err());
        assert!(check_pools(&n, &vec![(g + 1, g + 9)], Some(g)).is_err());
    }

    #[test]
    fn eui64_flips_the_local_bit() {
        let n: IpNet = "2001:db8::/64".parse().unwrap();
        assert_eq!(
            eui64(&n, "fa:16:3e:00:00:01").unwrap().to_string(),
            "2001:db8::f816:3eff:fe00:1"
        );
    }
}
