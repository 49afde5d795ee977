//! `ecr-executor doctor` on this host: every line a check, `✘` with its fix, exit 0 only when
//! nothing failed, never a secret.

use crate::fake_aws::{FakeAws, Reply};
use crate::harness::*;

fn lines(out: &Output) -> Vec<String> {
    out.stdout().lines().map(str::to_owned).collect()
}

#[track_caller]
fn line<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:#?}"))
}

/// A runner host as it should be: engine, helper image, credentials, a registry.
fn healthy(home: &std::path::Path) -> JobBuilder {
    let w = world();
    Job::builder(BUSYBOX)
        .aws(&w.moto)
        .runner_env("HOME", home.to_str().unwrap())
        .config(&format!(
            "[[registry]]\nhost = \"{}\"",
            w.ecr_host(RUNNER_ACCOUNT)
        ))
}

#[test]
fn a_ready_host_passes_every_check() {
    let home = tempfile::tempdir().unwrap();
    let job = healthy(home.path()).build();
    let out = job.driver(&["doctor"]);
    out.assert_ok();
    let l = lines(&out);
    assert!(line(&l, "✔ config:").contains("driver.toml parses"));
    assert!(line(&l, "✔ engine:").contains("API 1.41"));
    assert!(line(&l, "✔ job output:").contains("skips the engine"));
    assert!(line(&l, "✔ helper image:").contains(HELPER));
    assert!(line(&l, "✔ AWS identity:").contains(&format!(
        "arn:aws:sts::{RUNNER_ACCOUNT}:user/moto (credentials from environment variables (AWS_ACCESS_KEY_ID))"
    )));
    assert!(
        line(&l, &format!("✔ ECR {}", world().ecr_host(RUNNER_ACCOUNT))).contains("valid until")
    );
    assert!(line(&l, "✔ token cache:").contains(".cache/ecr-executor"));
    // The metadata guard, probed from a job's namespace (the routes refuse locally: no
    // packet leaves), and the host's own view (the harness's closed loopback stand-in).
    assert!(line(&l, "✔ instance metadata:").contains("[security] instance_metadata = \"block\""));
    for probe in [
        "IMDSv2 token at 169.254.169.254",
        "IMDSv1 at 169.254.169.254",
        "ECS task credentials at 169.254.170.2",
        "EKS Pod Identity agent at 169.254.170.23",
    ] {
        assert!(
            line(&l, &format!("✔ {probe} from a job: blocked")).contains("No route to host"),
            "{l:#?}"
        );
    }
    assert_eq!(
        line(&l, "- instance metadata from this host:"),
        "- instance metadata from this host: not checked: AWS_EC2_METADATA_DISABLED is set"
    );
    assert!(!l.iter().any(|l| l.starts_with('✘')), "{l:#?}");
    let all = out.all();
    assert!(
        !all.contains("auth-token") && !all.contains("testing"),
        "{all}"
    );
}

#[test]
fn an_unreachable_engine_fails_and_skips_what_needs_it() {
    let home = tempfile::tempdir().unwrap();
    let job = healthy(home.path())
        .config("[docker]\nhost = \"unix:///nonexistent/docker.sock\"\nengine_restart_wait = 1")
        .build();
    let out = job.driver(&["doctor"]);
    out.assert_code(SYSTEM_FAILURE);
    let l = lines(&out);
    assert!(
        line(&l, "✘ engine:").contains("dockerd is running"),
        "{l:#?}"
    );
    assert!(line(&l, "- job output: not checked").contains("does not answer"));
    assert!(line(&l, "- helper image: not checked").contains("does not answer"));
    // The AWS side is still checked.
    line(&l, "✔ AWS identity:");
    assert!(
        out.stderr.contains("doctor found 1 problem"),
        "{}",
        out.stderr
    );
}

#[test]
fn no_credentials_and_a_role_that_cannot_be_assumed_are_failures() {
    let home = tempfile::tempdir().unwrap();
    let w = world();
    let job = Job::builder(BUSYBOX)
        .runner_env("HOME", home.path().to_str().unwrap())
        .runner_env("AWS_EC2_METADATA_DISABLED", "true")
        .runner_env("AWS_ENDPOINT_URL", &w.moto)
        .config(&format!(
            "[[registry]]\nhost = \"{}\"",
            w.ecr_host(RUNNER_ACCOUNT)
        ))
        .build();
    let out = job.driver(&["doctor"]);
    out.assert_code(SYSTEM_FAILURE);
    let l = lines(&out);
    assert!(
        line(&l, "✘ AWS identity:").contains("instance profile"),
        "{l:#?}"
    );
    // The registry's line points there instead of saying it again.
    assert!(
        line(
            &l,
            &format!("- ECR {}: not checked", w.ecr_host(RUNNER_ACCOUNT))
        )
        .contains("see above"),
        "{l:#?}"
    );
    assert_eq!(
        out.stdout().matches("no AWS credentials").count(),
        1,
        "{l:#?}"
    );

    let fake = FakeAws::start();
    fake.reply("AssumeRole", Reply::Error(403, "AccessDenied"));
    let job = Job::builder(BUSYBOX)
        .aws(&fake.url)
        .runner_env("HOME", home.path().to_str().unwrap())
        .config(&format!(
            "[[registry]]\nhost = \"{}\"\nrole_arn = \"arn:aws:iam::{JOB_ACCOUNT}:role/puller\"",
            w.ecr_host(RUNNER_ACCOUNT)
        ))
        .build();
    let out = job.driver(&["doctor"]);
    out.assert_code(SYSTEM_FAILURE);
    let l = lines(&out);
    line(&l, "✔ AWS identity:");
    assert!(
        line(&l, &format!("✘ ECR {}", w.ecr_host(RUNNER_ACCOUNT)))
            .contains("AWS denied sts:AssumeRole"),
        "{l:#?}"
    );
}

#[test]
fn a_bad_config_and_a_loose_cache_are_failures_that_name_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join(".cache/ecr-executor");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("leaked.json"), "{}").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        cache.join("leaked.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // A top-level key, so before the config's tables.
    let config = format!("wait_for_service_timeout = 3\n{BASE_CONFIG}");
    let job = healthy(home.path()).only_config(&config).build();
    let out = job.driver(&["doctor"]);
    out.assert_code(SYSTEM_FAILURE);
    let l = lines(&out);
    assert!(
        line(&l, "✘ config:").contains("did you mean `wait_for_services_timeout`?"),
        "{l:#?}"
    );
    assert!(line(&l, "✘ token cache:").contains("chmod 600"), "{l:#?}");
    line(&l, "✔ engine:");
}

#[test]
fn podman_is_named_and_its_job_output_goes_through_the_engine() {
    let home = tempfile::tempdir().unwrap();
    let socket = std::env::var("ECR_EXECUTOR_TEST_PODMAN")
        .expect("ECR_EXECUTOR_TEST_PODMAN is not set: run the tests with scripts/test.sh");
    let job = healthy(home.path())
        .config(&format!("[docker]\nhost = \"{socket}\""))
        .build();
    let out = job.driver(&["doctor"]);
    out.assert_ok();
    let l = lines(&out);
    assert!(line(&l, "✔ engine: Podman").contains(&socket), "{l:#?}");
    assert!(line(&l, "✔ job output: through the engine").contains("Podman"));
}
