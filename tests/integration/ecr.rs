//! Pulling private ECR images: against moto and two authenticated registries for the happy
//! paths, and against the fault-injecting fake for caching, STS refusals, throttling and
//! endpoints that hang.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;

use crate::fake_aws::{AwsNames, FakeAws, RUNNER_ARN, Reply, STS_SECRET_KEY, STS_SESSION_TOKEN};
use crate::harness::*;

/// A job whose image must really be pulled (policy `always`), from a loopback registry.
fn pulling(image: &str) -> JobBuilder {
    Job::builder(image).payload_image(json!({"name": image, "pull_policy": ["always"]}))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

const JOB_ROLE: &str = "arn:aws:iam::210987654321:role/gitlab-ci";
const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.ECR-EXECUTOR-TEST-ID-TOKEN-PAYLOAD.c2lnbmF0dXJl";

#[test]
fn a_plain_pull_fails_with_no_basic_auth_credentials() {
    let image = format!(
        "127.0.0.1:{}/ecr-executor-test/busybox:latest",
        world().runner_port
    );
    let job = pulling(&image).build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        out.stderr.contains("no basic auth credentials"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("[[registry]]"),
        "the message points at the fix: {}",
        out.stderr
    );
}

#[test]
fn runner_identity_pulls_from_ecr() {
    let w = world();
    let job = pulling(&w.ecr_image(RUNNER_ACCOUNT))
        .aws(&w.moto)
        .config("[ecr]\ncache_dir = \"@TMP@/cache\"")
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    // Who pulled, never the token: moto's runner identity, and where the token came from.
    let line = format!(
        "Pulling image {} with the runner's AWS identity arn:aws:sts::{RUNNER_ACCOUNT}:user/moto (token from AWS) ...",
        w.ecr_image(RUNNER_ACCOUNT)
    );
    assert!(prepare.stdout().contains(&line), "{}", prepare.stdout());
    let build = job.run("build_script", "echo pulled-from-ecr");
    build.assert_ok();
    assert!(build.stdout().contains("pulled-from-ecr"));
}

#[test]
fn job_identity_pulls_with_the_assumed_roles_account() {
    let w = world();
    let job = pulling(&w.ecr_image(JOB_ACCOUNT))
        .aws(&w.moto)
        .secret_var("ECR_ID_TOKEN", ID_TOKEN)
        .config(&format!(
            "[ecr]\nidentity = \"job\"\nrole_arn = \"{JOB_ROLE}\"\ncache_dir = \"@TMP@/cache\""
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    // The job's identity: the role and this job's session name.
    let who = format!(
        "with the job's AWS identity arn:aws:sts::{JOB_ACCOUNT}:assumed-role/gitlab-ci/gitlab-p{PROJECT_ID}-j{} (token from AWS)",
        job.id
    );
    assert!(prepare.stdout().contains(&who), "{}", prepare.stdout());
    job.run("build_script", "echo ok").assert_ok();
    assert!(
        !job.tmp.path().join("cache").exists()
            || std::fs::read_dir(job.tmp.path().join("cache"))
                .unwrap()
                .count()
                == 0,
        "job-identity tokens are never cached"
    );
}

#[test]
fn runner_identity_can_assume_a_cross_account_role() {
    let w = world();
    let job = pulling(&w.ecr_image(JOB_ACCOUNT))
        .aws(&w.moto)
        .config(&format!(
            "[ecr]\nidentity = \"runner\"\ncache_dir = \"@TMP@/cache\"\n[[registry]]\nhost = \"{}\"\nrole_arn = \"arn:aws:iam::{JOB_ACCOUNT}:role/puller\"",
            w.ecr_host(JOB_ACCOUNT)
        ))
        .build();
    job.prepare_ok();
}

#[test]
fn a_registry_alias_is_treated_as_ecr() {
    let w = world();
    let host = format!("127.0.0.1:{}", w.runner_port);
    let job = pulling(&format!("{host}/ecr-executor-test/busybox:latest"))
        .aws(&w.moto)
        .config(&format!(
            "[ecr]\ncache_dir = \"@TMP@/cache\"\n[[registry]]\nhost = \"{host}\"\nregistry_id = \"{RUNNER_ACCOUNT}\"\nregion = \"{REGION}\""
        ))
        .build();
    job.prepare_ok();
}

#[test]
fn docker_auth_config_serves_other_registries_job_variable_first() {
    let w = world();
    let host = format!("127.0.0.1:{}", w.job_port);
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let good = json!({"auths": {&host: {"auth": b64(&format!("AWS:{JOB_ACCOUNT}-auth-token"))}}})
        .to_string();
    let bad = json!({"auths": {&host: {"auth": b64("AWS:wrong")}}}).to_string();
    let job = pulling(&image)
        .var("DOCKER_AUTH_CONFIG", &good)
        .runner_env("DOCKER_AUTH_CONFIG", &bad)
        .build();
    job.prepare_ok();

    let job = pulling(&image)
        .var("DOCKER_AUTH_CONFIG", "{not json")
        .build();
    let out = job.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(out.stderr.contains("DOCKER_AUTH_CONFIG"), "{}", out.stderr);
}

#[test]
fn the_payloads_registry_credentials_come_last() {
    // GitLab hands each job a login to its container registry (user gitlab-ci-token, the
    // job token as password) in `credentials[]`; the Docker executor uses it when nothing
    // else matches the registry.
    let w = world();
    let host = format!("127.0.0.1:{}", w.job_port);
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let token = format!("{JOB_ACCOUNT}-auth-token");
    let credentials =
        json!([{"type": "registry", "url": &host, "username": "AWS", "password": &token}]);
    let job = pulling(&image).credentials(credentials.clone()).build();
    job.prepare_ok();
    job.run("build_script", "echo pulled-with-the-job-token")
        .assert_ok();
    let printed = String::from_utf8_lossy(&job.everything_printed()).into_owned();
    assert!(
        !printed.contains(&token),
        "the password never reaches the log"
    );

    // DOCKER_AUTH_CONFIG comes first: a wrong login there wins, and the pull is refused.
    let wrong = json!({"auths": {&host: {"auth": b64("AWS:wrong")}}}).to_string();
    let job = pulling(&image)
        .credentials(credentials)
        .var("DOCKER_AUTH_CONFIG", &wrong)
        .build();
    job.prepare().assert_code(SYSTEM_FAILURE);
}

fn cache_entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_warm_cache_serves_the_next_job_without_aws_calls() {
    let fake = FakeAws::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("ecr");
    let config = format!("[ecr]\ncache_dir = {cache_dir:?}");
    let image = world().ecr_image(RUNNER_ACCOUNT);

    let first = pulling(&image).aws(&fake.url).config(&config).build();
    first.prepare_ok();
    assert_eq!(fake.calls("GetAuthorizationToken"), 1);
    let second = pulling(&image).aws(&fake.url).config(&config).build();
    let prepare = second.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stdout().contains(&format!(
            "with the runner's AWS identity {RUNNER_ARN} (token from the cache)"
        )),
        "the ARN is kept with the cached token: {}",
        prepare.stdout()
    );
    assert_eq!(
        fake.calls("GetAuthorizationToken"),
        1,
        "the second job used the cache"
    );

    let check = second.driver(&["auth", "check", &image]);
    check.assert_ok();
    assert!(
        check.stdout().contains("source:   cache"),
        "{}",
        check.stdout()
    );
    assert!(
        check.stdout().contains("identity: runner"),
        "{}",
        check.stdout()
    );
    assert!(
        !check.stdout().contains("auth-token"),
        "auth check never prints the token"
    );
    assert_eq!(fake.calls("GetAuthorizationToken"), 1);

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache_dir), 0o700);
    let entries = cache_entries(&cache_dir);
    assert_eq!(entries.len(), 1);
    for file in std::fs::read_dir(&cache_dir).unwrap().flatten() {
        assert_eq!(mode(&file.path()), 0o600, "{}", file.path().display());
    }
    let name = entries[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        !name.contains("testing") && !name.contains(RUNNER_ACCOUNT),
        "{name}"
    );
    let entry = std::fs::read_to_string(&entries[0]).unwrap();
    assert!(
        !entry.contains("testing"),
        "the cache never holds the access key: {entry}"
    );
}

