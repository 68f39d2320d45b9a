//! Which addresses the sender may connect to (server-side request forgery).
//!
//! Every request's host is resolved by the sender itself and each address checked before a
//! connection is made: a name that resolves to a denied address is refused, whatever the
//! name.  `pg_jobqueue.http_allow`, when set, is the only list allowed; otherwise anything
//! outside `pg_jobqueue.http_deny` is.
//!
//! The unspecified addresses (0.0.0.0/8, `::`) are refused whatever the lists say: connecting
//! to them reaches this host, which no deny list of loopback addresses names.  An IPv6
//! address that carries an IPv4 one (mapped `::ffff:0:0/96`, compatible `::/96`, NAT64
//! `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`) reaches that
//! IPv4 address through a translator or tunnel, so it is checked both as itself and as each
//! IPv4 address it carries: refused if any of them is (an IPv4-mapped address is only checked
//! as IPv4, as the kernel connects to it).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default deny list: link-local addresses (169.254.169.254 is the metadata service of
/// AWS, Google Cloud, Azure, Oracle and others) and the metadata or host addresses clouds keep
/// elsewhere (AWS over IPv6, Alibaba, Azure's host).
pub const DEFAULT_DENY: &std::ffi::CStr =
    c"169.254.0.0/16, fe80::/10, fd00:ec2::254/128, 100.100.100.200/32, 168.63.129.16/32";

/// A parsed pair of lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressPolicy {
    pub deny: Vec<IpNet>,
    /// None: not set (everything outside `deny` is allowed).
    pub allow: Option<Vec<IpNet>>,
}

/// A comma-separated list of addresses or CIDR blocks (an address alone is one host).
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("\"{item}\" is not an IP address or CIDR block"))
        })
        .collect()
}

impl AddressPolicy {
    pub fn new(deny: &str, allow: Option<&str>) -> Result<Self, String> {
        Ok(AddressPolicy {
            deny: parse_list(deny)?,
            allow: match allow.map(str::trim) {
                None | Some("") => None,
                Some(list) => Some(parse_list(list)?),
            },
        })
    }

    /// None when `address` may be connected to; otherwise why not.
    pub fn refusal(&self, address: IpAddr) -> Option<String> {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        if let IpAddr::V6(v6) = address {
            for carried in embedded_ipv4(v6) {
                if let Some(why) = self.refusal_of(IpAddr::V4(carried)) {
                    return Some(format!("{address} carries IPv4 {carried}: {why}"));
                }
            }
        }
        self.refusal_of(address)
    }

    fn refusal_of(&self, address: IpAddr) -> Option<String> {
        if address.is_unspecified() || matches!(address, IpAddr::V4(v4) if v4.octets()[0] == 0) {
            return Some(format!(
                "address {address} is unspecified (it reaches this host), never connected to"
            ));
        }
        if let Some(allow) = &self.allow {
            if !allow.iter().any(|net| net.contains(&address)) {
                return Some(format!(
                    "address {address} is not in pg_jobqueue.http_allow"
                ));
            }
        }
        self.deny
            .iter()
            .find(|net| net.contains(&address))
            .map(|net| format!("address {address} is denied by pg_jobqueue.http_deny ({net})"))
    }
}

/// The IPv4 addresses an IPv6 address carries for a translator or tunnel (mapped addresses
/// are converted by the caller).  The local-use NAT64 prefix may embed at /48, /56, /64 or /96
/// (RFC 6052): each position is checked.  Teredo carries its server and, inverted, its client.
fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match v6.segments() {
        // IPv4-compatible (deprecated): ::a.b.c.d; :: and ::1 are themselves.
        [0, 0, 0, 0, 0, 0, hi, lo] if u32::from(v4(hi, lo)) > 1 => vec![v4(hi, lo)],
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => vec![v4(hi, lo)],
        [0x64, 0xff9b, 1, .., hi, lo] => {
            // Which position is meant is the network's choice: every one is checked, but
            // for the zeros another position reads (0.0.0.0/8), which would refuse them all.
            let bits = u128::from(v6);
            [
                v4(hi, lo),
                ipv4_at_prefix(bits, 48),
                ipv4_at_prefix(bits, 56),
                ipv4_at_prefix(bits, 64),
            ]
            .into_iter()
            .filter(|carried| carried.octets()[0] != 0)
            .collect()
        }
        [0x2002, hi, lo, ..] => vec![v4(hi, lo)],
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => vec![
            v4(server_hi, server_lo),
            Ipv4Addr::from(!u32::from(v4(client_hi, client_lo))),
        ],
        _ => Vec::new(),
    }
}

