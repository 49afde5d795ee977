//! Faults: the engine unreachable or gone mid-stage (a dockerd restarted for real is in
//! `restart.rs`), a registry failing mid-pull, a full disk
//! under the credential cache, a SIGKILLed prepare, cancellation in every kind of stage, and
//! the cache under concurrent writers that get SIGKILLed. Each: the right exit class, a clear
//! message, bounded time, nothing leaked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::engine::TlsEngine;
use crate::fake_aws::{FakeAws, Reply};
use crate::harness::*;

#[test]
fn an_unreachable_engine_is_a_system_failure_in_every_stage() {
    // A missing socket, and a socket file nobody listens on (a stopped daemon).
    let dead = tempfile::tempdir().unwrap();
    let socket = dead.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    for host in [
        "unix:///nonexistent/docker.sock".to_owned(),
        format!("unix://{}", socket.display()),
    ] {
        // The default engine_restart_wait, 60 s; prepare's own wait for a restarting engine
        // short (its default is proven in restart.rs).
        let job = Job::builder(BUSYBOX)
            .config(&format!(
                "[docker]\nhost = {host:?}\nprepare_engine_wait = 1"
            ))
            .build();
        for out in [job.prepare(), job.run("build_script", "echo hi")] {
            out.assert_code(SYSTEM_FAILURE);
            assert!(out.stderr.contains("the Docker daemon"), "{}", out.stderr);
            assert!(
                out.stderr.contains("check that dockerd is running"),
                "{}",
                out.stderr
            );
        }
        // Prepare made nothing there, so cleanup has nothing to wait for (a host whose engine
        // is down for good would otherwise wait 60 s in every cleanup), and says so. The
        // waits for a restarting engine are in restart.rs and engine.rs.
        let start = Instant::now();
        let cleanup = job.cleanup();
        cleanup.assert_ok();
        assert!(
            cleanup.stderr.contains("the Docker daemon")
                && cleanup
                    .stderr
                    .contains("so cleanup did not wait for the engine"),
            "{}",
            cleanup.stderr
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}

#[test]
fn an_engine_that_goes_away_mid_stage_ends_the_stage() {
    let engine = TlsEngine::start();
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    job.prepare_ok();
    let running = job.spawn_run("build_script", "echo started\nsleep 30\necho finished");
    running.wait_for_output("started");
    drop(engine); // the daemon's endpoint disappears (as in a restart)
    let out = running.wait(Duration::from_secs(20));
    out.assert_code(SYSTEM_FAILURE);
    assert!(!out.stdout().contains("finished"));
    assert!(out.stderr.contains("Docker"), "{}", out.stderr);
    // The job's leftovers are removed through the local socket by the usual cleanup.
    job.cleanup_locally().assert_ok();
    assert_no_leftovers(&job);
}

/// How [`failing_registry`] answers manifest requests.
#[derive(Clone, Copy, PartialEq)]
pub enum ManifestFault {
    ServerError,
    CloseMidResponse,
    /// Never answer (until the client goes away).
    Hang,
    /// Refuse as ECR refuses an identity without ecr:BatchGetImage.
    Denied,
}

/// A registry that answers `/v2/` but fails every manifest request as `fault` says. Returns
/// its port and a count of the manifest requests it has seen.
pub fn failing_registry(fault: ManifestFault) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    if path != "/v2/" {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let response = if path == "/v2/" {
                        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n{}".to_owned()
                    } else if fault == ManifestFault::Hang {
                        // Hold the request until the engine gives up on it.
                        let _ = reader.read_to_end(&mut Vec::new());
                        return;
                    } else if fault == ManifestFault::Denied {
                        let body = r#"{"errors":[{"code":"DENIED","message":"User: arn:aws:iam::123456789012:user/fake-runner is not authorized to perform: ecr:BatchGetImage on resource: arn:aws:ecr:eu-west-1:123456789012:repository/team/app because no identity-based policy allows the ecr:BatchGetImage action"}]}"#;
                        format!(
                            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n{body}",
                            body.len()
                        )
                    } else if fault == ManifestFault::CloseMidResponse {
                        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nContent-Length: 5000\r\n\r\n{\"schemaVersion\": 2, ");
                        return;
                    } else {
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 21\r\n\r\ninjected server error".to_owned()
                    };
                    if out.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn a_registry_failing_mid_pull_is_a_system_failure() {
    for fault in [ManifestFault::ServerError, ManifestFault::CloseMidResponse] {
        let image = format!(
            "127.0.0.1:{}/ecr-executor-test/broken:1",
            failing_registry(fault).0
        );
        let job = Job::builder(&image)
            .payload_image(json!({"name": image, "pull_policy": ["always"]}))
            .build();
        let start = Instant::now();
        let out = job.prepare();
        out.assert_code(SYSTEM_FAILURE);
        assert!(
            out.stderr
                .contains(&format!("pulling image {image} failed")),
            "{}",
            out.stderr
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "took {:?}",
            start.elapsed()
        );
        job.cleanup().assert_ok();
        assert_no_leftovers(&job);
    }
}

/// A 4 KiB tmpfs, filled up: every write below it fails with ENOSPC.
struct FullDisk {
    dir: tempfile::TempDir,
}

impl FullDisk {
    fn new() -> FullDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4k,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (scripts/test.sh runs as root)"
        );
        let _ = std::fs::write(dir.path().join("filler"), vec![0u8; 64 * 1024]);
        FullDisk { dir }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_under_the_cache_is_a_warning_not_a_failure() {
    let disk = FullDisk::new();
    let fake = FakeAws::start();
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let job = Job::builder(&image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
        .aws(&fake.url)
        .config(&format!("[ecr]\ncache_dir = {:?}", disk.dir.path()))
        .build();
    let out = job.prepare();
    out.assert_ok();
    assert!(
        out.stderr
            .contains("could not update the ECR credential cache"),
        "{}",
        out.stderr
    );
    let names: Vec<String> = std::fs::read_dir(disk.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".json") || n.ends_with(".tmp")),
        "{names:?}"
    );
}

#[test]
fn a_sigkilled_prepare_is_cleaned_up_completely() {
    let job = Job::builder(BUSYBOX)
        .config("wait_for_services_timeout = 120")
        .services(json!([{
            "name": BUSYBOX, "entrypoint": ["sh", "-c"], "command": ["sleep 600"],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "7777"}]
        }]))
        .build();
    let running = job.spawn_prepare();
    // Wait until prepare is waiting for the service: every resource exists by then.
    let start = Instant::now();
    while leftovers(&job.key()).len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            leftovers(&job.key())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running.signal_group(Signal::KILL);
    let out = running.wait(Duration::from_secs(10));
    assert_eq!(out.code, None, "killed by a signal");
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn sigterm_stops_helper_and_after_script_stages_too() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    for (stage, container) in [
        ("get_sources", format!("{}-helper", job.key())),
        ("after_script", job.build_container()),
    ] {
        let running = job.spawn_run(stage, "echo started\nsleep 600");
        running.wait_for_output("started");
        let signalled = Instant::now();
        running.signal_group(Signal::TERM);
        let out = running.wait(Duration::from_secs(10));
        out.assert_code(SYSTEM_FAILURE);
        assert!(signalled.elapsed() < Duration::from_secs(10));
        let ps = docker(&["exec", &container, "ps", "-o", "args"]);
        assert!(
            !ps.iter().any(|p| p.contains("sleep 600")),
            "{stage}: {ps:?}"
        );
    }
}