#[test]
fn job_identity_tokens_are_never_reused_by_another_job() {
    let fake = FakeAws::start();
    let cache = tempfile::tempdir().unwrap();
    let config = format!(
        "[ecr]\nidentity = \"job\"\nrole_arn = \"{JOB_ROLE}\"\ncache_dir = {:?}",
        cache.path()
    );
    let image = world().ecr_image(JOB_ACCOUNT);
    for n in 1..=2 {
        let job = pulling(&image)
            .aws(&fake.url)
            .secret_var("ECR_ID_TOKEN", ID_TOKEN)
            .config(&config)
            .build();
        job.prepare_ok();
        assert_eq!(fake.calls("AssumeRoleWithWebIdentity"), n);
        assert_eq!(fake.calls("GetAuthorizationToken"), n);
    }
    assert!(cache_entries(cache.path()).is_empty());
}

#[test]
fn sts_refusals_are_build_failures_with_the_likely_cause() {
    let fake = FakeAws::start();
    let image = world().ecr_image(JOB_ACCOUNT);
    for (status, code, hint) in [
        (400, "InvalidIdentityToken", "aud"),
        (400, "ExpiredTokenException", "expired"),
        (403, "IDPRejectedClaim", "claim"),
        (403, "AccessDenied", "`sub` condition"),
    ] {
        fake.reply("AssumeRoleWithWebIdentity", Reply::Error(status, code));
        let job = pulling(&image)
            .aws(&fake.url)
            .secret_var("ECR_ID_TOKEN", ID_TOKEN)
            .config(&format!("[ecr]\nrole_arn = \"{JOB_ROLE}\"\ncache = false"))
            .build();
        let out = job.prepare();
        out.assert_code(BUILD_FAILURE);
        for expected in [code, hint, JOB_ROLE] {
            assert!(
                out.stderr.contains(expected),
                "{code}: missing {expected:?} in {}",
                out.stderr
            );
        }
        assert!(!out.all().contains(ID_TOKEN));
    }
    assert_eq!(fake.calls("GetAuthorizationToken"), 0);
}

