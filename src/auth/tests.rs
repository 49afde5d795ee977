//! Resolver logic against a fake [`TokenFetcher`]: identity choice, per-job dedupe, disk
//! cache use, and DOCKER_AUTH_CONFIG precedence. The AWS side is tested against moto and a
//! fault-injecting endpoint in the integration suite.

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;

use super::*;
use crate::config::Config;
use crate::policy::AllowList;

struct Fake {
    calls: AtomicUsize,
    /// How many of the calls were for FIPS endpoints.
    fips_calls: AtomicUsize,
    lifetime: u64,
}

impl Fake {
    fn new(lifetime: u64) -> Fake {
        Fake {
            calls: AtomicUsize::new(0),
            fips_calls: AtomicUsize::new(0),
            lifetime,
        }
    }
}

impl TokenFetcher for Fake {
    async fn fetch(
        &self,
        target: &EcrTarget,
        identity: &Identity,
        _session: &str,
    ) -> Result<FetchedToken> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if target.fips {
            self.fips_calls.fetch_add(1, Ordering::SeqCst);
        }
        tokio::task::yield_now().await;
        let who = match identity {
            Identity::Runner { .. } => "runner",
            Identity::Job { .. } => "job",
        };
        let now = unix_now();
        Ok(FetchedToken {
            login: Login {
                username: "AWS".into(),
                password: SecretString::from(format!(
                    "{}-{who}",
                    target.registry_id.as_deref().unwrap_or("public")
                )),
                server: target.host.clone(),
                identity_token: false,
            },
            requested_at: now,
            expires_at: now + self.lifetime,
            arn: Some(format!("arn:aws:iam::111111111111:user/fake-{who}")),
        })
    }
}

fn env(vars: &[(&str, &str)]) -> Env {
    Env::from_pairs(
        vars.iter()
            .map(|(k, v)| (OsString::from(*k), OsString::from(*v))),
    )
}

fn config(text: &str) -> Config {
    Config::parse(text).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

#[test]
fn job_roles_match_the_allow_list_globs() {
    let roles = |patterns: &[&str]| {
        AllowList::try_from(patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    };
    let ci = roles(&["arn:aws:iam::1:role/ci-*"]);
    assert!(ci.allows("arn:aws:iam::1:role/ci-build"));
    assert!(!ci.allows("arn:aws:iam::1:role/admin"));
    assert!(
        !ci.allows("arn:aws:iam::1:role/ci-x/nested"),
        "* stays in one segment"
    );
    assert!(roles(&["arn:aws:iam::1:role/**"]).allows("arn:aws:iam::1:role/team/ci"));
    assert!(!roles(&["exact"]).allows("exactly"));
}

#[test]
fn session_names_fit_sts() {
    let e = env(&[
        ("CUSTOM_ENV_CI_PROJECT_ID", "42"),
        ("CUSTOM_ENV_CI_JOB_ID", "1001"),
    ]);
    assert_eq!(session_name(&e), "gitlab-p42-j1001");
    let long = "9".repeat(100);
    let e = env(&[
        ("CUSTOM_ENV_CI_PROJECT_ID", "4 2/x"),
        ("CUSTOM_ENV_CI_JOB_ID", &long),
    ]);
    let name = session_name(&e);
    assert!(
        name.len() <= 64 && name.starts_with("gitlab-p42x-j999"),
        "{name}"
    );
}

#[test]
fn targets_from_hostnames_and_registry_entries() {
    let c = config(
        r#"
        [ecr]
        role_arn = "arn:aws:iam::123456789012:role/default"
        [[registry]]
        host = "cache.example.com:5000"
        registry_id = "210987654321"
        region = "us-west-2"
        identity = "runner"
        [[registry]]
        host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        role_arn = "arn:aws:iam::123456789012:role/special"
        "#,
    );
    let e = env(&[]);
    let r = Resolver::with_fetcher(&c, &e, Fake::new(3600));
    let t = r.ecr_target(HOST).unwrap();
    assert_eq!(t.registry_id.as_deref(), Some("123456789012"));
    assert_eq!(t.region, "eu-west-1");
    assert_eq!(
        t.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/special")
    );
    let t = r.ecr_target("cache.example.com:5000").unwrap();
    assert_eq!(t.registry_id.as_deref(), Some("210987654321"));
    assert_eq!(t.mode, IdentityMode::Runner);
    assert_eq!(
        t.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/default")
    );
    assert!(r.ecr_target("cache.example.com:5001").is_none());
    assert!(r.ecr_target("docker.io").is_none());
    let t = r.ecr_target("public.ecr.aws").unwrap();
    assert_eq!((t.registry_id, t.region.as_str()), (None, "us-east-1"));
    assert!(!t.fips);
}

/// Point 5 of the parity issue: a FIPS hostname keeps its FIPS flag up to the fetcher, which
/// asks the SDK for FIPS endpoints unless the environment names an endpoint.
#[test]
fn fips_hostnames_reach_the_fetcher_as_fips() {
    let c = config("");
    let e = env(&[]);
    let r = Resolver::with_fetcher(&c, &e, Fake::new(3600));
    for (host, fips) in [
        ("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", true),
        ("123456789012.dkr-ecr-fips.us-east-1.on.aws", true),
        (
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            true,
        ),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com", false),
        ("123456789012.dkr-ecr.us-east-1.on.aws", false),
    ] {
        assert_eq!(r.ecr_target(host).unwrap().fips, fips, "{host}");
    }
    let ecr = |pairs: &[(&str, &str)]| env(pairs).aws_endpoint_configured;
    assert!(!ecr(&[]));
    assert!(ecr(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]));
    assert!(ecr(&[("AWS_ENDPOINT_URL_ECR", "https://vpce.example")]));
    assert!(ecr(&[("AWS_ENDPOINT_URL_STS", "https://vpce.example")]));
    assert!(!ecr(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    ]));
}

