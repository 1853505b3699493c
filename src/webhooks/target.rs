//! Where a webhook may point: an absolute http(s) URL whose host resolves
//! only to public addresses (no loopback, private, link-local, unique-local,
//! shared, multicast or unspecified address, so no cloud metadata service
//! either), unless private targets are allowed. Checked when a webhook is
//! created or its URL changes, and again before every delivery (a name may
//! resolve elsewhere later).

use std::net::{IpAddr, Ipv4Addr};

/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local (fd00:ec2::254 is a metadata address)
                || (first & 0xfe00) == 0xfc00
                // fe80::/10 link-local
                || (first & 0xffc0) == 0xfe80
                // ::/96 IPv4-compatible (deprecated), 64:ff9b::/96 NAT64 of
                // any IPv4 address
                || v6.segments()[..6] == [0; 6]
                || v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                // 2001:db8::/32 documentation
                || (first == 0x2001 && v6.segments()[1] == 0x0db8))
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local() // 169.254/16: 169.254.169.254 is the metadata service
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // 100.64/10 shared (carrier NAT)
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // 192.0.0/24 protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // 198.18/15 benchmarking
        || a >= 240) // reserved
}

/// Why `url` cannot be a webhook's target, if it cannot: the URL's form
/// only (no DNS).
pub fn check_form(url: &str) -> Result<url::Url, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("must be an absolute URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials (use the signature to authenticate crm)".into());
    }
    if parsed.host().is_none() {
        return Err("must name a host".into());
    }
    if parsed.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    Ok(parsed)
}

/// Resolves `url`'s host and checks every address it gives: all must be
/// public unless `allow_private`. Returns the addresses.
pub async fn resolve(url: &url::Url, allow_private: bool) -> Result<Vec<IpAddr>, String> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => {
            let lookup = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::net::lookup_host((name, port)),
            )
            .await
            .map_err(|_| format!("host {name} did not resolve within 5 s"))?
            .map_err(|e| format!("host {name} does not resolve ({e})"))?;
            lookup.map(|a| a.ip()).collect()
        }
        None => return Err("must name a host".into()),
    };
    if addrs.is_empty() {
        return Err("host resolves to no address".into());
    }
    if !allow_private && let Some(ip) = addrs.iter().find(|ip| !is_public(**ip)) {
        return Err(format!(
            "resolves to {ip}, a loopback, private, link-local or otherwise non-public address; \
             webhooks must point at public addresses"
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn forms_are_checked() {
        assert!(check_form("https://example.com/hook").is_ok());
        assert!(check_form("http://example.com:8080/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "https://example.com/#x",
            "",
        ] {
            assert!(check_form(bad).is_err(), "{bad}");
        }
        assert!(check_form(&format!("https://e.com/{}", "a".repeat(2048))).is_err());
    }
}