#[test]
fn a_job_identity_without_token_shows_the_yaml_to_add() {
    let job = pulling(&world().ecr_image(JOB_ACCOUNT))
        .config(&format!(
            "[ecr]\nidentity = \"job\"\nrole_arn = \"{JOB_ROLE}\""
        ))
        .build();
    let out = job.prepare();
    out.assert_code(BUILD_FAILURE);
    assert!(
        out.stderr
            .contains("id_tokens:\n    ECR_ID_TOKEN:\n      aud:"),
        "{}",
        out.stderr
    );
}

#[test]
fn throttling_and_server_errors_are_retried_then_system_failures() {
    let fake = FakeAws::start();
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let config = "[ecr]\ncache = false\nmax_attempts = 3";
    // (reply, total calls after it): transient errors are retried, a refusal is not.
    for (status, code, calls) in [
        (400, "ThrottlingException", 3),
        (500, "ServerException", 6),
        (400, "AccessDeniedException", 7),
    ] {
        fake.reply("GetAuthorizationToken", Reply::Error(status, code));
        let out = pulling(&image)
            .aws(&fake.url)
            .config(config)
            .build()
            .prepare();
        out.assert_code(SYSTEM_FAILURE);
        assert!(out.stderr.contains(code), "{}", out.stderr);
        assert_eq!(fake.calls("GetAuthorizationToken"), calls, "after {code}");
    }
}

#[test]
fn an_endpoint_that_never_answers_does_not_hang() {
    let fake = FakeAws::start();
    fake.reply("GetAuthorizationToken", Reply::Hang);
    let job = pulling(&world().ecr_image(RUNNER_ACCOUNT))
        .aws(&fake.url)
        .config("[ecr]\ncache = false\ntimeout_seconds = 1\nmax_attempts = 2")
        .build();
    let start = Instant::now();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert!(out.stderr.contains("did not answer"), "{}", out.stderr);
}

