//! Image references and registry hosts, parsed once, the same way for the job image, services,
//! the helper image, `auth check` and `exec`: a leaf every layer above may use.
//!
//! - [`ImageRef`]: `[host[:port]/]path[:tag][@digest]`, validated before anything is sent to
//!   Docker, so that a bad `image:` is a clear build failure;
//! - [`host`]: the host part of references and registry URLs;
//! - [`ecr`]: which hosts are Amazon ECR registries, and of which account, region and partition.

pub(crate) mod ecr;
pub(crate) mod host;

use std::fmt;

/// Registry assumed for references without a host, as Docker does.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// Explicit registry host (with port), or `None` for Docker Hub.
    pub registry: Option<String>,
    /// Repository path below the registry, e.g. `library/alpine` or `team/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub(crate) fn parse(input: &str) -> Result<ImageRef, String> {
        if input.is_empty() {
            return Err("the reference is empty".into());
        }
        if input.len() > 1024 {
            return Err("the reference is longer than 1024 characters".into());
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("it contains the character {c:?}"));
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(validate_digest(digest)?)),
            None => (input, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(validate_tag(tag)?)),
            _ => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                validate_host(first)?;
                (Some(first.to_owned()), rest)
            }
            _ => (None, name),
        };
        validate_path(path)?;
        Ok(ImageRef {
            registry,
            repository: path.to_owned(),
            tag,
            digest,
        })
    }

    /// The registry host this image is pulled from (`docker.io` when none is named).
    pub(crate) fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or(DEFAULT_REGISTRY)
    }

    /// The reference to pull and inspect: a tag is always present unless a digest pins the
    /// image, because the Engine API pulls *every* tag of a repository when given none.
    pub(crate) fn pull_reference(&self) -> String {
        let mut s = String::new();
        if let Some(r) = &self.registry {
            s.push_str(r);
            s.push('/');
        }
        s.push_str(&self.repository);
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                s.push(':');
                s.push_str(tag);
            }
            (None, None) => s.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pull_reference())
    }
}

fn validate_digest(d: &str) -> Result<String, String> {
    let (algo, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("digest {d:?} is not of the form algorithm:hex"))?;
    let algo_ok = !algo.is_empty()
        && algo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("digest {d:?} is not of the form algorithm:hex"));
    }
    Ok(d.to_owned())
}

fn validate_tag(tag: &str) -> Result<String, String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(tag.to_owned())
    } else {
        Err(format!(
            "tag {tag:?} is not valid (letters, digits, `_`, `.`, `-`; at most 128)"
        ))
    }
}

fn validate_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(format!("registry host {host:?} is not valid"))
    }
}

fn validate_path(path: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    if path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "repository {path:?} is not valid (lowercase letters, digits and `._-` between `/`)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(s: &str) -> String {
        ImageRef::parse(s).unwrap().pull_reference()
    }

    #[test]
    fn adds_latest_only_when_untagged() {
        assert_eq!(pull("alpine"), "alpine:latest");
        assert_eq!(pull("alpine:3.20"), "alpine:3.20");
        assert_eq!(pull("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(pull("127.0.0.1:5000/a:1"), "127.0.0.1:5000/a:1");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(pull(&format!("a/b@{d}")), format!("a/b@{d}"));
        assert_eq!(pull(&format!("a/b:1@{d}")), format!("a/b:1@{d}"));
    }

    #[test]
    fn finds_the_registry() {
        let r = ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1").unwrap();
        assert_eq!(
            r.registry_host(),
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        );
        assert_eq!(r.repository, "team/app");
        assert_eq!(
            ImageRef::parse("team/app").unwrap().registry_host(),
            "docker.io"
        );
        assert_eq!(
            ImageRef::parse("localhost/app").unwrap().registry_host(),
            "localhost"
        );
    }

    #[test]
    fn rejects_nasty_references() {
        for bad in [
            "",
            " alpine",
            "alpine\n",
            "Alpine",
            "$IMAGE",
            "a/../b",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:xyz",
            "host:99999/a",
            "a\0b",
            "-rm",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ImageRef::parse(&"a".repeat(2000)).is_err());
    }
}
