//! `[[pull_through]]`: images of upstream registries pulled through an ECR pull-through cache,
//! with no change to the job. The authenticated registries at real ECR hostnames hold images
//! at the cache's paths (`docker-hub/library/busybox`, `quay/team/tool`, `gitlab/...helper`),
//! moto or the fault-injecting stand-in hands out the tokens. Nothing here may reach Docker
//! Hub, Quay or GitLab: the fallback tests use an upstream on loopback.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use crate::fake_aws::{FakeAws, Reply};
use crate::faults::{ManifestFault, failing_registry};
use crate::harness::*;

/// The test config (local helper) with pulls allowed, and `rules`.
fn config(rules: &str) -> String {
    format!(
        "{}\n[ecr]\ncache_dir = \"@TMP@/cache\"\n{rules}",
        BASE_CONFIG.replace("\"if-not-present\"]", "\"always\"]")
    )
}

fn rule(upstream: &str, prefix: &str, fallback: &str) -> String {
    format!(
        "[[pull_through]]\nupstream = \"{upstream}\"\nprefix = \"{prefix}\"\nfallback = \"{fallback}\"\n"
    )
}

/// The runner account's registry, at its ECR hostname, with `path` below it.
fn cache(path: &str) -> String {
    format!("{}/{path}", world().ecr_host(RUNNER_ACCOUNT))
}

/// The job account's registry on plain loopback: the "upstream" of the fallback tests, with
/// its login in the job's DOCKER_AUTH_CONFIG.
fn upstream() -> (String, String) {
    let host = format!("127.0.0.1:{}", world().job_port);
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{JOB_ACCOUNT}-auth-token"));
    let config = json!({"auths": {host.as_str(): {"auth": auth}}}).to_string();
    (host, config)
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container]).join("\n")
}

/// The "done when": `image: busybox` (Docker Hub), a `quay.io` service and GitLab's
/// helper image all come from ECR on a runner that reaches none of those registries.
#[test]
fn job_service_and_helper_images_come_through_the_cache() {
    let w = world();
    // Without `helper_image`: GitLab's default for runner 17.11.4 on amd64, on
    // registry.gitlab.com. Forget the routed copy so that it is really pulled.
    let helper = cache("gitlab/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.11.4");
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &helper])
        .output();
    let rules = format!(
        "{}images = [\"library/*\"]\n{}{}",
        rule("docker.io", &cache("docker-hub"), "fail"),
        rule("quay.io", &cache("quay"), "fail"),
        rule("registry.gitlab.com", &cache("gitlab"), "fail"),
    );
    let job = Job::builder("busybox:latest")
        .only_config(&config(&rules).replace(&format!("helper_image = \"{HELPER}\"\n"), ""))
        .payload_image(json!({"name": "busybox:latest", "pull_policy": ["always"]}))
        .services(json!([{"name": "quay.io/team/tool:1", "alias": "tool",
            "entrypoint": ["sh", "-c"], "command": ["sleep 600"], "pull_policy": ["always"]}]))
        .aws(&w.moto)
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    let log = prepare.stdout();
    for (asked, pulled, rule) in [
        (
            "busybox:latest",
            cache("docker-hub/library/busybox:latest"),
            1,
        ),
        ("quay.io/team/tool:1", cache("quay/team/tool:1"), 2),
        (
            "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.11.4",
            helper.clone(),
            3,
        ),
    ] {
        let line = format!(
            "Pulling {asked} through the pull-through cache as {pulled} ([[pull_through]] #{rule}"
        );
        assert_eq!(
            log.matches(&line).count(),
            1,
            "once per image: {line}\n{log}"
        );
    }
    let build = job.run(
        "build_script",
        "echo routed-job-ran; wget -q -O- -T 5 http://tool:1 || true",
    );
    build.assert_ok();
    assert!(build.stdout().contains("routed-job-ran"));
    let helper_stage = job.run("get_sources", "gitlab-runner-helper --version");
    helper_stage.assert_ok();

    // Labels record both names; the job's view keeps the one it wrote.
    let labels = "{{index .Config.Labels \"ecr-executor.image\"}} {{index .Config.Labels \"ecr-executor.image-pulled\"}}";
    assert_eq!(
        inspect(&job.build_container(), labels),
        format!(
            "busybox:latest {}",
            cache("docker-hub/library/busybox:latest")
        )
    );
    assert_eq!(
        inspect(&format!("{}-svc0", job.key()), labels),
        format!("quay.io/team/tool:1 {}", cache("quay/team/tool:1"))
    );
    let env = job.run("build_script", "echo \"image=$CI_JOB_IMAGE\"");
    assert!(
        env.stdout().contains("image=busybox:latest"),
        "{}",
        env.stdout()
    );

    // No token in any output or in what the engine holds.
    let token = format!("{RUNNER_ACCOUNT}-auth-token");
    let printed = String::from_utf8_lossy(&job.everything_printed()).into_owned();
    assert!(!printed.contains(&token));
    for container in [
        job.build_container(),
        format!("{}-helper", job.key()),
        format!("{}-svc0", job.key()),
    ] {
        assert!(
            !docker(&["inspect", &container]).join("\n").contains(&token),
            "{container}"
        );
    }
}

