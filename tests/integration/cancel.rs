//! SIGTERM to the process group, as GitLab Runner sends on cancel or timeout.

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
