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
