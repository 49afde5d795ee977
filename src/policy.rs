//! The operator's allow-lists, checked against the job payload (never against `CUSTOM_ENV_*`,
//! which job YAML can override). Patterns are doublestar globs as in the Docker executor
//! (`*` stays within one path segment, `**` crosses them); a leading `!` excludes.
//! An empty list allows everything.

use globset::{Glob, GlobMatcher};

/// A compiled allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    allow: Vec<GlobMatcher>,
    deny: Vec<GlobMatcher>,
}

impl AllowList {
    /// Compiles `patterns`; an invalid pattern is reported with the setting's name.
    pub fn new(setting: &str, patterns: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for pattern in patterns {
            let (negated, glob) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let matcher = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map(|g: Glob| g.compile_matcher())
                .map_err(|e| format!("`{setting}`: invalid pattern {pattern:?}: {e}"))?;
            if negated {
                list.deny.push(matcher);
            } else {
                list.allow.push(matcher);
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether any of `names` (spellings of one image) is allowed.
    pub fn allows(&self, names: &[&str]) -> bool {
        if names
            .iter()
            .any(|n| self.deny.iter().any(|d| d.is_match(n)))
        {
            return false;
        }
        self.allow.is_empty()
            || names
                .iter()
                .any(|n| self.allow.iter().any(|a| a.is_match(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> AllowList {
        AllowList::new(
            "allowed_images",
            &p.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn globs_follow_doublestar_rules() {
        let l = list(&["ruby:*", "registry.example.com/team/**", "!ruby:*-alpine"]);
        assert!(l.allows(&["ruby:3.3"]));
        assert!(!l.allows(&["ruby:3.3-alpine"]));
        assert!(l.allows(&["registry.example.com/team/a/b:1"]));
        assert!(!l.allows(&["registry.example.com/other/a:1"]));
        assert!(!l.allows(&["python:3"]));
        assert!(list(&[]).allows(&["anything"]));
        assert!(list(&["!evil/*"]).allows(&["good:1"]));
        assert!(!list(&["!evil/*"]).allows(&["evil/x"]));
        assert!(!list(&["*"]).allows(&["team/app"]), "* does not cross /");
    }

    #[test]
    fn bad_patterns_name_the_setting() {
        let err = AllowList::new("allowed_services", &["a[".to_owned()]).unwrap_err();
        assert!(err.contains("allowed_services"), "{err}");
    }
}
