//! Reaching the engine: TLS `tcp://` hosts, and `gc` of abandoned jobs.

use std::process::Command;

use crate::fake_aws::{Backend, tls_front};
use crate::harness::*;

/// A TLS front for the local Docker socket with client-certificate verification, as a
/// `dockerd --tlsverify` would have, and a throwaway CA made with openssl.
pub struct TlsEngine {
    pub port: u16,
    pub certs: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsEngine {
    /// The driver config lines that reach the engine through this front.
    pub fn config(&self) -> String {
        format!(
            "[docker]\nhost = \"tcp://127.0.0.1:{}\"\ntls_verify = true\ncert_path = {:?}",
            self.port,
            self.certs.path()
        )
    }

    pub fn start() -> TlsEngine {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;

        let certs = tempfile::tempdir().unwrap();
        let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=test-ca
openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 1 -extfile server.ext
openssl req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=client
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile client.ext
"#;
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(certs.path())
            .output()
            .expect("openssl is installed by scripts/test.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let dir = certs.path();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
            .build()
            .unwrap();
        let chain = vec![CertificateDer::from_pem_file(dir.join("server-cert.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = tls_front(listener, acceptor, Backend::Unix("/var/run/docker.sock"));
        TlsEngine {
            port,
            certs,
            stop: Some(stop),
        }
    }
}

impl TlsEngine {
    /// Closes the front: the port refuses connections, as a remote engine's does while it
    /// restarts.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TlsEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_tls_tcp_engine_runs_whole_jobs() {
    let engine = TlsEngine::start();
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    job.prepare_ok();
    let out = job.run("build_script", "echo over-tls");
    out.assert_ok();
    assert!(out.stdout().contains("over-tls"));
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    // Without the client certificate the daemon is unreachable: a system failure.
    let empty = tempfile::tempdir().unwrap();
    let no_certs = format!(
        "[docker]\nhost = \"tcp://127.0.0.1:{}\"\ntls_verify = true\ncert_path = {:?}",
        engine.port,
        empty.path()
    );
    let job = Job::builder(BUSYBOX).config(&no_certs).build();
    let out = job.prepare();
    out.assert_code(SYSTEM_FAILURE);
    assert!(out.stderr.contains("Docker daemon"), "{}", out.stderr);
}

#[test]
fn a_remote_engine_that_goes_down_is_named_plainly_and_waited_for() {
    let mut engine = TlsEngine::start();
    let config = format!(
        "{}
engine_restart_wait = 1",
        engine.config()
    );
    let job = Job::builder(BUSYBOX).config(&config).build();
    job.prepare_ok();
    engine.stop();
    // In the operating system's words, not the HTTP client's.
    let out = job.run("build_script", "echo never");
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        out.stderr.contains("Connection refused") && !out.stderr.contains("hyper"),
        "{}",
        out.stderr
    );
    // A refusing remote engine may be restarting: cleanup waits for it, as for a socket.
    let cleanup = job.cleanup();
    cleanup.assert_ok();
    assert!(
        cleanup.stderr.contains("waited 1 s for it to come back"),
        "{}",
        cleanup.stderr
    );
    // Behind the front the engine is fine: what the job left there goes the usual way.
    job.cleanup_locally().assert_ok();
    assert_no_leftovers(&job);
}

/// A remote engine's container addresses are not the driver's to reach: services are waited
/// for from inside the job's network (an exec in the helper), with the same timeout and the
/// same warning, never skipped.
#[test]
fn a_remote_engines_services_are_waited_for_from_inside_the_job_network() {
    let engine = TlsEngine::start();
    let late = serde_json::json!([{
        "name": BUSYBOX, "alias": "late", "entrypoint": ["sh", "-c"],
        "command": ["sleep 2; while true; do nc -l -p 7777 </dev/null; done"],
        "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "7777"}]
    }]);
    let config = |timeout: u64| {
        format!(
            "wait_for_services_timeout = {timeout}\n{BASE_CONFIG}{}",
            engine.config()
        )
    };
    let job = Job::builder(BUSYBOX)
        .only_config(&config(30))
        .services(late)
        .build();
    let start = std::time::Instant::now();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        start.elapsed() >= std::time::Duration::from_secs(2),
        "did not wait"
    );
    assert!(!prepare.stderr.contains("WARNING"), "{}", prepare.stderr);
    // Up before the job's first command.
    job.run(
        "build_script",
        "nc -w 1 late 7777 </dev/null && echo late-is-up",
    )
    .assert_ok();

    let silent = Job::builder(BUSYBOX)
        .only_config(&config(2))
        .services(silent_service("echo silent-says-hello; sleep 600"))
        .build();
    let prepare = silent.prepare();
    prepare.assert_ok();
    assert!(
        prepare
            .stderr
            .contains("did not open port(s) [7777] within 2s")
            && prepare.stderr.contains("silent-says-hello"),
        "{}",
        prepare.stderr
    );
}

#[test]
fn gc_removes_expired_leftovers_and_keeps_live_jobs() {
    let live = Job::new(BUSYBOX);
    live.prepare_ok();

    let dead = format!("ecr-executor-gc-test-{}", std::process::id());
    let labeled = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        for label in [
            "ecr-executor.managed=true",
            &format!("ecr-executor.job={dead}"),
            "ecr-executor.expires-at=1000",
        ] {
            all.extend(["--label".to_owned(), label.to_owned()]);
        }
        all
    };
    let run = |args: Vec<String>| docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(labeled(&["volume", "create", &format!("{dead}-builds")]));
    run(labeled(&["network", "create", &format!("{dead}-network")]));
    let mut create = labeled(&[
        "create",
        "--name",
        &format!("{dead}-build"),
        "--network",
        &format!("{dead}-network"),
    ]);
    create.extend([
        "-v".into(),
        format!("{dead}-builds:/builds"),
        BUSYBOX.into(),
        "sleep".into(),
        "600".into(),
    ]);
    run(create);
    docker(&["start", &format!("{dead}-build")]);
    // Direct-output directories: one of a job with no container, untouched for two hours,
    // and one as fresh as a prepare in progress. (The driver's TMPDIR is the live job's.)
    let dirs = live.direct_dir().parent().unwrap().to_owned();
    let (abandoned, fresh) = (dirs.join(&dead), dirs.join(format!("{dead}-fresh")));
    for dir in [&abandoned, &fresh] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&abandoned)
        .status()
        .unwrap();
    assert!(touched.success());

    let dry = live.driver(&["gc", "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout()
            .contains(&format!("would remove expired container {dead}-build")),
        "{}",
        dry.stdout()
    );
    assert_eq!(leftovers(&dead).len(), 3, "dry run removes nothing");
    assert!(abandoned.exists(), "dry run removes nothing");

    let gc = live.driver(&["gc"]);
    gc.assert_ok();
    for kind in ["container", "network", "volume"] {
        assert!(
            gc.stdout()
                .contains(&format!("removed expired {kind} {dead}-")),
            "{kind}: {}",
            gc.stdout()
        );
    }
    assert!(leftovers(&dead).is_empty(), "{:?}", leftovers(&dead));
    assert!(
        gc.stdout().contains(&format!(
            "removed abandoned directory {}",
            abandoned.display()
        )),
        "{}",
        gc.stdout()
    );
    assert!(!abandoned.exists());
    assert!(fresh.exists() && live.direct_dir().exists());
    assert_eq!(
        leftovers(&live.key()).len(),
        4,
        "the live job keeps its two containers, its ended metadata guard and its volume"
    );
    live.run("build_script", "echo still-alive").assert_ok();
}

#[test]
fn podman_runs_whole_jobs_through_its_docker_api() {
    let job = podman_job(BUSYBOX);
    job.prepare_ok();
    job.run(
        "get_sources",
        "echo from-helper > /builds/shared.txt && gitlab-runner --version",
    )
    .assert_ok();
    let out = job.run("build_script", "cat /builds/shared.txt; exit 3");
    out.assert_code(BUILD_FAILURE);
    assert!(out.stdout().contains("from-helper"), "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(job.exit_code_file())
            .unwrap()
            .trim(),
        "3"
    );
    job.cleanup().assert_ok();
    assert_podman_kept_no_container(&job);
}

#[test]
fn podman_cleanup_removes_a_job_whose_entrypoint_exited() {
    // Podman lists such a container in a state ("stopped") that Docker's API does not have.
    let job = podman_job(BAD_ENTRYPOINT);
    let prepare = job.prepare();
    if prepare.code != Some(0) {
        prepare.assert_code(BUILD_FAILURE);
    }
    // Whether prepare saw it end or not, a stage must meet the ended container with the hint.
    let build = job.build_container();
    let start = std::time::Instant::now();
    while podman_state(&build) == "true" {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let run = job.run("build_script", "echo unreachable");
    run.assert_code(BUILD_FAILURE);
    assert!(run.stderr.contains(r#"entrypoint: [""]"#), "{}", run.stderr);
    job.cleanup().assert_ok();
    assert_podman_kept_no_container(&job);
}

/// `podman inspect`'s `.State.Running` of a container.
fn podman_state(container: &str) -> String {
    let out = Command::new("podman")
        .args(["inspect", "-f", "{{.State.Running}}", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A job on the test world's Podman API service.
fn podman_job(image: &str) -> Job {
    let socket = std::env::var("ECR_EXECUTOR_TEST_PODMAN")
        .expect("ECR_EXECUTOR_TEST_PODMAN is not set: run the tests with scripts/test.sh");
    Job::builder(image)
        .config(&format!("[docker]\nhost = \"{socket}\""))
        .build()
}

#[track_caller]
fn assert_podman_kept_no_container(job: &Job) {
    let left = Command::new("podman")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=ecr-executor.job={}", job.key()))
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "podman kept {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
