//! The host's instance metadata and container credential endpoints, as a job sees them.
//!
//! The endpoints are a test host of the tests' own (`scripts/engines/imds-host.sh`): a
//! network namespace holding 169.254.169.254, 169.254.170.2 and 169.254.170.23 with a server
//! that answers like IMDS, ECS and EKS Pod Identity with a planted credential, wired by a veth
//! to the namespace of a private dockerd (`scripts/engines/private-dockerd.sh`), which has no
//! route out. Nothing here sends a packet to those addresses on the machine's own network:
//! on the other engines (the machine's, rootless Docker, Podman) the tests only read the
//! routing table inside the job's containers.

use std::process::Command;

use serde_json::json;

use crate::harness::*;
use crate::restart::PrivateDockerd;

const SECRET: &str = "PLANTED-IMDS-SECRET-7f3c";

/// Tries every credential endpoint with busybox `wget` (whose `-T` crashes in this build:
/// `timeout` bounds it); prints what each said, and goes on under the stage's `set -e`.
const PROBE: &str = "for u in \
    http://169.254.169.254/latest/meta-data/iam/security-credentials/ecr-executor-test-role \
    http://169.254.170.2/v2/credentials/task \
    http://169.254.170.23/v1/credentials; do \
    timeout 5 wget -qO- \"$u\" 2>&1 || echo \" failed\"; done";

/// The IMDS stand-in, wired to `engine`'s namespace; stopped on drop.
struct ImdsHost {
    engine: &'static str,
}

impl ImdsHost {
    fn start(engine: &PrivateDockerd) -> ImdsHost {
        let host = ImdsHost {
            engine: engine.name,
        };
        host.script("start");
        host
    }

