//! SIGTERM to the process group, as GitLab Runner sends on cancel or timeout.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fake_aws::{FakeAws, Reply};
use crate::harness::*;

#[test]
fn sigterm_stops_a_running_build_script_and_its_processes() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    // One process in the stage's tree, one orphaned (its parent exits at once).
    let running = job.spawn_run(
        "build_script",
        "(sleep 601 &)\necho started\nsleep 600\necho not-reached",
    );
    running.wait_for_output("started");
    let signalled = Instant::now();
    running.signal_group(Signal::TERM);
    let out = running.wait(Duration::from_secs(10));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    out.assert_code(SYSTEM_FAILURE);
    assert!(!out.stdout().contains("not-reached"));
    assert!(out.stderr.contains("cancelled"), "{}", out.stderr);

    let ps = docker(&["exec", &job.build_container(), "ps", "-o", "args"]);
    assert!(
        !ps.iter().any(|p| p.contains("sleep 60")),
        "still running: {ps:?}"
    );

    // The runner runs after_script after a cancel: the container can still run stages.
    let after = job.run("after_script", "echo after-cancel");
    after.assert_ok();
    assert!(after.stdout().contains("after-cancel"), "{}", after.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn sigterm_aborts_prepare_and_cleanup_leaves_nothing() {
    let fake = FakeAws::start();
    fake.reply("GetAuthorizationToken", Reply::Hang);
    let image = world().ecr_image(RUNNER_ACCOUNT);
    let job = Job::builder(&image)
        .payload_image(serde_json::json!({"name": image, "pull_policy": ["always"]}))
        .aws(&fake.url)
        .config("[ecr]\ncache = false\ntimeout_seconds = 120")
        .build();
    let running = job.spawn_prepare();
    let start = Instant::now();
    while fake.calls("GetAuthorizationToken") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prepare never asked for a token"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running.cancel_prepare(&job);
}

/// Issue 20, item 3: the runner cancels a job that writes as fast as it can. On both output
/// paths the stage ends within the runner's graceful window as a cancelled system failure,
/// with no writer left, and the driver's memory stays where it was after the first 64 MiB
/// while hundreds more go through (the harness counts the bytes and keeps only the tail).
#[test]
fn a_cancel_during_an_output_flood_ends_the_stage_with_flat_memory() {
    const LINE: &str = "a line from a job that prints as fast as it can";
    for config in ["", "[docker]\ndirect_output = false"] {
        let job = Job::builder(BUSYBOX).config(config).build();
        job.prepare_ok();
        let running = job.spawn_run_streamed("build_script", &format!("yes '{LINE}'"));
        running.wait_for_bytes(64 << 20, Duration::from_secs(60));
        let early_kib = running.peak_rss_kib();
        let early_bytes = running.bytes();
        running.wait_for_bytes(early_bytes + (256 << 20), Duration::from_secs(120));
        let signalled = Instant::now();
        running.running.signal_group(Signal::TERM);
        let (out, total) = running.wait(Duration::from_secs(10));
        let ended = signalled.elapsed();
        eprintln!(
            "flood ({config:?}): {} MiB, peak {early_kib} KiB after 64 MiB, {} KiB at the end, \
             stage ended {ended:?} after SIGTERM",
            total >> 20,
            out.peak_rss_kib
        );
        out.assert_code(SYSTEM_FAILURE);
        assert!(out.stderr.contains("cancelled"), "{}", out.stderr);
        assert!(out.stdout().contains(LINE), "the tail: {:?}", out.stdout());
        assert!(
            out.peak_rss_kib > 0 && out.peak_rss_kib <= early_kib + 2048,
            "the driver grew from {early_kib} KiB to {} KiB over {} MiB",
            out.peak_rss_kib,
            total >> 20
        );
        let ps = docker(&["exec", &job.build_container(), "ps", "-o", "args"]);
        assert!(
            !ps.iter().any(|p| p.contains("yes")),
            "still running: {ps:?}"
        );
        job.cleanup().assert_ok();
        assert_no_leftovers(&job);
    }
}

/// A socket in front of the machine's engine that holds every container and volume create for a while
/// and passes it on even when its caller has gone, as an engine already making a container
/// goes on making it: a create the driver drops lands after the driver has ended.
struct SlowCreates {
    _dir: tempfile::TempDir,
    path: PathBuf,
    creates: Arc<AtomicUsize>,
    _serving: Serving,
}

impl SlowCreates {
    fn start(hold: Duration) -> SlowCreates {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let creates = Arc::new(AtomicUsize::new(0));
        let counter = creates.clone();
        let serving = serve(UnixListener::bind(&path).unwrap(), move |client| {
            let upstream = UnixStream::connect("/var/run/docker.sock").unwrap();
            let (mut from_client, mut to_engine) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                // The client's end closing does not take the engine's with it.
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    let creates = |what: &[u8]| buf[..n].windows(what.len()).any(|w| w == what);
                    if creates(b"/containers/create") || creates(b"/volumes/create") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(hold);
                    }
                    if to_engine.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
            let (mut from_engine, mut to_client) = (upstream, client);
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = from_engine.read(&mut buf) {
                if to_client.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
        SlowCreates {
            _dir: dir,
            path,
            creates,
            _serving: serving,
        }
    }
}

/// Found by the soak: a prepare cancelled while the engine was making its volume or a
/// container ended at once, the engine finished making it after the runner's cleanup had
/// looked, and it stayed. A cancelled prepare now waits for the creates it sent.
#[test]
fn a_cancel_while_the_engine_makes_the_jobs_objects_leaves_nothing_behind() {
    let slow = SlowCreates::start(Duration::from_secs(3));
    let job = Job::builder(BUSYBOX)
        .config(&format!(
            "[docker]\nhost = \"unix://{}\"",
            slow.path.display()
        ))
        .build();
    let prepare = job.spawn_prepare();
    let start = Instant::now();
    while slow.creates.load(Ordering::SeqCst) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prepare made nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A cancelled system failure, then the runner's cleanup, which leaves nothing...
    prepare.cancel_prepare(&job);
    // ...and nothing appears afterwards: a create still under way would have landed by now.
    std::thread::sleep(Duration::from_secs(4));
    assert_no_leftovers(&job);
}