/// The IPv4 address RFC 6052 embeds after a prefix of `prefix_len` bits (48, 56 or 64): the
/// 32 bits that follow, skipping bits 64-71 (the "u" octet, always zero).
fn ipv4_at_prefix(bits: u128, prefix_len: u32) -> Ipv4Addr {
    let octets = bits.to_be_bytes();
    let mut out = [0u8; 4];
    let mut position = (prefix_len / 8) as usize;
    for byte in &mut out {
        if position == 8 {
            position += 1; // the u octet
        }
        *byte = octets[position];
        position += 1;
    }
    Ipv4Addr::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_default_denies_metadata_and_link_local_addresses_only() {
        let policy = AddressPolicy::new(DEFAULT_DENY.to_str().unwrap(), None).unwrap();
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "168.63.129.16",
            "::ffff:169.254.169.254",
        ] {
            assert!(policy.refusal(ip(denied)).is_some(), "{denied}");
        }
        for allowed in [
            "127.0.0.1",
            "10.0.0.1",
            "93.184.216.34",
            "::1",
            "2606:2800::1",
        ] {
            assert_eq!(policy.refusal(ip(allowed)), None, "{allowed}");
        }
    }

    #[test]
    fn an_allow_list_is_the_only_list_allowed_and_deny_still_wins() {
        let policy = AddressPolicy::new("10.0.0.5", Some("10.0.0.0/8, 192.0.2.7")).unwrap();
        assert_eq!(policy.refusal(ip("10.1.2.3")), None);
        assert_eq!(policy.refusal(ip("192.0.2.7")), None);
        assert!(policy
            .refusal(ip("192.0.2.8"))
            .unwrap()
            .contains("http_allow"));
        assert!(policy
            .refusal(ip("127.0.0.1"))
            .unwrap()
            .contains("http_allow"));
        assert!(policy
            .refusal(ip("10.0.0.5"))
            .unwrap()
            .contains("http_deny"));
    }

    #[test]
    fn unspecified_addresses_are_refused_whatever_the_lists_say() {
        let loopback_denied =
            AddressPolicy::new("169.254.0.0/16, fe80::/10, 127.0.0.0/8, ::1/128", None).unwrap();
        let everything_allowed = AddressPolicy::new("", Some("0.0.0.0/0, ::/0")).unwrap();
        for policy in [&loopback_denied, &everything_allowed] {
            for unspecified in ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0", "::0.0.0.0"] {
                let why = policy.refusal(ip(unspecified)).expect(unspecified);
                assert!(why.contains("unspecified"), "{unspecified}: {why}");
            }
        }
        assert_eq!(everything_allowed.refusal(ip("::1")), None);
    }

    #[test]
    fn ipv6_forms_that_carry_an_ipv4_address_are_checked_as_it() {
        let policy = AddressPolicy::new(DEFAULT_DENY.to_str().unwrap(), None).unwrap();
        for metadata in [
            "::169.254.169.254",           // IPv4-compatible
            "64:ff9b::a9fe:a9fe",          // NAT64
            "64:ff9b:1::a9fe:a9fe",        // local-use NAT64, /96
            "64:ff9b:1:a9fe:a9:fe00::",    // local-use NAT64, /48 (skipping the u octet)
            "2002:a9fe:a9fe::1",           // 6to4
            "2001:0:a9fe:a9fe::1",         // Teredo server
            "2001:0:5db8:d822::5601:5601", // Teredo client 169.254.169.254, inverted
        ] {
            let why = policy.refusal(ip(metadata)).expect(metadata);
            assert!(why.contains("169.254."), "{metadata}: {why}");
        }
        for allowed in ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "::1"] {
            assert_eq!(policy.refusal(ip(allowed)), None, "{allowed}");
        }
        // With an allow list, the IPv4 address carried must be allowed too.
        let nat64_only = AddressPolicy::new("", Some("64:ff9b::/96")).unwrap();
        assert!(nat64_only
            .refusal(ip("64:ff9b::a00:1"))
            .unwrap()
            .contains("10.0.0.1"));
    }

    #[test]
    fn lists_name_what_they_cannot_read() {
        assert!(parse_list("10.0.0.0/8, example.com")
            .unwrap_err()
            .contains("example.com"));
        assert!(parse_list("10.0.0.0/33").is_err());
        assert_eq!(parse_list(" , ").unwrap(), vec![]);
    }
}
