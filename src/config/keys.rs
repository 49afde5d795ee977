//! Making a TOML error of the driver config one plain line: where, what, and for an unknown
//! key the nearest known one ("did you mean `default_image`?").

/// The top-level keys (the build container's settings are top-level, flattened in, so the
/// TOML parser cannot list them itself).
pub(crate) const TOP_LEVEL: &[&str] = &[
    "default_image",
    "helper_image",
    "pull_policy",
    "allowed_pull_policies",
    "builds_dir",
    "cache_dir",
    "network_per_job",
    "user",
    "allowed_images",
    "allowed_services",
    "allowed_users",
    "privileged",
    "allowed_privileged_images",
    "allowed_privileged_services",
    "container_labels",
    "disable_cache",
    "disable_entrypoint_overwrite",
    "wait_for_services_timeout",
    "cpus",
    "memory",
    "memory_swap",
    "memory_reservation",
    "shm_size",
    "tmpfs",
    "cpuset_cpus",
    "cgroup_parent",
    "security_opt",
    "devices",
    "gpus",
    "volumes",
    "cap_add",
    "cap_drop",
    "dns",
    "dns_search",
    "extra_hosts",
    "network_mode",
    "network_mtu",
    "cpuset_mems",
    "cpu_shares",
    "oom_kill_disable",
    "oom_score_adjust",
    "ulimit",
    "runtime",
    "sysctls",
    "userns_mode",
    "ipcmode",
    "group_add",
    "device_cgroup_rules",
    "services",
    "docker",
    "ecr",
    "registry",
    "pull_through",
    "audit",
    "security",
    "allowed_credential_helpers",
    "credential_helpers",
    "trust",
];

/// The keys of `[services]` (its limits are flattened in too).
pub(crate) const SERVICES: &[&str] = &[
    "cpus",
    "memory",
    "memory_swap",
    "memory_reservation",
    "shm_size",
    "tmpfs",
    "cpuset_cpus",
    "cgroup_parent",
    "security_opt",
    "devices",
    "gpus",
    "privileged",
    "limit",
];

/// One line for a TOML error of `text`: `line N: <what>`, with the nearest known key when the
/// error is an unknown one.
pub(crate) fn describe(text: &str, error: &toml::de::Error) -> String {
    let start = error.span().map_or(0, |s| s.start).min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let message = error.message().trim();
    // Where: the line, and the key (or table) written there.
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or_default().trim();
    let what = match line_text.split_once('=') {
        Some((key, _)) => format!("line {line}, `{}`", key.trim()),
        None if line_text.starts_with('[') => format!("line {line}, {line_text}"),
        None => format!("line {line}"),
    };
    let Some((key, rest)) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
    else {
        return format!("{what}: {message}");
    };
    let table = table_at(text, start);
    // The parser lists the known keys, except for the tables with flattened parts.
    let listed: Vec<&str> = rest
        .split_once("expected one of ")
        .map(|(_, list)| list.split(", ").map(|k| k.trim_matches('`')).collect())
        .unwrap_or_default();
    let known: &[&str] = match (listed.is_empty(), table.as_deref()) {
        (false, _) => &listed,
        (true, None) => TOP_LEVEL,
        (true, Some("services")) => SERVICES,
        (true, Some(_)) => &[],
    };
    let place = match &table {
        Some(t) => format!(" in [{t}]"),
        None => String::new(),
    };
    match nearest(key, known) {
        Some(near) => format!("line {line}: unknown key `{key}`{place}; did you mean `{near}`?"),
        None => format!(
            "line {line}: unknown key `{key}`{place}; runner-config/ecr-executor.toml lists \
             every key"
        ),
    }
}

/// The table whose body holds byte `at` of `text`: the last `[name]` or `[[name]]` header
/// before it (or on its line), `None` at the top level.
fn table_at(text: &str, at: usize) -> Option<String> {
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    text[..line_end]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|header| header.trim_matches(['[', ']', ' ']).to_owned())
}

/// The known key most like `key`, if one is close enough to be a typo of it.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, k)| {
            *score >= 0.85 || strsim::damerau_levenshtein(key, k) <= (key.len() / 4).max(1)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn unknown_keys_get_the_nearest_known_one() {
        for (text, expected) in [
            (
                "defualt_image = \"x\"",
                "line 1: unknown key `defualt_image`; did you mean `default_image`?",
            ),
            ("cpu = 1", "line 1: unknown key `cpu`; did you mean `cpus`?"),
            (
                "[docker]\nhots = \"x\"",
                "line 2: unknown key `hots` in [docker]; did you mean `host`?",
            ),
            (
                "[services]\nmemroy = 1",
                "line 1: unknown key `memroy` in [services]; did you mean `memory`?",
            ),
            (
                "[[registry]]\nhost = \"a\"\nrole_ran = \"x\"",
                "line 3: unknown key `role_ran` in [registry]; did you mean `role_arn`?",
            ),
        ] {
            assert_eq!(Config::parse(text).unwrap_err(), expected, "{text}");
        }
        let far = Config::parse("completely_else = 1").unwrap_err();
        assert!(
            far.contains("lists every key") && !far.contains("did you mean"),
            "{far}"
        );
        let other = Config::parse("builds_dir = 5").unwrap_err();
        assert_eq!(
            other,
            "line 1, `builds_dir`: invalid type: integer `5`, expected a string"
        );
    }

    /// The lists match the commented reference, both ways: every key it shows is known, and
    /// every known key is shown there.
    #[test]
    fn the_lists_are_the_reference_files_keys() {
        let reference = include_str!("../../runner-config/ecr-executor.toml");
        let (mut top, mut services) = (Vec::new(), Vec::new());
        let mut table = None;
        for line in reference.lines() {
            let line = line.trim_start_matches("# ").trim();
            if line.starts_with('[') {
                table = Some(line.trim_matches(['[', ']']).to_owned());
                if !line.starts_with("[[") {
                    top.push(line.trim_matches(['[', ']']).to_owned());
                } else {
                    top.push(table.clone().unwrap_or_default());
                }
                continue;
            }
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                continue;
            }
            match table.as_deref() {
                None => top.push(key.to_owned()),
                Some("services") => services.push(key.to_owned()),
                Some(_) => {}
            }
        }
        for key in TOP_LEVEL {
            assert!(
                top.iter().any(|k| k == key),
                "{key} is not in the reference"
            );
        }
        for key in &top {
            assert!(
                TOP_LEVEL.contains(&key.as_str()),
                "{key} is not in TOP_LEVEL"
            );
        }
        for key in SERVICES {
            assert!(
                services.iter().any(|k| k == key),
                "[services] {key} is not in the reference"
            );
        }
        for key in &services {
            assert!(
                SERVICES.contains(&key.as_str()),
                "[services] {key} is not in SERVICES"
            );
        }
    }
}
