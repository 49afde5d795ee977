//! Image references and registry hosts, parsed once, the same way for the job image, services,
//! the helper image, `auth check` and `exec`: a leaf every layer above may use.
//!
//! - [`ImageRef`]: `[host[:port]/]path[:tag][@digest]`, checked against Docker's own grammar
//!   (`distribution/reference` with `go-digest`'s digest rules) before anything is sent to the
//!   engine, so that a bad `image:` is a clear build failure naming the rule, not a pull error;
//! - [`host`]: the host part of references and registry URLs;
//! - [`ecr`]: which hosts are Amazon ECR registries, and of which account, region and partition.

pub(crate) mod ecr;
pub(crate) mod host;

use std::fmt;

/// Registry assumed for references without a host, as Docker does.
pub(crate) const DEFAULT_REGISTRY: &str = "docker.io";

/// Longest repository path `distribution/reference` accepts (`NameTotalLengthMax`; since
/// 2024 it counts the path without the host).
const MAX_PATH: usize = 255;

/// A reference no registry could mean: longer than any host, path, tag and digest together.
const MAX_REFERENCE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// Explicit registry host (with port) as written, or `None` for Docker Hub.
    pub registry: Option<String>,
    /// Repository path below the registry as written, e.g. `alpine` or `team/app` (Docker Hub's
    /// `library/` is not added: the engine does that).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference as `distribution/reference`'s `ParseNormalizedNamed` does
    /// (`normalize.go`, `regexp.go`), with `go-digest`'s `Digest.Validate` for the digest.
    /// The error says which rule the input breaks.
    pub(crate) fn parse(input: &str) -> Result<ImageRef, String> {
        if input.is_empty() {
            return Err("the reference is empty".into());
        }
        if input.len() > MAX_REFERENCE {
            return Err(format!(
                "the reference is longer than {MAX_REFERENCE} characters"
            ));
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("it contains the character {c:?}"));
        }
        // `anchoredIdentifierRegexp`: what `docker images` shows as an ID is not a name.
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err("a 64-digit hex string is an image ID, not a repository name".into());
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (name, Some(validate_digest(digest)?)),
            None => (input, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(validate_tag(tag)?)),
            _ => (name, None),
        };
        // `splitDockerDomain`: the first component is a host when it has a `.` or a `:`, is
        // `localhost`, or has an upper-case letter (which no repository path may have).
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                host::validate(first)?;
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

    /// Host and path as the engine resolves them (`normalize.go`): no host, or one of Docker
    /// Hub's aliases, is `docker.io`, where a one-component path is under `library/`; hosts
    /// are lower-cased (DNS names are case-insensitive).
    pub(crate) fn canonical(&self) -> (String, String) {
        let host = canonical_host(self.registry_host());
        let path = if host == DEFAULT_REGISTRY && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        };
        (host, path)
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

/// A registry host as the engine resolves it: lower-cased, Docker Hub's aliases as
/// `docker.io`.
pub(crate) fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
        _ => host,
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pull_reference())
    }
}

/// `digestPat` (`algorithm:hex`, 32 or more hex digits), then `go-digest`'s `Validate`: only
/// the algorithms Docker links in, each with its exact length of lower-case hex.
fn validate_digest(d: &str) -> Result<String, String> {
    let form = || format!("digest {d:?} is not of the form algorithm:hex");
    let (algo, hex) = d.split_once(':').ok_or_else(form)?;
    let algo_ok = algo.split(['-', '_', '+', '.']).all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphabetic())
            && part.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(form());
    }
    let digits = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            return Err(format!(
                "digest algorithm {other:?} is not supported (sha256, sha384 or sha512)"
            ));
        }
    };
    if hex.len() != digits {
        return Err(format!(
            "a {algo} digest has {digits} hex digits, {d:?} has {}",
            hex.len()
        ));
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("digest {d:?} must be in lower-case hex"));
    }
    Ok(d.to_owned())
}

/// `tag`: `[\w][\w.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<String, String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = tag.len() <= 128
        && tag.starts_with(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(tag.to_owned())
    } else {
        Err(format!(
            "tag {tag:?} is not valid (letters, digits, `_`, `.`, `-`, not first `.` or `-`; at \
             most 128)"
        ))
    }
}