#[test]
fn a_digest_pull_stays_a_digest_pull() {
    let w = world();
    let image = format!("busybox@{}", w.busybox_digest);
    // Official images only: the test helper image is on docker.io too.
    let rules = format!(
        "{}images = [\"library/*\"]\n",
        rule("docker.io", &cache("docker-hub"), "fail")
    );
    let job = Job::builder(&image)
        .only_config(&config(&rules))
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .aws(&w.moto)
        .build();
    let out = job.prepare();
    out.assert_ok();
    let routed = cache(&format!("docker-hub/library/busybox@{}", w.busybox_digest));
    assert!(
        out.stdout().contains(&format!("as {routed} ")),
        "{}",
        out.stdout()
    );
    job.run("build_script", "true").assert_ok();
}

/// The cache has no `mirror/...` repository: `upstream` pulls the name the job wrote, with
/// upstream's credentials; `fail` fails naming both names.
#[test]
fn an_image_the_cache_has_not_got_falls_back_or_fails_as_the_rule_says() {
    let w = world();
    let (host, docker_auth) = upstream();
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let routed = cache("mirror/ecr-executor-test/busybox:latest");
    let job = |fallback: &str| {
        Job::builder(&image)
            .only_config(&config(&rule(&host, &cache("mirror"), fallback)))
            .payload_image(json!({"name": image, "pull_policy": ["always"]}))
            .secret_var("DOCKER_AUTH_CONFIG", &docker_auth)
            .aws(&w.moto)
            .build()
    };
    let falls_back = job("upstream");
    let out = falls_back.prepare();
    out.assert_ok();
    assert!(
        out.stderr
            .contains(&format!("could not serve {image} as {routed}"))
            && out
                .stderr
                .contains(&format!("pulling {image} from {host} instead")),
        "{}",
        out.stderr
    );
    falls_back
        .run("build_script", "echo from-upstream")
        .assert_ok();
    let labels = "{{index .Config.Labels \"ecr-executor.image-pulled\"}}";
    assert_eq!(inspect(&falls_back.build_container(), labels), image);

    let fails = job("fail");
    let out = fails.prepare();
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        out.stderr
            .contains(&format!("could not serve {image} as {routed}"))
            && out.stderr.contains("fallback = \"upstream\""),
        "{}",
        out.stderr
    );
}

/// AWS refuses the cache's token: `upstream` falls back, `fail` fails, both saying why.
#[test]
fn access_denied_to_the_cache_falls_back_or_fails_as_the_rule_says() {
    let fake = FakeAws::start();
    fake.reply(
        "GetAuthorizationToken",
        Reply::Error(400, "AccessDeniedException"),
    );
    let (host, docker_auth) = upstream();
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let job = |fallback: &str| {
        Job::builder(&image)
            .only_config(&config(&rule(&host, &cache("mirror"), fallback)))
            .payload_image(json!({"name": image, "pull_policy": ["always"]}))
            .secret_var("DOCKER_AUTH_CONFIG", &docker_auth)
            .aws(&fake.url)
            .build()
    };
    let falls_back = job("upstream");
    let out = falls_back.prepare();
    out.assert_ok();
    assert!(
        out.stderr.contains("could not serve") && out.stderr.contains("AccessDenied"),
        "{}",
        out.stderr
    );
    let fails = job("fail");
    let out = fails.prepare();
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        out.stderr.contains("AccessDenied") && out.stderr.contains(&cache("mirror")),
        "{}",
        out.stderr
    );
}

