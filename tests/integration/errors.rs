//! The failures a new operator meets first, each one plain sentence with the cause and the
//! fix, in the job log and from `auth check`: no Rust debug output, never twice.

use std::os::unix::process::CommandExt;

use serde_json::json;

use crate::fake_aws::{FakeAws, RUNNER_ARN, Reply};
use crate::faults::{ManifestFault, failing_registry};
use crate::harness::*;

/// A job whose image must really be pulled (policy `always`).
fn pulling(image: &str) -> JobBuilder {
    Job::builder(image).payload_image(json!({"name": image, "pull_policy": ["always"]}))
}

/// One `ERROR:` line, holding every `parts`, and none of the SDK's debug words.
#[track_caller]
fn one_error_with(out: &Output, parts: &[&str]) {
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    for part in parts {
        assert!(errors[0].contains(part), "{part:?} not in {}", errors[0]);
    }
    for debug in [
        "DispatchFailure",
        "CredentialsNotLoaded",
        "ConnectorError",
        "Some(",
        "{ ",
    ] {
        assert!(!errors[0].contains(debug), "{debug:?} in {}", errors[0]);
    }
}

#[test]
fn no_aws_credentials_name_the_chain_and_the_fixes() {
    let out = prepare_and_check_without_credentials(
        ("AWS_EC2_METADATA_DISABLED", "true"),
        &[
            "no AWS credentials",
            "instance profile",
            "AWS_PROFILE",
            "identity = \"job\"",
        ],
    );
    assert!(!out.stderr.contains("network"), "{}", out.stderr);
}

/// Prepare and `auth check` of an ECR image on a runner host with no AWS credentials in
/// its environment or home, the metadata service as `metadata` says: each gives one error
/// with every one of `parts`. Returns prepare's output.
fn prepare_and_check_without_credentials(metadata: (&str, &str), parts: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let job = pulling(&world().ecr_image(RUNNER_ACCOUNT))
        .runner_env("HOME", home.path().to_str().unwrap())
        .runner_env(metadata.0, metadata.1)
        .runner_env("AWS_ENDPOINT_URL", &world().moto)
        .config("[ecr]\ncache = false\nmax_attempts = 1")
        .build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    one_error_with(&out, parts);
    let check = job.driver(&["auth", "check", &world().ecr_image(RUNNER_ACCOUNT)]);
    check.assert_code(SYSTEM_FAILURE);
    one_error_with(&check, parts);
    out
}

/// An instance metadata service on loopback that refuses every request, as one does where
/// the instance has IMDS turned off (403).
fn refusing_metadata_service() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&conn);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = std::io::Write::write_all(
                &mut &conn,
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    url
}

#[test]
fn a_credential_source_that_fails_is_named_not_blamed_on_the_network() {
    let imds = refusing_metadata_service();
    let out = prepare_and_check_without_credentials(
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds),
        &[
            "the runner's AWS credentials for ECR registry",
            "could not be loaded",
            "IMDS is disabled",
            "the instance profile and its metadata service",
        ],
    );
    assert!(!out.stderr.contains("network"), "{}", out.stderr);
}

#[test]
fn access_denied_on_the_token_names_the_identity_and_the_action() {
    let fake = FakeAws::start();
    fake.reply(
        "GetAuthorizationToken",
        Reply::Error(400, "AccessDeniedException"),
    );
    let job = pulling(&world().ecr_image(RUNNER_ACCOUNT))
        .aws(&fake.url)
        .config("[ecr]\ncache = false")
        .build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    one_error_with(
        &out,
        &[
            &format!("AWS denied ecr:GetAuthorizationToken to {RUNNER_ARN}"),
            "allow that identity ecr:GetAuthorizationToken",
        ],
    );
}

#[test]
fn an_anonymous_pull_that_is_refused_asks_for_credentials_not_a_new_tag() {
    // Docker's words for it: "pull access denied for ..., repository does not exist or may
    // require 'docker login': denied: ...". With no credentials, credentials are the fix.
    let (port, _) = failing_registry(ManifestFault::Denied);
    let out = pulling(&format!("127.0.0.1:{port}/team/app:1"))
        .build()
        .prepare();
    out.assert_code(SYSTEM_FAILURE);
    one_error_with(
        &out,
        &[
            "the driver has no credentials for this registry",
            "DOCKER_AUTH_CONFIG",
        ],
    );
    assert!(!out.stderr.contains("has no image"), "{}", out.stderr);
}

#[test]
fn access_denied_on_the_pull_names_the_identity_and_the_actions() {
    let fake = FakeAws::start();
    let (port, _) = failing_registry(ManifestFault::Denied);
    let job = pulling(&format!("127.0.0.1:{port}/team/app:1"))
        .aws(&fake.url)
        .config(&format!(
            "[ecr]\ncache = false\n[[registry]]\nhost = \"127.0.0.1:{port}\"\nregistry_id = \"{RUNNER_ACCOUNT}\"\nregion = \"{REGION}\""
        ))
        .build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    one_error_with(
        &out,
        &[
            &format!("refused to let {RUNNER_ARN} pull 127.0.0.1:{port}/team/app:1"),
            "ecr:BatchGetImage and ecr:GetDownloadUrlForLayer",
        ],
    );
}

#[test]
fn an_image_not_on_ecr_names_account_region_repository_and_tag() {
    let w = world();
    let image = format!("{}/team/missing:7", w.ecr_host(RUNNER_ACCOUNT));
    let job = pulling(&image)
        .aws(&w.moto)
        .config("[ecr]\ncache = false")
        .build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    one_error_with(
        &out,
        &[
            &format!("ECR registry {RUNNER_ACCOUNT} in {REGION} has no image team/missing:7"),
            "check the image's name and tag",
        ],
    );
}

#[test]
fn a_docker_socket_the_user_may_not_use_names_the_docker_group() {
    // The driver as `nobody`, against the engine's socket (root:docker, mode 0660).
    let bin = tempfile::tempdir().unwrap();
    let driver = bin.path().join("ecr-executor");
    std::fs::copy(env!("CARGO_BIN_EXE_ecr-executor"), &driver).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&driver)
        .args(["gc", "--dry-run"])
        .env_clear()
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("permission denied") && stderr.contains("`docker` group"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("ERROR:").count(), 1, "{stderr}");
}

#[test]
fn an_unknown_config_key_suggests_the_nearest() {
    let job = Job::builder(BUSYBOX)
        .config("defualt_image = \"x\"")
        .build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    one_error_with(
        &out,
        &[
            "driver.toml",
            "unknown key `defualt_image`",
            "did you mean `default_image`?",
        ],
    );
}