#[test]
fn identity_follows_the_mode_and_the_token() {
    let c = config(
        "[ecr]\nrole_arn = \"arn:aws:iam::1:role/ci\"\nallowed_job_roles = [\"arn:aws:iam::1:role/team-*\"]",
    );
    let no_token = env(&[]);
    let r = Resolver::with_fetcher(&c, &no_token, Fake::new(0));
    let t = r.ecr_target(HOST).unwrap();
    assert!(matches!(r.identity(&t).unwrap(), Identity::Runner { .. }));

    let with_token = env(&[("CUSTOM_ENV_ECR_ID_TOKEN", "eyJ.jwt.sig")]);
    let r = Resolver::with_fetcher(&c, &with_token, Fake::new(0));
    match r.identity(&t).unwrap() {
        Identity::Job { role_arn, .. } => assert_eq!(role_arn, "arn:aws:iam::1:role/ci"),
        other => panic!("{other:?}"),
    }

    let chosen = env(&[
        ("CUSTOM_ENV_ECR_ID_TOKEN", "eyJ.jwt.sig"),
        ("CUSTOM_ENV_ECR_ROLE_ARN", "arn:aws:iam::1:role/team-a"),
    ]);
    let r = Resolver::with_fetcher(&c, &chosen, Fake::new(0));
    assert!(
        matches!(r.identity(&t).unwrap(), Identity::Job { role_arn, .. } if role_arn.ends_with("team-a"))
    );

    let refused = env(&[
        ("CUSTOM_ENV_ECR_ID_TOKEN", "eyJ.jwt.sig"),
        ("CUSTOM_ENV_ECR_ROLE_ARN", "arn:aws:iam::1:role/admin"),
    ]);
    let r = Resolver::with_fetcher(&c, &refused, Fake::new(0));
    let err = r.identity(&t).unwrap_err();
    assert!(matches!(err, AuthError::JobRoleNotAllowed { .. }), "{err}");
    assert_eq!(err.failure(), crate::error::Failure::Build);

    let job_only = config("[ecr]\nidentity = \"job\"\nid_token_variable = \"AWS_TOKEN\"");
    let r = Resolver::with_fetcher(&job_only, &no_token, Fake::new(0));
    let err = r.identity(&r.ecr_target(HOST).unwrap()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("id_tokens:\n    AWS_TOKEN:\n      aud:"),
        "{message}"
    );
    assert_eq!(err.failure(), crate::error::Failure::Build);

    let no_role = config("");
    let r = Resolver::with_fetcher(&no_role, &with_token, Fake::new(0));
    let err = r.identity(&r.ecr_target(HOST).unwrap()).unwrap_err();
    assert!(matches!(err, AuthError::NoJobRole { .. }), "{err}");
}

