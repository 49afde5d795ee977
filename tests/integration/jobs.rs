//! Whole jobs through config → prepare → run × N → cleanup.

use crate::harness::*;

#[test]
fn passing_job_shares_the_builds_volume_between_helper_and_build() {
    let job = Job::new(BUSYBOX);

    let config = job.config_stage();
    config.assert_ok();
    let json: serde_json::Value =
        serde_json::from_str(&config.stdout()).expect("config prints JSON");
    assert_eq!(json["builds_dir"], "/builds");
    assert_eq!(json["cache_dir"], "/cache");
    assert_eq!(json["builds_dir_is_shared"], false);
    assert_eq!(json["driver"]["name"], "ecr-executor");
    assert_eq!(json["hostname"], job.key());

    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(prepare.stdout().contains(BUSYBOX), "{}", prepare.stdout());

    let hello = job.run("prepare_script", "echo \"Running on $(hostname)\"");
    hello.assert_ok();
    assert!(
        hello
            .stdout()
            .contains(&format!("Running on {}", job.key()))
    );

    let sources = job.run(
        "get_sources",
        "mkdir -p \"$CI_PROJECT_DIR\" && cd \"$CI_PROJECT_DIR\"\n\
         echo 'written by the helper' > hello.txt\n\
         gitlab-runner --version",
    );
    sources.assert_ok();
    assert!(
        sources
            .stdout()
            .contains("gitlab-runner-helper (ecr-executor test stand-in)"),
        "gitlab-runner must be callable in the helper: {}",
        sources.all()
    );

    let build = job.run(
        "build_script",
        "cd \"$CI_PROJECT_DIR\"\ncat hello.txt\ntest ! -e /usr/bin/gitlab-runner-helper && echo in-build-image",
    );
    build.assert_ok();
    assert!(
        build
            .stdout()
            .contains("written by the helper\nin-build-image"),
        "{}",
        build.all()
    );

    let labels = docker(&[
        "inspect",
        "--format",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}\n{{end}}",
        &job.build_container(),
    ]);
    for expected in [
        format!("ecr-executor.job-id={}", job.id),
        format!("ecr-executor.project-id={PROJECT_ID}"),
        format!("ecr-executor.runner-token={RUNNER_TOKEN}"),
        "ecr-executor.concurrent-id=0".to_owned(),
        format!("ecr-executor.version={}", env!("CARGO_PKG_VERSION")),
        "ecr-executor.role=build".to_owned(),
    ] {
        assert!(
            labels.contains(&expected),
            "missing label {expected} in {labels:?}"
        );
    }
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("ecr-executor.created-at="))
    );

    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn failing_build_script_reports_its_code_and_after_script_sees_failed() {
    let mut job = Job::new(BUSYBOX);
    job.prepare_ok();
    std::fs::write(job.exit_code_file(), "99\n").unwrap();

    let build = job.run("build_script", "echo before\nexit 7\necho never");
    build.assert_code(BUILD_FAILURE);
    assert_eq!(
        std::fs::read_to_string(job.exit_code_file())
            .unwrap()
            .trim(),
        "7"
    );
    assert!(build.stdout().contains("before") && !build.stdout().contains("never"));

    job.set_var("CI_JOB_STATUS", "failed");
    let after = job.run("after_script", "echo \"status=$CI_JOB_STATUS\"");
    after.assert_ok();
    assert!(after.stdout().contains("status=failed"), "{}", after.all());

    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn missing_image_is_a_system_failure_with_a_clear_message() {
    // A registry address on loopback where nothing listens: the pull fails fast, offline.
    let image = "127.0.0.1:9/ecr-executor-test/missing:1";
    let job = Job::new(image);
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare
            .stderr
            .contains(&format!("pulling image {image} failed")),
        "{}",
        prepare.stderr
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    let never = "ecr-executor-test/not-built:1";
    let job = Job::builder(never)
        .payload_image(serde_json::json!({"name": never, "pull_policy": ["never"]}))
        .build();
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains("pull policy is `never`"),
        "{}",
        prepare.stderr
    );
}

#[test]
fn image_entrypoint_is_kept() {
    let job = Job::new(ENTRYPOINT);
    job.prepare_ok();
    let build = job.run(
        "build_script",
        "cat /tmp/entrypoint-ran; echo \"$ENTRYPOINT_SET in $PWD\"",
    );
    build.assert_ok();
    assert!(build.stdout().contains("entrypoint ran"), "{}", build.all());
    // Scripts run under the ENTRYPOINT, as with the Docker executor: what it sets, they see.
    assert!(
        build.stdout().contains("from-entrypoint in /tmp"),
        "{}",
        build.all()
    );
}

