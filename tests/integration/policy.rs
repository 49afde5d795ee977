//! Decisions taken from the job payload before any container exists.

use crate::harness::*;

#[test]
fn job_pull_policy_outside_the_allowed_list_is_a_build_failure() {
    // allowed_pull_policies defaults to pull_policy.
    let config = format!("helper_image = \"{HELPER}\"\npull_policy = [\"if-not-present\"]");
    let job = Job::builder(BUSYBOX)
        .only_config(&config)
        .payload_image(serde_json::json!({"name": BUSYBOX, "pull_policy": ["never"]}))
        .build();
    let out = job.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(
        out.stderr.contains("allowed_pull_policies"),
        "{}",
        out.stderr
    );
    assert!(!job.exit_code_file().exists());

    let allowed = Job::builder(BUSYBOX)
        .only_config(&config)
        .payload_image(serde_json::json!({"name": BUSYBOX, "pull_policy": ["if-not-present"]}))
        .build();
    allowed.prepare_ok();
}

#[test]
fn the_payload_image_wins_over_the_variable() {
    let job = Job::builder("127.0.0.1:9/not/this:1")
        .payload_image(serde_json::json!({"name": BUSYBOX}))
        .build();
    job.prepare_ok();
}

#[test]
fn a_job_without_image_needs_a_default() {
    let job = Job::builder(BUSYBOX).no_image().build();
    let out = job.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(out.stderr.contains("default_image"), "{}", out.stderr);

    let job = Job::builder(BUSYBOX)
        .no_image()
        .config(&format!("default_image = \"{BUSYBOX}\""))
        .build();
    job.prepare_ok();
}

#[test]
fn an_invalid_image_reference_is_a_build_failure() {
    let job = Job::new("Not A Valid/Image");
    let out = job.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(
        out.stderr.contains("invalid image reference"),
        "{}",
        out.stderr
    );
}

/// Point 1 of the parity issue: allow-lists see the name the job wrote, as GitLab Runner's
/// `VerifyAllowedImage` does, never a spelling with `:latest` added.
#[test]
fn allow_lists_match_the_image_as_written() {
    let untagged = BUSYBOX.trim_end_matches(":latest");
    let config = |name: &str| {
        Job::builder(name)
            .config("allowed_images = [\"*/*:*\"]")
            .build()
    };
    let refused = config(untagged);
    let out = refused.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(
        out.stderr.contains(&format!("{untagged:?}")) && out.stderr.contains("allowed_images"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("*/*:*"),
        "names what is allowed: {}",
        out.stderr
    );
    config(BUSYBOX).prepare_ok();
}

/// Point 2: the runner's own image is always allowed; a job without `image:` is not checked.
#[test]
fn the_default_image_is_allowed_whatever_the_list() {
    let settings = format!("default_image = \"{BUSYBOX}\"\nallowed_images = [\"ruby:*\"]");
    Job::builder(BUSYBOX)
        .no_image()
        .config(&settings)
        .build()
        .prepare_ok();
    Job::builder(BUSYBOX).config(&settings).build().prepare_ok();
    let other = Job::builder(HELPER).config(&settings).build();
    other.prepare().assert_code(BUILD_FAILURE);
}

/// Point 3: the job's list keeps its allowed policies; the driver's own `pull_policy` obeys
/// `allowed_pull_policies` too.
#[test]
fn pull_policy_lists_keep_what_is_allowed() {
    let config = format!(
        "helper_image = \"{HELPER}\"\npull_policy = [\"if-not-present\"]\nallowed_pull_policies = [\"if-not-present\"]"
    );
    // `always` would pull from Docker Hub, which is out of reach: only if-not-present may run.
    let job = Job::builder(BUSYBOX)
        .only_config(&config)
        .payload_image(
            serde_json::json!({"name": BUSYBOX, "pull_policy": ["always", "if-not-present"]}),
        )
        .build();
    job.prepare_ok();

    let refused = Job::builder(BUSYBOX)
        .only_config(&format!(
            "helper_image = \"{HELPER}\"\npull_policy = [\"never\"]\nallowed_pull_policies = [\"always\"]"
        ))
        .build();
    let out = refused.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(
        out.stderr
            .contains("pull_policy [never] (from the driver config)")
            && out.stderr.contains("allowed_pull_policies [always]"),
        "{}",
        out.stderr
    );
}

/// Point 4: Docker's reference grammar, at prepare's start, before any pull.
#[test]
fn references_follow_dockers_grammar() {
    let md5 = format!("{BUSYBOX}@md5:0123456789abcdef0123456789abcdef");
    let long = format!("registry.example.com/{}:1", "a".repeat(256));
    for (image, rule) in [(md5.as_str(), "not supported"), (long.as_str(), "255")] {
        let job = Job::new(image);
        let out = job.prepare();
        out.assert_code(BUILD_FAILURE);
        assert!(
            out.stderr.contains("invalid image reference") && out.stderr.contains(rule),
            "{image}: {}",
            out.stderr
        );
        assert!(!out.stdout().contains("Pulling"), "refused before any pull");
    }
    // An IPv6 registry host passes the grammar and reaches the engine; an engine too old to
    // take it (Docker 20.10 here) refuses it, which is still the reference's fault.
    let v6 = Job::new("[::1]:5999/ecr-executor-test/busybox:latest");
    let out = v6.prepare();
    assert!(
        !out.stderr.contains("is not valid:"),
        "the driver's own grammar took it: {}",
        out.stderr
    );
    match out.code {
        Some(BUILD_FAILURE) => assert!(
            out.stderr.contains("does not accept it as a reference"),
            "{}",
            out.stderr
        ),
        // An engine that takes IPv6 references finds no registry on [::1]:5999.
        _ => {
            out.assert_code(SYSTEM_FAILURE);
        }
    }
}
