//! Side-by-side benchmarks of the driver against what an operator would use instead, each
//! comparison in one run with the sides alternating. Prints medians and ratios as Markdown and
//! writes `docs/performance.svg`. Run with `scripts/bench.sh` (which builds the release binary,
//! the raw-exec floor and the test images first).

// Measurement tooling, not the product: a failed unwrap aborts the run.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tests' fault-injecting AWS stand-in, used here only where moto cannot serve: ECR
/// tokens that expire in the future (so a warm cache exists) and counting calls.
#[allow(dead_code)]
#[path = "../tests/integration/fake_aws.rs"]
mod fake_aws;

const BUSYBOX: &str = "ecr-executor-test/busybox:latest";

/// One measured process: wall time, CPU time and peak RSS.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
}

/// `max_rss_kib` is `ru_maxrss`, which also carries this bench process's own high-water mark
/// over the spawn; the bench stays at a few MiB, below the driver's.
fn run(cmd: &mut Command) -> Sample {
    let start = Instant::now();
    let child = cmd.process_group(0).spawn().expect("spawn");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    std::mem::forget(child);
    let wall = start.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed with status {status}"
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
    }
}

/// The Docker CLI's way to run a stage: `docker exec -i CONTAINER sh < script`.
fn cli_exec(container: &str, script: &Path) -> Command {
    let mut c = Command::new("docker");
    c.args(["exec", "-i", container, "sh"])
        .stdin(fs::File::open(script).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The physical floor of an output shape: `examples/pipe_floor.rs`, the same script run by the
/// same shell on the host into a plain pipe that one process reads with the driver's buffer
/// sizes.
fn host_pipe(floor: &Path, script: &Path) -> Command {
    let mut c = Command::new(floor);
    c.arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Realistic output shapes, each written by a busybox shell: build logs are many small
/// writes and lines, not megabyte blocks.
const SHAPES: [(&str, &str); 3] = [
    (
        "20,000 lines, one `echo` each",
        "i=0; while [ $i -lt 20000 ]; do echo \"[$i/20000] compiling src/module_$i.rs\"; i=$((i+1)); done",
    ),
    (
        "mixed stdout/stderr, 20,000 lines",
        "i=0; while [ $i -lt 10000 ]; do echo \"ok $i\"; echo \"warning: unused variable $i\" >&2; i=$((i+1)); done",
    ),
    (
        "256 MB in 4 KiB writes",
        "dd if=/dev/zero bs=4096 count=65536 2>/dev/null",
    ),
];

/// The floor: `examples/raw_exec.rs`, the smallest bollard program doing the same.
fn raw_exec(raw: &Path, container: &str, script: &Path) -> Command {
    let mut r = Command::new(raw);
    r.arg(container)
        .stdin(fs::File::open(script).unwrap())
        .stdout(Stdio::null());
    r
}

/// CPU time used so far by the engine's processes: dockerd, containerd and the
/// containerd-shims (with the `runc` children they waited for).
fn engine_cpu() -> Duration {
    let tick = rustix::param::clock_ticks_per_second() as f64;
    let mut ticks = 0u64;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(comm) = fs::read_to_string(path.join("comm")) else {
            continue;
        };
        // The kernel cuts `containerd-shim-runc-v2` to 15 bytes.
        if !matches!(comm.trim(), "dockerd" | "containerd" | "containerd-shim") {
            continue;
        }
        let Ok(stat) = fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // After "pid (comm) ": state is field 3; utime, stime, cutime, cstime are 14-17.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        ticks += fields[11..15]
            .iter()
            .map(|f| f.parse::<u64>().unwrap())
            .sum::<u64>();
    }
    Duration::from_secs_f64(ticks as f64 / tick)
}

/// Runs the sides in order on even iterations and in reverse on odd ones, so that neither
/// side always follows the other.
fn alternate(i: usize, sides: &mut [&mut dyn FnMut()]) {
    if i % 2 == 1 {
        sides.reverse();
    }
    for side in sides.iter_mut() {
        side();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A job the way GitLab Runner hands it to a driver.
struct Job {
    dir: tempfile::TempDir,
    id: u64,
    bin: PathBuf,
    image: String,
    env: Vec<(String, String)>,
    scripts: std::sync::atomic::AtomicU32,
}

impl Job {
    /// A job on the local busybox image, which is never pulled.
    fn new(bin: &Path, id: u64) -> Job {
        Job::with(bin, id, BUSYBOX, "", Vec::new())
    }

    /// A job on `image` with extra driver config and runner environment. A non-local image is
    /// pulled with policy `always`, so every prepare authenticates and asks the registry.
    fn with(bin: &Path, id: u64, image: &str, config: &str, env: Vec<(String, String)>) -> Job {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("driver.toml"),
            format!(
                "helper_image = \"ecr-executor-test/helper:latest\"\npull_policy = \"if-not-present\"\nallowed_pull_policies = [\"always\", \"if-not-present\"]\n{config}\n"
            ),
        )
        .unwrap();
        let policy = if image == BUSYBOX {
            "if-not-present"
        } else {
            "always"
        };
        fs::write(
            dir.path().join("response.json"),
            format!(
                r#"{{"id": {id}, "image": {{"name": "{image}", "pull_policy": ["{policy}"]}}}}"#
            ),
        )
        .unwrap();
        Job {
            dir,
            id,
            bin: bin.to_owned(),
            image: image.to_owned(),
            env,
            scripts: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn env(&self, cmd: &mut Command) {
        let t = self.dir.path();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TMPDIR", t)
            .env("BUILD_FAILURE_EXIT_CODE", "33")
            .env("SYSTEM_FAILURE_EXIT_CODE", "34")
            .env("JOB_RESPONSE_FILE", t.join("response.json"))
            .env("BUILD_EXIT_CODE_FILE", t.join("build_exit_code"))
            .env("ECR_EXECUTOR_CONFIG", t.join("driver.toml"))
            .env("CUSTOM_ENV_CI_JOB_ID", self.id.to_string())
            .env("CUSTOM_ENV_CI_PROJECT_ID", "77")
            .env("CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN", "bench")
            .env("CUSTOM_ENV_CI_CONCURRENT_ID", "0")
            .env("CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID", "0")
            .env("CUSTOM_ENV_CI_JOB_IMAGE", &self.image)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }

    fn script(&self, body: &str) -> PathBuf {
        let n = self
            .scripts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.path().join(format!("script{n}"));
        fs::write(
            &path,
            format!("set -eo pipefail\nexport CI_JOB_STATUS=running\n{body}\n"),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        path
    }

    fn driver(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        self.env(&mut cmd);
        cmd
    }

    fn shell(&self, script: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches/docker-cli-driver")
                .join(script),
        );
        cmd.args(args);
        self.env(&mut cmd);
        cmd
    }

    fn build_container(&self) -> String {
        format!("ecr-executor-bench-p77-c0-j{}-build", self.id)
    }
}

const STAGES: [&str; 6] = [
    "prepare_script",
    "get_sources",
    "build_script",
    "after_script",
    "archive_cache",
    "cleanup_file_variables",
];

/// Wall times of a whole job's phases, one entry per job.
#[derive(Default)]
struct Phases {
    prepare: Vec<Duration>,
    stages: Vec<Duration>,
    cleanup: Vec<Duration>,
    total: Vec<Duration>,
}

impl Phases {
    fn record(&mut self, prepare: impl FnOnce(), stages: impl FnOnce(), cleanup: impl FnOnce()) {
        let (p, s, c) = (timed(prepare), timed(stages), timed(cleanup));
        self.prepare.push(p);
        self.stages.push(s);
        self.cleanup.push(c);
        self.total.push(p + s + c);
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// A result row: name, the driver's median, the other side's median, the goal ratio.
struct Row {
    name: String,
    ours: f64,
    theirs: f64,
    unit: &'static str,
    goal: Option<f64>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ecr-executor"));
    let raw = bin.parent().unwrap().join("examples/raw_exec");
    let pipe_floor = bin.parent().unwrap().join("examples/pipe_floor");
    assert!(
        raw.exists() && pipe_floor.exists(),
        "build the floors first: cargo build --release --example raw_exec --example pipe_floor"
    );
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let n = |full: usize| if quick { (full / 4).max(3) } else { full };
    let mut rows: Vec<Row> = Vec::new();
    let base_id = u64::from(std::process::id()) * 1000;

    let job = Job::new(&bin, base_id + 1);
    run(&mut job.driver(&["prepare"]));
    let container = job.build_container();

    // 1. Output shapes against their physical floor and against the CLI, realistic ones first.
    for (name, body) in SHAPES {
        let script = job.script(body);
        let (mut ours, mut cli, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n(16) {
            alternate(
                i,
                &mut [
                    &mut || {
                        let args = ["run", script.to_str().unwrap(), "build_script"];
                        ours.push(run(&mut job.driver(&args)).wall)
                    },
                    &mut || cli.push(run(&mut cli_exec(&container, &script)).wall),
                    &mut || floor.push(run(&mut host_pipe(&pipe_floor, &script)).wall),
                ],
            );
        }
        let o = ms(median(ours));
        rows.push(Row {
            name: format!("{name}: `run` vs host pipe (floor)"),
            ours: o,
            theirs: ms(median(floor)),
            unit: "ms",
            goal: Some(1.25),
        });
        rows.push(Row {
            name: format!("{name}: `run` vs `docker exec -i`"),
            ours: o,
            theirs: ms(median(cli)),
            unit: "ms",
            goal: None,
        });
    }

    // 2. Stage overhead on the same container.
    let script = job.script("echo hello");
    let (mut ours, mut cli, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n(40) {
        alternate(
            i,
            &mut [
                &mut || {
                    let args = ["run", script.to_str().unwrap(), "build_script"];
                    ours.push(run(&mut job.driver(&args)).wall)
                },
                &mut || cli.push(run(&mut cli_exec(&container, &script)).wall),
                &mut || floor.push(run(&mut raw_exec(&raw, &container, &script)).wall),
            ],
        );
    }
    let (o, c, f) = (ms(median(ours)), ms(median(cli)), ms(median(floor)));
    rows.push(Row {
        name: "stage: `run` vs `docker exec -i` (CLI)".into(),
        ours: o,
        theirs: c,
        unit: "ms",
        goal: Some(0.8),
    });
    rows.push(Row {
        name: "stage: `run` vs raw API exec (floor)".into(),
        ours: o,
        theirs: f,
        unit: "ms",
        goal: Some(1.15),
    });

    // 3. The best case, 1 MiB writes: 256 MB through the driver, the CLI, a host pipe and the
    // raw API exec, plus RSS at 64 MB / 1 GB.
    // The driver's default on a local engine is direct output (FIFOs); the same stream over
    // the attach, with direct output turned off, is measured beside it.
    let attach_job = Job::with(
        &bin,
        base_id + 2,
        BUSYBOX,
        "[docker]\ndirect_output = false",
        Vec::new(),
    );
    run(&mut attach_job.driver(&["prepare"]));
    let mb = |job: &Job, count: u64| {
        job.script(&format!(
            "dd if=/dev/zero bs=1048576 count={count} 2>/dev/null"
        ))
    };
    let (big, big_attach) = (mb(&job, 256), mb(&attach_job, 256));
    let (mut ours, mut cli, mut floor, mut attach, mut rss, mut pipe) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut ours_cpu, mut cli_cpu, mut ours_engine, mut cli_engine) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n(20) {
        alternate(
            i,
            &mut [
                &mut || {
                    let engine = engine_cpu();
                    let s = run(&mut job.driver(&["run", big.to_str().unwrap(), "build_script"]));
                    ours_engine.push(engine_cpu() - engine);
                    ours.push(s.wall);
                    ours_cpu.push(s.cpu);
                    rss.push(s.max_rss_kib);
                },
                &mut || {
                    let engine = engine_cpu();
                    let s = run(&mut cli_exec(&container, &big));
                    cli_engine.push(engine_cpu() - engine);
                    cli.push(s.wall);
                    cli_cpu.push(s.cpu);
                },
                &mut || floor.push(run(&mut raw_exec(&raw, &container, &big)).wall),
                &mut || pipe.push(run(&mut host_pipe(&pipe_floor, &big)).wall),
                &mut || {
                    let args = ["run", big_attach.to_str().unwrap(), "build_script"];
                    attach.push(run(&mut attach_job.driver(&args)).wall)
                },
            ],
        );
    }
    let (o, c, f) = (ms(median(ours)), ms(median(cli)), ms(median(floor)));
    rows.push(Row {
        name: "256 MB in 1 MiB writes (best case): `run` vs host pipe (floor)".into(),
        ours: o,
        theirs: ms(median(pipe)),
        unit: "ms",
        goal: Some(1.25),
    });
    rows.push(Row {
        name: "256 MB in 1 MiB writes: `run` vs `docker exec -i`".into(),
        ours: o,
        theirs: c,
        unit: "ms",
        goal: Some(0.85),
    });
    rows.push(Row {
        name: "256 MB in 1 MiB writes: `run` vs raw API exec".into(),
        ours: o,
        theirs: f,
        unit: "ms",
        goal: None,
    });
    rows.push(Row {
        name: "256 MB in 1 MiB writes: `run` over the attach (`direct_output = false`) vs `docker exec -i`"
            .into(),
        ours: ms(median(attach)),
        theirs: c,
        unit: "ms",
        goal: None,
    });
    rows.push(Row {
        name: "256 MB in 1 MiB writes: client CPU, `run` vs `docker exec -i`".into(),
        ours: ms(median(ours_cpu)),
        theirs: ms(median(cli_cpu)),
        unit: "ms",
        goal: None,
    });
    rows.push(Row {
        name: "256 MB in 1 MiB writes: engine CPU (dockerd, containerd, shims), `run` vs `docker exec -i`"
            .into(),
        // Means: the kernel counts CPU time in 10 ms ticks, more than one direct stage takes.
        ours: ms(mean(&ours_engine)),
        theirs: ms(mean(&cli_engine)),
        unit: "ms",
        goal: None,
    });
    let rss_64 =
        run(&mut job.driver(&["run", mb(&job, 64).to_str().unwrap(), "build_script"])).max_rss_kib;
    let rss_1g = run(&mut job.driver(&["run", mb(&job, 1024).to_str().unwrap(), "build_script"]))
        .max_rss_kib;
    let rss_1g_attach = run(&mut attach_job.driver(&[
        "run",
        mb(&attach_job, 1024).to_str().unwrap(),
        "build_script",
    ]))
    .max_rss_kib;
    run(&mut job.driver(&["cleanup"]));
    run(&mut attach_job.driver(&["cleanup"]));

    // 4. Whole job: config, prepare, 6 stages, cleanup vs the Docker-CLI shell driver.
    let (mut ours, mut shell) = (Phases::default(), Phases::default());
    for i in 0..n(12) as u64 {
        let job = Job::new(&bin, base_id + 100 + i);
        let script = job.script("echo hello");
        let stage = |stage| ["run", script.to_str().unwrap(), stage];
        alternate(
            i as usize,
            &mut [
                &mut || {
                    ours.record(
                        || {
                            run(&mut job.driver(&["config"]));
                            run(&mut job.driver(&["prepare"]));
                        },
                        || {
                            for s in STAGES {
                                run(&mut job.driver(&stage(s)));
                            }
                        },
                        || {
                            run(&mut job.driver(&["cleanup"]));
                        },
                    );
                },
                &mut || {
                    shell.record(
                        || {
                            run(&mut job.shell("prepare.sh", &[]));
                        },
                        || {
                            for s in STAGES {
                                run(&mut job.shell("run.sh", &stage(s)[1..]));
                            }
                        },
                        || {
                            run(&mut job.shell("cleanup.sh", &[]));
                        },
                    );
                },
            ],
        );
    }
    rows.push(Row {
        name: "whole job: driver vs Docker-CLI shell driver".into(),
        ours: ms(median(ours.total.clone())),
        theirs: ms(median(shell.total.clone())),
        unit: "ms",
        goal: Some(0.7),
    });

    // 5. Credentials: what ECR authentication adds to prepare, and how many AWS calls it makes.
    let credentials = std::env::var("ECR_EXECUTOR_TEST_AWS")
        .ok()
        .map(|moto| credentials(&bin, base_id + 300, &moto, n(12)));

    // 5b. Security: what the metadata guard and the cached-image check add to a warm prepare.
    let security = std::env::var("ECR_EXECUTOR_TEST_REGISTRY_RUNNER")
        .ok()
        .map(|_| security(&bin, base_id + 700, n(12)));

    // 5c. Side by side with the Docker executor's setup: the Docker CLI pulling through the
    // real docker-credential-ecr-login.
    let helper = std::env::var("ECR_EXECUTOR_TEST_ECR_LOGIN")
        .ok()
        .map(|real| ecr_login_side_by_side(&bin, base_id + 1000, &real, n(8)));

    // 6. Process start: `config` (no I/O) as a whole process.
    let job = Job::new(&bin, base_id + 900);
    let config: Vec<Duration> = (0..n(40))
        .map(|_| run(&mut job.driver(&["config"])).wall)
        .collect();
    let config_ms = ms(median(config));

    // 7. Concurrency: 32 whole jobs at once.
    let jobs: Vec<Job> = (0..32).map(|i| Job::new(&bin, base_id + 500 + i)).collect();
    let start = Instant::now();
    let cpu: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|job| {
                s.spawn(move || {
                    let script = job.script("echo hello");
                    let mut cpu = run(&mut job.driver(&["config"])).cpu;
                    cpu += run(&mut job.driver(&["prepare"])).cpu;
                    for stage in STAGES {
                        cpu += run(&mut job.driver(&["run", script.to_str().unwrap(), stage])).cpu;
                    }
                    cpu + run(&mut job.driver(&["cleanup"])).cpu
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let concurrent_wall = start.elapsed();
    let cpu_per_job = ms(cpu.iter().sum::<Duration>() / 32);

    // Report.
    println!("| comparison | ecr-executor | other side | ratio | goal |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let ratio = r.ours / r.theirs;
        let goal = r.goal.map_or(String::from("-"), |g| {
            format!("≤ {g:.2} {}", if ratio <= g { "✔" } else { "✘" })
        });
        println!(
            "| {} | {:.1} {} | {:.1} {} | {ratio:.2} | {goal} |",
            r.name, r.ours, r.unit, r.theirs, r.unit
        );
    }
    println!();
    println!(
        "- driver peak RSS while streaming: 64 MB → {} KiB, 256 MB → {} KiB (median), 1 GB → {} KiB; \
         over the attach, 1 GB → {} KiB",
        rss_64,
        {
            rss.sort();
            rss[rss.len() / 2]
        },
        rss_1g,
        rss_1g_attach
    );
    println!(
        "- whole job, medians (ecr-executor / shell driver): config + prepare {:.0} / {:.0} ms, \
         6 stages {:.0} / {:.0} ms, cleanup {:.0} / {:.0} ms",
        ms(median(ours.prepare)),
        ms(median(shell.prepare)),
        ms(median(ours.stages)),
        ms(median(shell.stages)),
        ms(median(ours.cleanup)),
        ms(median(shell.cleanup)),
    );
    println!("- `config` as a whole process: {config_ms:.1} ms (median)");
    println!(
        "- 32 concurrent whole jobs: all succeeded in {:.1} s; driver CPU per job {cpu_per_job:.0} ms (all ~10 processes)",
        concurrent_wall.as_secs_f64()
    );
    match &credentials {
        Some(c) => c.report(),
        None => println!("- credentials: skipped (start the test world: scripts/bench.sh does)"),
    }
    match &security {
        Some(s) => s.report(),
        None => println!("- security: skipped (start the test world: scripts/bench.sh does)"),
    }
    match &helper {
        Some(h) => h.report(),
        None => println!("- docker-credential-ecr-login: skipped (scripts/bench.sh sets it up)"),
    }
    let svg = plot(&rows);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/performance.svg");
    fs::write(&out, svg).unwrap();
    println!("\nplot written to {}", out.display());
}

/// Prepare of an ECR image (pull policy `always`, image already present) three ways.
struct Credentials {
    warm: f64,
    cold_runner: f64,
    job: f64,
    warm_calls: usize,
    cold_calls: (usize, usize),
    job_calls: (usize, usize),
}

const RUNNER_ACCOUNT: &str = "123456789012";
const JOB_ACCOUNT: &str = "210987654321";

/// The runner environment for AWS at `endpoint` with the emulators' static keys, and never
/// the instance metadata service.
fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec()
}

fn credentials(bin: &Path, base_id: u64, moto: &str, n: usize) -> Credentials {
    let port = |var: &str| std::env::var(var).expect("the test world's registry ports");
    let image = |account: &str, port: String| {
        format!("{account}.dkr.ecr.eu-west-1.amazonaws.com:{port}/ecr-executor-test/busybox:latest")
    };
    let runner_image = image(RUNNER_ACCOUNT, port("ECR_EXECUTOR_TEST_REGISTRY_RUNNER"));
    let job_image = image(JOB_ACCOUNT, port("ECR_EXECUTOR_TEST_REGISTRY_JOB"));
    let aws = aws_env;
    let job_identity = |endpoint: &str| {
        let mut env = aws(endpoint);
        env.push((
            "CUSTOM_ENV_ECR_ID_TOKEN".into(),
            "eyJhbGciOiJSUzI1NiJ9.BENCH.c2ln".into(),
        ));
        env
    };
    let job_config = format!(
        "[ecr]\nidentity = \"job\"\nrole_arn = \"arn:aws:iam::{JOB_ACCOUNT}:role/gitlab-ci\""
    );
    let warm_dir = tempfile::tempdir().unwrap();
    let warm_config = format!("[ecr]\ncache_dir = {:?}", warm_dir.path().join("ecr"));
    let fresh_cache = || {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("[ecr]\ncache_dir = {:?}", dir.path().join("ecr"));
        (dir, config)
    };
    let mut id = base_id;
    let mut prepare = |image: &str, config: &str, env: Vec<(String, String)>| {
        id += 1;
        let job = Job::with(bin, id, image, config, env);
        let wall = run(&mut job.driver(&["prepare"])).wall;
        run(&mut job.driver(&["cleanup"]));
        wall
    };

    // Call counts, from the counting fake.
    let fake = fake_aws::FakeAws::start();
    let (sts, ecr) = (
        || fake.calls("AssumeRoleWithWebIdentity"),
        || fake.calls("GetAuthorizationToken"),
    );
    let (cold_dir, cold_config) = fresh_cache();
    prepare(&runner_image, &cold_config, aws(&fake.url));
    drop(cold_dir);
    let cold_calls = (sts(), ecr());
    prepare(&job_image, &job_config, job_identity(&fake.url));
    let job_calls = (sts() - cold_calls.0, ecr() - cold_calls.1);
    prepare(&runner_image, &warm_config, aws(&fake.url));
    let before = sts() + ecr();

    // Times: the warm cache (no AWS call) alternating with cold and job identity on moto.
    let (mut warm, mut cold, mut job) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        warm.push(prepare(&runner_image, &warm_config, aws(&fake.url)));
        let (dir, config) = fresh_cache();
        cold.push(prepare(&runner_image, &config, aws(moto)));
        drop(dir);
        job.push(prepare(&job_image, &job_config, job_identity(moto)));
    }
    Credentials {
        warm: ms(median(warm)),
        cold_runner: ms(median(cold)),
        job: ms(median(job)),
        warm_calls: sts() + ecr() - before,
        cold_calls,
        job_calls,
    }
}

impl Credentials {
    fn report(&self) {
        let calls = |(sts, ecr): (usize, usize)| format!("{sts} STS + {ecr} ECR");
        println!(
            "- prepare of an ECR image (policy `always`, image present), medians: warm cache {:.1} ms \
             ({} AWS calls); cold runner identity {:.1} ms (+{:.1} ms, {}); job identity {:.1} ms \
             (+{:.1} ms, {}); cold and job timed against moto",
            self.warm,
            self.warm_calls,
            self.cold_runner,
            self.cold_runner - self.warm,
            calls(self.cold_calls),
            self.job,
            self.job - self.warm,
            calls(self.job_calls),
        );
    }
}

/// Warm prepares with and without the two checks of `[security]`, alternating.
struct Security {
    /// A local image, no service: `instance_metadata` block vs allow.
    guard: (f64, f64),
    /// A local image and one service: block vs allow.
    guard_service: (f64, f64),
    /// A cached ECR image under `if-not-present`, warm token cache: `cached_images` verify vs
    /// trust.
    cached: (f64, f64),
}

fn security(bin: &Path, base_id: u64, n: usize) -> Security {
    let port = std::env::var("ECR_EXECUTOR_TEST_REGISTRY_RUNNER").expect("the registry's port");
    let ecr = format!(
        "{RUNNER_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com:{port}/ecr-executor-test/busybox:latest"
    );
    let fake = fake_aws::FakeAws::start();
    let warm_dir = tempfile::tempdir().unwrap();
    let cache = format!("[ecr]\ncache_dir = {:?}", warm_dir.path().join("ecr"));
    let mut id = base_id;
    let mut prepare = |image: &str,
                       policy: &str,
                       services: &str,
                       config: &str,
                       env: &[(String, String)]| {
        id += 1;
        let job = Job::with(bin, id, image, config, env.to_vec());
        fs::write(
            job.dir.path().join("response.json"),
            format!(
                r#"{{"id": {id}, "image": {{"name": "{image}", "pull_policy": ["{policy}"]}}, "services": [{services}]}}"#
            ),
        )
        .unwrap();
        let wall = run(&mut job.driver(&["prepare"])).wall;
        run(&mut job.driver(&["cleanup"]));
        wall
    };
    let service =
        format!(r#"{{"name": "{BUSYBOX}", "entrypoint": ["sh", "-c"], "command": ["sleep 600"]}}"#);
    let allow = "[security]\ninstance_metadata = \"allow\"";
    // The image on the host, and the runner's token in the warm cache (from the counting
    // fake, whose tokens do not expire; moto's did in 2015).
    let fake_env = aws_env(&fake.url);
    prepare(&ecr, "always", "", &cache, &fake_env);
    let trust = format!("{cache}\n[security]\ncached_images = \"trust\"");
    let (mut block, mut allowed, mut block_s, mut allowed_s, mut verify, mut trusted) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..n {
        block.push(prepare(BUSYBOX, "if-not-present", "", "", &[]));
        allowed.push(prepare(BUSYBOX, "if-not-present", "", allow, &[]));
        block_s.push(prepare(BUSYBOX, "if-not-present", &service, "", &[]));
        allowed_s.push(prepare(BUSYBOX, "if-not-present", &service, allow, &[]));
        verify.push(prepare(&ecr, "if-not-present", "", &cache, &fake_env));
        trusted.push(prepare(&ecr, "if-not-present", "", &trust, &fake_env));
    }
    Security {
        guard: (ms(median(block)), ms(median(allowed))),
        guard_service: (ms(median(block_s)), ms(median(allowed_s))),
        cached: (ms(median(verify)), ms(median(trusted))),
    }
}

impl Security {
    fn report(&self) {
        let row = |what: &str, (with, without): (f64, f64), on: &str, off: &str| {
            println!(
                "- {what}: {on} {with:.1} ms, {off} {without:.1} ms (+{:.1} ms, {:.2}×)",
                with - without,
                with / without
            );
        };
        row(
            "warm prepare, local image: instance metadata",
            self.guard,
            "block",
            "allow",
        );
        row(
            "warm prepare, local image and one service: instance metadata",
            self.guard_service,
            "block",
            "allow",
        );
        row(
            "warm prepare, cached ECR image (if-not-present, token cached): cached images",
            self.cached,
            "verify",
            "trust",
        );
    }
}

/// The driver and the Docker CLI with `docker-credential-ecr-login`, on the same ECR image
/// (present, so each pull authenticates and asks the registry for the manifest), both
/// getting their tokens from the counting AWS stand-in.
struct HelperRun {
    /// Medians: (driver prepare, `docker pull`), with no cached token and with one.
    cold: (f64, f64),
    warm: (f64, f64),
    /// `GetAuthorizationToken` calls per cold and per warm pull: (driver, CLI).
    calls_cold: (f64, f64),
    calls_warm: (f64, f64),
    /// 32 at once from no cached token: wall seconds and token calls, (driver, CLI).
    concurrent_wall: (f64, f64),
    concurrent_calls: (usize, usize),
}

fn ecr_login_side_by_side(bin: &Path, base_id: u64, real: &str, n: usize) -> HelperRun {
    let port = std::env::var("ECR_EXECUTOR_TEST_REGISTRY_RUNNER").expect("the registry's port");
    let host = format!("{RUNNER_ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com:{port}");
    let image = format!("{host}/ecr-executor-test/busybox:latest");
    let fake = fake_aws::FakeAws::start();
    // A second TLS endpoint for the helper, in front of the counting stand-in instead of moto.
    let run_dir = tempfile::tempdir().unwrap();
    let world = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/engines/ecr-login-world.sh"
    ))
    .arg("start")
    .env("ECR_EXECUTOR_TEST_AWS", &fake.url)
    .env("ECR_LOGIN_MODE", "proxy")
    .env("ECR_LOGIN_RUN", run_dir.path())
    .output()
    .unwrap();
    assert!(
        world.status.success(),
        "{}",
        String::from_utf8_lossy(&world.stderr)
    );
    let exports = String::from_utf8_lossy(&world.stdout).into_owned();
    let export = |name: &str| {
        exports
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name} in {exports}"))
            .trim_matches('\'')
            .to_owned()
    };
    let (ca, proxy) = (
        export("ECR_EXECUTOR_TEST_ECR_LOGIN_CA"),
        export("ECR_EXECUTOR_TEST_ECR_LOGIN_PROXY"),
    );
    let docker_config = tempfile::tempdir().unwrap();
    fs::write(
        docker_config.path().join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "ecr-login"}}}}"#),
    )
    .unwrap();
    let helper_dir = Path::new(real).parent().unwrap().to_owned();
    let cli_pull = |cache: &Path| {
        let mut cmd = Command::new("docker");
        cmd.args(["pull", "-q", &image])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", helper_dir.display()))
            .env("DOCKER_CONFIG", docker_config.path())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CA_BUNDLE", &ca)
            .env("HTTPS_PROXY", &proxy)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("AWS_ECR_CACHE_DIR", cache)
            .env("HOME", cache);
        cmd
    };
    let driver_env = aws_env(&fake.url);
    let mut id = base_id;
    let mut prepare = |cache: &Path| {
        id += 1;
        let config = format!("[ecr]\ncache_dir = {:?}", cache.join("ecr"));
        let job = Job::with(bin, id, &image, &config, driver_env.clone());
        let wall = run(&mut job.driver(&["prepare"])).wall;
        run(&mut job.driver(&["cleanup"]));
        wall
    };
    let calls = || fake.calls("GetAuthorizationToken");
    let (warm_driver, warm_cli) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    prepare(warm_driver.path());
    run(&mut cli_pull(warm_cli.path()));
    let (mut cold, mut warm) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let (mut calls_cold, mut calls_warm) = ((0, 0), (0, 0));
    for _ in 0..n {
        let fresh = tempfile::tempdir().unwrap();
        let before = calls();
        cold.0.push(prepare(fresh.path()));
        calls_cold.0 += calls() - before;
        let fresh = tempfile::tempdir().unwrap();
        let before = calls();
        cold.1.push(run(&mut cli_pull(fresh.path())).wall);
        calls_cold.1 += calls() - before;
        let before = calls();
        warm.0.push(prepare(warm_driver.path()));
        calls_warm.0 += calls() - before;
        let before = calls();
        warm.1.push(run(&mut cli_pull(warm_cli.path())).wall);
        calls_warm.1 += calls() - before;
    }
    // 32 at once, each side from no cached token (one shared cache, as on one runner host).
    let at_once = |start: &dyn Fn(usize) -> Command| {
        let before = calls();
        let t = Instant::now();
        let mut children: Vec<_> = (0..32).map(|i| start(i).spawn().unwrap()).collect();
        for c in &mut children {
            assert!(c.wait().unwrap().success());
        }
        (t.elapsed().as_secs_f64(), calls() - before)
    };
    let shared = tempfile::tempdir().unwrap();
    let jobs: Vec<Job> = (0..32)
        .map(|i| {
            let config = format!("[ecr]\ncache_dir = {:?}", shared.path().join("ecr"));
            Job::with(
                bin,
                base_id + 2000 + i as u64,
                &image,
                &config,
                driver_env.clone(),
            )
        })
        .collect();
    let (driver_wall, driver_calls) = at_once(&|i| {
        let mut cmd = jobs[i].driver(&["prepare"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    });
    for job in &jobs {
        run(&mut job.driver(&["cleanup"]));
    }
    let cli_shared = tempfile::tempdir().unwrap();
    let (cli_wall, cli_calls) = at_once(&|_| {
        let mut cmd = cli_pull(cli_shared.path());
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    });
    let _ = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/engines/ecr-login-world.sh"
    ))
    .arg("stop")
    .env("ECR_LOGIN_MODE", "proxy")
    .env("ECR_LOGIN_RUN", run_dir.path())
    .status();
    let per = |c: usize| c as f64 / n as f64;
    HelperRun {
        cold: (ms(median(cold.0)), ms(median(cold.1))),
        warm: (ms(median(warm.0)), ms(median(warm.1))),
        calls_cold: (per(calls_cold.0), per(calls_cold.1)),
        calls_warm: (per(calls_warm.0), per(calls_warm.1)),
        concurrent_wall: (driver_wall, cli_wall),
        concurrent_calls: (driver_calls, cli_calls),
    }
}

impl HelperRun {
    fn report(&self) {
        println!(
            "- ECR image present, pulled again (driver prepare with policy `always` / Docker CLI \
             `docker pull` through docker-credential-ecr-login 0.6.0): no cached token {:.0} / \
             {:.0} ms, {:.1} / {:.1} GetAuthorizationToken calls per pull; cached token {:.0} / \
             {:.0} ms, {:.1} / {:.1} calls; 32 at once from no cached token {:.1} / {:.1} s, {} / \
             {} calls",
            self.cold.0,
            self.cold.1,
            self.calls_cold.0,
            self.calls_cold.1,
            self.warm.0,
            self.warm.1,
            self.calls_warm.0,
            self.calls_warm.1,
            self.concurrent_wall.0,
            self.concurrent_wall.1,
            self.concurrent_calls.0,
            self.concurrent_calls.1,
        );
    }
}

/// A horizontal bar chart of the ratios, with each goal marked.
fn plot(rows: &[Row]) -> String {
    // The labels' column fits the longest name (about 6.5 px a character at 12 px).
    let longest = rows.iter().map(|r| r.name.replace('`', "").chars().count());
    let left = 20.0 + longest.max().unwrap_or(0) as f64 * 6.5;
    let (w, bar_h, gap) = (left + 430.0, 26.0, 18.0);
    let h = 50.0 + rows.len() as f64 * (bar_h + gap);
    let scale = (w - left - 40.0) / 1.5;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<text x="10" y="20" font-size="14" font-weight="bold">ecr-executor ÷ the alternative, medians, engine CPU as means (shorter is better; | marks the goal)</text>
"#
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * (bar_h + gap);
        let ratio = r.ours / r.theirs;
        let color = match r.goal {
            Some(g) if ratio <= g => "#2e7d32",
            Some(_) => "#c62828",
            None => "#1565c0",
        };
        svg.push_str(&format!(
            "<text x=\"10\" y=\"{:.0}\">{}</text>\n<rect x=\"{left}\" y=\"{y:.0}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{:.0}\">{ratio:.2}</text>\n",
            y + 17.0,
            r.name.replace('`', ""),
            (ratio.min(1.5) * scale).max(1.0),
            left + ratio.max(r.goal.unwrap_or(0.0)).min(1.5) * scale + 6.0,
            y + 17.0,
        ));
        if let Some(g) = r.goal {
            let x = left + g * scale;
            svg.push_str(&format!(
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.0}\" y2=\"{:.0}\" stroke=\"black\" stroke-width=\"2\"/>\n",
                y - 3.0,
                y + bar_h + 3.0
            ));
        }
    }
    let x1 = left + scale;
    svg.push_str(&format!(
        "<line x1=\"{x1:.1}\" x2=\"{x1:.1}\" y1=\"35\" y2=\"{:.0}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{:.0}\" fill=\"#888\">1.0</text>\n</svg>\n",
        h - 10.0,
        x1 - 8.0,
        h - 1.0
    ));
    svg
}