#[test]
fn concurrent_pulls_of_one_registry_fetch_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&format!("[ecr]\ncache_dir = {:?}", dir.path()));
    let e = env(&[]);
    let r = Resolver::with_fetcher(&c, &e, Fake::new(12 * 3600));
    let image = ImageRef::parse(&format!("{HOST}/app:1")).unwrap();
    let other = ImageRef::parse("210987654321.dkr.ecr.eu-west-1.amazonaws.com/app:1").unwrap();
    rt().block_on(async {
        let (a, b, c) = tokio::join!(
            r.credentials_for(&image),
            r.credentials_for(&image),
            r.credentials_for(&other)
        );
        assert_eq!(
            a.unwrap().unwrap().docker().password.as_deref(),
            Some("123456789012-runner")
        );
        let b = b.unwrap().unwrap();
        assert_eq!(b.docker().serveraddress.as_deref(), Some(HOST));
        assert!(
            b.who()
                .starts_with("the runner's AWS identity arn:aws:iam::111111111111:user/fake"),
            "{}",
            b.who()
        );
        assert!(!b.who().contains("runner-"), "never the token: {}", b.who());
        assert_eq!(
            c.unwrap().unwrap().docker().password.as_deref(),
            Some("210987654321-runner")
        );
    });
    assert_eq!(r.fetcher.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn runner_tokens_are_cached_across_processes_job_tokens_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&format!(
        "[ecr]\ncache_dir = {:?}\nrole_arn = \"arn:aws:iam::1:role/ci\"",
        dir.path()
    ));
    let runner = env(&[]);
    for expected_calls in [1, 0] {
        let r = Resolver::with_fetcher(&c, &runner, Fake::new(12 * 3600));
        let t = r.ecr_target(HOST).unwrap();
        let token = rt().block_on(r.ecr_token(&t)).unwrap();
        assert_eq!(r.fetcher.calls.load(Ordering::SeqCst), expected_calls);
        let source = if expected_calls == 1 {
            Source::Aws
        } else {
            Source::Cache
        };
        assert_eq!(token.source, source);
    }
    let job = env(&[("CUSTOM_ENV_ECR_ID_TOKEN", "eyJ.jwt.sig")]);
    for _ in 0..2 {
        let r = Resolver::with_fetcher(&c, &job, Fake::new(12 * 3600));
        let t = r.ecr_target(HOST).unwrap();
        let token = rt().block_on(r.ecr_token(&t)).unwrap();
        assert_eq!(
            r.fetcher.calls.load(Ordering::SeqCst),
            1,
            "job tokens are never reused"
        );
        assert_eq!(token.source, Source::Aws);
    }
    // Only the runner token is on disk.
    let entries = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(entries, 1);
}

/// Issue 22, defect 5: a FIPS registry never reuses a token a standard endpoint issued for
/// the same account, region and identity, in this process or through the disk cache.
#[test]
fn fips_and_standard_endpoints_never_share_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&format!("[ecr]\ncache_dir = {:?}", dir.path()));
    let e = env(&[]);
    let standard = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    let fips = "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com";
    let r = Resolver::with_fetcher(&c, &e, Fake::new(12 * 3600));
    rt().block_on(async {
        r.ecr_token(&r.ecr_target(standard).unwrap()).await.unwrap();
        let t = r.ecr_token(&r.ecr_target(fips).unwrap()).await.unwrap();
        assert_eq!(t.source, Source::Aws);
    });
    assert_eq!(
        r.fetcher.calls.load(Ordering::SeqCst),
        2,
        "one per endpoint kind"
    );
    assert_eq!(r.fetcher.fips_calls.load(Ordering::SeqCst), 1);

    // Another process: each kind finds its own entry on disk.
    let r = Resolver::with_fetcher(&c, &e, Fake::new(12 * 3600));
    rt().block_on(async {
        for host in [standard, fips] {
            let t = r.ecr_token(&r.ecr_target(host).unwrap()).await.unwrap();
            assert_eq!(t.source, Source::Cache, "{host}");
        }
    });
    assert_eq!(r.fetcher.calls.load(Ordering::SeqCst), 0);

    // A cache that holds only the standard endpoint's token makes the FIPS registry fetch.
    let only_standard = tempfile::tempdir().unwrap();
    let c = config(&format!("[ecr]\ncache_dir = {:?}", only_standard.path()));
    let r = Resolver::with_fetcher(&c, &e, Fake::new(12 * 3600));
    rt().block_on(r.ecr_token(&r.ecr_target(standard).unwrap()))
        .unwrap();
    let r = Resolver::with_fetcher(&c, &e, Fake::new(12 * 3600));
    let t = rt()
        .block_on(r.ecr_token(&r.ecr_target(fips).unwrap()))
        .unwrap();
    assert_eq!(t.source, Source::Aws);
    assert_eq!(r.fetcher.fips_calls.load(Ordering::SeqCst), 1);
}