    fn script(&self, command: &str) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/engines/imds-host.sh");
        let out = Command::new(script)
            .arg(command)
            .env("ECR_D2_NAME", self.engine)
            .env("ECR_IMDS_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imds-host.sh {command} (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// How many requests for credentials reached it.
    fn credential_requests(&self) -> usize {
        let log = std::fs::read_to_string(self.script("log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("security-credentials/") || l.contains("/credentials"))
            .count()
    }
}

impl Drop for ImdsHost {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// Asserts that `said` (a [`PROBE`]'s output) shows every endpoint refused at once, with
/// nothing read.
#[track_caller]
fn assert_refused(said: &str, what: &str) {
    assert!(
        !said.contains(SECRET),
        "{what} read the planted credential: {said}"
    );
    assert_eq!(
        said.matches("No route to host").count(),
        3,
        "{what}: every endpoint refused at once, none timed out: {said}"
    );
}

fn logs_at(host: &str, container: &str) -> String {
    docker_at(Some(host), &["logs", container]).join("\n")
}

#[test]
fn no_container_of_a_job_reads_what_a_plain_container_on_the_engine_reads() {
    let engine = PrivateDockerd::start("ecrd-imds");
    let imds = ImdsHost::start(&engine);
    let host = engine.host();
    let plain = docker_at(Some(&host), &["run", "--rm", BUSYBOX, "sh", "-c", PROBE]).join("\n");
    assert_eq!(plain.matches(SECRET).count(), 3, "the control: {plain}");
    let reached = imds.credential_requests();
    assert_eq!(reached, 3);

    // With a service and so a per-job network. The service probes first thing in its
    // ENTRYPOINT, and then serves a port.
    let job = Job::builder(BUSYBOX)
        .config(&engine.config())
        .services(json!([{
            "name": BUSYBOX, "alias": "svc", "entrypoint": ["sh", "-c"],
            "command": [format!("{PROBE}; echo probed; while true; do nc -l -p 7777 </dev/null; done")],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "7777"}]
        }]))
        .build();
    job.prepare_ok();
    let service = logs_at(&host, &format!("{}-svc0", job.key()));
    assert_refused(&service, "the service's ENTRYPOINT");
    let sources = job.run("get_sources", PROBE);
    sources.assert_ok();
    assert_refused(&sources.stdout(), "a helper stage");
    let build = job.run(
        "build_script",
        &format!(
            "{PROBE}; id -u; ip route del 169.254.169.254 2>&1 || echo del-failed; {PROBE}; \
             nc -w 2 svc 7777 </dev/null && echo service-by-alias; \
             timeout 5 wget -qO- http://169.254.100.2/latest/meta-data/ >/dev/null && echo other-address"
        ),
    );
    build.assert_ok();
    let said = build.stdout();
    assert!(!said.contains(SECRET), "{said}");
    assert_eq!(said.matches("No route to host").count(), 6, "{said}");
    assert!(said.contains("\n0\n"), "the build runs as root: {said}");
    assert!(
        said.contains("Operation not permitted") && said.contains("del-failed"),
        "root in the job cannot lift the block: {said}"
    );
    assert!(
        said.contains("service-by-alias") && said.contains("other-address"),
        "the rest of the network works: {said}"
    );
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());

    // Without a per-job network: the engine's default bridge.
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    job.prepare_ok();
    let sources = job.run("get_sources", PROBE);
    assert_refused(&sources.stdout(), "a helper stage on the default bridge");
    let build = job.run("build_script", PROBE);
    assert_refused(&build.stdout(), "the build container on the default bridge");
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_eq!(
        imds.credential_requests(),
        reached,
        "no request of a job reached the endpoints"
    );
}

#[test]
fn warn_and_allow_do_as_documented() {
    let engine = PrivateDockerd::start("ecrd-imdsw");
    let _imds = ImdsHost::start(&engine);

    // `warn`: a build container with NET_ADMIN could lift the block, so the job log says so,
    // and the job runs; the block is still in place until the job lifts it.
    let job = Job::builder(BUSYBOX)
        .config(&format!(
            "cap_add = [\"NET_ADMIN\"]\n{}\n[security]\ninstance_metadata = \"warn\"",
            engine.config()
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stderr.contains(
            "are not blocked for this job: the build container has NET_ADMIN (`cap_add`), so it \
             could remove the block ([security] instance_metadata = \"warn\")"
        ),
        "{}",
        prepare.all()
    );
    let build = job.run(
        "build_script",
        &format!("{PROBE}; ip route del 169.254.169.254 && {PROBE}"),
    );
    let said = build.stdout();
    assert!(
        said.contains("No route to host"),
        "blocked at first: {said}"
    );
    assert_eq!(said.matches(SECRET).count(), 1, "then lifted: {said}");
    job.cleanup().assert_ok();

    // The same under `block` (the default): refused before anything is made.
    let job = Job::builder(BUSYBOX)
        .config(&format!("cap_add = [\"NET_ADMIN\"]\n{}", engine.config()))
        .build();
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare
            .stderr
            .contains("cannot be blocked for this job: the build container has NET_ADMIN")
            && prepare.stderr.matches("ERROR").count() == 1,
        "{}",
        prepare.stderr
    );
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());

    // `allow`: the endpoints are reachable, and the job log says so.
    let job = Job::builder(BUSYBOX)
        .config(&format!(
            "{}\n[security]\ninstance_metadata = \"allow\"",
            engine.config()
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare
            .stdout()
            .contains("reachable from this job ([security] instance_metadata = \"allow\")"),
        "{}",
        prepare.all()
    );
    let build = job.run("build_script", PROBE);
    assert_eq!(build.stdout().matches(SECRET).count(), 3, "{}", build.all());
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
}

/// Host networking puts the job in the engine's own namespace, where no route may be added:
/// `block` refuses the job, `warn` runs it and says why (here the engine's namespace is the
/// private dockerd's, which reaches the stand-in).
#[test]
fn host_networking_cannot_be_guarded_and_says_so() {
    let engine = PrivateDockerd::start("ecrd-imdsh");
    let _imds = ImdsHost::start(&engine);
    let job = Job::builder(BUSYBOX)
        .config(&format!("network_mode = \"host\"\n{}", engine.config()))
        .build();
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains(
            "cannot be blocked for this job: the job's containers use the host's network \
             (`network_mode = \"host\"`)"
        ),
        "{}",
        prepare.stderr
    );
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());

    let job = Job::builder(BUSYBOX)
        .config(&format!(
            "network_mode = \"host\"\n{}\n[security]\ninstance_metadata = \"warn\"",
            engine.config()
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stderr.contains("use the host's network"),
        "{}",
        prepare.stderr
    );
    let build = job.run("build_script", PROBE);
    assert_eq!(build.stdout().matches(SECRET).count(), 3, "{}", build.all());
    job.cleanup().assert_ok();
}

