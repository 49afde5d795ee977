//! `ecr-executor exec`: the README's first command, which plays the runner's sequence on this
//! machine. It must behave as the runner would: the runner's environment (HOME, DOCKER_CONFIG,
//! DOCKER_AUTH_CONFIG, the Docker and AWS settings) reaches it, its exit code is the build
//! script's, and it leaves nothing behind.

use base64::Engine;
use serde_json::json;

use crate::fake_aws::FakeAws;
use crate::harness::*;

/// The job's name, from the `prepare_script` line that prints the container's hostname.
fn job_key(out: &Output) -> String {
    let stdout = out.stdout();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Running on "))
        .unwrap_or_else(|| panic!("no prepare_script line in\n{stdout}"));
    line.split(' ').next().unwrap().to_owned()
}

/// The test config, with the job image pulled every time.
fn always() -> String {
    BASE_CONFIG.replace(
        "pull_policy = [\"if-not-present\"]",
        "pull_policy = [\"always\"]",
    )
}

fn exec(job: &Job, image: &str, script: &[&str]) -> Output {
    let mut args = vec![
        "exec",
        "--image",
        image,
        "--after-script",
        "echo after:$CI_JOB_STATUS",
        "--",
    ];
    args.extend_from_slice(script);
    job.driver(&args)
}

#[test]
fn exec_runs_every_stage_returns_the_scripts_code_and_leaves_nothing() {
    let job = Job::new(BUSYBOX);
    let ok = exec(&job, BUSYBOX, &["echo hello-from-exec", "uname -s"]);
    ok.assert_ok();
    let stdout = ok.stdout();
    assert!(stdout.contains("hello-from-exec\nLinux\n"), "{stdout}");
    assert!(stdout.contains("after:success"), "{stdout}");
    assert!(stdout.contains("Job succeeded"), "{stdout}");
    assert!(leftovers(&job_key(&ok)).is_empty());

    let failed = exec(&job, BUSYBOX, &["echo before", "exit 7"]);
    failed.assert_code(7);
    assert!(
        failed.stdout().contains("after:failed"),
        "{}",
        failed.stdout()
    );
    assert_eq!(
        failed.stderr.matches("Job failed").count(),
        1,
        "said once: {}",
        failed.stderr
    );
    assert!(leftovers(&job_key(&failed)).is_empty());
}

#[test]
fn exec_reports_a_driver_failure_once() {
    let job = Job::builder(BUSYBOX)
        .only_config(&BASE_CONFIG.replace("\"if-not-present\"]", "\"never\"]"))
        .build();
    let out = exec(&job, "ecr-executor-test/not-here:1", &["true"]);
    out.assert_code(SYSTEM_FAILURE);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].contains("not-here:1"), "{}", out.stderr);
}

#[test]
fn exec_pulls_with_the_runners_docker_auth_config() {
    let w = world();
    let registry = format!("127.0.0.1:{}", w.runner_port);
    let image = format!("{registry}/ecr-executor-test/busybox:latest");
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("AWS:{RUNNER_ACCOUNT}-auth-token"));
    let job = Job::builder(BUSYBOX)
        .only_config(&always())
        .runner_env(
            "DOCKER_AUTH_CONFIG",
            &json!({"auths": {registry.as_str(): {"auth": auth}}}).to_string(),
        )
        .build();
    let out = exec(&job, &image, &["echo pulled-with-docker-auth-config"]);
    out.assert_ok();
    assert!(
        out.stdout().contains("pulled-with-docker-auth-config"),
        "{}",
        out.all()
    );
}

#[test]
fn exec_shares_the_runner_users_token_cache() {
    let fake = FakeAws::start();
    let home = tempfile::tempdir().unwrap();
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let job = Job::builder(BUSYBOX)
        .only_config(&always())
        .aws(&fake.url)
        .runner_env("HOME", home.path().to_str().unwrap())
        .build();
    for _ in 0..2 {
        let out = exec(&job, &image, &["echo from-ecr"]);
        out.assert_ok();
        assert!(out.stdout().contains("from-ecr"), "{}", out.all());
    }
    assert_eq!(
        fake.calls("GetAuthorizationToken"),
        1,
        "the second run used the cache in ~/.cache/ecr-executor"
    );
    let cache = home.path().join(".cache/ecr-executor");
    let entries = std::fs::read_dir(&cache).unwrap().flatten().count();
    assert!(entries >= 1, "no entry in {}", cache.display());
}