#[test]
fn thirty_two_concurrent_prepares_share_one_cache_entry() {
    let fake = FakeAws::start();
    fake.reply(
        "GetAuthorizationToken",
        Reply::Delay(Duration::from_millis(300)),
    );
    let cache = tempfile::tempdir().unwrap();
    let trail = cache.path().join("audit/pulls.jsonl");
    std::fs::create_dir(trail.parent().unwrap()).unwrap();
    let config = format!(
        "[ecr]\ncache_dir = {:?}\n[audit]\nfile = {trail:?}",
        cache.path().join("ecr")
    );
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let jobs: Vec<Job> = (0..32)
        .map(|_| {
            pulling(&image)
                .aws(&fake.url)
                .config(&config)
                .var("CI_PROJECT_PATH", "group/project")
                .var("CI_PIPELINE_ID", "777")
                .var(
                    "CI_JOB_URL",
                    "https://gitlab.example.com/group/project/-/jobs/1",
                )
                .build()
        })
        .collect();
    let running: Vec<Running> = jobs.iter().map(Job::spawn_prepare).collect();
    for run in running {
        run.wait(Duration::from_secs(240)).assert_ok();
    }
    assert_eq!(
        fake.calls("GetAuthorizationToken"),
        1,
        "one process fetched, 31 waited for it"
    );
    let entries = cache_entries(&cache.path().join("ecr"));
    assert_eq!(entries.len(), 1);
    let entry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&entries[0]).unwrap()).expect("valid JSON");
    assert_eq!(entry["registry_id"], RUNNER_ACCOUNT);

    // The audit trail: a whole JSON object per line, two per job (job image and helper),
    // written by 32 processes at once; nothing secret in it.
    let text = std::fs::read_to_string(&trail).unwrap();
    assert!(
        !text.contains("auth-token") && !text.contains("testing"),
        "{text}"
    );
    let mode = std::fs::metadata(&trail).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 64, "{text}");
    let repository = image.rsplit_once(':').unwrap().0;
    let mut from_aws = 0;
    for job in &jobs {
        let id = job.id.to_string();
        let build: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["job_id"] == id.as_str() && l["role"] == "build")
            .collect();
        assert_eq!(build.len(), 1, "job {id}: {text}");
        let b = build[0];
        assert_eq!(b["image"], image.as_str());
        assert_eq!(b["image_pulled"], image.as_str());
        assert!(
            b["digest"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{repository}@sha256:")),
            "{b}"
        );
        assert_eq!(b["registry"], world().ecr_host(RUNNER_ACCOUNT).as_str());
        assert_eq!(b["identity"], "runner");
        assert_eq!(b["principal_arn"], RUNNER_ARN);
        assert_eq!(b["outcome"], "pulled");
        assert_eq!(b["project"], "group/project");
        assert_eq!(b["pipeline_id"], "777");
        assert_eq!(b["runner"], RUNNER_TOKEN);
        assert!(b["job_url"].as_str().unwrap().starts_with("https://"));
        assert!(b["duration_ms"].is_u64() && b["time"].as_str().unwrap().ends_with('Z'));
        if b["cache_hit"] == false {
            from_aws += 1;
        }
        assert!(
            lines
                .iter()
                .any(|l| l["job_id"] == id.as_str() && l["role"] == "helper"),
            "job {id}"
        );
    }
    assert_eq!(
        from_aws, 1,
        "the token came from AWS once, then from the cache"
    );
}

