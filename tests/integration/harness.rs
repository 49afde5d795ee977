//! Plays GitLab Runner: calls the built `ecr-executor` binary the way the custom executor
//! does, with the runner's fixed variables (unusual exit codes 33/34 so a hard-coded value
//! shows), `CUSTOM_ENV_*` for every job variable, a job payload in `JOB_RESPONSE_FILE`, a
//! fresh self-contained script file per stage, each process in its own process group, and
//! cleanup always called when a [`Job`] is dropped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use rustix::process::{Pid, Signal};
use rustix::process::{WaitOptions, kill_process_group, waitpid};

pub const BUILD_FAILURE: i32 = 33;
pub const SYSTEM_FAILURE: i32 = 34;

pub const BUSYBOX: &str = "ecr-executor-test/busybox:latest";
pub const HELPER: &str = "ecr-executor-test/helper:latest";
pub const ENTRYPOINT: &str = "ecr-executor-test/entrypoint:latest";
pub const BAD_ENTRYPOINT: &str = "ecr-executor-test/bad-entrypoint:latest";
/// Debian 12 from `debootstrap` (scripts/build-debian-image.sh): bash, git, a user `build`.
pub const DEBIAN: &str = "ecr-executor-test/debian:12";

pub const RUNNER_TOKEN: &str = "itest";
pub const PROJECT_ID: u64 = 4242;

/// Driver config every test starts from: local images only, never a pull from the internet
/// (`always` is allowed only for tests that ask for it on their loopback registries).
pub const BASE_CONFIG: &str = r#"
helper_image = "ecr-executor-test/helper:latest"
pull_policy = ["if-not-present"]
allowed_pull_policies = ["if-not-present", "never", "always"]
"#;

/// Fails loudly (never skips) when Docker or the test images are missing.
pub fn require_docker() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let out = Command::new("docker")
            .args(["image", "inspect", BUSYBOX, HELPER, DEBIAN])
            .output()
            .expect("the `docker` CLI is needed by the tests: run scripts/test.sh");
        assert!(
            out.status.success(),
            "Docker or the test images are not available ({}): run scripts/test.sh",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    });
}

fn unique_job_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 100_000;
    (u64::from(std::process::id()) * 100_000 + seconds) * 1000
        + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What one driver invocation did.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout_path: PathBuf,
    pub stderr: String,
    /// Peak resident memory of the driver itself in KiB, sampled while it ran (0 when it
    /// ended before the first sample).
    pub peak_rss_kib: i64,
}

impl Output {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout_path).unwrap()).into_owned()
    }

    /// Everything the process printed, stdout then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }
}

/// A service that runs `command` and never opens the port the driver waits for (7777).
pub fn silent_service(command: &str) -> serde_json::Value {
    serde_json::json!([{
        "name": BUSYBOX,
        "alias": "silent",
        "entrypoint": ["sh", "-c"],
        "command": [command],
        "variables": [{"key": "HEALTHCHECK_TCP_PORT", "value": "7777"}]
    }])
}

/// A job as GitLab Runner would run it, with its temp dir (`TMPDIR`) and payload.
pub struct Job {
    pub id: u64,
    pub tmp: tempfile::TempDir,
    vars: Vec<(String, String)>,
    runner_env: Vec<(String, String)>,
    config: PathBuf,
    scripts: AtomicU64,
    private_tmpdir: bool,
    tmpdir: Option<PathBuf>,
    user: Option<User>,
    /// The last invocation was a cleanup that succeeded: dropping the job needs no other.
    cleaned: std::sync::atomic::AtomicBool,
}

/// An unprivileged user the driver runs as (rootless engines).
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl User {
    /// The user `name` of this machine.
    pub fn named(name: &str) -> User {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, name]).output().unwrap();
            assert!(out.status.success(), "no user {name}");
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let out = Command::new("getent")
            .args(["passwd", name])
            .output()
            .unwrap();
        let home = String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(5)
            .unwrap_or("/")
            .to_owned();
        User {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
            home: PathBuf::from(home),
        }
    }

    /// Makes `path` (and what is below it) this user's.
    pub fn own(&self, path: &std::path::Path) {
        let status = Command::new("chown")
            .args(["-R", &format!("{}:{}", self.uid, self.gid)])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The driver binary where any user may run it (the build's target dir may be private).
fn shared_driver() -> &'static PathBuf {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("ecr-executor-test-bin-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("ecr-executor");
        fs::copy(env!("CARGO_BIN_EXE_ecr-executor"), &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    })
}

