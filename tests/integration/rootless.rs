//! Rootless engines, as security-conscious runner hosts run them: Docker's
//! `dockerd-rootless.sh` and `podman system service`, each run by an unprivileged user who
//! also runs the driver (scripts/engines/, started by the test world). Their container
//! addresses are inside the engine's own network namespace: services are waited for from the
//! job's network. Whole jobs with services, direct output where it works, cleanup and gc.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

fn user() -> User {
    User::named(
        &std::env::var("ECR_EXECUTOR_TEST_ROOTLESS_USER").expect(
            "ECR_EXECUTOR_TEST_ROOTLESS_USER is not set: run the tests with scripts/test.sh",
        ),
    )
}

fn socket(engine: &str) -> String {
    let name = format!("ECR_EXECUTOR_TEST_ROOTLESS_{engine}");
    std::env::var(&name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh"))
}

/// A job of the rootless user on `host`, with a service that opens its port after 2 s.
fn job_with_a_late_service(host: &str) -> Job {
    Job::builder(BUSYBOX)
        .run_by(&user())
        .config(&format!("[docker]\nhost = \"{host}\""))
        .services(json!([{
            "name": BUSYBOX, "alias": "late", "entrypoint": ["sh", "-c"],
            "command": ["sleep 2; while true; do nc -l -p 7777 </dev/null; done"],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "7777"}]
        }]))
        .build()
}

#[track_caller]
fn whole_job(host: &str, direct_output: bool) {
    let job = job_with_a_late_service(host);
    let start = Instant::now();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "the service was not waited for"
    );
    assert!(!prepare.stderr.contains("WARNING"), "{}", prepare.stderr);
    let out = job.run(
        "build_script",
        "nc -w 1 late 7777 </dev/null && echo service-up; id -u; readlink /proc/self/fd/1",
    );
    out.assert_ok();
    let stdout = out.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], ["service-up", "0"], "{}", out.all());
    assert_eq!(
        lines[2].starts_with("/.ecr-executor/"),
        direct_output,
        "direct output: {}",
        out.all()
    );
    let failed = job.run("build_script", "exit 5");
    failed.assert_code(BUILD_FAILURE);
    job.run("after_script", "echo after").assert_ok();
    job.cleanup().assert_ok();
    assert!(leftovers_at(Some(host), &job.key()).is_empty());
    let uid = user().uid;
    let dir = job
        .tmp
        .path()
        .join(format!("ecr-executor-{uid}"))
        .join(job.key());
    assert!(!dir.exists(), "{} left", dir.display());
}

#[test]
fn rootless_docker_runs_whole_jobs_with_services_and_direct_output() {
    whole_job(&socket("DOCKER"), true);
}

#[test]
fn rootless_podman_runs_whole_jobs_with_services() {
    // Podman: stages are execs, so output goes through the engine.
    whole_job(&socket("PODMAN"), false);
}

#[test]
fn gc_removes_what_a_dead_rootless_job_left() {
    let host = socket("DOCKER");
    let dead = format!("ecr-executor-rootless-gc-{}", std::process::id());
    let labels = [
        "--label",
        "ecr-executor.managed=true",
        "--label",
        &format!("ecr-executor.job={dead}"),
        "--label",
        "ecr-executor.expires-at=1000",
    ];
    let mut create = vec!["create", "--name", &dead];
    create.extend(labels);
    create.extend([BUSYBOX, "sleep", "600"]);
    docker_at(Some(&host), &create);
    let mut volume = vec!["volume", "create"];
    volume.extend(labels);
    let volume_name = format!("{dead}-builds");
    volume.push(&volume_name);
    docker_at(Some(&host), &volume);
    let job = Job::builder(BUSYBOX)
        .run_by(&user())
        .config(&format!("[docker]\nhost = \"{host}\""))
        .build();
    let gc = job.driver(&["gc"]);
    gc.assert_ok();
    assert!(
        gc.stdout()
            .contains(&format!("removed expired container {dead}")),
        "{}",
        gc.all()
    );
    assert!(leftovers_at(Some(&host), &dead).is_empty());
}

#[test]
fn doctor_sees_the_rootless_engine() {
    let home = tempfile::tempdir().unwrap();
    user().own(home.path());
    let job = Job::builder(BUSYBOX)
        .run_by(&user())
        .runner_env("HOME", home.path().to_str().unwrap())
        .config(&format!("[docker]\nhost = \"{}\"", socket("DOCKER")))
        .build();
    let out = job.driver(&["doctor"]);
    let stdout = out.stdout();
    assert!(
        stdout.contains("✔ engine: Docker") && stdout.contains("(rootless:"),
        "{}",
        out.all()
    );
    assert!(
        stdout.contains("✔ job output: skips the engine"),
        "{}",
        out.all()
    );
}