/// Issue 22, defect 3: a prepare waiting for the token cache's lock, which another process
/// holds, ends at once on the runner's SIGTERM (before, it waited for the lock in a blocking
/// thread that the exiting runtime had to join, for as long as the holder kept it).
#[test]
fn a_prepare_waiting_for_the_cache_lock_is_cancelled_at_once() {
    let fake = FakeAws::start();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("ecr");
    let config = format!("[ecr]\ncache_dir = {cache_dir:?}");
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let first = pulling(&image).aws(&fake.url).config(&config).build();
    first.prepare_ok();
    first.cleanup().assert_ok();
    // The next job misses the cache and needs the key's lock, which another process holds.
    for entry in cache_entries(&cache_dir) {
        std::fs::remove_file(entry).unwrap();
    }
    let lock = std::fs::read_dir(&cache_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .expect("the key's lock file");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["-c", "echo held; exec sleep 120"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut held,
    )
    .unwrap();
    assert_eq!(held.trim(), "held");

    let job = pulling(&image).aws(&fake.url).config(&config).build();
    let prepare = job.spawn_prepare();
    prepare.wait_for_output("Waiting for another job that is fetching the same token");
    prepare.cancel_prepare(&job);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        fake.calls("GetAuthorizationToken"),
        1,
        "the cancelled job fetched nothing"
    );
}

#[test]
fn secrets_never_leave_the_driver() {
    let fake = FakeAws::start();
    let image = world().ecr_image(JOB_ACCOUNT);
    let password = format!("{JOB_ACCOUNT}-auth-token");
    // The service comes from a registry the payload's job-token login opens.
    let registry = format!("127.0.0.1:{}", world().runner_port);
    let registry_password = format!("{RUNNER_ACCOUNT}-auth-token");
    let secrets = [
        ID_TOKEN.to_owned(),
        password.clone(),
        b64(&format!("AWS:{password}")),
        registry_password.clone(),
        STS_SECRET_KEY.to_owned(),
        STS_SESSION_TOKEN.to_owned(),
    ];
    let cache = tempfile::tempdir().unwrap();
    let job = pulling(&image)
        .aws(&fake.url)
        .secret_var("ECR_ID_TOKEN", ID_TOKEN)
        .credentials(json!([{"type": "registry", "url": &registry, "username": "AWS", "password": &registry_password}]))
        .services(json!([{
            "name": format!("{registry}/ecr-executor-test/busybox:latest"),
            "pull_policy": ["always"],
            "entrypoint": ["sh", "-c"],
            "command": ["sleep 600"]
        }]))
        .config(&format!(
            "[ecr]\nrole_arn = \"{JOB_ROLE}\"\ncache_dir = {:?}",
            cache.path()
        ))
        .build();
    job.config_stage().assert_ok();
    job.prepare_ok();
    job.run("get_sources", "ps -o args; echo sources")
        .assert_ok();
    job.run(
        "build_script",
        "ps -o args; cat /proc/1/cmdline; echo build",
    )
    .assert_ok();
    job.run("after_script", "echo after").assert_ok();
    let mut inspected = Vec::new();
    for container in [
        job.build_container(),
        format!("{}-helper", job.key()),
        format!("{}-svc0", job.key()),
    ] {
        inspected.extend(docker(&["inspect", &container]));
    }
    inspected.extend(docker(&[
        "network",
        "inspect",
        &format!("{}-network", job.key()),
    ]));
    job.driver(&["auth", "check", &image]).assert_ok();
    job.cleanup().assert_ok();

    let printed = String::from_utf8_lossy(&job.everything_printed()).into_owned();
    let inspected = inspected.join("\n");
    for secret in &secrets {
        assert!(!printed.contains(secret.as_str()), "printed: {secret}");
        assert!(
            !inspected.contains(secret.as_str()),
            "in docker inspect: {secret}"
        );
    }
    assert!(printed.contains("build"), "the job did run");
    assert!(
        cache_entries(cache.path()).is_empty(),
        "nothing written for job identity"
    );
    assert_no_leftovers(&job);
}

#[test]
fn ecr_public_uses_its_own_api_in_us_east_1() {
    let fake = FakeAws::start();
    let job = Job::builder(BUSYBOX)
        .aws(&fake.url)
        .config("[ecr]\ncache = false")
        .build();
    let out = job.driver(&["auth", "check", "public.ecr.aws/docker/library/alpine:3"]);
    out.assert_ok();
    let text = out.stdout();
    assert!(text.contains("ECR Public (region us-east-1"), "{text}");
    assert!(!text.contains("public-auth-token"));
    assert_eq!(fake.calls("ecr-public"), 1);
    assert_eq!(fake.calls("GetAuthorizationToken"), 0);
}