#[test]
fn the_cache_survives_concurrent_writers_and_sigkills() {
    let fake = FakeAws::start();
    fake.reply(
        "GetAuthorizationToken",
        Reply::Delay(Duration::from_millis(50)),
    );
    let cache = tempfile::tempdir().unwrap();
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let job = Job::builder(BUSYBOX)
        .aws(&fake.url)
        .config(&format!("[ecr]\ncache_dir = {:?}", cache.path()))
        .build();
    let mut seed = u64::from(std::process::id());
    let mut random = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..4 {
        // Some rounds start from an entry that is already too old to use.
        if round % 2 == 1 {
            for entry in std::fs::read_dir(cache.path()).unwrap().flatten() {
                if entry.file_name().to_string_lossy().ends_with(".json") {
                    let text = std::fs::read_to_string(entry.path()).unwrap();
                    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    v["expires_at"] = json!(1000);
                    std::fs::write(entry.path(), v.to_string()).unwrap();
                }
            }
        }
        let procs: Vec<Running> = (0..32)
            .map(|_| job.spawn_driver(&["auth", "check", &image]))
            .collect();
        std::thread::sleep(Duration::from_millis(random(150)));
        let mut survivors = Vec::new();
        for p in procs {
            if random(3) == 0 {
                p.signal_group(Signal::KILL);
                p.wait(Duration::from_secs(10));
            } else {
                survivors.push(p);
            }
        }
        for p in survivors {
            let out = p.wait(Duration::from_secs(60));
            out.assert_ok();
            assert!(
                !out.stdout().contains("2015"),
                "an expired token was used: {}",
                out.stdout()
            );
        }
        for entry in std::fs::read_dir(cache.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap())
                        .unwrap_or_else(|e| {
                            panic!("round {round}: unreadable cache entry {name}: {e}")
                        });
                assert!(v["expires_at"].as_u64().unwrap() > 1000 || round % 2 == 1);
            }
        }
    }
    let last = job.driver(&["auth", "check", &image]);
    last.assert_ok();
    assert!(
        last.stdout().contains("source:   cache"),
        "{}",
        last.stdout()
    );
}

#[test]
fn sigterm_aborts_a_pull_in_progress() {
    let (port, manifests) = failing_registry(ManifestFault::Hang);
    let image = format!("127.0.0.1:{port}/ecr-executor-test/slow:1");
    let job = Job::builder(&image)
        .payload_image(json!({"name": image, "pull_policy": ["always"]}))
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