/// `remoteName`: components of lower-case letters and digits, joined inside by one `.`, one
/// or two `_` or any run of `-`, separated by `/`; at most [`MAX_PATH`] characters.
fn validate_path(path: &str) -> Result<(), String> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-')) {
                return false;
            }
        }
        true
    };
    if !path.split('/').all(component_ok) {
        return Err(format!(
            "repository {path:?} is not valid (lower-case letters and digits, joined by `.`, \
             `_`, `__` or `-`, between `/`)"
        ));
    }
    if path.len() > MAX_PATH {
        return Err(format!(
            "the repository path is {} characters long, more than Docker's {MAX_PATH}",
            path.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(s: &str) -> String {
        ImageRef::parse(s).unwrap().pull_reference()
    }

    const SHA256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn adds_latest_only_when_untagged() {
        assert_eq!(pull("alpine"), "alpine:latest");
        assert_eq!(pull("alpine:3.20"), "alpine:3.20");
        assert_eq!(pull("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(pull("127.0.0.1:5000/a:1"), "127.0.0.1:5000/a:1");
        assert_eq!(pull(&format!("a/b@{SHA256}")), format!("a/b@{SHA256}"));
        assert_eq!(pull(&format!("a/b:1@{SHA256}")), format!("a/b:1@{SHA256}"));
    }

    #[test]
    fn canonical_names_are_dockers() {
        for (input, host, path) in [
            ("redis:7", "docker.io", "library/redis"),
            ("library/redis:7", "docker.io", "library/redis"),
            ("docker.io/redis:7", "docker.io", "library/redis"),
            ("index.docker.io/redis", "docker.io", "library/redis"),
            (
                "registry-1.docker.io/library/redis",
                "docker.io",
                "library/redis",
            ),
            ("bitnami/redis", "docker.io", "bitnami/redis"),
            ("quay.io/team/tool:1", "quay.io", "team/tool"),
            ("Quay.IO/team/tool", "quay.io", "team/tool"),
            ("localhost:5000/a", "localhost:5000", "a"),
        ] {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.canonical(), (host.to_owned(), path.to_owned()), "{input}");
        }
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

    /// Each row: input, and the repository or the rule its error names. From
    /// `distribution/reference`'s grammar and `normalize_test.go`, and `go-digest`.
    #[test]
    fn follows_dockers_reference_grammar() {
        let v6 = ImageRef::parse("[2001:db8::1]:5000/repo:1").unwrap();
        assert_eq!(v6.registry.as_deref(), Some("[2001:db8::1]:5000"));
        assert_eq!(v6.tag.as_deref(), Some("1"));
        assert_eq!(v6.pull_reference(), "[2001:db8::1]:5000/repo:1");
        assert_eq!(
            ImageRef::parse("[::1]/a/b").unwrap().registry.as_deref(),
            Some("[::1]")
        );
        let upper = ImageRef::parse("Registry.Example.com/team/app").unwrap();
        assert_eq!(upper.registry.as_deref(), Some("Registry.Example.com"));
        assert_eq!(
            ImageRef::parse("Docker/app").unwrap().registry.as_deref(),
            Some("Docker"),
            "an upper-case first component is a host"
        );
        assert_eq!(
            ImageRef::parse("a__b/c-----d/e.f_g").unwrap().repository,
            "a__b/c-----d/e.f_g"
        );
        assert_eq!(
            ImageRef::parse("ruby:_tag").unwrap().tag.as_deref(),
            Some("_tag")
        );
        let long_path = "a".repeat(MAX_PATH);
        assert!(ImageRef::parse(&format!("registry.example.com/{long_path}")).is_ok());
        for sha in [
            SHA256.to_owned(),
            format!("sha384:{}", "a".repeat(96)),
            format!("sha512:{}", "0".repeat(128)),
        ] {
            assert!(ImageRef::parse(&format!("a@{sha}")).is_ok(), "{sha}");
        }

        for (bad, rule) in [
            ("", "empty"),
            (" alpine", "character"),
            ("alpine\n", "character"),
            ("Alpine", "repository"),
            ("$IMAGE", "repository"),
            ("a/../b", "repository"),
            ("a//b", "repository"),
            ("a___b", "repository"),
            ("a_.b", "repository"),
            ("-rm", "repository"),
            ("a:", "tag"),
            ("a:-x", "tag"),
            ("a:.x", "tag"),
            (&format!("a:{}", "t".repeat(129)), "tag"),
            ("a@sha256:xyz", "algorithm:hex"),
            ("a@md5:0123456789abcdef0123456789abcdef", "not supported"),
            (
                "a@sha256:0123456789abcdef0123456789abcdef0123456789",
                "64 hex digits",
            ),
            (
                "a@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                "lower-case",
            ),
            (
                "a@sha512:0123456789abcdef0123456789abcdef",
                "128 hex digits",
            ),
            ("host:99999/a", "port"),
            ("[2001:db8::1/a", "registry host"),
            ("[fe80::1%eth0]:5000/a", "registry host"),
            ("a\0b", "character"),
            (&"0".repeat(64), "image ID"),
            (&format!("registry.example.com/{long_path}b"), "255"),
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(err.contains(rule), "{bad:?}: {err}");
        }
        assert!(ImageRef::parse(&"a".repeat(2000)).is_err());
    }
}
