//! A runner host's lifetime in small (issue 20, item 5): whole jobs of every kind go through
//! the runner-playing harness eight at a time (successes, script failures, cancels in every
//! kind of stage, services, the per-job network, ECR pulls with the token cache, and jobs on
//! a private dockerd that gets restarted now and then). Afterwards the host must be as it
//! was: no container, network or volume of these jobs on either engine, nothing under the
//! shared `TMPDIR` but the empty direct-output directory, the token cache whole and 0600, and
//! dockerd's descriptors and the driver's peak memory as flat at the end as after the first
//! hundred jobs.
//!
//! It runs alone (ignored in the suite, so other tests' jobs do not blur dockerd's
//! descriptors): `scripts/test.sh` runs a reduced soak after the suite, `scripts/bench.sh`
//! the full one. `ECR_EXECUTOR_SOAK_JOBS` sets the number of jobs (default 300).

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_aws::FakeAws;
use crate::harness::*;
use crate::restart::PrivateDockerd;

/// Jobs run at once, as a runner with `concurrent = 8`.
const AT_ONCE: usize = 8;
/// The window compared at both ends of the soak.
const WINDOW: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Success,
    ScriptFails,
    CancelPrepare,
    CancelHelper,
    CancelBuild,
    CancelAfterScript,
    Services,
    Network,
    Ecr,
    /// On the private dockerd, which the restarter kills and starts again.
    Restarting,
}

/// One round of the mix; job `i` is `MIX[i % MIX.len()]`.
const MIX: [Kind; 12] = [
    Kind::Success,
    Kind::Ecr,
    Kind::ScriptFails,
    Kind::Services,
    Kind::CancelBuild,
    Kind::Success,
    Kind::Network,
    Kind::Restarting,
    Kind::CancelPrepare,
    Kind::CancelHelper,
    Kind::Ecr,
    Kind::CancelAfterScript,
];

/// A service that answers PONG on 6379, waited for by the driver.
fn pong_service() -> serde_json::Value {
    json!([{
        "name": BUSYBOX,
        "alias": "pong",
        "entrypoint": ["sh", "-c"],
        "command": ["nc -ll -p 6379 -e echo PONG"],
        "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "6379"}]
    }])
}

struct Soak {
    tmpdir: tempfile::TempDir,
    cache: tempfile::TempDir,
    fake: FakeAws,
    engine: PrivateDockerd,
    /// Every job's key, to find what any of them left.
    keys: Mutex<HashSet<String>>,
}

/// What one job took.
struct Done {
    kind: Kind,
    wall: Duration,
    peak_kib: i64,
}

impl Soak {
    fn job(&self, kind: Kind) -> Job {
        let ecr = world().ecr_image(RUNNER_ACCOUNT);
        let builder = match kind {
            Kind::Ecr => Job::builder(&ecr)
                .payload_image(json!({"name": ecr, "pull_policy": ["always"]}))
                .aws(&self.fake.url)
                .config(&format!(
                    "[ecr]\ncache_dir = {:?}",
                    self.cache.path().join("ecr")
                )),
            Kind::Restarting => Job::builder(BUSYBOX).config(&self.engine.config()),
            Kind::Services => Job::builder(BUSYBOX).services(pong_service()),
            Kind::Network => Job::builder(BUSYBOX)
                .services(pong_service())
                .var("FF_NETWORK_PER_BUILD", "true"),
            _ => Job::builder(BUSYBOX),
        };
        let job = builder.tmpdir(self.tmpdir.path()).build();
        self.keys.lock().unwrap().insert(job.key());
        job
    }

