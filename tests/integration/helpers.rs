//! Docker credential helpers, as the Docker executor runs them (`docker-credential-<name>
//! get`, the server on stdin, JSON on stdout), and safer: a helper only a job's
//! `DOCKER_AUTH_CONFIG` names runs only when `allowed_credential_helpers` lists it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use base64::Engine;
use serde_json::json;

use crate::harness::*;

/// A directory of helper scripts put first on the runner's `PATH`.
pub struct Helpers {
    dir: tempfile::TempDir,
}

impl Helpers {
    pub fn new() -> Helpers {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Helpers { dir }
    }

    /// `docker-credential-<name>`: records each server it is asked for, then runs `body`.
    pub fn add(&self, name: &str, body: &str) -> &Self {
        let path = self.dir.path().join(format!("docker-credential-{name}"));
        let log = self.log(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread -r server || true\necho \"$server\" >> '{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.asked"))
    }

    /// The servers helper `name` was asked for.
    fn asked(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.log(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// The test registry that wants `AWS` / `<account>-auth-token`, and an image on it.
fn registry() -> (String, String, String) {
    let host = format!("127.0.0.1:{}", world().job_port);
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    (host, image, format!("{JOB_ACCOUNT}-auth-token"))
}

/// A job that must pull `image` (policy `always`) with the helpers on its runner's PATH.
fn pulling(image: &str, helpers: &Helpers) -> JobBuilder {
    Job::builder(image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .runner_env("PATH", &helpers.path())
}

fn answer(secret: &str) -> String {
    format!(r#"printf '{{"ServerURL":"%s","Username":"AWS","Secret":"{secret}"}}' "$server""#)
}

#[test]
fn the_runners_helpers_log_in_as_the_docker_executor_does() {
    let (host, image, password) = registry();
    let helpers = Helpers::new();
    helpers.add("itest", &answer(&password));

    // `credHelpers` in the runner's DOCKER_AUTH_CONFIG (its `[[runners]] environment`).
    let job = pulling(&image, &helpers)
        .runner_env(
            "DOCKER_AUTH_CONFIG",
            &json!({"credHelpers": {&host: "itest"}}).to_string(),
        )
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stdout().contains(&format!(
            "Pulling image {image} with user AWS from docker-credential-itest (the runner's \
             DOCKER_AUTH_CONFIG) ..."
        )),
        "{}",
        prepare.stdout()
    );
    assert_eq!(
        helpers.asked("itest"),
        std::slice::from_ref(&host),
        "asked once, for the host"
    );
    let everything = String::from_utf8_lossy(&job.everything_printed()).into_owned();
    assert!(!everything.contains(&password), "never the helper's secret");
    job.cleanup().assert_ok();

    // `credsStore` in the runner user's ~/.docker/config.json, with a `{}` entry as
    // `docker login` writes beside a store.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".docker")).unwrap();
    std::fs::write(
        home.path().join(".docker/config.json"),
        json!({"credsStore": "itest", "auths": {&host: {}}}).to_string(),
    )
    .unwrap();
    let job = pulling(&image, &helpers)
        .runner_env("HOME", home.path().to_str().unwrap())
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare
            .stdout()
            .contains("from docker-credential-itest (the runner user's Docker config)"),
        "{}",
        prepare.stdout()
    );
    job.cleanup().assert_ok();

    // The driver config's own `credential_helpers`.
    let job = pulling(&image, &helpers)
        .config(&format!(
            "credential_helpers = {{ \"{host}\" = \"itest\" }}"
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare
            .stdout()
            .contains("from docker-credential-itest (the driver config's credential_helpers)"),
        "{}",
        prepare.stdout()
    );
    job.cleanup().assert_ok();
}

#[test]
fn a_helper_only_the_job_names_runs_only_when_the_operator_allows_it() {
    let (host, image, password) = registry();
    let helpers = Helpers::new();
    helpers.add("itest", &answer(&password));
    let config = json!({"credHelpers": {&host: "itest"}}).to_string();

    let job = pulling(&image, &helpers)
        .var("DOCKER_AUTH_CONFIG", &config)
        .build();
    let prepare = job.prepare();
    prepare.assert_code(BUILD_FAILURE);
    assert!(
        prepare.stderr.contains(&format!(
            "the job's DOCKER_AUTH_CONFIG names the credential helper docker-credential-itest \
             for {host}, which `allowed_credential_helpers` in the driver config does not list"
        )) && prepare.stderr.matches("ERROR").count() == 1,
        "{}",
        prepare.stderr
    );
    assert!(helpers.asked("itest").is_empty(), "the helper never ran");
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    let job = pulling(&image, &helpers)
        .var("DOCKER_AUTH_CONFIG", &config)
        .config("allowed_credential_helpers = [\"itest\"]")
        .build();
    job.prepare_ok();
    assert_eq!(helpers.asked("itest"), [host]);
    job.cleanup().assert_ok();
}

#[test]
fn helpers_that_fail_or_find_nothing_say_so_without_secrets() {
    let (host, image, _) = registry();
    let helpers = Helpers::new();
    helpers
        .add(
            "broken",
            "echo 'vault refused key AKIAIOSFODNN7EXAMPLE0 for this host' >&2; exit 3",
        )
        .add(
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
    let with = |helper: &str| {
        pulling(&image, &helpers)
            .runner_env(
                "DOCKER_AUTH_CONFIG",
                &json!({"credHelpers": {&host: helper}}).to_string(),
            )
            .build()
    };

    let job = with("broken");
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains(&format!(
            "no login for {host} from its credential helper, named by the runner's \
             DOCKER_AUTH_CONFIG: docker-credential-broken failed (exit status: 3): vault refused \
             key [redacted] for this host"
        )),
        "{}",
        prepare.stderr
    );
    assert!(!prepare.all().contains("AKIAIOSFODNN7EXAMPLE0"));
    job.cleanup().assert_ok();

    // "credentials not found": an anonymous pull, which this registry refuses.
    let job = with("none");
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains("no basic auth credentials")
            || prepare.stderr.contains("unauthorized"),
        "{}",
        prepare.stderr
    );
    assert_eq!(helpers.asked("none"), std::slice::from_ref(&host));
    job.cleanup().assert_ok();

    // A helper that is not there.
    let job = with("absent");
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare
            .stderr
            .contains("docker-credential-absent is not on the runner's PATH"),
        "{}",
        prepare.stderr
    );
    job.cleanup().assert_ok();
}

/// A runner migrated from the Docker executor with `credsStore: ecr-login`: ECR images still
/// use the driver's own authentication (and so the job's identity when it has one), never
/// the helper, which would answer with the host's identity.
#[test]
fn a_migrated_ecr_login_store_never_overrides_the_drivers_ecr_authentication() {
    let w = world();
    let helpers = Helpers::new();
    helpers.add(
        "ecr-login",
        "echo 'the driver must not call me' >&2; exit 7",
    );
    let image = w.ecr_image(RUNNER_ACCOUNT);
    let job = pulling(&image, &helpers)
        .aws(&w.moto)
        .runner_env("DOCKER_AUTH_CONFIG", r#"{"credsStore":"ecr-login"}"#)
        .config("[ecr]\ncache_dir = \"@TMP@/cache\"")
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stdout().contains("with the runner's AWS identity"),
        "{}",
        prepare.stdout()
    );
    assert!(helpers.asked("ecr-login").is_empty(), "ecr-login never ran");
    job.cleanup().assert_ok();

    let out = job.driver(&["doctor"]);
    let said = out.stdout();
    let line = said
        .lines()
        .find(|l| l.contains("docker-credential-ecr-login"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        line.starts_with("✔")
            && line.contains("named by the runner's DOCKER_AUTH_CONFIG")
            && line.contains("ECR hosts use the driver's own authentication instead"),
        "{line}"
    );
}

/// The real `docker-credential-ecr-login` (Debian's 0.6.0), as a migrated runner has it in
/// `credsStore`. The test world serves ECR's API to it at its real hostname over TLS (through
/// a loopback proxy to moto), where it gets a token as the Docker executor would. The driver
/// never asks it for an ECR host (its own authentication is used; a wrapper records what the
/// real binary is asked), and for any other registry it runs it as the Docker executor does:
/// "credentials not found" there means an anonymous pull, which works.
#[test]
fn the_real_ecr_login_helper_as_a_migrated_runners_credential_store() {
    let w = world();
    let real = std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN")
        .expect("ECR_EXECUTOR_TEST_ECR_LOGIN is not set: run the tests with scripts/test.sh");
    let connections = || {
        let log = std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN_LOG").unwrap();
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let cache = tempfile::tempdir().unwrap();
    let helper_env = [
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        (
            "AWS_CA_BUNDLE",
            std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN_CA").unwrap(),
        ),
        (
            "HTTPS_PROXY",
            std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN_PROXY").unwrap(),
        ),
        ("AWS_ECR_CACHE_DIR", cache.path().display().to_string()),
    ];

    // The helper itself works here, as the Docker CLI would run it.
    let initially = connections();
    let mut get = std::process::Command::new(&real);
    get.arg("get")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", cache.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (k, v) in &helper_env {
        get.env(k, v);
    }
    let mut child = get.spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{RUNNER_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(r#""Username":"AWS""#),
        "{said}"
    );
    // The endpoint logs a connection when it closes, maybe after the helper has exited.
    let start = std::time::Instant::now();
    while connections() == initially {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the helper reached ECR's API through the test endpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mut registry = crate::cached::Registry::start();
    let anonymous = format!(
        "127.0.0.1:{}/migrated/busybox:{}",
        registry.port,
        std::process::id()
    );
    docker(&["tag", BUSYBOX, &anonymous]);
    docker(&["push", &anonymous]);
    docker(&["rmi", &anonymous]);

    // The real binary behind a wrapper that records what the driver asks it.
    let helpers = Helpers::new();
    helpers.add(
        "ecr-login",
        &format!("printf '%s\\n' \"$server\" | exec {real} get"),
    );
    let image = w.ecr_image(RUNNER_ACCOUNT);
    let mut job = Job::builder(&image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .services(json!([{"name": anonymous, "alias": "anon", "entrypoint": ["sh", "-c"], "command": ["sleep 600"]}]))
        .aws(&w.moto)
        .runner_env("DOCKER_AUTH_CONFIG", r#"{"credsStore":"ecr-login"}"#)
        .runner_env("PATH", &helpers.path())
        .config("[ecr]\ncache_dir = \"@TMP@/cache\"");
    for (k, v) in &helper_env[2..] {
        job = job.runner_env(k, v);
    }
    let job = job.build();
    let prepare = job.prepare();
    prepare.assert_ok();
    let said = prepare.stdout();
    assert!(
        said.contains(&format!(
            "Pulling image {image} with the runner's AWS identity"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("Pulling image {anonymous} ...")),
        "the store had nothing for it: an anonymous pull: {said}"
    );
    // The real binary ran, for the anonymous registry only: never for the ECR host.
    assert_eq!(
        helpers.asked("ecr-login"),
        [format!("127.0.0.1:{}", registry.port)],
        "ecr-login was asked only for the registry that is not ECR"
    );
    job.cleanup().assert_ok();
    registry.stop();
    docker(&["rmi", &anonymous]);
}

/// What the real helper does with its token cache (`$AWS_ECR_CACHE_DIR/cache.json`), beside
/// what the driver does with its own (docs/ecr-auth.md's comparison): a corrupted file is
/// fetched anew, but an expired token is handed out when ECR's API cannot be reached, which
/// the driver never does (`auth::cache` tests, `ecr::throttling_and_server_errors_...`).
#[test]
fn the_real_ecr_login_helpers_cache_as_observed() {
    let real = std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN")
        .expect("ECR_EXECUTOR_TEST_ECR_LOGIN is not set: run the tests with scripts/test.sh");
    let cache = tempfile::tempdir().unwrap();
    let registry = format!("{RUNNER_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let get = |proxy: &str| {
        let mut cmd = std::process::Command::new(&real);
        cmd.arg("get")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", cache.path())
            .env("AWS_ECR_CACHE_DIR", cache.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env(
                "AWS_CA_BUNDLE",
                std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN_CA").unwrap(),
            )
            .env("HTTPS_PROXY", proxy)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), registry.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let proxy = std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN_PROXY").unwrap();
    let file = cache.path().join("cache.json");

    // A corrupted cache file: logged, fetched anew, rewritten.
    std::fs::write(&file, b"{\"Registries\": garbage").unwrap();
    let (ok, said) = get(&proxy);
    assert!(ok && said.contains(r#""Username":"AWS""#), "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut entry: serde_json::Value = serde_json::from_str(&text).expect("rewritten whole");

    // The same entry, expired a day ago, and ECR's API unreachable (a closed proxy port):
    // the helper answers with the expired token.
    let key = entry["Registries"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let day = 24 * 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // RFC 3339 in UTC, as the helper's Go code writes times.
    let stamp = |secs: u64| {
        aws_smithy_types::DateTime::from_secs(i64::try_from(secs).unwrap())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap()
    };
    entry["Registries"][&key]["RequestedAt"] = stamp(now - 2 * day).into();
    entry["Registries"][&key]["ExpiresAt"] = stamp(now - day).into();
    entry["Registries"][&key]["AuthorizationToken"] = base64::engine::general_purpose::STANDARD
        .encode("AWS:expired-token-from-the-cache")
        .into();
    std::fs::write(&file, entry.to_string()).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (ok, said) = get(&dead);
    assert!(
        ok && said.contains("expired-token-from-the-cache"),
        "0.6.0 falls back to the expired token: {ok} {said}"
    );
}
