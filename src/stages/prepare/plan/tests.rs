//! Plan decisions: image, policies, services, helper image.

use super::*;
use crate::config::Config;
use crate::job::Env;
use crate::stages::Context;

fn ctx(vars: &[(&str, &str)], config: &str) -> Context {
    let env = Env::from_pairs(
        vars.iter()
            .map(|(k, v)| (format!("CUSTOM_ENV_{k}").into(), (*v).into())),
    );
    Context {
        env,
        config: Config::parse(config).unwrap(),
    }
}

fn payload(json: &str) -> JobPayload {
    JobPayload::parse(json.as_bytes()).unwrap()
}

#[test]
fn image_comes_from_payload_then_variable_then_default() {
    let c = ctx(
        &[("CI_JOB_IMAGE", "from-var:1")],
        r#"default_image = "dflt:1""#,
    );
    let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"from-payload:1"}}"#)).unwrap();
    assert_eq!(p.image.to_string(), "from-payload:1");
    let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
    assert_eq!(p.image.to_string(), "from-var:1");
    let c = ctx(&[], r#"default_image = "dflt:1""#);
    let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
    assert_eq!(p.image.to_string(), "dflt:1");
    let c = ctx(&[], "");
    assert!(matches!(
        Plan::resolve(&c, &JobPayload::default()),
        Err(Error::Policy(PolicyError::NoImage))
    ));
}