    /// Runs one whole job of `kind` as the runner does and checks how each stage ended.
    fn run(&self, kind: Kind, seed: usize) -> Done {
        let start = Instant::now();
        let job = self.job(kind);
        let mut outs = vec![job.config_stage()];
        outs[0].assert_ok();
        let stage = |outs: &mut Vec<Output>, stage: &str, body: &str| {
            outs.push(job.run(stage, body));
            outs.last().unwrap().code
        };
        match kind {
            Kind::CancelPrepare => {
                let prepare = job.spawn_prepare();
                std::thread::sleep(Duration::from_millis(50 + (seed * 37 % 400) as u64));
                prepare.signal_group(Signal::TERM);
                let out = prepare.wait(Duration::from_secs(10));
                assert!(
                    matches!(out.code, Some(0 | SYSTEM_FAILURE)),
                    "{}",
                    out.all()
                );
                outs.push(out);
            }
            Kind::Restarting => {
                // The engine may go at any point: a system failure ends the job, as with the
                // runner; anything else must pass.
                let expect = |out: &Output| {
                    assert!(
                        matches!(out.code, Some(0 | SYSTEM_FAILURE)),
                        "{}",
                        out.all()
                    );
                    out.code == Some(0)
                };
                outs.push(job.prepare());
                if expect(outs.last().unwrap()) {
                    for (name, body) in [
                        ("get_sources", "echo sources"),
                        ("build_script", "echo build; sleep 0.5"),
                    ] {
                        stage(&mut outs, name, body);
                        if !expect(outs.last().unwrap()) {
                            break;
                        }
                    }
                }
            }
            _ => {
                outs.push(job.prepare());
                outs.last().unwrap().assert_ok();
                let cancelled = match kind {
                    Kind::CancelHelper => Some("get_sources"),
                    Kind::CancelBuild => Some("build_script"),
                    Kind::CancelAfterScript => Some("after_script"),
                    _ => None,
                };
                // After a cancel the runner runs only after_script (unless that was it).
                let mut was_cancelled = false;
                for name in ["get_sources", "build_script", "after_script"] {
                    if was_cancelled && name != "after_script" {
                        continue;
                    }
                    if cancelled == Some(name) {
                        let running = job.spawn_run(name, "echo started; sleep 600");
                        running.wait_for_output("started");
                        running.signal_group(Signal::TERM);
                        let out = running.wait(Duration::from_secs(10));
                        out.assert_code(SYSTEM_FAILURE);
                        outs.push(out);
                        was_cancelled = true;
                        continue;
                    }
                    let body = match (kind, name) {
                        (Kind::ScriptFails, "build_script") => "echo failing; exit 3",
                        (Kind::Services | Kind::Network, "build_script") => {
                            "nc -w 5 pong 6379 </dev/null | grep PONG"
                        }
                        _ => "echo ok",
                    };
                    let code = stage(&mut outs, name, body);
                    let want = match (kind, name) {
                        (Kind::ScriptFails, "build_script") => BUILD_FAILURE,
                        _ => 0,
                    };
                    assert_eq!(code, Some(want), "{}", outs.last().unwrap().all());
                }
            }
        }
        let cleanup = job.cleanup();
        cleanup.assert_ok();
        outs.push(cleanup);
        Done {
            kind,
            wall: start.elapsed(),
            peak_kib: outs.iter().map(|o| o.peak_rss_kib).max().unwrap_or(0),
        }
    }

    /// Runs jobs `range`, [`AT_ONCE`] at a time; job `i` is of kind `MIX[i % MIX.len()]`.
    fn batch(&self, range: std::ops::Range<usize>) -> Vec<(usize, Done)> {
        let next = AtomicUsize::new(range.start);
        let done = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..AT_ONCE {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= range.end {
                            return;
                        }
                        let finished = self.run(MIX[i % MIX.len()], i);
                        done.lock().unwrap().push((i, finished));
                    }
                });
            }
        });
        let mut done = done.into_inner().unwrap();
        done.sort_by_key(|(i, _)| *i);
        done
    }

    /// This soak's containers, volumes and networks still on the engine at `host`.
    fn leftovers(&self, host: Option<&str>) -> Vec<String> {
        let keys = self.keys.lock().unwrap();
        let mut left = Vec::new();
        for (kind, list, format) in [
            (
                "container",
                ["ps", "-a"],
                r#"{{.Label "ecr-executor.job"}} {{.Names}}"#,
            ),
            (
                "volume",
                ["volume", "ls"],
                r#"{{.Label "ecr-executor.job"}} {{.Name}}"#,
            ),
            (
                "network",
                ["network", "ls"],
                r#"{{.Label "ecr-executor.job"}} {{.Name}}"#,
            ),
        ] {
            let mut args = list.to_vec();
            args.extend(["--filter", "label=ecr-executor.job", "--format", format]);
            for line in docker_at(host, &args) {
                let key = line.split_whitespace().next().unwrap_or_default();
                if keys.contains(key) {
                    left.push(format!("{kind} {line}"));
                }
            }
        }
        left
    }
}

/// The machine's dockerd's open file descriptors.
fn dockerd_fds() -> usize {
    let pid = std::fs::read_to_string("/var/run/docker.pid").unwrap();
    std::fs::read_dir(format!("/proc/{}/fd", pid.trim()))
        .unwrap()
        .count()
}

