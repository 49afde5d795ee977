//! Real job images: Debian 12 with bash and git (scripts/build-debian-image.sh), where the
//! runner's bash scripts run under bash as they would on a runner host, git clones in the
//! helper from a repository served on the job network, the cache volume carries over, a job
//! runs as a non-root user, and a cancel reaches a bash script's processes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// A config with the Debian image as the helper too: it has git and bash.
fn debian_helper() -> String {
    BASE_CONFIG.replace(HELPER, DEBIAN)
}

/// Whether any process of `container` has `needle` in its command line (Debian's minbase has
/// no `ps`).
fn running(container: &str, needle: &str) -> bool {
    let out = docker(&[
        "exec",
        container,
        "bash",
        "-c",
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; echo",
    ]);
    out.iter().any(|l| l.contains(needle))
}

#[test]
fn scripts_run_under_bash_with_the_runners_strictness() {
    let job = Job::new(DEBIAN);
    job.prepare_ok();
    // The harness writes the runner's bash header (`set -eo pipefail`, an `eval`).
    let out = job.run(
        "build_script",
        r#"trap 'echo trapped-on-exit' EXIT
echo "bash ${BASH_VERSINFO[0]}.${BASH_VERSINFO[1]}"
words=(one two three); echo "array ${#words[@]} ${words[2]}"
[[ "abc" == a* ]] && echo double-brackets
echo "$(( 6 * 7 ))"
false | true
echo not-reached"#,
    );
    out.assert_code(BUILD_FAILURE);
    let stdout = out.stdout();
    assert!(
        stdout.contains("bash 5.2\narray 3 three\ndouble-brackets\n42\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("not-reached"),
        "pipefail ends the script: {stdout}"
    );
    assert!(stdout.contains("trapped-on-exit"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(job.exit_code_file()).unwrap(),
        "1\n"
    );
}

#[test]
fn the_helper_clones_a_repository_served_on_the_job_network() {
    let git_server = r#"set -e
mkdir -p /srv/git /tmp/src && cd /tmp/src
git init -q -b main && git config user.email ci@example.com && git config user.name ci
echo hello-from-git > README && git add README && git commit -qm first
git clone -q --bare /tmp/src /srv/git/repo.git
exec git -c safe.directory='*' daemon --reuseaddr --export-all --base-path=/srv/git --port=9418"#;
    // Debian's minbase has no `ip`, so the metadata guard cannot be put in place:
    // `instance_metadata = "warn"` runs the job and says so once.
    let job = Job::builder(DEBIAN)
        .only_config(&format!(
            "{}\n[security]\ninstance_metadata = \"warn\"",
            debian_helper()
        ))
        .services(json!([{
            "name": DEBIAN, "alias": "gitserver",
            "entrypoint": ["bash", "-c"], "command": [git_server],
            "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "9418"}]
        }]))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stderr.contains("did not open"),
        "{}",
        prepare.stderr
    );
    assert_eq!(
        prepare
            .stderr
            .matches(
                "the helper image has no `ip` command ([security] instance_metadata = \"warn\")"
            )
            .count(),
        1,
        "{}",
        prepare.stderr
    );
    let sources = job.run(
        "get_sources",
        "git clone -q git://gitserver/repo.git /builds/group/project && git -C /builds/group/project log --format=%s",
    );
    sources.assert_ok();
    assert!(sources.stdout().contains("first"), "{}", sources.all());
    // The build container sees the clone on the job's builds volume.
    let build = job.run("build_script", "cat /builds/group/project/README");
    build.assert_ok();
    assert_eq!(build.stdout(), "hello-from-git\n");
}

#[test]
fn the_cache_volume_carries_over_to_the_projects_next_job() {
    let marker = format!("/cache/debian-{}", std::process::id());
    let first = Job::new(DEBIAN);
    first.prepare_ok();
    first
        .run(
            "build_script",
            &format!("echo from-the-first-job > {marker}"),
        )
        .assert_ok();
    first.cleanup().assert_ok();
    let second = Job::new(DEBIAN);
    second.prepare_ok();
    let out = second.run("build_script", &format!("cat {marker} && rm {marker}"));
    out.assert_ok();
    assert_eq!(out.stdout(), "from-the-first-job\n");
}

#[test]
fn a_job_runs_as_a_non_root_user() {
    let job = Job::builder(DEBIAN)
        .payload_image(json!({"name": DEBIAN, "executor_opts": {"docker": {"user": "build"}}}))
        .build();
    job.prepare_ok();
    let out = job.run(
        "build_script",
        "id -un; echo \"$HOME\"; touch \"$HOME/x\" && echo home-writable; readlink /proc/self/fd/1",
    );
    out.assert_ok();
    let stdout = out.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        ["build", "/home/build", "home-writable"],
        "{}",
        out.all()
    );
    assert!(
        lines[3].starts_with("/.ecr-executor/"),
        "direct output as a non-root user: {}",
        out.all()
    );
}

#[test]
fn a_cancel_reaches_a_bash_scripts_processes() {
    let job = Job::new(DEBIAN);
    job.prepare_ok();
    let running_stage = job.spawn_run(
        "build_script",
        "trap 'echo got-term; exit 143' TERM\n(sleep 611 &)\nsleep 612 &\necho started\nwait",
    );
    running_stage.wait_for_output("started");
    let signalled = Instant::now();
    running_stage.signal_group(Signal::TERM);
    let out = running_stage.wait(Duration::from_secs(15));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    out.assert_code(SYSTEM_FAILURE);
    assert!(out.stderr.contains("cancelled"), "{}", out.stderr);
    assert!(
        out.stdout().contains("got-term"),
        "bash ran its trap: {}",
        out.all()
    );
    let container = job.build_container();
    assert!(!running(&container, "sleep 611") && !running(&container, "sleep 612"));
    // after_script still runs.
    let after = job.run("after_script", "echo after-cancel");
    after.assert_ok();
    assert!(after.stdout().contains("after-cancel"));
}
