//! A private image on the host because another job pulled it: under `if-not-present` a job
//! uses it only when the registry serves its manifest to this job's own credentials
//! (`[security] cached_images`).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use crate::harness::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn auth_config(host: &str, password: &str) -> String {
    json!({"auths": {host: {"auth": b64(&format!("AWS:{password}"))}}}).to_string()
}

/// The audit trail's line for the job's build image.
fn build_line(trail: &std::path::Path, job: &Job) -> serde_json::Value {
    let text = std::fs::read_to_string(trail).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["job_id"] == job.id.to_string().as_str() && l["role"] == "build")
        .unwrap_or_else(|| panic!("no line for job {}: {text}", job.id))
}

#[test]
fn a_cached_private_image_is_only_for_jobs_whose_credentials_may_pull_it() {
    let w = world();
    let host = format!("127.0.0.1:{}", w.job_port);
    // A tag of its own, so no other test's pull or removal interferes.
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let good = auth_config(&host, &format!("{JOB_ACCOUNT}-auth-token"));
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("pulls.jsonl");
    let audit = format!("[audit]\nfile = {trail:?}");

    let first = Job::builder(&image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .var("DOCKER_AUTH_CONFIG", &good)
        .config(&audit)
        .build();
    first.prepare_ok();
    first.cleanup().assert_ok();

    // No credentials, then wrong ones: the registry refuses, so the cached copy is not used.
    for (credentials, who) in [
        (None, "no credentials (anonymously)"),
        (
            Some(auth_config(&host, "wrong")),
            "user AWS from the job's DOCKER_AUTH_CONFIG",
        ),
    ] {
        let mut job = Job::builder(&image).config(&audit);
        if let Some(c) = &credentials {
            job = job.var("DOCKER_AUTH_CONFIG", c);
        }
        let job = job.build();
        let prepare = job.prepare();
        prepare.assert_code(BUILD_FAILURE);
        assert!(
            prepare.stderr.contains(&format!(
                "this job may not use {image}, which is on the host because another job pulled \
                 it: the registry refused its manifest to {who}"
            )) && prepare.stderr.matches("ERROR").count() == 1,
            "{}",
            prepare.stderr
        );
        assert!(!prepare.all().contains("wrong"), "never the secret");
        assert!(
            !prepare.stdout().contains("Pulling"),
            "{}",
            prepare.stdout()
        );
        job.cleanup().assert_ok();
        assert_no_leftovers(&job);
    }

    // The right credentials: the registry confirms, and the cached copy runs without a pull.
    let job = Job::builder(&image)
        .var("DOCKER_AUTH_CONFIG", &good)
        .config(&audit)
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stdout().contains("Pulling"),
        "{}",
        prepare.stdout()
    );
    let line = build_line(&trail, &job);
    assert_eq!(line["outcome"], "present");
    assert_eq!(line["cached_check"], "confirmed");
    assert!(
        line["image_id"].as_str().unwrap().starts_with("sha256:"),
        "{line}"
    );
    job.cleanup().assert_ok();

    // `trust` is the Docker executor's behaviour: anyone may use it.
    let job = Job::builder(&image)
        .config(&format!("{audit}\n[security]\ncached_images = \"trust\""))
        .build();
    job.prepare_ok();
    assert_eq!(build_line(&trail, &job)["cached_check"], "trusted");
    job.cleanup().assert_ok();
}

/// The ECR path: the same image, a token for another account (a `[[registry]]` entry naming
/// it) is refused; the runner's own token is confirmed. Images built or loaded on the host
/// (the helper here) need no confirmation and say so in the audit trail.
#[test]
fn a_cached_ecr_image_is_confirmed_with_the_jobs_own_ecr_token() {
    let w = world();
    let image = w.ecr_image(RUNNER_ACCOUNT);
    let host = w.ecr_host(RUNNER_ACCOUNT);
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("pulls.jsonl");
    let config = format!("[ecr]\ncache_dir = \"@TMP@/cache\"\n[audit]\nfile = {trail:?}");
    let first = Job::builder(&image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .aws(&w.moto)
        .config(&config)
        .build();
    first.prepare_ok();
    first.cleanup().assert_ok();

    let job = Job::builder(&image)
        .aws(&w.moto)
        .config(&format!(
            "{config}\n[[registry]]\nhost = \"{host}\"\nregistry_id = \"{JOB_ACCOUNT}\"\nregion = \"{REGION}\""
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_code(BUILD_FAILURE);
    assert!(
        prepare.stderr.contains("this job may not use")
            && prepare.stderr.contains("the runner's AWS identity"),
        "{}",
        prepare.stderr
    );
    assert!(!prepare.all().contains("auth-token"), "never the token");
    job.cleanup().assert_ok();

    let job = Job::builder(&image).aws(&w.moto).config(&config).build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stdout().contains("Pulling"),
        "{}",
        prepare.stdout()
    );
    assert_eq!(build_line(&trail, &job)["cached_check"], "confirmed");
    let text = std::fs::read_to_string(&trail).unwrap();
    let helper = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["job_id"] == job.id.to_string().as_str() && l["role"] == "helper")
        .unwrap();
    assert_eq!(helper["cached_check"], "local", "{helper}");
    assert!(helper["digest"].is_null(), "{helper}");
    assert!(
        helper["image_id"].as_str().unwrap().starts_with("sha256:"),
        "{helper}"
    );
    job.cleanup().assert_ok();
}

/// A registry of the test's own, without auth, that it can stop.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Served anonymously, the image needs no credentials; once its registry is gone, `verify`
/// fails closed as a system failure and `verify-when-reachable` runs the cached copy with a
/// warning.
#[test]
fn an_unreachable_registry_fails_closed_unless_the_host_runs_offline() {
    let mut registry = Registry::start();
    let image = format!(
        "127.0.0.1:{}/cached/busybox:{}",
        registry.port,
        std::process::id()
    );
    docker(&["tag", BUSYBOX, &image]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);
    docker(&["pull", &image]);

    let job = Job::new(&image);
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stdout().contains("Pulling"),
        "{}",
        prepare.stdout()
    );
    job.cleanup().assert_ok();

    registry.stop();
    let job = Job::new(&image);
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains(&format!(
            "cannot confirm that this job may use {image}, which is on the host: its registry \
             did not answer"
        )) && prepare.stderr.contains("verify-when-reachable"),
        "{}",
        prepare.stderr
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    let job = Job::builder(&image)
        .config("[security]\ncached_images = \"verify-when-reachable\"")
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stderr.contains(&format!(
            "Using {image} from the host without the registry's confirmation"
        )),
        "{}",
        prepare.stderr
    );
    job.run("build_script", "echo offline-ok").assert_ok();
    job.cleanup().assert_ok();
    docker(&["rmi", &image]);
}
