//! Registry hosts as image references and registry URLs name them: `host[:port]`,
//! `[v6]:port`, or a URL (`https://host/v2/`) as Docker config keys and the credential
//! helper accept. A leaf below the reference parser and the ECR hostname recognition.

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
        assert_eq!(hostname("host"), "host");
        assert_eq!(
            registry_key("https://Host.Example:5000/v1/"),
            "host.example:5000"
        );
        assert_eq!(registry_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