#[test]
fn short_lived_tokens_are_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&format!("[ecr]\ncache_dir = {:?}", dir.path()));
    let e = env(&[]);
    for _ in 0..2 {
        let r = Resolver::with_fetcher(&c, &e, Fake::new(60));
        let t = r.ecr_target(HOST).unwrap();
        rt().block_on(r.ecr_token(&t)).unwrap();
        assert_eq!(r.fetcher.calls.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn docker_auth_config_job_beats_runner() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let job = format!(
        r#"{{"auths":{{"reg.example.com":{{"auth":"{}"}}}}}}"#,
        b64("job:jobpw")
    );
    let runner = format!(
        r#"{{"auths":{{"reg.example.com":{{"auth":"{}"}},"other.example.com":{{"auth":"{}"}}}}}}"#,
        b64("runner:runnerpw"),
        b64("r2:pw2")
    );
    let e = env(&[
        ("CUSTOM_ENV_DOCKER_AUTH_CONFIG", &job),
        ("DOCKER_AUTH_CONFIG", &runner),
    ]);
    let c = config("");
    let r = Resolver::with_fetcher(&c, &e, Fake::new(0));
    let creds = |image: &str| {
        rt().block_on(r.credentials_for(&ImageRef::parse(image).unwrap()))
            .unwrap()
            .map(|c| c.docker().username.unwrap())
    };
    assert_eq!(creds("reg.example.com/a:1").as_deref(), Some("job"));
    assert_eq!(creds("other.example.com/a:1").as_deref(), Some("r2"));
    assert_eq!(creds("third.example.com/a:1"), None);
    assert_eq!(r.fetcher.calls.load(Ordering::SeqCst), 0);

    let bad = env(&[("CUSTOM_ENV_DOCKER_AUTH_CONFIG", "{oops")]);
    let r = Resolver::with_fetcher(&c, &bad, Fake::new(0));
    let err = rt()
        .block_on(r.credentials_for(&ImageRef::parse("reg.example.com/a").unwrap()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::DockerAuthConfig {
                whose: Whose::Job,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn registry_logins_follow_the_docker_executors_order() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"reg.example.com":{{"auth":"{}"}},"file.example.com":{{"auth":"{}"}}}},"credsStore":"desktop"}}"#,
            b64("file:filepw"),
            b64("file2:filepw2")
        ),
    )
    .unwrap();
    let job = format!(
        r#"{{"auths":{{"reg.example.com":{{"auth":"{}"}}}}}}"#,
        b64("job:jobpw")
    );
    let e = env(&[
        ("CUSTOM_ENV_DOCKER_AUTH_CONFIG", &job),
        ("DOCKER_CONFIG", docker_config.path().to_str().unwrap()),
    ]);
    let payload = crate::job::JobPayload::parse(
        br#"{"credentials": [
            {"type": "registry", "url": "https://gitlab.example.com:5050", "username": "gitlab-ci-token", "password": "job-token-secret"},
            {"type": "registry", "url": "file.example.com", "username": "ci", "password": "x"},
            {"type": "other", "url": "other.example.com", "username": "u", "password": "p"}
        ]}"#,
    )
    .unwrap();
    assert!(!format!("{payload:?}").contains("job-token-secret"));
    let c = config("");
    let r = Resolver::with_fetcher(&c, &e, Fake::new(0)).with_job_credentials(&payload.credentials);
    let login = |image: &str| {
        rt().block_on(r.credentials_for(&ImageRef::parse(image).unwrap()))
            .unwrap()
            .map(|c| {
                let d = c.docker();
                (d.username.unwrap(), d.password.unwrap(), c.who())
            })
    };
    // The job's DOCKER_AUTH_CONFIG, then the runner user's config file, then the payload.
    // The file's `credsStore` (`desktop`) is not on this PATH: a warning, then its `auths`.
    let job = login("reg.example.com/a:1").unwrap();
    assert_eq!(job.0, "job");
    assert_eq!(job.2, "user job from the job's DOCKER_AUTH_CONFIG");
    let file = login("file.example.com/a:1").unwrap();
    assert_eq!(file.0, "file2");
    assert_eq!(file.2, "user file2 from the runner user's Docker config");
    assert_eq!(
        login("gitlab.example.com:5050/group/project/image:1"),
        Some((
            "gitlab-ci-token".to_owned(),
            "job-token-secret".to_owned(),
            "user gitlab-ci-token from the job's registry credentials".to_owned()
        ))
    );
    assert_eq!(login("other.example.com/a:1"), None);
    assert_eq!(
        login("gitlab.example.com/a:1"),
        None,
        "the port is part of the host"
    );

    // A config file that does not parse is skipped; the payload still serves.
    std::fs::write(docker_config.path().join("config.json"), "{broken").unwrap();
    let r = Resolver::with_fetcher(&c, &e, Fake::new(0)).with_job_credentials(&payload.credentials);
    let file = rt()
        .block_on(r.credentials_for(&ImageRef::parse("file.example.com/a:1").unwrap()))
        .unwrap();
    assert_eq!(
        file.and_then(|c| c.docker().username).as_deref(),
        Some("ci")
    );
}