#[test]
fn entrypoint_that_exits_fails_with_a_hint() {
    let job = Job::new(BAD_ENTRYPOINT);
    let prepare = job.prepare();
    // The container may still look alive when prepare checks; then the first stage sees it.
    let failed = if prepare.code == Some(0) {
        job.run("build_script", "echo unreachable")
    } else {
        prepare
    };
    failed.assert_code(BUILD_FAILURE);
    assert!(
        failed.stderr.contains(r#"entrypoint: [""]"#),
        "{}",
        failed.stderr
    );
    // Its last words, from the small log the engine keeps with direct output.
    assert!(
        failed
            .stderr
            .contains("bad-entrypoint: this image runs no shell"),
        "{}",
        failed.stderr
    );

    let cleared = Job::builder(BAD_ENTRYPOINT)
        .payload_image(serde_json::json!({"name": BAD_ENTRYPOINT, "entrypoint": [""]}))
        .build();
    cleared.prepare_ok();
    cleared.run("build_script", "echo fine").assert_ok();
}

#[test]
fn a_stage_that_never_starts_says_why() {
    // An ENTRYPOINT that ignores its command and keeps running: nothing reads the stage.
    let job = Job::builder(BUSYBOX)
        .config("[docker]\nstage_start_notice = 2")
        .payload_image(serde_json::json!({
            "name": BUSYBOX,
            "entrypoint": ["sh", "-c", "sleep 3600"]
        }))
        .build();
    job.prepare_ok();
    let running = job.spawn_run("build_script", "echo never");
    running.wait_for_stderr(
        r#"set `image: entrypoint: [""]`"#,
        std::time::Duration::from_secs(30),
    );
    assert!(running.stdout_so_far().is_empty());
    // The runner cancels it in the end; the driver gives the start line 3 s and, with no
    // stage process to stop gracefully, ends then (before, it waited 9 s in all).
    running.signal_group(Signal::TERM);
    running
        .wait(std::time::Duration::from_secs(8))
        .assert_code(SYSTEM_FAILURE);
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn unknown_stage_runs_in_the_build_container_with_a_warning() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    let out = job.run(
        "brand_new_stage",
        "test ! -e /usr/bin/gitlab-runner-helper && echo build-side",
    );
    out.assert_ok();
    assert!(out.stdout().contains("build-side"));
    assert!(
        out.stderr.contains("unknown stage \"brand_new_stage\""),
        "{}",
        out.stderr
    );
    job.run("step_release", "echo step").assert_ok();
}

#[test]
fn network_per_build_gives_the_job_its_own_network() {
    let job = Job::builder(BUSYBOX)
        .var("FF_NETWORK_PER_BUILD", "true")
        .build();
    job.prepare_ok();
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={}-network", job.key()),
    ]);
    assert_eq!(networks.len(), 1, "{networks:?}");
    let ping = job.run(
        "get_sources",
        "ping -c 1 -W 5 build >/dev/null && echo build-reachable",
    );
    ping.assert_ok();
    assert!(ping.stdout().contains("build-reachable"), "{}", ping.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn build_and_helper_share_one_network_and_hostname() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    let identity = |stage: &str| {
        let out = job.run(stage, "hostname; cat /sys/class/net/eth0/address");
        out.assert_ok();
        out.stdout()
    };
    let (helper, build) = (identity("get_sources"), identity("build_script"));
    assert!(build.lines().count() == 2, "{build}");
    assert_eq!(helper, build, "one network namespace, one hostname");
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn the_helper_keeps_its_network_when_the_build_container_dies() {
    // The on-failure stages upload artifacts from the helper: it must not lose its network
    // with the build container.
    let job = Job::builder(BUSYBOX)
        .var("FF_NETWORK_PER_BUILD", "true")
        .build();
    job.prepare_ok();
    docker(&["kill", &job.build_container()]);
    let build = job.run("build_script", "echo never");
    assert_ne!(build.code, Some(0));
    assert!(!build.stdout().contains("never"));
    let upload = job.run(
        "upload_artifacts_on_failure",
        "cat /sys/class/net/eth0/address >/dev/null && ping -c 1 -W 5 helper >/dev/null && echo has-network",
    );
    upload.assert_ok();
    assert!(upload.stdout().contains("has-network"), "{}", upload.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn a_script_that_kills_the_stage_shell_is_a_clear_system_failure() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    // $PPID of the script's shell is the stage shell, the container's command.
    let out = job.run(
        "build_script",
        "echo before\nkill -9 $PPID\nsleep 5\necho after",
    );
    out.assert_code(SYSTEM_FAILURE);
    assert!(out.stdout().contains("before"), "{}", out.all());
    assert!(!out.stdout().contains("after"), "{}", out.all());
    assert!(
        out.stderr.contains("stopped during stage build_script"),
        "{}",
        out.stderr
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn bad_driver_config_names_the_key_and_the_file() {
    let job = Job::builder(BUSYBOX)
        .config("defualt_image = \"x\"")
        .build();
    let out = job.config_stage();
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        out.stderr.contains("defualt_image") && out.stderr.contains("driver.toml"),
        "{}",
        out.stderr
    );
}
