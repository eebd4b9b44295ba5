//! The address of a cluster's API server as other clusters' istiods dial it (a remote secret's
//! `server`): what makes one unusable, and whether it only reaches this machine.

use std::net::IpAddr;

/// Host part of an `https://host:port` URL.
pub(crate) fn host_of(server: &str) -> Option<&str> {
    let rest = server.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

/// What is wrong with `server` as the address other clusters' istiods dial, if anything: it must
/// be an `https://` URL with a host (not `0.0.0.0`, which names no machine), no credentials in it,
/// no spaces, and a port from 1 to 65535 when it names one.
pub fn server_problem(server: &str) -> Option<String> {
    if !server.starts_with("https://") {
        return Some("is not an https:// URL of an API server".into());
    }
    if host_of(server).is_none_or(str::is_empty) {
        return Some("has no host".into());
    }
    if server.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("holds a space or control character".into());
    }
    let Ok(uri) = server.parse::<http::Uri>() else {
        return Some("is not a URL".into());
    };
    let Some(authority) = uri.authority() else {
        return Some("has no host".into());
    };
    if authority.as_str().contains('@') {
        return Some(
            "carries credentials (user@host): a remote secret authenticates with its own token".into(),
        );
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Some("has no host".into());
    }
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Some(format!(
            "has host {host}, which names no machine another cluster can reach"
        ));
    }
    if let Some(port) = authority.port()
        && port.as_u16() == 0
    {
        return Some("has port 0".into());
    }
    let port_text = authority
        .as_str()
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.ends_with(']'));
    if let Some(p) = port_text
        && p.parse::<u16>().is_err()
    {
        return Some(format!("has port {p}, which is not 1 to 65535"));
    }
    None
}

/// Whether `server` points at this machine only, however the loopback address is spelled:
/// `localhost` (and names under it), `127.0.0.1` and the short forms resolvers accept (`127.1`),
/// `::1`, and IPv4 loopback mapped into IPv6 (`::ffff:127.0.0.1`).
pub fn is_loopback(server: &str) -> bool {
    let Some(host) = host_of(server) else {
        return false;
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Ok(ip) => ip.is_loopback(),
        // inet_aton's short forms: 1 to 4 numbers, the first 127.
        Err(_) => {
            let parts: Vec<&str> = host.split('.').collect();
            (1..=4).contains(&parts.len())
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                && parts[0] == "127"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_other_clusters_cannot_use_is_named_with_the_reason() {
        for (server, said) in [
            ("https://", "has no host"),
            ("http://10.0.0.1:6443", "is not an https:// URL"),
            ("https://10.0.0 .1:6443", "space"),
            ("https://admin:secret@10.0.0.1:6443", "carries credentials"),
            ("https://10.0.0.1:99999", "not 1 to 65535"),
            ("https://10.0.0.1:0", "port 0"),
            ("https://0.0.0.0:6443", "names no machine"),
            ("https://[::]:6443", "names no machine"),
        ] {
            let problem = server_problem(server).unwrap_or_else(|| panic!("{server} accepted"));
            assert!(problem.contains(said), "{server}: {problem}");
        }
        for fine in [
            "https://10.0.0.1:6443",
            "https://api.example.com",
            "https://[fd00::1]:6443",
            "https://rancher.example.com/k8s/clusters/c-m-abc",
        ] {
            assert_eq!(server_problem(fine), None, "{fine}");
        }
    }

    #[test]
    fn loopback_is_recognised_however_it_is_spelled() {
        for server in [
            "https://127.0.0.1:6443",
            "https://127.1:6443",
            "https://127.0.1:6443",
            "https://localhost:6443",
            "https://LOCALHOST.:6443",
            "https://api.localhost:6443",
            "https://[::1]:6443",
            "https://[::ffff:127.0.0.1]:6443",
        ] {
            assert!(is_loopback(server), "{server}");
        }
        for server in [
            "https://172.18.0.3:6443",
            "https://[::ffff:10.0.0.1]:6443",
            "https://1270.0.0.1:6443",
        ] {
            assert!(!is_loopback(server), "{server}");
        }
    }
}
