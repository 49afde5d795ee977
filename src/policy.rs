//! The operator's allow-lists, compiled once when the config loads and checked against the
//! job payload (never against `CUSTOM_ENV_*`, which job YAML can override). Patterns are
//! doublestar globs as in the Docker executor (`*` stays within one path segment, `**`
//! crosses them); a leading `!` excludes (an extension of this driver). An empty list allows
//! everything. A leaf: it names nothing else of the crate.

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

/// A compiled allow-list, with the patterns as written (for messages).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub(crate) struct AllowList {
    patterns: Vec<String>,
    allow: Vec<GlobMatcher>,
    deny: Vec<GlobMatcher>,
}

impl TryFrom<Vec<String>> for AllowList {
    type Error = String;

    /// Compiles `patterns`; an invalid pattern is an error naming it.
    fn try_from(patterns: Vec<String>) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for pattern in &patterns {
            let (negated, glob) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let matcher = GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
            if negated {
                list.deny.push(matcher);
            } else {
                list.allow.push(matcher);
            }
        }
        list.patterns = patterns;
        Ok(list)
    }
}

/// Two lists are the same when their patterns are.
impl PartialEq for AllowList {
    fn eq(&self, other: &AllowList) -> bool {
        self.patterns == other.patterns
    }
}

impl AllowList {
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as the operator wrote them.
    pub(crate) fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `name` is allowed: it matches no `!` pattern, and some other pattern (or the
    /// list has none).
    pub(crate) fn allows(&self, name: &str) -> bool {
        !self.deny.iter().any(|d| d.is_match(name))
            && (self.allow.is_empty() || self.allow.iter().any(|a| a.is_match(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> AllowList {
        AllowList::try_from(p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// GitLab Runner's `allowed_images_test.go` cases and their neighbours: the name is matched
    /// as written, never with `:latest` or `library/` added; `*` stays within a segment.
    #[test]
    fn names_match_as_written_with_doublestar_rules() {
        for (pattern, name, allowed) in [
            ("*/*:*", "library/ruby", false),
            ("*/*:*", "library/ruby:latest", true),
            ("*/*:*", "ruby", false),
            ("*", "ruby", true),
            ("*", "ruby:latest", true),
            ("*", "my.registry.tld/ruby", false),
            ("**/*", "ruby", true),
            ("**/*", "my.registry.tld/group/ruby:2", true),
            ("ruby:*", "ruby:2.6", true),
            ("ruby:*", "ruby", false),
            ("ruby", "ruby:latest", false),
            (
                "my.registry.tld/*/*/*",
                "my.registry.tld/group/subgroup/ruby",
                true,
            ),
            ("my.registry.tld/*/*", "my.registry.tld/ruby", false),
            (
                "*.dkr.ecr.*.amazonaws.com/**",
                "1.dkr.ecr.eu-west-1.amazonaws.com/a/b:1",
                true,
            ),
        ] {
            assert_eq!(
                list(&[pattern]).allows(name),
                allowed,
                "{pattern} vs {name}"
            );
        }
    }

    #[test]
    fn an_empty_list_allows_all_and_exclusions_win() {
        assert!(list(&[]).allows("anything/at:all"));
        let l = list(&["ruby:*", "registry.example.com/team/**", "!ruby:*-alpine"]);
        assert!(l.allows("ruby:3.3"));
        assert!(!l.allows("ruby:3.3-alpine"));
        assert!(l.allows("registry.example.com/team/a/b:1"));
        assert!(!l.allows("registry.example.com/other/a:1"));
        assert!(list(&["!evil/*"]).allows("good:1"));
        assert!(!list(&["!evil/*"]).allows("evil/x"));
        assert_eq!(l.patterns().len(), 3);
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = AllowList::try_from(vec!["a[".to_owned()]).unwrap_err();
        assert!(err.contains("a["), "{err}");
    }
}
