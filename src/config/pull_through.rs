//! `[[pull_through]]`: images of an upstream registry pulled through an ECR pull-through cache
//! instead, with no change to any `.gitlab-ci.yml`. ECR lays a cache out as
//! `<account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<upstream path>`, Docker Hub's official
//! images under `library/`; [`route`] computes that name from what the job wrote.

use serde::Deserialize;

use crate::policy::AllowList;
use crate::reference::{ImageRef, canonical_host, host};

/// What happens when the cache cannot serve an image (no rule on the ECR side, repository or
/// tag not found, access denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Fallback {
    /// Pull the name the job wrote, from the upstream registry, and say so in the job log.
    Upstream,
    /// Fail the job's prepare, naming both names.
    #[default]
    Fail,
}

/// One `[[pull_through]]` rule, checked when the config loads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRule")]
pub(crate) struct PullThrough {
    /// The upstream registry host, as the engine resolves it (`docker.io` for Docker Hub and
    /// its aliases, lower case).
    pub upstream: String,
    /// The cache's registry host, as written.
    pub registry: String,
    /// The rule's repository prefix on that registry.
    pub prefix: String,
    pub fallback: Fallback,
    /// Upstream repository paths the rule covers (globs as the allow-lists'); empty: all.
    pub images: AllowList,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    upstream: String,
    prefix: String,
    #[serde(default)]
    fallback: Fallback,
    #[serde(default)]
    images: AllowList,
}

impl TryFrom<RawRule> for PullThrough {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<PullThrough, String> {
        let upstream = raw.upstream.trim();
        host::validate(upstream).map_err(|e| format!("`upstream`: {e}"))?;
        let prefix = raw.prefix.trim().trim_end_matches('/');
        let bad_prefix = |why: String| {
            format!("`prefix` {prefix:?} is not `<ECR host>/<repository prefix>`: {why}")
        };
        let parsed = ImageRef::parse(prefix).map_err(bad_prefix)?;
        let Some(registry) = parsed.registry else {
            return Err(bad_prefix("it names no registry host".into()));
        };
        if parsed.tag.is_some() || parsed.digest.is_some() {
            return Err(bad_prefix("a prefix has no tag or digest".into()));
        }
        let upstream = canonical_host(upstream);
        if canonical_host(&registry) == upstream {
            return Err(format!(
                "`upstream` {upstream:?} is the cache's own registry: the rule would loop"
            ));
        }
        Ok(PullThrough {
            upstream,
            registry,
            prefix: parsed.repository,
            fallback: raw.fallback,
            images: raw.images,
        })
    }
}

/// An image routed through a pull-through cache.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    /// The name pulled: the cache's.
    pub image: ImageRef,
    /// Which rule (0-based, in the config's order).
    pub rule: usize,
    pub upstream: String,
    pub fallback: Fallback,
}

impl PullThrough {
    /// The cache's name for `image` when this rule covers it: same tag, same digest.
    fn map(&self, image: &ImageRef) -> Option<Result<ImageRef, String>> {
        let (host, path) = image.canonical();
        if host != self.upstream || (!self.images.is_empty() && !self.images.allows(&path)) {
            return None;
        }
        let routed = ImageRef {
            registry: Some(self.registry.clone()),
            repository: format!("{}/{path}", self.prefix),
            tag: image.tag.clone(),
            digest: image.digest.clone(),
        };
        // The longer path must still be a name Docker takes.
        Some(ImageRef::parse(&routed.pull_reference()).map(|_| routed))
    }
}

