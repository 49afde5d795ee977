//! Cleanup needs no state and can run any number of times.

use crate::harness::*;

#[test]
fn cleanup_without_prepare_succeeds_quietly() {
    let job = Job::new(BUSYBOX);
    let out = job.cleanup();
    out.assert_ok();
    assert_eq!(out.stderr, "", "cleanup of nothing must not warn");
}

#[test]
fn cleanup_twice_is_fine() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    job.cleanup().assert_ok();
    let again = job.cleanup();
    again.assert_ok();
    assert_eq!(again.stderr, "");
    assert_no_leftovers(&job);
}

#[test]
fn prepare_replaces_leftovers_of_the_same_job() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    job.run("get_sources", "touch /builds/stale").assert_ok();
    // A retried prepare (the runner's second attempt) starts from scratch.
    job.prepare_ok();
    let out = job.run("build_script", "test ! -e /builds/stale && echo fresh");
    out.assert_ok();
    assert!(out.stdout().contains("fresh"));
}

#[test]
fn run_after_cleanup_is_a_system_failure() {
    let job = Job::new(BUSYBOX);
    job.prepare_ok();
    job.cleanup().assert_ok();
    let out = job.run("build_script", "echo hi");
    out.assert_code(SYSTEM_FAILURE);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[test]
fn same_named_objects_without_our_labels_are_replaced() {
    // Made by hand (no ecr-executor labels), so the leftover sweep does not see them.
    let job = Job::builder(BUSYBOX)
        .var("FF_NETWORK_PER_BUILD", "true")
        .build();
    let network = format!("{}-network", job.key());
    docker(&["network", "create", &network]);
    docker(&["create", "--name", &job.build_container(), BUSYBOX, "true"]);
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stderr.contains("removing another network"),
        "{}",
        prepare.stderr
    );
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={network}"),
    ]);
    assert_eq!(networks.len(), 1, "{networks:?}");
    let ping = job.run(
        "get_sources",
        "ping -c 1 -W 5 build >/dev/null && echo reachable",
    );
    ping.assert_ok();
    assert!(ping.stdout().contains("reachable"), "{}", ping.all());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
    assert!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={network}")
        ])
        .is_empty()
    );
}
