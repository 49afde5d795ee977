//! Every parser of outside input, fed arbitrary input (proptest) and a corpus of hand-written
//! nasty cases. Arbitrary input must never panic; each nasty case must give the right failure
//! class and a message that says what is wrong without echoing secrets.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use base64::Engine;
use proptest::prelude::*;

use crate::auth::cache::{CacheKey, DiskCache};
use crate::auth::docker_config::DockerAuthConfig;
use crate::config::Config;
use crate::error::{Error, Failure, PolicyError};
use crate::job::payload::ServiceSpec;
use crate::job::{Env, JobPayload};
use crate::reference::ImageRef;
use crate::reference::ecr::{EcrHost, parse_ecr_host};
use crate::reference::host::{hostname, registry_key};
use crate::stages::Context;
use crate::stages::prepare::Plan;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn image_references_never_panic(s in "\\PC{0,300}") {
        if let Ok(r) = ImageRef::parse(&s) {
            // A parsed reference round-trips through its pull form.
            let again = ImageRef::parse(&r.pull_reference()).unwrap();
            prop_assert_eq!(again.pull_reference(), r.pull_reference());
        }
    }

    #[test]
    fn hostnames_never_panic(s in "\\PC{0,200}") {
        let _ = parse_ecr_host(&s);
        let _ = hostname(&s);
        let _ = registry_key(&s);
    }

    #[test]
    fn generated_ecr_hosts_are_recognised(
        id in "[0-9]{12}",
        region in "[a-z]{2}-[a-z]{4,9}-[1-9]",
        dash in any::<bool>(),
        fips in any::<bool>(),
        suffix in prop::sample::select(vec!["amazonaws.com", "amazonaws.com.cn", "amazonaws.eu", "on.aws", "c2s.ic.gov"]),
        port in prop::option::of(1u16..),
    ) {
        let sep = if dash { "-" } else { "." };
        let f = if fips { "-fips" } else { "" };
        let mut host = format!("{id}.dkr{sep}ecr{f}.{region}.{suffix}");
        if let Some(p) = port { host.push_str(&format!(":{p}")); }
        match parse_ecr_host(&host) {
            Some(EcrHost::Private { registry_id, region: r, fips: ff, .. }) => {
                prop_assert_eq!(registry_id, id);
                prop_assert_eq!(r, region);
                prop_assert_eq!(ff, fips);
            }
            other => prop_assert!(false, "{host} gave {other:?}"),
        }
    }

    #[test]
    fn payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = JobPayload::parse(&bytes);
    }

    #[test]
    fn payload_shaped_json_never_panics(name in "\\PC{0,80}", policy in "\\PC{0,20}", alias in "\\PC{0,40}") {
        let json = serde_json::json!({
            "image": {"name": name, "pull_policy": [policy], "entrypoint": [name]},
            "services": [{"name": name, "alias": alias, "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": alias}]}],
        });
        if let Ok(payload) = JobPayload::parse(json.to_string().as_bytes()) {
            let ctx = Context { env: Env::default(), config: Config::default() };
            let _ = Plan::resolve(&ctx, &payload);
        }
    }

    #[test]
    fn service_lists_never_panic(s in "\\PC{0,300}") {
        let _ = ServiceSpec::parse_env_list(&s);
    }

    #[test]
    fn docker_auth_configs_never_panic(s in "\\PC{0,300}", key in "\\PC{0,40}", auth in "\\PC{0,60}") {
        let _ = DockerAuthConfig::parse(&s);
        let json = serde_json::json!({"auths": {key: {"auth": auth}}}).to_string();
        if let Ok(c) = DockerAuthConfig::parse(&json) {
            let _ = c.find(&ImageRef::parse("a/b").unwrap());
        }
    }

    #[test]
    fn driver_configs_never_panic(s in "\\PC{0,300}") {
        let _ = Config::parse(&s);
    }

    #[test]
    fn sizes_and_cpus_never_panic(v in "\\PC{0,30}") {
        let _ = Config::parse(&format!("memory = {:?}\ncpus = {:?}", v, v));
    }

    #[test]
    fn environments_never_panic(pairs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..30), prop::collection::vec(any::<u8>(), 0..30)), 0..20)) {
        let env = Env::from_pairs(pairs.into_iter().map(|(k, v)| (OsString::from_vec(k), OsString::from_vec(v))));
        let _ = env.vars.identity();
        let _ = env.exit_codes();
    }

    #[test]
    fn cache_files_never_panic_nor_serve_garbage(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let key = CacheKey { partition: "aws".into(), region: "eu-west-1".into(), registry_id: "123456789012".into(), fips: false, fingerprint: "f".into() };
        // Plant the bytes where the entry would be.
        let now = 1_000_000;
        let token = crate::auth::cache::CachedToken {
            login: crate::auth::login::Login { username: "AWS".into(), password: "p".to_owned().into(), server: "h".into(), identity_token: false },
            requested_at: now,
            expires_at: now + 43_200,
            arn: None,
        };
        cache.store(&key, &token, now).unwrap();
        let entry = std::fs::read_dir(dir.path()).unwrap().flatten().find(|e| e.file_name().to_string_lossy().ends_with(".json")).unwrap().path();
        std::fs::write(&entry, &bytes).unwrap();
        prop_assert!(cache.read_fresh(&key, now).is_none());
    }
}