/// The routes every guarded namespace holds, read without sending a packet.
const ROUTES: &str = "ip route; ip -6 route 2>/dev/null";

#[track_caller]
fn assert_routes(said: &str, what: &str) {
    for address in ["169.254.169.254", "169.254.170.2", "169.254.170.23"] {
        assert!(
            said.contains(&format!("unreachable {address}")),
            "{what}: no block for {address}: {said}"
        );
    }
}

/// The block on every engine the driver supports: build, helper and service namespaces hold
/// the routes before the job's first process (the service reads them first thing).
fn guarded_everywhere(job: JobBuilder, host: Option<&str>) {
    let job = job
        .services(json!([{
            "name": BUSYBOX, "alias": "svc", "entrypoint": ["sh", "-c"],
            "command": [format!("{ROUTES}; echo routes-read; sleep 600")]
        }]))
        .build();
    job.prepare_ok();
    let build = job.run("build_script", ROUTES);
    build.assert_ok();
    assert_routes(&build.stdout(), "the build container");
    let helper = job.run("get_sources", ROUTES);
    helper.assert_ok();
    assert_routes(&helper.stdout(), "the helper");
    let service = match host {
        Some(host) => logs_at(host, &format!("{}-svc0", job.key())),
        None => docker(&["logs", &format!("{}-svc0", job.key())]).join("\n"),
    };
    assert!(service.contains("routes-read"), "{service}");
    assert_routes(&service, "the service's ENTRYPOINT");
    job.cleanup().assert_ok();
    assert!(leftovers_at(host, &job.key()).is_empty());
}

#[test]
fn the_machines_engine_guards_every_namespace_of_a_job() {
    guarded_everywhere(Job::builder(BUSYBOX), None);
}

#[test]
fn rootless_docker_and_podman_guard_every_namespace_of_a_job() {
    let user = User::named(&std::env::var("ECR_EXECUTOR_TEST_ROOTLESS_USER").unwrap());
    for engine in ["DOCKER", "PODMAN"] {
        let host = std::env::var(format!("ECR_EXECUTOR_TEST_ROOTLESS_{engine}")).unwrap();
        let job = Job::builder(BUSYBOX)
            .run_by(&user)
            .config(&format!("[docker]\nhost = \"{host}\""));
        guarded_everywhere(job, Some(&host));
    }
    let podman = std::env::var("ECR_EXECUTOR_TEST_PODMAN").unwrap();
    let job = Job::builder(BUSYBOX).config(&format!("[docker]\nhost = \"{podman}\""));
    guarded_everywhere(job, Some(&podman));
}