/// The first rule that covers `image`, and the name it pulls instead. An error when the cache's
/// name would not be a valid reference (a path over 255 characters once prefixed).
pub(crate) fn route(rules: &[PullThrough], image: &ImageRef) -> Result<Option<Route>, String> {
    for (index, rule) in rules.iter().enumerate() {
        match rule.map(image) {
            None => continue,
            Some(Ok(routed)) => {
                return Ok(Some(Route {
                    image: routed,
                    rule: index,
                    upstream: rule.upstream.clone(),
                    fallback: rule.fallback,
                }));
            }
            Some(Err(reason)) => {
                return Err(format!(
                    "pull-through rule {} for {} would pull it as an invalid name: {reason}",
                    index + 1,
                    rule.upstream
                ));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    fn rule(upstream: &str, prefix: &str, images: &[&str]) -> PullThrough {
        PullThrough::try_from(RawRule {
            upstream: upstream.into(),
            prefix: prefix.into(),
            fallback: Fallback::Upstream,
            images: AllowList::try_from(images.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
        })
        .unwrap()
    }

    fn routed(rules: &[PullThrough], image: &str) -> Option<String> {
        route(rules, &ImageRef::parse(image).unwrap())
            .unwrap()
            .map(|r| r.image.pull_reference())
    }

    #[test]
    fn names_map_as_ecr_lays_the_cache_out() {
        let hub = format!("{ECR}/docker-hub");
        let quay = format!("{ECR}/quay");
        let rules = [rule("docker.io", &hub, &[]), rule("quay.io", &quay, &[])];
        for (image, expected) in [
            ("redis:7", format!("{hub}/library/redis:7")),
            ("library/redis:7", format!("{hub}/library/redis:7")),
            ("docker.io/redis:7", format!("{hub}/library/redis:7")),
            (
                "index.docker.io/library/redis:7",
                format!("{hub}/library/redis:7"),
            ),
            (
                "registry-1.docker.io/redis:7",
                format!("{hub}/library/redis:7"),
            ),
            ("redis", format!("{hub}/library/redis:latest")),
            ("bitnami/redis:7", format!("{hub}/bitnami/redis:7")),
            ("quay.io/team/tool:1", format!("{quay}/team/tool:1")),
            ("QUAY.io/team/tool:1", format!("{quay}/team/tool:1")),
        ] {
            assert_eq!(routed(&rules, image), Some(expected), "{image}");
        }
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            routed(&rules, &format!("redis@{digest}")),
            Some(format!("{hub}/library/redis@{digest}")),
            "a digest pull stays a digest pull"
        );
        assert_eq!(
            routed(&rules, &format!("redis:7@{digest}")),
            Some(format!("{hub}/library/redis:7@{digest}"))
        );
        for untouched in [
            "ghcr.io/team/app:1",
            "quay.io.evil.com/team/tool:1",
            "myquay.io/team/tool:1",
            &format!("{ECR}/team/app:1"),
        ] {
            assert_eq!(routed(&rules, untouched), None, "{untouched}");
        }
    }

    #[test]
    fn images_narrow_a_rule_and_the_first_match_wins() {
        let rules = [
            rule("docker.io", &format!("{ECR}/official"), &["library/*"]),
            rule("docker.io", &format!("{ECR}/hub"), &[]),
        ];
        assert_eq!(
            routed(&rules, "alpine:3"),
            Some(format!("{ECR}/official/library/alpine:3"))
        );
        assert_eq!(
            routed(&rules, "bitnami/redis"),
            Some(format!("{ECR}/hub/bitnami/redis:latest"))
        );
    }

    #[test]
    fn rules_are_checked_when_the_config_loads() {
        let raw = |upstream: &str, prefix: &str| {
            PullThrough::try_from(RawRule {
                upstream: upstream.into(),
                prefix: prefix.into(),
                fallback: Fallback::Fail,
                images: AllowList::default(),
            })
        };
        assert!(raw("docker.io", &format!("{ECR}/docker-hub/")).is_ok());
        for (upstream, prefix, rule) in [
            ("docker.io", "docker-hub", "no registry host"),
            ("docker.io", &format!("{ECR}/Hub"), "prefix"),
            ("docker.io", &format!("{ECR}/hub:1"), "no tag"),
            ("bad host!", &format!("{ECR}/hub"), "upstream"),
            (ECR, &format!("{ECR}/hub"), "loop"),
        ] {
            let err = raw(upstream, prefix).unwrap_err();
            assert!(err.contains(rule), "{upstream} {prefix}: {err}");
        }
        let long = rule("docker.io", &format!("{ECR}/{}", "p".repeat(250)), &[]);
        let err = route(&[long], &ImageRef::parse("bitnami/redis").unwrap()).unwrap_err();
        assert!(err.contains("255"), "{err}");
    }
}