pub struct JobBuilder {
    image: Option<String>,
    payload_image: Option<serde_json::Value>,
    services: Option<serde_json::Value>,
    credentials: Option<serde_json::Value>,
    secret_vars: Vec<String>,
    vars: Vec<(String, String)>,
    runner_env: Vec<(String, String)>,
    config: String,
    private_tmpdir: bool,
    tmpdir: Option<PathBuf>,
    user: Option<User>,
}

impl JobBuilder {
    /// Sets a job variable (`CUSTOM_ENV_<name>` and an export in every stage script).
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A masked, non-public job variable (as GitLab sends secrets and id_tokens).
    pub fn secret_var(mut self, name: &str, value: &str) -> Self {
        self.secret_vars.push(name.to_owned());
        self.var(name, value)
    }

    /// Sets `.services` of the payload (and `CI_JOB_SERVICES` as the runner derives it).
    pub fn services(mut self, services: serde_json::Value) -> Self {
        let env: Vec<serde_json::Value> = services
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let alias = s["alias"]
                    .as_str()
                    .unwrap_or("")
                    .split([',', ' '])
                    .next()
                    .unwrap_or("");
                serde_json::json!({"name": s["name"], "alias": alias,
                                   "entrypoint": s.get("entrypoint"), "command": s.get("command")})
            })
            .collect();
        self.services = Some(services);
        self.var(
            "CI_JOB_SERVICES",
            &serde_json::Value::Array(env).to_string(),
        )
    }

    /// Replaces `.image` of the payload (`CI_JOB_IMAGE` keeps the builder's image).
    pub fn payload_image(mut self, image: serde_json::Value) -> Self {
        self.payload_image = Some(image);
        self
    }

    /// Sets `.credentials` of the payload (the logins GitLab hands the job).
    pub fn credentials(mut self, credentials: serde_json::Value) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets a variable in the runner process's environment (not a job variable).
    pub fn runner_env(mut self, name: &str, value: &str) -> Self {
        self.runner_env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Points the AWS SDK at `endpoint` with static test keys, and never at IMDS.
    pub fn aws(self, endpoint: &str) -> Self {
        self.runner_env("AWS_ENDPOINT_URL", endpoint)
            .runner_env("AWS_ACCESS_KEY_ID", "testing")
            .runner_env("AWS_SECRET_ACCESS_KEY", "testing")
            .runner_env("AWS_EC2_METADATA_DISABLED", "true")
    }

    /// Replaces the whole driver config (instead of starting from [`BASE_CONFIG`]).
    pub fn only_config(mut self, text: &str) -> Self {
        self.config = text.to_owned();
        self
    }

    /// Appends lines to the driver config; `@TMP@` stands for the job's temp dir.
    pub fn config(mut self, extra: &str) -> Self {
        self.config.push_str(extra);
        self.config.push('\n');
        self
    }

    /// Runs every driver process with `TMPDIR` on a tmpfs of its own mount namespace, which
    /// the engine cannot see: a runner in a container talking to the host's engine.
    /// Runs every driver process as `user` (for rootless engines), in a temp dir of theirs.
    pub fn run_by(mut self, user: &User) -> Self {
        self.user = Some(user.clone());
        self
    }

    pub fn private_tmpdir(mut self) -> Self {
        self.private_tmpdir = true;
        self
    }

    /// The driver's `TMPDIR` is `dir`, shared with other jobs (the job's own temp dir
    /// otherwise), as on a runner host where every job's driver has the same one.
    pub fn tmpdir(mut self, dir: &std::path::Path) -> Self {
        self.tmpdir = Some(dir.to_owned());
        self
    }

    /// A job with no image at all.
    pub fn no_image(mut self) -> Self {
        self.image = None;
        self
    }

    pub fn build(self) -> Job {
        require_docker();
        let id = unique_job_id();
        let tmp = tempfile::Builder::new()
            .prefix("custom-executor")
            .tempdir()
            .unwrap();
        let mut vars: Vec<(String, String)> = vec![
            ("CI_JOB_ID".into(), id.to_string()),
            ("CI_PROJECT_ID".into(), PROJECT_ID.to_string()),
            ("CI_RUNNER_SHORT_TOKEN".into(), RUNNER_TOKEN.into()),
            ("CI_CONCURRENT_ID".into(), "0".into()),
            ("CI_CONCURRENT_PROJECT_ID".into(), "0".into()),
            ("CI_BUILDS_DIR".into(), "/builds".into()),
            ("CI_PROJECT_DIR".into(), "/builds/group/project".into()),
            ("CI_SERVER".into(), "yes".into()),
            ("CI_JOB_STATUS".into(), "running".into()),
            ("CI_JOB_TIMEOUT".into(), "3600".into()),
            ("CI_JOB_SERVICES".into(), String::new()),
            ("CI_RUNNER_VERSION".into(), "17.11.4".into()),
            ("CI_RUNNER_EXECUTABLE_ARCH".into(), "linux/amd64".into()),
            ("FF_NETWORK_PER_BUILD".into(), "false".into()),
        ];
        if let Some(image) = &self.image {
            vars.push(("CI_JOB_IMAGE".into(), image.clone()));
        }
        for (k, v) in self.vars {
            vars.retain(|(key, _)| *key != k);
            vars.push((k, v));
        }
        let image = self
            .payload_image
            .or_else(|| self.image.map(|name| serde_json::json!({ "name": name })));
        let mut payload = serde_json::json!({
            "id": id,
            "token": "glcbt-payload-token-not-for-output",
            "variables": vars.iter().map(|(k, v)| {
                let secret = self.secret_vars.contains(k);
                serde_json::json!({"key": k, "value": v, "public": !secret, "masked": secret})
            }).collect::<Vec<_>>(),
        });
        if let Some(services) = self.services {
            payload["services"] = services;
        }
        if let Some(credentials) = self.credentials {
            payload["credentials"] = credentials;
        }
        if let Some(image) = image {
            payload["image"] = image;
        }
        let response = tmp.path().join("response.json");
        fs::write(&response, payload.to_string()).unwrap();
        fs::set_permissions(&response, fs::Permissions::from_mode(0o600)).unwrap();
        let config = tmp.path().join("driver.toml");
        fs::write(
            &config,
            self.config.replace("@TMP@", tmp.path().to_str().unwrap()),
        )
        .unwrap();
        if let Some(user) = &self.user {
            user.own(tmp.path());
        }
        Job {
            id,
            tmp,
            vars,
            runner_env: self.runner_env,
            private_tmpdir: self.private_tmpdir,
            tmpdir: self.tmpdir,
            user: self.user.clone(),
            config,
            scripts: AtomicU64::new(0),
            cleaned: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Job {
    pub fn builder(image: &str) -> JobBuilder {
        JobBuilder {
            image: Some(image.to_owned()),
            payload_image: None,
            services: None,
            credentials: None,
            secret_vars: Vec::new(),
            vars: Vec::new(),
            runner_env: Vec::new(),
            private_tmpdir: false,
            tmpdir: None,
            user: None,
            config: BASE_CONFIG.to_owned(),
        }
    }

    pub fn new(image: &str) -> Job {
        Job::builder(image).build()
    }

    /// The value of the `ecr-executor.job` label (and the prefix of every name) of this job.
    pub fn key(&self) -> String {
        format!("ecr-executor-{RUNNER_TOKEN}-p{PROJECT_ID}-c0-j{}", self.id)
    }

    /// The job's direct-output directory on the host (the driver's TMPDIR is the job's).
    pub fn direct_dir(&self) -> PathBuf {
        let uid = rustix::process::geteuid().as_raw();
        self.tmpdir
            .as_deref()
            .unwrap_or(self.tmp.path())
            .join(format!("ecr-executor-{uid}"))
            .join(self.key())
    }

    pub fn build_container(&self) -> String {
        format!("{}-build", self.key())
    }

    pub fn exit_code_file(&self) -> PathBuf {
        self.tmp.path().join("build_exit_code")
    }

    pub fn set_var(&mut self, name: &str, value: &str) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
    }

    fn command(&self, args: &[&str], tag: &str) -> (Command, PathBuf, PathBuf) {
        self.cleaned.store(false, Ordering::Relaxed);
        let driver = env!("CARGO_BIN_EXE_ecr-executor");
        let mut cmd = if let Some(user) = &self.user {
            // setpriv execs the driver itself (no fork): the runner's signals reach it.
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={}", user.uid),
                &format!("--regid={}", user.gid),
                "--init-groups",
                "--",
            ])
            .arg(shared_driver());
            c
        } else if self.private_tmpdir {
            let private = self.tmp.path().join("private");
            fs::create_dir_all(&private).unwrap();
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(r#"mount -t tmpfs tmpfs "$TMPDIR" && exec "$0" "$@""#)
                .arg(driver);
            c
        } else {
            Command::new(driver)
        };
        cmd.args(args)
            .env_clear()
            .current_dir(self.tmp.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "TMPDIR",
                match (&self.tmpdir, self.private_tmpdir) {
                    (Some(shared), _) => shared.clone(),
                    (None, true) => self.tmp.path().join("private"),
                    (None, false) => self.tmp.path().to_owned(),
                },
            )
            .env("BUILD_FAILURE_EXIT_CODE", BUILD_FAILURE.to_string())
            .env("SYSTEM_FAILURE_EXIT_CODE", SYSTEM_FAILURE.to_string())
            .env("JOB_RESPONSE_FILE", self.tmp.path().join("response.json"))
            .env("BUILD_EXIT_CODE_FILE", self.exit_code_file())
            .env("ECR_EXECUTOR_CONFIG", &self.config)
            // Anything that looks for the instance metadata service from this host (the
            // SDK's credential chain, `doctor`) finds a closed loopback port, never
            // 169.254.169.254 on the machine's network; a test may name its own.
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
            .stdin(Stdio::null())
            .process_group(0);
        if let Some(host) = std::env::var_os("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        if let Some(user) = &self.user {
            cmd.env("HOME", &user.home)
                .env("USER", &user.name)
                .env("XDG_RUNTIME_DIR", format!("/run/user/{}", user.uid));
        }
        for (k, v) in &self.vars {
            cmd.env(format!("CUSTOM_ENV_{k}"), v);
        }
        cmd.envs(self.runner_env.iter().map(|(k, v)| (k, v)));
        let n = self.scripts.fetch_add(1, Ordering::Relaxed);
        let stdout = self.tmp.path().join(format!("{tag}-{n}.stdout"));
        let stderr = self.tmp.path().join(format!("{tag}-{n}.stderr"));
        cmd.stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap());
        (cmd, stdout, stderr)
    }

    fn execute(&self, args: &[&str], tag: &str) -> Output {
        let (mut cmd, stdout, stderr) = self.command(args, tag);
        let child = cmd.spawn().expect("start ecr-executor");
        let out = wait(child, stdout, stderr, Duration::from_secs(300));
        let cleaned = args.last() == Some(&"cleanup") && out.code == Some(0);
        self.cleaned.store(cleaned, Ordering::Relaxed);
        out
    }

    pub fn config_stage(&self) -> Output {
        self.execute(&["config"], "config")
    }

    pub fn prepare(&self) -> Output {
        self.execute(&["prepare"], "prepare")
    }

    pub fn cleanup(&self) -> Output {
        self.execute(&["cleanup"], "cleanup")
    }

    /// Writes `body` as the runner would for `stage` and runs it.
    pub fn run(&self, stage: &str, body: &str) -> Output {
        let script = self.write_script(body);
        self.execute(&["run", script.to_str().unwrap(), stage], stage)
    }

    /// Runs `script` for `stage` as it is, without the runner's wrapping.
    pub fn run_raw(&self, stage: &str, script: &[u8]) -> Output {
        let n = self.scripts.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.path().join(format!("raw-script{n}"));
        fs::write(&path, script).unwrap();
        if let Some(user) = &self.user {
            user.own(&path);
        }
        self.execute(&["run", path.to_str().unwrap(), stage], stage)
    }

    /// Starts `prepare` without waiting for it.
    pub fn spawn_prepare(&self) -> Running {
        let (mut cmd, stdout, stderr) = self.command(&["prepare"], "prepare");
        Running {
            child: cmd.spawn().expect("start ecr-executor"),
            stdout,
            stderr,
        }
    }

    /// Starts `ecr-executor <args>` in the job's environment without waiting.
    pub fn spawn_driver(&self, args: &[&str]) -> Running {
        let (mut cmd, stdout, stderr) = self.command(args, "driver");
        Running {
            child: cmd.spawn().expect("start ecr-executor"),
            stdout,
            stderr,
        }
    }

    /// Runs cleanup against the local engine, whatever engine the job's config names.
    pub fn cleanup_locally(&self) -> Output {
        let local = self.tmp.path().join("local.toml");
        fs::write(&local, BASE_CONFIG).unwrap();
        self.execute(&["--config", local.to_str().unwrap(), "cleanup"], "cleanup")
    }

    /// Runs `ecr-executor <args>` in the job's environment.
    pub fn driver(&self, args: &[&str]) -> Output {
        self.execute(args, "driver")
    }

    /// Starts a stage without waiting for it.
    pub fn spawn_run(&self, stage: &str, body: &str) -> Running {
        let script = self.write_script(body);
        let (mut cmd, stdout, stderr) =
            self.command(&["run", script.to_str().unwrap(), stage], stage);
        Running {
            child: cmd.spawn().expect("start ecr-executor"),
            stdout,
            stderr,
        }
    }

    /// Starts a stage whose output is read as it comes and not kept: counted, with only its
    /// last [`Streaming::TAIL`] bytes held, for jobs that print more than a test should store.
    pub fn spawn_run_streamed(&self, stage: &str, body: &str) -> Streaming {
        let script = self.write_script(body);
        let (mut cmd, stdout, stderr) =
            self.command(&["run", script.to_str().unwrap(), stage], stage);
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ecr-executor");
        let mut pipe = child.stdout.take().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = vec![0; 64 * 1024];
            let mut tail = Vec::with_capacity(2 * Streaming::TAIL + buf.len());
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => return tail,
                    Ok(n) => n,
                };
                counted.fetch_add(n as u64, Ordering::Relaxed);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * Streaming::TAIL {
                    tail.drain(..tail.len() - Streaming::TAIL);
                }
            }
        });
        Streaming {
            running: Running {
                child,
                stdout,
                stderr,
            },
            bytes,
            reader,
        }
    }

    /// A fresh `<tmp>/script<N>/script` (mode 0700) in the shape of the runner's bash
    /// scripts: strict mode, then an `eval` of the exports and the stage body, stdin empty.
    fn write_script(&self, body: &str) -> PathBuf {
        let n = self.scripts.fetch_add(1, Ordering::Relaxed);
        let dir = self.tmp.path().join(format!("script{n}"));
        fs::create_dir(&dir).unwrap();
        let mut inner = String::new();
        for (k, v) in &self.vars {
            inner.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
        inner.push_str(body);
        inner.push('\n');
        let script = format!(
            "#!/usr/bin/env bash\n\nset -eo pipefail\nset +o noclobber\n: | eval {}\nexit 0\n",
            ansi_c_quote(&inner)
        );
        let path = dir.join("script");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(user) = &self.user {
            user.own(&dir);
        }
        path
    }

    /// Every byte any driver invocation of this job printed so far.
    pub fn everything_printed(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in fs::read_dir(self.tmp.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".stdout") || name.ends_with(".stderr") {
                all.extend(fs::read(entry.path()).unwrap());
            }
        }
        all
    }

    /// Runs prepare and expects it to pass.
    pub fn prepare_ok(&self) -> &Self {
        self.prepare().assert_ok();
        self
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The runner always calls cleanup; so do the tests, whatever happened, unless the
        // test's own last call was one.
        if !self.cleaned.load(Ordering::Relaxed) {
            let _ = self.cleanup();
        }
    }
}