/// A helper image without `ip` cannot put the block in place: `block` fails prepare as a
/// system failure naming the cause and leaves nothing.
#[test]
fn a_helper_image_without_ip_fails_prepare_under_block() {
    let job = Job::builder(BUSYBOX)
        .only_config(&BASE_CONFIG.replace(HELPER, DEBIAN))
        .build();
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains("could not block")
            && prepare
                .stderr
                .contains("the helper image has no `ip` command"),
        "{}",
        prepare.stderr
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

/// Nothing of the runner's own AWS environment reaches a job container.
#[test]
fn the_runners_aws_environment_never_reaches_a_job_container() {
    let planted = [
        ("AWS_ACCESS_KEY_ID", "AKIAPLANTEDRUNNERKEY"),
        ("AWS_SECRET_ACCESS_KEY", "planted-runner-secret-9d1e"),
        ("AWS_SESSION_TOKEN", "planted-runner-session-4c2a"),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:9/planted-uri",
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "planted-runner-auth-77",
        ),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/planted/web-identity-token"),
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::111111111111:role/planted-runner-role",
        ),
        ("AWS_SHARED_CREDENTIALS_FILE", "/planted/credentials"),
        ("AWS_CONFIG_FILE", "/planted/config"),
        ("AWS_PROFILE", "planted-profile"),
    ];
    let mut job = Job::builder(BUSYBOX).services(json!([{
        "name": BUSYBOX, "alias": "svc", "entrypoint": ["sh", "-c"],
        "command": ["env; ls -a ~ /root 2>&1; echo env-done; sleep 600"]
    }]));
    for (name, value) in planted {
        job = job.runner_env(name, value);
    }
    let job = job.build();
    job.prepare_ok();
    let show = "env; ls -a ~ /root /.aws 2>&1";
    let build = job.run("build_script", show);
    let helper = job.run("get_sources", show);
    let service = docker(&["logs", &format!("{}-svc0", job.key())]).join("\n");
    assert!(service.contains("env-done"), "{service}");
    let everything = String::from_utf8_lossy(&job.everything_printed()).into_owned();
    for (what, said) in [
        ("build", build.all()),
        ("helper", helper.all()),
        ("service", service),
        ("every driver output", everything),
    ] {
        assert!(
            !said.contains("AWS_"),
            "{what} got an AWS_ variable: {said}"
        );
        assert!(
            !said.contains(".aws\n"),
            "{what} has a profile directory: {said}"
        );
        for (_, value) in planted {
            assert!(!said.contains(value), "{what} shows {value}: {said}");
        }
    }
    job.cleanup().assert_ok();
}

/// `doctor` shows the endpoints as a job sees them: blocked under `block`, reachable under
/// `allow`, and an answer where the block cannot hold is a failure with the fix.
#[test]
fn doctor_probes_the_endpoints_from_where_a_job_stands() {
    let engine = PrivateDockerd::start("ecrd-imdsd");
    let _imds = ImdsHost::start(&engine);
    // The host's own IMDS: a listener of the test's on loopback, named as the SDK would.
    let host_imds = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_endpoint = format!("http://{}", host_imds.local_addr().unwrap());
    let doctor = |extra: &str| {
        let job = Job::builder(BUSYBOX)
            .config(&format!("{extra}\n{}", engine.config()))
            .runner_env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &host_endpoint)
            .build();
        let out = job.driver(&["doctor"]);
        (out.stdout(), out.code)
    };
    let line = |said: &str, prefix: &str| {
        said.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {said}"))
            .to_owned()
    };

    let (said, _) = doctor("");
    for probe in [
        "IMDSv2 token at 169.254.169.254",
        "IMDSv1 at 169.254.169.254",
        "ECS task credentials at 169.254.170.2",
        "EKS Pod Identity agent at 169.254.170.23",
    ] {
        assert!(
            line(&said, &format!("✔ {probe} from a job: blocked")).contains("No route to host"),
            "{said}"
        );
    }
    assert!(!said.contains(SECRET));
    assert!(
        line(&said, "✔ instance metadata from this host:").contains(&format!(
            "{host_endpoint} answers: the runner's own AWS credentials may come from it"
        )),
        "{said}"
    );
    drop(host_imds);

    let (said, _) = doctor("[security]\ninstance_metadata = \"allow\"");
    assert!(
        line(&said, "✔ IMDSv1 at 169.254.169.254 from a job:").contains("reachable"),
        "{said}"
    );

    let (said, code) = doctor("network_mode = \"host\"\n[security]\ninstance_metadata = \"warn\"");
    assert!(
        line(&said, "✔ instance metadata:")
            .contains("not blocked here: the job's containers use the host's network"),
        "{said}"
    );
    assert!(
        line(&said, "✘ IMDSv2 token at 169.254.169.254 from a job:")
            .contains("answered: a job can read the runner host's AWS credentials"),
        "{said}"
    );
    assert_ne!(code, Some(0));
    assert!(engine.leftovers_named("ecr-executor-doctor").is_empty());
}
