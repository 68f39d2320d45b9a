//! Which addresses the sender may connect to (server-side request forgery).
//!
//! Every request's host is resolved by the sender itself and each address checked before a
//! connection is made: a name that resolves to a denied address is refused, whatever the
//! name.  `pg_jobqueue.http_allow`, when set, is the only list allowed; otherwise anything
//! outside `pg_jobqueue.http_deny` is.  IPv4-mapped IPv6 addresses are checked as IPv4.

use ipnet::IpNet;
use std::net::IpAddr;

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
    fn lists_name_what_they_cannot_read() {
        assert!(parse_list("10.0.0.0/8, example.com")
            .unwrap_err()
            .contains("example.com"));
        assert!(parse_list("10.0.0.0/33").is_err());
        assert_eq!(parse_list(" , ").unwrap(), vec![]);
    }
}