#[test]
fn job_and_helper_images_on_two_registries_are_authenticated_concurrently() {
    let fake = FakeAws::start();
    fake.reply(
        "GetAuthorizationToken",
        Reply::Delay(Duration::from_millis(500)),
    );
    let w = world();
    let helper = format!(
        "{}/ecr-executor-test/helper:latest",
        w.ecr_host(JOB_ACCOUNT)
    );
    // Only this test uses the helper from the registry: make sure it is really pulled.
    let _ = std::process::Command::new("docker")
        .args(["rmi", &helper])
        .output();
    let job = pulling(&w.ecr_image(RUNNER_ACCOUNT))
        .aws(&fake.url)
        .only_config(&format!(
            "helper_image = \"{helper}\"\nallowed_pull_policies = [\"always\"]\n[ecr]\ncache = false"
        ))
        .build();
    job.prepare_ok();
    assert_eq!(fake.calls("GetAuthorizationToken"), 2);
    assert_eq!(
        fake.max_in_flight("GetAuthorizationToken"),
        2,
        "both registries were resolved at the same time"
    );
    let out = job.run("get_sources", "gitlab-runner --version");
    out.assert_ok();
    assert!(out.stdout().contains("stand-in"), "{}", out.all());
}

/// Point 5 of the parity issue: a FIPS registry gets its token from FIPS endpoints, with no
/// setting of the operator's. The SDK resolves its endpoints itself here (no endpoint URL):
/// the test world sends AWS's names to loopback, where the stand-in sees which one it chose.
#[test]
fn fips_registries_get_their_tokens_from_fips_endpoints() {
    let fake = FakeAws::start();
    let names = AwsNames::start(
        &fake,
        &[
            "ecr-fips.eu-west-1.amazonaws.com",
            "sts-fips.eu-west-1.amazonaws.com",
            "api.ecr.eu-west-1.amazonaws.com",
            "sts.eu-west-1.amazonaws.com",
            "sts.amazonaws.com",
        ],
    );
    let w = world();
    let image = format!(
        "{RUNNER_ACCOUNT}.dkr.ecr-fips.{REGION}.amazonaws.com:{}/ecr-executor-test/busybox:latest",
        w.runner_port
    );
    let fips = |builder: JobBuilder| {
        builder
            .runner_env("AWS_ACCESS_KEY_ID", "testing")
            .runner_env("AWS_SECRET_ACCESS_KEY", "testing")
            .runner_env("AWS_EC2_METADATA_DISABLED", "true")
            .runner_env("SSL_CERT_FILE", names.ca().to_str().unwrap())
            .build()
    };
    fips(pulling(&image).config("[ecr]\ncache = false")).prepare_ok();
    assert_eq!(
        fake.hosts("GetAuthorizationToken"),
        ["ecr-fips.eu-west-1.amazonaws.com"]
    );

    let job = fips(
        pulling(&image)
            .secret_var("ECR_ID_TOKEN", ID_TOKEN)
            .config(&format!(
                "[ecr]\nidentity = \"job\"\nrole_arn = \"{JOB_ROLE}\""
            )),
    );
    job.prepare_ok();
    assert_eq!(
        fake.hosts("AssumeRoleWithWebIdentity"),
        ["sts-fips.eu-west-1.amazonaws.com"]
    );
    assert_eq!(
        fake.hosts("GetAuthorizationToken")
            .last()
            .map(String::as_str),
        Some("ecr-fips.eu-west-1.amazonaws.com")
    );

    // An endpoint the operator names is used as given: the SDK refuses FIPS beside one.
    let given = pulling(&image)
        .aws(&fake.url)
        .config("[ecr]\ncache = false")
        .build();
    given.prepare_ok();
    let host = fake.url.trim_start_matches("http://");
    assert_eq!(
        fake.hosts("GetAuthorizationToken")
            .last()
            .map(String::as_str),
        Some(host)
    );
}
