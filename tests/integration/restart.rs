//! A real dockerd restart. Each test runs a private dockerd of its own
//! (`scripts/engines/private-dockerd.sh`: own socket, data root, exec root, pidfile and
//! network namespace, no iptables; the machine's engine is not touched) and SIGKILLs it, as
//! an OOM kill or a crash does, during a stage, during prepare and during cleanup. Without
//! live-restore the restarted engine stops the job's containers but keeps them: the stage
//! ends as a system failure, as does the next stage after a restart between two, and
//! cleanup waits for the engine and then leaves nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A private dockerd named `name` (its netns, `/run/ecr-<name>`, `/var/lib/ecr-<name>`),
/// destroyed on drop with everything it ran.
pub struct PrivateDockerd {
    pub name: &'static str,
    /// `--live-restore`: the containers outlive the daemon.
    live_restore: bool,
    /// The size of a tmpfs of its own for the data root (a disk that fills up).
    data_size: Option<&'static str>,
}

impl PrivateDockerd {
    pub fn start(name: &'static str) -> PrivateDockerd {
        PrivateDockerd::started(PrivateDockerd {
            name,
            live_restore: false,
            data_size: None,
        })
    }

    pub fn start_live_restore(name: &'static str) -> PrivateDockerd {
        PrivateDockerd::started(PrivateDockerd {
            name,
            live_restore: true,
            data_size: None,
        })
    }

    /// An engine whose data root is a tmpfs of `size` (as `mount -o size=` takes it).
    pub fn start_on_tmpfs(name: &'static str, size: &'static str) -> PrivateDockerd {
        PrivateDockerd::started(PrivateDockerd {
            name,
            live_restore: false,
            data_size: Some(size),
        })
    }

    fn started(engine: PrivateDockerd) -> PrivateDockerd {
        engine.script("destroy"); // a previous run's, if one was interrupted
        engine.script("start");
        engine
    }