/// A server error is not "cannot serve": no fallback, a system failure the runner retries.
#[test]
fn a_failing_cache_is_not_a_reason_to_fall_back() {
    let fake = FakeAws::start();
    let (port, _) = failing_registry(ManifestFault::ServerError);
    let (host, docker_auth) = upstream();
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let job = Job::builder(&image)
        .only_config(&config(&format!(
            "{}[[registry]]\nhost = \"127.0.0.1:{port}\"\nregistry_id = \"{RUNNER_ACCOUNT}\"\nregion = \"{REGION}\"\n",
            rule(&host, &format!("127.0.0.1:{port}/mirror"), "upstream")
        )))
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .secret_var("DOCKER_AUTH_CONFIG", &docker_auth)
        .aws(&fake.url)
        .build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    assert!(!out.stderr.contains("could not serve"), "{}", out.stderr);
}

/// Policies see what the job wrote: the routed name is never a way around them.
#[test]
fn a_denied_image_is_refused_before_any_pull() {
    // A top-level key, so before the config's tables.
    let config = format!(
        "allowed_images = [\"ecr-executor-test/*\"]\n{}",
        config(&rule("docker.io", &cache("docker-hub"), "fail"))
    );
    let job = Job::builder("busybox:latest").only_config(&config).build();
    let out = job.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(out.stderr.contains("allowed_images"), "{}", out.stderr);
    assert!(!out.stdout().contains("Pulling"), "{}", out.stdout());
}

#[test]
fn sigterm_aborts_a_routed_pull() {
    let fake = FakeAws::start();
    let (port, manifests) = failing_registry(ManifestFault::Hang);
    let job = Job::builder("busybox:latest")
        .only_config(&config(&format!(
            "{}[[registry]]\nhost = \"127.0.0.1:{port}\"\nregistry_id = \"{RUNNER_ACCOUNT}\"\nregion = \"{REGION}\"\n",
            rule("docker.io", &format!("127.0.0.1:{port}/docker-hub"), "upstream")
        )))
        .payload_image(json!({"name": "busybox:latest", "pull_policy": ["always"]}))
        .aws(&fake.url)
        .build();
    let running = job.spawn_prepare();
    let start = Instant::now();
    while manifests.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pull never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running.cancel_prepare(&job);
}

/// An operator tries a rule before registering: `auth check` shows the route and gets the
/// cache's token; `exec` runs a job through it.
#[test]
fn auth_check_and_exec_use_the_route() {
    let w = world();
    let rules = format!(
        "{}images = [\"library/*\"]\n",
        rule("docker.io", &cache("docker-hub"), "fail")
    );
    let job = Job::builder(BUSYBOX)
        .only_config(&config(&rules))
        .aws(&w.moto)
        .build();
    let check = job.driver(&["auth", "check", "busybox:latest"]);
    check.assert_ok();
    let out = check.stdout();
    assert!(
        out.contains(&format!(
            "route:    {} ([[pull_through]] #1 for docker.io, fallback fail)",
            cache("docker-hub/library/busybox:latest")
        )) && out.contains(&format!(
            "registry: {}",
            w.ecr_host(RUNNER_ACCOUNT).to_ascii_lowercase()
        )),
        "{out}"
    );
    let exec = job.driver(&[
        "exec",
        "--image",
        "busybox:latest",
        "--",
        "echo exec-through-the-cache",
    ]);
    exec.assert_ok();
    assert!(
        exec.stdout().contains("through the pull-through cache as")
            && exec.stdout().contains("exec-through-the-cache"),
        "{}",
        exec.all()
    );
}