#[test]
fn job_pull_policy_must_be_allowed() {
    let c = ctx(&[], r#"pull_policy = "if-not-present""#);
    let err = Plan::resolve(
        &c,
        &payload(r#"{"image":{"name":"a","pull_policy":["always"]}}"#),
    )
    .unwrap_err();
    assert!(err.to_string().contains("allowed_pull_policies"), "{err}");
    let c = ctx(
        &[],
        r#"pull_policy = "always"
        allowed_pull_policies = ["always", "if-not-present"]"#,
    );
    let p = Plan::resolve(
        &c,
        &payload(r#"{"image":{"name":"a","pull_policy":["if-not-present","always"]}}"#),
    )
    .unwrap();
    assert_eq!(
        p.pull_policies,
        vec![PullPolicy::IfNotPresent, PullPolicy::Always]
    );
    let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"a"}}"#)).unwrap();
    assert_eq!(p.pull_policies, vec![PullPolicy::Always]);
}

#[test]
fn bad_image_is_a_build_failure() {
    let c = ctx(&[("CI_JOB_IMAGE", "Not Valid")], "");
    let err = Plan::resolve(&c, &JobPayload::default()).unwrap_err();
    assert_eq!(err.failure(), crate::error::Failure::Build);
}

#[test]
fn helper_image_follows_the_runner() {
    let c = ctx(
        &[
            ("CI_RUNNER_VERSION", "17.11.4"),
            ("CI_RUNNER_EXECUTABLE_ARCH", "linux/arm64"),
        ],
        "",
    );
    assert_eq!(
        default_helper_image(&c.env.vars),
        format!("{GITLAB_HELPER_REPOSITORY}:arm64-v17.11.4")
    );
    let c = ctx(
        &[
            ("CI_RUNNER_VERSION", "17.12.0~pre.48.gabcdef12"),
            ("CI_RUNNER_REVISION", "abcdef12"),
            ("CI_RUNNER_EXECUTABLE_ARCH", "linux/amd64"),
        ],
        "",
    );
    assert_eq!(
        default_helper_image(&c.env.vars),
        format!("{GITLAB_HELPER_REPOSITORY}:x86_64-abcdef12")
    );
    let c = ctx(&[("CI_JOB_IMAGE", "a")], r#"helper_image = "my/helper:2""#);
    let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
    assert_eq!(p.helper_image.to_string(), "my/helper:2");
}

#[test]
fn network_per_job_from_flag_or_config() {
    let c = ctx(
        &[("CI_JOB_IMAGE", "a"), ("FF_NETWORK_PER_BUILD", "true")],
        "",
    );
    assert!(
        Plan::resolve(&c, &JobPayload::default())
            .unwrap()
            .network_per_job
    );
    let c = ctx(&[("CI_JOB_IMAGE", "a")], "network_per_job = true");
    assert!(
        Plan::resolve(&c, &JobPayload::default())
            .unwrap()
            .network_per_job
    );
    let c = ctx(&[("CI_JOB_IMAGE", "a")], "");
    assert!(
        !Plan::resolve(&c, &JobPayload::default())
            .unwrap()
            .network_per_job
    );
}

fn full_payload(extra: &str) -> JobPayload {
    payload(&format!(r#"{{"image": {{"name": "ruby:3.3"}}, {extra}}}"#))
}

#[test]
fn allowed_images_are_checked_against_the_payload() {
    let c = ctx(
        &[("CI_JOB_IMAGE", "ruby:3.3")],
        r#"allowed_images = ["ruby:*", "!ruby:*-alpine"]"#,
    );
    assert!(Plan::resolve(&c, &payload(r#"{"image":{"name":"ruby:3.3"}}"#)).is_ok());
    let err = Plan::resolve(&c, &payload(r#"{"image":{"name":"python:3"}}"#)).unwrap_err();
    assert!(err.to_string().contains("allowed_images"), "{err}");
    assert_eq!(err.failure(), crate::error::Failure::Build);
    let err = Plan::resolve(&c, &payload(r#"{"image":{"name":"ruby:3.3-alpine"}}"#)).unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::NotAllowed { .. })));
}

#[test]
fn services_get_aliases_variables_and_policies() {
    let c = ctx(
        &[],
        r#"allowed_services = ["redis:*", "registry.example.com/**"]"#,
    );
    let p = Plan::resolve(
        &c,
        &full_payload(
            r#""variables": [{"key":"PUBLIC","value":"p","public":true},{"key":"SECRET","value":"s","public":false}],
               "services": [{"name":"redis:7","alias":"cache,kv"},
                            {"name":"registry.example.com/team/db:16","variables":[{"key":"HEALTHCHECK_TCP_PORT","value":"5432"}]}]"#,
        ),
    )
    .unwrap();
    assert!(
        p.network_per_job,
        "services force a network of the job's own"
    );
    assert_eq!(p.services[0].aliases, ["cache", "kv", "redis"]);
    assert_eq!(
        p.services[1].aliases,
        [
            "registry.example.com__team__db",
            "registry.example.com-team-db"
        ]
    );
    assert_eq!(p.services[0].env, ["PUBLIC=p"]);
    assert_eq!(p.services[1].healthcheck_port, Some(5432));
    assert_eq!(
        healthcheck_ports(&p.services[1], &["80/tcp".into()]),
        [5432]
    );
    assert_eq!(
        healthcheck_ports(&p.services[0], &["6379/tcp".into(), "53/udp".into()]),
        [6379]
    );
    let err = Plan::resolve(&c, &full_payload(r#""services": [{"name":"mysql:8"}]"#)).unwrap_err();
    assert!(err.to_string().contains("allowed_services"), "{err}");
}

#[test]
fn users_privileges_and_entrypoints_follow_the_operator() {
    let job_user = r#""image": {"name": "ruby:3.3", "executor_opts": {"docker": {"user": "1000", "platform": "linux/arm64"}}}"#;
    let c = ctx(&[], r#"allowed_users = ["1000"]"#);
    let p = Plan::resolve(&c, &payload(&format!("{{{job_user}}}"))).unwrap();
    assert_eq!(p.user.as_deref(), Some("1000"));
    assert_eq!(p.platform.as_deref(), Some("linux/arm64"));
    let c = ctx(&[], r#"allowed_users = ["2000"]"#);
    let err = Plan::resolve(&c, &payload(&format!("{{{job_user}}}"))).unwrap_err();
    assert!(err.to_string().contains("allowed_users"), "{err}");
    let c = ctx(&[], r#"user = "nobody""#);
    let p = Plan::resolve(&c, &payload(&format!("{{{job_user}}}"))).unwrap();
    assert_eq!(
        p.user.as_deref(),
        Some("nobody"),
        "the operator's user wins"
    );

    // As the Docker executor: an image not on the list runs unprivileged, and the job log
    // says so; one on it runs privileged.
    let c = ctx(
        &[],
        "privileged = true\nallowed_privileged_images = [\"docker:*\"]",
    );
    let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"ruby:3.3"}}"#)).unwrap();
    assert!(!p.privileged);
    assert!(
        p.notices[0].contains("ruby:3.3") && p.notices[0].contains("allowed_privileged_images"),
        "{:?}",
        p.notices
    );
    let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"docker:27"}}"#)).unwrap();
    assert!(p.privileged && p.notices.is_empty());
    let c = ctx(&[], "privileged = true");
    assert!(
        Plan::resolve(&c, &payload(r#"{"image":{"name":"ruby"}}"#))
            .unwrap()
            .privileged
    );

    let c = ctx(&[], "disable_entrypoint_overwrite = true");
    let err =
        Plan::resolve(&c, &payload(r#"{"image":{"name":"a","entrypoint":[""]}}"#)).unwrap_err();
    assert!(
        err.to_string().contains("disable_entrypoint_overwrite"),
        "{err}"
    );
}

#[test]
fn derived_service_names() {
    let names = |s: &str| derived_names(&ImageRef::parse(s).unwrap());
    assert_eq!(names("postgres:16"), ["postgres"]);
    assert_eq!(
        names("tutum/wordpress"),
        ["tutum__wordpress", "tutum-wordpress"]
    );
    assert_eq!(
        names("localhost:5000/a/b:1"),
        ["localhost:5000__a__b", "localhost:5000-a-b"]
    );
}

#[test]
fn services_limit_and_privileged_services_list() {
    let two =
        r#"{"image":{"name":"a"},"services":[{"name":"postgres:16"},{"name":"docker:27-dind"}]}"#;
    let c = ctx(&[], "[services]\nlimit = 1");
    let err = Plan::resolve(&c, &payload(two)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Policy(PolicyError::TooManyServices { count: 2, limit: 1 })
        ),
        "{err}"
    );
    assert_eq!(err.failure(), crate::error::Failure::Build);
    assert!(err.to_string().contains("[services] limit"), "{err}");
    let c = ctx(&[], "[services]\nlimit = 2");
    assert_eq!(Plan::resolve(&c, &payload(two)).unwrap().services.len(), 2);

    // Privileged services are decided by their own list only, as in the Docker executor
    // (`isInPrivilegedServiceList`): the images' list never applies to them.
    let c = ctx(
        &[],
        "privileged = true\nallowed_privileged_images = [\"a\"]\nallowed_privileged_services = [\"docker:*-dind\"]",
    );
    let p = Plan::resolve(&c, &payload(two)).unwrap();
    assert!(p.privileged, "the job image is on its list");
    assert!(
        !p.services[0].privileged,
        "postgres is not on the services' list"
    );
    assert!(p.services[1].privileged);
    assert!(
        p.notices.iter().any(|n| n.contains("postgres:16")),
        "{:?}",
        p.notices
    );
    let c = ctx(
        &[],
        "privileged = true\nallowed_privileged_images = [\"a\"]",
    );
    let p = Plan::resolve(&c, &payload(two)).unwrap();
    assert!(
        p.services.iter().all(|s| s.privileged),
        "an empty services' list allows any service, whatever the images' list says"
    );
    let c = ctx(&[], "privileged = true\n[services]\nprivileged = false");
    let p = Plan::resolve(&c, &payload(two)).unwrap();
    assert!(p.privileged && p.services.iter().all(|s| !s.privileged));
}

/// Point 1 of the parity issue: the name as written, as GitLab Runner's `VerifyAllowedImage`.
#[test]
fn allow_lists_see_the_image_as_the_job_wrote_it() {
    for (image, allowed) in [
        ("ruby", false),
        ("ruby:3", true),
        ("library/ruby:3", true),
        ("library/ruby", false),
    ] {
        let c = ctx(&[], r#"allowed_images = ["*/*:*", "ruby:*"]"#);
        let json = format!(r#"{{"image":{{"name":"{image}"}}}}"#);
        let result = Plan::resolve(&c, &payload(&json));
        assert_eq!(result.is_ok(), allowed, "{image}: {result:?}");
        if let Err(err) = result {
            assert!(
                matches!(err, Error::Policy(PolicyError::NotAllowed { .. })),
                "{err}"
            );
            assert!(
                err.to_string().contains("*/*:*, ruby:*"),
                "lists the patterns: {err}"
            );
        }
    }
    // Services too.
    let c = ctx(&[], r#"allowed_services = ["redis:*"]"#);
    let err = Plan::resolve(&c, &full_payload(r#""services": [{"name":"redis"}]"#)).unwrap_err();
    assert!(err.to_string().contains("\"redis\""), "{err}");
}

/// Point 2: the runner's own image is always allowed, and a job without `image:` is not checked.
#[test]
fn the_runners_default_image_is_always_allowed() {
    let c = ctx(
        &[],
        r#"default_image = "alpine:3"
        allowed_images = ["ruby:*"]"#,
    );
    let p = Plan::resolve(&c, &JobPayload::default()).unwrap();
    assert_eq!(p.image.to_string(), "alpine:3");
    let p = Plan::resolve(&c, &payload(r#"{"image":{"name":"alpine:3"}}"#)).unwrap();
    assert_eq!(
        p.image.to_string(),
        "alpine:3",
        "named exactly as configured"
    );
    let err = Plan::resolve(&c, &payload(r#"{"image":{"name":"alpine:3.20"}}"#)).unwrap_err();
    assert!(
        matches!(err, Error::Policy(PolicyError::NotAllowed { .. })),
        "{err}"
    );
}

/// Point 3: the effective pull policies, as `ComputeEffectivePullPolicies`.
#[test]
fn pull_policies_are_the_allowed_part_of_what_was_asked() {
    use PullPolicy::{Always, IfNotPresent, Never};
    let job = |policies: &str| {
        payload(&format!(
            r#"{{"image":{{"name":"a","pull_policy":{policies}}}}}"#
        ))
    };
    for (config, requested, expected) in [
        // Only `always` allowed: the job's list keeps what is allowed.
        (
            r#"allowed_pull_policies = ["always"]"#,
            r#"["always","if-not-present"]"#,
            Ok(vec![Always]),
        ),
        (
            r#"allowed_pull_policies = ["always"]"#,
            r#"["if-not-present"]"#,
            Err("the job's .gitlab-ci.yml"),
        ),
        // Nothing configured: `always` is the default and the only allowed policy.
        ("", r#"["if-not-present"]"#, Err("the job's .gitlab-ci.yml")),
        ("", "[]", Ok(vec![Always])),
        // The configured policies, filtered the same way.
        (
            r#"pull_policy = ["never","if-not-present"]
            allowed_pull_policies = ["if-not-present"]"#,
            "[]",
            Ok(vec![IfNotPresent]),
        ),
        (
            r#"pull_policy = "never"
            allowed_pull_policies = ["always"]"#,
            "[]",
            Err("the driver config"),
        ),
        // An empty allowed list means the configured policies.
        (
            r#"pull_policy = ["never"]
            allowed_pull_policies = []"#,
            r#"["never"]"#,
            Ok(vec![Never]),
        ),
        // Repeats are kept: a retry.
        (
            r#"allowed_pull_policies = ["always"]"#,
            r#"["always","always"]"#,
            Ok(vec![Always, Always]),
        ),
    ] {
        let result = Plan::resolve(&ctx(&[], config), &job(requested)).map(|p| p.pull_policies);
        match (result, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{config} / {requested}"),
            (Err(err), Err(from)) => {
                assert!(
                    matches!(err, Error::Policy(PolicyError::PullPolicyNotAllowed { .. })),
                    "{err}"
                );
                assert_eq!(err.failure(), crate::error::Failure::Build);
                assert!(
                    err.to_string().contains(from),
                    "{config} / {requested}: {err}"
                );
            }
            (got, want) => panic!("{config} / {requested}: got {got:?}, want {want:?}"),
        }
    }
    // Services apply their own list.
    let c = ctx(&[], r#"allowed_pull_policies = ["always"]"#);
    let err = Plan::resolve(
        &c,
        &payload(r#"{"image":{"name":"a"},"services":[{"name":"db","pull_policy":["never"]}]}"#),
    )
    .unwrap_err();
    assert!(err.to_string().contains("image db"), "{err}");
}