    pub fn script(&self, command: &str) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/engines/private-dockerd.sh"
        );
        let out = Command::new(script)
            .arg(command)
            .env("ECR_D2_NAME", self.name)
            .env(
                "ECR_D2_LIVE_RESTORE",
                if self.live_restore { "1" } else { "0" },
            )
            .env("ECR_D2_DATA_SIZE", self.data_size.unwrap_or(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "private-dockerd.sh {command} (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/ecr-{}", self.name))
    }

    pub fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.run_dir().display())
    }

    /// A driver config that talks to this engine, with a short wait for it in cleanup.
    pub fn config(&self) -> String {
        format!(
            "[docker]\nhost = \"{}\"\nengine_restart_wait = 40",
            self.host()
        )
    }

    /// SIGKILLs dockerd at once (its containerd follows): the socket file stays and refuses.
    pub fn kill(&self) {
        let pid: i32 = std::fs::read_to_string(self.run_dir().join("docker.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(pid).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }

    pub fn leftovers(&self, job: &Job) -> Vec<String> {
        leftovers_at(Some(&self.host()), &job.key())
    }

    /// The engine's containers whose names contain `part`.
    pub fn leftovers_named(&self, part: &str) -> Vec<String> {
        docker_at(
            Some(&self.host()),
            &["ps", "-a", "-q", "--filter", &format!("name={part}")],
        )
    }

    /// Opens the engine's event stream for the job's containers being destroyed.
    fn destroy_events(&self, job: &Job) -> BufReader<UnixStream> {
        let filters = format!(
            r#"{{"type":["container"],"event":["destroy"],"label":["ecr-executor.job={}"]}}"#,
            job.key()
        );
        let mut stream = UnixStream::connect(self.run_dir().join("docker.sock")).unwrap();
        write!(
            stream,
            "GET /events?filters={} HTTP/1.0\r\nHost: docker\r\n\r\n",
            percent(&filters)
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{status}");
        reader
    }

    /// Whether the engine lists a container of the job, over the API (fast enough to poll).
    fn has_container_of(&self, job: &Job) -> bool {
        let filters = format!(r#"{{"label":["ecr-executor.job={}"]}}"#, job.key());
        let Ok(mut stream) = UnixStream::connect(self.run_dir().join("docker.sock")) else {
            return false;
        };
        write!(
            stream,
            "GET /containers/json?all=1&filters={} HTTP/1.0\r\nHost: docker\r\n\r\n",
            percent(&filters)
        )
        .unwrap();
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body.contains("\"Id\"")
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        self.script("destroy");
    }
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[track_caller]
fn assert_waited(cleanup: &Output) {
    cleanup.assert_ok();
    assert!(
        cleanup.stderr.contains("was down; cleanup waited"),
        "{}",
        cleanup.stderr
    );
    assert!(
        !cleanup.stderr.contains("could not remove"),
        "{}",
        cleanup.stderr
    );
}

/// Prepares a job on `engine` and SIGKILLs the engine once the job's script has started: the
/// stage ends at once as a system failure, and the script's later output never appears.
fn killed_mid_stage(engine: &PrivateDockerd) -> (Job, Output) {
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    job.prepare_ok();
    let running = job.spawn_run("build_script", "echo started\nsleep 30\necho finished");
    running.wait_for_output("started");
    engine.kill();
    let out = running.wait(Duration::from_secs(20));
    out.assert_code(SYSTEM_FAILURE);
    assert!(!out.stdout().contains("finished"), "{}", out.all());
    (job, out)
}

#[test]
fn a_dockerd_restarted_mid_stage_fails_it_and_cleanup_waits_and_leaves_nothing() {
    let engine = PrivateDockerd::start("ecrd-stage");
    let (job, out) = killed_mid_stage(&engine);
    assert!(
        out.stdout().contains("the runner's cleanup waits for it"),
        "{}",
        out.stderr
    );

    // The runner's cleanup comes while the engine is still down.
    let cleanup = job.spawn_driver(&["cleanup"]);
    std::thread::sleep(Duration::from_secs(1));
    engine.script("start");
    let cleanup = cleanup.wait(Duration::from_secs(60));
    assert_waited(&cleanup);
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}

/// Issue 22, defect 2: an engine restart without live-restore between two stages stops the
/// job's containers from outside. The next stage is a system failure that says so, not a
/// build failure blaming the image's ENTRYPOINT.
#[test]
fn a_dockerd_restarted_between_stages_fails_the_next_one_as_the_engines_doing() {
    let engine = PrivateDockerd::start("ecrd-between");
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    job.prepare_ok();
    job.run("build_script", "echo first").assert_ok();
    engine.kill();
    engine.script("start");
    let out = job.run("after_script", "echo second");
    out.assert_code(SYSTEM_FAILURE);
    assert!(
        out.stderr
            .contains("was not running when stage after_script needed it")
            && out.stderr.contains("stopped from outside"),
        "{}",
        out.all()
    );
    assert!(!out.all().contains("ENTRYPOINT"), "{}", out.all());
    assert!(!out.stdout().contains("second"), "{}", out.all());
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}

/// Issue 20, item 1: the runner retries a failed prepare at once, so a prepare that meets an
/// engine in the middle of a restart waits for it (`[docker] prepare_engine_wait`) and says so.
#[test]
fn prepare_waits_for_a_restarting_engine_and_says_how_long() {
    let engine = PrivateDockerd::start("ecrd-prewait");
    engine.kill();
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    let prepare = job.spawn_prepare();
    std::thread::sleep(Duration::from_secs(2));
    engine.script("start");
    let out = prepare.wait(Duration::from_secs(60));
    out.assert_ok();
    assert!(
        out.stdout().contains("was down; prepare waited"),
        "{}",
        out.all()
    );
    job.run("build_script", "echo after-the-restart")
        .assert_ok();
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}

/// With the defaults, an engine down for good fails the runner's three attempts (a prepare
/// and two retries, each followed by a cleanup) within a minute, each as a system failure.
#[test]
fn an_engine_down_for_good_fails_the_runners_three_attempts_within_a_minute() {
    let engine = PrivateDockerd::start("ecrd-downgood");
    engine.kill();
    let job = Job::builder(BUSYBOX)
        .config(&format!("[docker]\nhost = \"{}\"", engine.host()))
        .build();
    let start = Instant::now();
    for _ in 0..3 {
        let out = job.prepare();
        out.assert_code(SYSTEM_FAILURE);
        assert!(
            out.stdout()
                .contains("Waited 15 s ([docker] prepare_engine_wait)")
                && out.stderr.matches("ERROR").count() == 1,
            "{}",
            out.all()
        );
        job.cleanup().assert_ok();
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_dockerd_restarted_mid_prepare_is_cleaned_up_and_the_retry_works() {
    let engine = PrivateDockerd::start("ecrd-prepare");
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    let prepare = job.spawn_prepare();
    // Kill it when the first container is there: the others are still being made.
    let start = Instant::now();
    while !engine.has_container_of(&job) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no container appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    engine.kill();
    let out = prepare.wait(Duration::from_secs(30));
    out.assert_code(SYSTEM_FAILURE);
    assert!(out.stderr.contains("Docker"), "{}", out.stderr);

    // As the runner does after a failed prepare: cleanup, then the next attempt.
    let cleanup = job.spawn_driver(&["cleanup"]);
    engine.script("start");
    assert_waited(&cleanup.wait(Duration::from_secs(60)));
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    job.prepare_ok();
    job.run("build_script", "echo after-restart").assert_ok();
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}

#[test]
fn a_dockerd_restarted_mid_cleanup_is_waited_for_and_cleanup_finishes() {
    let engine = PrivateDockerd::start("ecrd-cleanup");
    let job = Job::builder(BUSYBOX).config(&engine.config()).build();
    job.prepare_ok();
    job.run("build_script", "echo hi").assert_ok();
    // Kill the engine the moment cleanup has removed its first container.
    let mut events = engine.destroy_events(&job);
    let cleanup = job.spawn_driver(&["cleanup"]);
    let mut line = String::new();
    while !line.contains("\"destroy\"") {
        line.clear();
        assert!(events.read_line(&mut line).unwrap() > 0, "no destroy event");
    }
    engine.kill();
    drop(events);
    std::thread::sleep(Duration::from_millis(500));
    engine.script("start");
    assert_waited(&cleanup.wait(Duration::from_secs(60)));
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}

#[test]
fn with_live_restore_the_job_outlives_a_dockerd_restart_and_cleanup_removes_it() {
    let engine = PrivateDockerd::start_live_restore("ecrd-live");
    // The driver loses the stage's stream with the daemon, though the script runs on.
    let (job, _) = killed_mid_stage(&engine);

    // The restarted daemon finds the job's containers still running; cleanup removes them.
    engine.script("start");
    let running_now = docker_at(
        Some(&engine.host()),
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=ecr-executor.job={}", job.key()),
        ],
    );
    assert_eq!(running_now.len(), 2, "build and helper: {running_now:?}");
    job.cleanup().assert_ok();
    assert_eq!(engine.leftovers(&job), Vec::<String>::new());
    assert_no_leftovers(&job);
}