/// A driver process that has not been waited for yet.
pub struct Running {
    pub child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    pub fn stdout_so_far(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits (at most 30 s) until the output so far contains `text`.
    pub fn wait_for_output(&self, text: &str) {
        let start = Instant::now();
        while !self.stdout_so_far().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{text:?} never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (at most `limit`) until stderr so far contains `text`.
    pub fn wait_for_stderr(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr_so_far().contains(text) {
            assert!(start.elapsed() < limit, "{text:?} never appeared on stderr");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to the process group, as the runner does.
    pub fn signal_group(&self, signal: Signal) {
        let pid = Pid::from_child(&self.child);
        kill_process_group(pid, signal)
            .unwrap_or_else(|e| panic!("kill -{signal:?} -{pid:?}: {e}"));
    }

    pub fn wait(self, limit: Duration) -> Output {
        wait(self.child, self.stdout, self.stderr, limit)
    }

    /// Cancels a running `prepare` as the runner does (SIGTERM to the group) and checks that
    /// it ends within 10 s as a cancelled system failure, and that cleanup leaves nothing.
    pub fn cancel_prepare(self, job: &Job) {
        self.signal_group(Signal::TERM);
        // `wait` fails the test past its limit.
        let out = self.wait(Duration::from_secs(10));
        out.assert_code(SYSTEM_FAILURE);
        assert!(
            out.stderr.contains("prepare was cancelled"),
            "{}",
            out.stderr
        );
        job.cleanup().assert_ok();
        assert_no_leftovers(job);
    }
}

/// A stage started by [`Job::spawn_run_streamed`].
pub struct Streaming {
    pub running: Running,
    bytes: Arc<AtomicU64>,
    reader: std::thread::JoinHandle<Vec<u8>>,
}

impl Streaming {
    /// How much of the end of the output is kept.
    pub const TAIL: usize = 64 * 1024;

    /// Bytes of stdout read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits (at most `limit`) until at least `n` bytes have come.
    pub fn wait_for_bytes(&self, n: u64, limit: Duration) {
        let start = Instant::now();
        while self.bytes() < n {
            assert!(
                start.elapsed() < limit,
                "only {} of {n} bytes came within {limit:?}",
                self.bytes()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The driver's memory high-water mark so far, in KiB.
    pub fn peak_rss_kib(&self) -> i64 {
        vm_hwm_kib(Pid::from_child(&self.running.child).as_raw_nonzero().get())
    }

    /// Waits for the driver as [`Running::wait`]; the output's kept tail becomes its stdout.
    pub fn wait(self, limit: Duration) -> (Output, u64) {
        let out = self.running.wait(limit);
        let tail = self.reader.join().unwrap();
        fs::write(&out.stdout_path, tail).unwrap();
        let total = self.bytes.load(Ordering::Relaxed);
        (out, total)
    }
}

/// Waits for the process (killing its group past `limit`), sampling its peak memory.
fn wait(child: Child, stdout: PathBuf, stderr: PathBuf, limit: Duration) -> Output {
    let pid = Pid::from_child(&child);
    let start = Instant::now();
    let mut peak_rss_kib = 0;
    let status = loop {
        peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(pid.as_raw_nonzero().get()));
        match waitpid(Some(pid), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => break status,
            Ok(None) => {}
            Err(e) => panic!("waitpid failed: {e}"),
        }
        if start.elapsed() > limit {
            let _ = kill_process_group(pid, Signal::KILL);
            panic!("ecr-executor did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::mem::forget(child); // already reaped
    let code = status.exit_status();
    Output {
        code,
        stdout_path: stdout,
        stderr: fs::read_to_string(&stderr).unwrap_or_default(),
        peak_rss_kib,
    }
}

/// The high-water mark of a running process's own memory (`VmHWM`), 0 once it has exited.
/// Not `ru_maxrss`: Linux carries the parent's high-water mark over a (v)fork + exec into
/// the child's, so with a big test process it measures the test, not the driver.
fn vm_hwm_kib(pid: i32) -> i64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Bash's `$'...'` quoting, as the runner uses for the eval'd stage body.
fn ansi_c_quote(s: &str) -> String {
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Lines of `docker <args>` output; panics when the CLI fails.
pub fn docker(args: &[&str]) -> Vec<String> {
    docker_at(None, args)
}

/// Lines of `docker -H <host> <args>` (the default engine without a host).
pub fn docker_at(host: Option<&str>, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    if let Some(host) = host {
        cmd.args(["-H", host]);
    }
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

pub const RUNNER_ACCOUNT: &str = "123456789012";
pub const JOB_ACCOUNT: &str = "210987654321";
pub const REGION: &str = "eu-west-1";

/// The services `scripts/start-test-world.sh` started: moto and two authenticated registries
/// (one per account) holding `ecr-executor-test/busybox:latest`.
pub struct World {
    pub moto: String,
    pub runner_port: u16,
    pub job_port: u16,
    /// The digest of `docker-hub/library/busybox:latest` in the registries.
    pub busybox_digest: String,
}

/// The test world; fails loudly when the test command did not start it.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with scripts/test.sh, which starts moto and the registries")
            })
        };
        World {
            moto: var("ECR_EXECUTOR_TEST_AWS"),
            runner_port: var("ECR_EXECUTOR_TEST_REGISTRY_RUNNER").parse().unwrap(),
            job_port: var("ECR_EXECUTOR_TEST_REGISTRY_JOB").parse().unwrap(),
            busybox_digest: var("ECR_EXECUTOR_TEST_BUSYBOX_DIGEST"),
        }
    })
}

impl World {
    /// The ECR hostname of `account`, with the port of its test registry.
    pub fn ecr_host(&self, account: &str) -> String {
        let port = if account == RUNNER_ACCOUNT {
            self.runner_port
        } else {
            self.job_port
        };
        format!("{account}.dkr.ecr.{REGION}.amazonaws.com:{port}")
    }

    pub fn ecr_image(&self, account: &str) -> String {
        format!(
            "{}/ecr-executor-test/busybox:latest",
            self.ecr_host(account)
        )
    }
}

/// Containers, volumes and networks still carrying the job's label.
pub fn leftovers(job_key: &str) -> Vec<String> {
    leftovers_at(None, job_key)
}

/// [`leftovers`] on the engine at `host`.
pub fn leftovers_at(host: Option<&str>, job_key: &str) -> Vec<String> {
    let filter = format!("label=ecr-executor.job={job_key}");
    let mut found = Vec::new();
    for (kind, args) in [
        (
            "container",
            vec!["ps", "-a", "-q", "--filter", filter.as_str()],
        ),
        (
            "volume",
            vec!["volume", "ls", "-q", "--filter", filter.as_str()],
        ),
        (
            "network",
            vec!["network", "ls", "-q", "--filter", filter.as_str()],
        ),
    ] {
        found.extend(
            docker_at(host, &args)
                .into_iter()
                .map(|id| format!("{kind} {id}")),
        );
    }
    found
}

#[track_caller]
pub fn assert_no_leftovers(job: &Job) {
    let left = leftovers(&job.key());
    assert!(left.is_empty(), "job {} left {left:?}", job.key());
    let dir = job.direct_dir();
    assert!(!dir.exists(), "job {} left {}", job.key(), dir.display());
}

/// A listening socket a test serves from a thread of its own.
pub trait Listener: Send + 'static {
    type Conn: Send + 'static;
    /// A connection (blocking) if one is waiting; the listener itself never blocks.
    fn next(&self) -> Option<Self::Conn>;
    fn polled(&self);
}

impl Listener for std::net::TcpListener {
    type Conn = std::net::TcpStream;
    fn next(&self) -> Option<Self::Conn> {
        let (conn, _) = self.accept().ok()?;
        conn.set_nonblocking(false).ok()?;
        Some(conn)
    }
    fn polled(&self) {
        self.set_nonblocking(true).unwrap();
    }
}

impl Listener for std::os::unix::net::UnixListener {
    type Conn = std::os::unix::net::UnixStream;
    fn next(&self) -> Option<Self::Conn> {
        let (conn, _) = self.accept().ok()?;
        conn.set_nonblocking(false).ok()?;
        Some(conn)
    }
    fn polled(&self) {
        self.set_nonblocking(true).unwrap();
    }
}

/// Stops a [`serve`] loop when dropped.
pub struct Serving(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Accepts connections on `listener` until the returned guard is dropped, each handled by
/// `handle` on a thread of its own.
pub fn serve<L: Listener>(
    listener: L,
    handle: impl Fn(L::Conn) + Send + Sync + 'static,
) -> Serving {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let handle = Arc::new(handle);
    listener.polled();
    std::thread::spawn(move || {
        while !stopped.load(Ordering::Relaxed) {
            match listener.next() {
                Some(conn) => {
                    let handle = handle.clone();
                    std::thread::spawn(move || handle(conn));
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Serving(stop)
}