/// Every path under `dir`, relative to it.
fn everything_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            }
        }
    }
    found.sort();
    found
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
#[ignore = "runs alone, after the suite: scripts/test.sh (reduced) and scripts/bench.sh (full)"]
fn soak_mixed_jobs_leave_the_host_as_it_was() {
    let total: usize = std::env::var("ECR_EXECUTOR_SOAK_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    assert!(total >= 2 * WINDOW, "a soak needs {} jobs", 2 * WINDOW);
    let soak = Soak {
        tmpdir: tempfile::Builder::new()
            .prefix("ecr-soak-tmp")
            .tempdir()
            .unwrap(),
        cache: tempfile::tempdir().unwrap(),
        fake: FakeAws::start(),
        engine: PrivateDockerd::start("ecrd-soak"),
        keys: Mutex::new(HashSet::new()),
    };
    let fds_before = dockerd_fds();

    // The occasional engine restart: the private dockerd, every 20 s while jobs run.
    let stop = AtomicBool::new(false);
    let restarts = AtomicUsize::new(0);
    let started = Instant::now();
    let (first, fds_first, rest) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() > Duration::from_secs(20) {
                    soak.engine.kill();
                    std::thread::sleep(Duration::from_millis(500));
                    soak.engine.script("start");
                    restarts.fetch_add(1, Ordering::Relaxed);
                    last = Instant::now();
                }
            }
        });
        let first = soak.batch(0..WINDOW);
        let fds_first = dockerd_fds();
        let rest = soak.batch(WINDOW..total);
        stop.store(true, Ordering::Relaxed);
        (first, fds_first, rest)
    });
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let fds_last = dockerd_fds();

    // Figures.
    let all: Vec<&Done> = first.iter().chain(&rest).map(|(_, d)| d).collect();
    let mut overhead: Vec<Duration> = all
        .iter()
        .filter(|d| d.kind == Kind::Success)
        .map(|d| d.wall)
        .collect();
    overhead.sort();
    let peak = |jobs: &[&Done]| jobs.iter().map(|d| d.peak_kib).max().unwrap_or(0);
    let peak_first = peak(&all[..WINDOW]);
    let peak_last = peak(&all[all.len() - WINDOW..]);
    let restarts = restarts.load(Ordering::Relaxed);
    eprintln!(
        "soak: {total} jobs, {AT_ONCE} at a time, in {:.1} s: {:.0} jobs/min; {restarts} \
         restarts of the private dockerd; a successful job's whole wall time (config, \
         prepare, 3 stages, cleanup) p50 {:?} p90 {:?} p99 {:?} max {:?}; driver peak RSS \
         {peak_first} KiB in the first {WINDOW} jobs, {peak_last} KiB in the last {WINDOW}; \
         dockerd fds {fds_before} before, {fds_first} after {WINDOW} jobs, {fds_last} at the \
         end; {} GetAuthorizationToken calls",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() * 60.0,
        percentile(&overhead, 0.5),
        percentile(&overhead, 0.9),
        percentile(&overhead, 0.99),
        overhead.last().unwrap(),
        soak.fake.calls("GetAuthorizationToken"),
    );

    // The host as it was.
    assert_eq!(soak.leftovers(None), Vec::<String>::new());
    assert_eq!(
        soak.leftovers(Some(&soak.engine.host())),
        Vec::<String>::new()
    );
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(
        everything_under(soak.tmpdir.path()),
        [format!("ecr-executor-{uid}")],
        "only the (empty) direct-output directory stays under TMPDIR"
    );
    let cache_dir = soak.cache.path().join("ecr");
    for entry in std::fs::read_dir(&cache_dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{entry:?}");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".json") || name.ends_with(".lock"),
            "a stray file in the cache: {name}"
        );
        if name.ends_with(".json") {
            let text = std::fs::read(entry.path()).unwrap();
            serde_json::from_slice::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{name} is not whole: {e}"));
        }
    }
    assert!(
        soak.fake.calls("GetAuthorizationToken") <= 2,
        "the cache served the ECR jobs"
    );
    assert!(
        restarts >= 1 || elapsed < Duration::from_secs(25),
        "the engine was restarted"
    );

    // Flat: what the last jobs needed is what the first did.
    assert!(
        fds_last <= fds_first + 10 + fds_first / 20,
        "dockerd's descriptors grew from {fds_first} to {fds_last}"
    );
    assert!(
        peak_last <= peak_first + 2048,
        "the driver's peak grew from {peak_first} KiB to {peak_last} KiB"
    );
}
