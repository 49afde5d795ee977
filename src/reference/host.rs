//! Registry hosts as image references and registry URLs name them: `host[:port]`,
//! `[v6]:port`, or a URL (`https://host/v2/`) as Docker config keys and the credential
//! helper accept. A leaf below the reference parser and the ECR hostname recognition: both
//! take a host apart here, so they never disagree.

/// Checks a registry host as `distribution/reference` (`regexp.go`: `domainAndPort`) does: a
/// domain name (components of letters, digits and inner `-`, joined by `.`; IPv4 addresses
/// are such names) or an IPv6 address in brackets, then an optional port. Ports must also be
/// ports (1 to 65535), which the grammar alone does not check.
pub(crate) fn validate(host: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry host {host:?} is not valid: {why}"));
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad("an IPv6 address needs its closing `]`");
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad("only hex digits and `:` may stand between `[` and `]`");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("only `:port` may follow an IPv6 address"),
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !name.split('.').all(component_ok) {
            return bad("use letters, digits, `-` and `.` (or `[IPv6]`)");
        }
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return bad("the port must be a number from 1 to 65535");
    }
    Ok(())
}

/// The hostname of `host[:port]`, `scheme://host[:port]/path` or `[v6]:port`.
pub(crate) fn hostname(input: &str) -> &str {
    let s = input.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split(['/', '?', '#']).next().unwrap_or("");
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    if let Some(v6) = s.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    match s.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s,
    }
}

/// `host[:port]` of a registry reference or URL, lower-cased: the key registries are matched on.
pub(crate) fn registry_key(input: &str) -> String {
    let s = input.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_and_keys() {
        assert_eq!(
            hostname("https://user@host.example:5000/v2/x"),
            "host.example"
        );
        assert_eq!(hostname("[::1]:5000"), "::1");
        assert_eq!(hostname("[2001:db8::1]"), "2001:db8::1");
        assert_eq!(hostname("host"), "host");
        assert_eq!(
            registry_key("https://Host.Example:5000/v1/"),
            "host.example:5000"
        );
        assert_eq!(registry_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_key("[2001:db8::1]:5000"), "[2001:db8::1]:5000");
    }

    #[test]
    fn hosts_follow_the_reference_grammar() {
        for good in [
            "localhost",
            "localhost:5000",
            "registry.example.com",
            "Registry.Example.COM:443",
            "127.0.0.1:5000",
            "[2001:db8::1]",
            "[2001:db8::1]:5000",
            "[::1]:5000",
            "a-b.c",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a.com",
            "a-.com",
            "a..com",
            "a.com:",
            "a.com:0",
            "a.com:99999",
            "a.com:port",
            "a_b.com",
            "[2001:db8::1",
            "[]",
            "[fe80::1%eth0]",
            "[::1]5000",
            "[::1]:x",
            "[::g]",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