fn env(pairs: &[(&str, &[u8])]) -> Env {
    Env::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(*k), OsString::from_vec(v.to_vec()))),
    )
}

fn plan(payload: &str, config: &str) -> Result<Plan, Error> {
    let ctx = Context {
        env: Env::default(),
        config: Config::parse(config).unwrap(),
    };
    Plan::resolve(&ctx, &JobPayload::parse(payload.as_bytes()).unwrap())
}

#[test]
fn nasty_image_names() {
    let huge = format!(r#"{{"image": {{"name": "{}"}}}}"#, "a".repeat(100_000));
    let cases = [
        (huge.as_str(), "longer than 1024"),
        (
            r#"{"image": {"name": "alpine\u0000"}}"#,
            "the character '\\0'",
        ),
        (r#"{"image": {"name": "../../etc/passwd"}}"#, "is not valid"),
        (r#"{"image": {"name": "alpine:../x"}}"#, "not valid"),
        (r#"{"image": {"name": "$CI_REGISTRY_IMAGE"}}"#, "not valid"),
        (
            r#"{"image": {"name": "-v /:/host"}}"#,
            "contains the character ' '",
        ),
    ];
    for (payload, message) in cases {
        let err = plan(payload, "").unwrap_err();
        assert_eq!(err.failure(), Failure::Build, "{err}");
        assert!(
            matches!(err, Error::Policy(PolicyError::InvalidImage { .. })),
            "{err}"
        );
        assert!(
            err.to_string().contains(message),
            "{message:?} not in {err}"
        );
    }
}

#[test]
fn nasty_payloads_are_system_failures_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("response.json");
    for (bytes, message) in [
        (&b"{\"image\": {\"name\": 12}}"[..], "invalid type"),
        (
            &b"{\"image\": {\"name\": \"a\"}, \"services\": {}}"[..],
            "invalid type",
        ),
        (&b"\x00\x01\x02"[..], "expected value"),
        (&b"{\"image\": {\"name\": \"a\"}"[..], "EOF"),
        (&b"[1, 2, 3]"[..], "invalid type"),
    ] {
        std::fs::write(&path, bytes).unwrap();
        let err = JobPayload::read(&path).unwrap_err();
        assert_eq!(err.failure(), Failure::System);
        let text = err.to_string();
        assert!(
            text.contains("response.json") && text.contains(message),
            "{message}: {text}"
        );
    }
    let err = JobPayload::read(&dir.path().join("missing.json")).unwrap_err();
    assert!(err.to_string().contains("missing.json"));
}

#[test]
fn nasty_service_lists_and_ports() {
    let err = plan(
        r#"{"image": {"name": "a"}, "services": [{"name": "redis", "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "99999"}]}]}"#,
        "",
    )
    .unwrap_err();
    assert_eq!(err.failure(), Failure::Build);
    assert!(err.to_string().contains("HEALTHCHECK_TCP_PORT"), "{err}");

    let e = env(&[
        ("CUSTOM_ENV_CI_JOB_SERVICES", b"{\"name\": 1}"),
        ("CUSTOM_ENV_CI_JOB_IMAGE", b"a"),
    ]);
    let ctx = Context {
        env: e,
        config: Config::default(),
    };
    let err = Plan::resolve(&ctx, &JobPayload::default()).unwrap_err();
    assert_eq!(err.failure(), Failure::System);
    assert!(
        err.to_string().contains("CUSTOM_ENV_CI_JOB_SERVICES"),
        "{err}"
    );
}

#[test]
fn nasty_docker_auth_configs_never_echo_values() {
    let secret = "s3cr3t-value-never-shown";
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("user{secret}"));
    for text in [
        format!(r#"{{"auths": {{"h": {{"auth": "{b64}"}}}}}}"#),
        format!(r#"{{"auths": {{"h": {{"username": 1, "password": "{secret}"}}}}}}"#),
        format!(r#"{{"auths": "{secret}"}}"#),
        secret.to_string(),
    ] {
        let err = DockerAuthConfig::parse(&text).unwrap_err();
        assert!(!err.contains(secret), "{err}");
    }
}

#[test]
fn nasty_driver_configs_name_the_key() {
    for (text, key) in [
        ("cpus = 1e300", "cpus"),
        ("memory = \"9999999999999t\"", "memory"),
        ("[ecr]\nmax_attempts = -1", "max_attempts"),
        ("[ecr]\ntimeout_seconds = 0", "timeout_seconds"),
        ("builds_dir = \"/builds/../etc\"", "builds_dir"),
        ("[[registry]]\nhost = \"\"", "host"),
        ("volumes = [\"a:b:c:d\"]", "volumes"),
        ("pull_policy = 7", "pull_policy"),
        (
            "default_image = \"a\"\ndefault_image = \"b\"",
            "default_image",
        ),
    ] {
        let err = Config::parse(text).unwrap_err();
        assert!(err.contains(key), "{key:?} not in {err}");
    }
}

#[test]
fn nasty_environments() {
    // Non-UTF-8 job id: replaced characters, then refused by name.
    let e = env(&[("CUSTOM_ENV_CI_JOB_ID", b"12\xff34")]);
    let err = e.vars.identity().unwrap_err();
    assert_eq!(err.failure(), Failure::System);
    assert!(err.to_string().contains("CUSTOM_ENV_CI_JOB_ID"), "{err}");
    // Path traversal cannot reach a name: ids are numbers, tokens are filtered.
    let e = env(&[
        ("CUSTOM_ENV_CI_JOB_ID", b"7"),
        ("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", b"../../etc/\x00passwd"),
        ("CUSTOM_ENV_CI_PROJECT_ID", b"1"),
    ]);
    let names = crate::naming::Names::new(&e.vars.identity().unwrap());
    assert_eq!(names.job, "ecr-executor-....etcpasswd-p1-c0-j7");
    assert!(!names.build.contains('/'));
    let e = env(&[("CUSTOM_ENV_CI_JOB_ID", b"../1")]);
    assert!(e.vars.identity().is_err());
    // Exit codes out of range fall back with a warning.
    let e = env(&[
        ("BUILD_FAILURE_EXIT_CODE", b"\xff"),
        ("SYSTEM_FAILURE_EXIT_CODE", b"2"),
    ]);
    assert_eq!(e.exit_codes().build_failure, 1);
    assert_eq!(e.exit_code_warnings.len(), 1);
}
