//! `ecr-executor doctor`: checks a host the way the runner will use it, as the user that will
//! run it, before the runner is registered. One line per check, `✔` or `✘`; every `✘` says
//! the fix. Exits 0 only when nothing is `✘`. It reads and asks, and changes nothing but a
//! scratch directory and container it removes again; it never prints a secret.
//!
//! Checks: the config parses; the engine answers (its kind, version and API version, the
//! socket usable by this user); whether job output can skip the engine here, and why not;
//! the helper image is present or pullable (for the installed runner's version); the runner's
//! AWS identity (where its credentials come from, the ARN they resolve to); for every ECR
//! registry the config names, that a token can be fetched (and until when), assuming the
//! configured role; the token cache's owner and modes; that the packages' gc timer runs as
//! this user.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use bollard::Docker;

use super::Context;
use super::prepare::plan::default_helper_image;
use crate::auth::Resolver;
use crate::auth::target::{EcrTarget, Identity};
use crate::config::Config;
use crate::config::ecr::IdentityMode;
use crate::config::pull_through;
use crate::docker::engine::{Engine, local_kernel};
use crate::docker::shell::Access;
use crate::docker::{client, direct};
use crate::error::{AuthError, Error, Result, StageError};
use crate::job::{Env, JobVars};
use crate::output;
use crate::reference::ImageRef;
use crate::reference::ecr::Partition;

/// What `doctor` is told besides the config.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// The runner's version, when `gitlab-runner --version` cannot tell (for the helper image).
    pub runner_version: Option<String>,
    /// Images whose registries to check too.
    pub images: Vec<String>,
}

/// The lines so far, and how many failed.
#[derive(Default)]
struct Report {
    failures: usize,
}

impl Report {
    fn ok(&mut self, check: &str, detail: impl std::fmt::Display) {
        output::info(format!("✔ {check}: {detail}"));
    }

    fn fail(&mut self, check: &str, detail: impl std::fmt::Display) {
        self.failures += 1;
        output::info(format!("✘ {check}: {detail}"));
    }

    /// A check that could not run, because an earlier one failed.
    fn skip(&mut self, check: &str, why: &str) {
        output::info(format!("- {check}: not checked: {why}"));
    }
}

pub(crate) async fn run(
    loaded: Result<Config>,
    config_path: &str,
    env: Env,
    options: &Options,
) -> Result<()> {
    let mut report = Report::default();
    let config = match loaded {
        Ok(config) => {
            report.ok("config", format!("{config_path} parses"));
            config
        }
        Err(e) => {
            report.fail("config", format!("{e} (the checks below use the defaults)"));
            Config::default()
        }
    };
    let ctx = Context { env, config };

    let engine = engine(&ctx, &mut report).await;
    let resolver = Resolver::new(&ctx.config, &ctx.env);
    let helper = helper_image(&ctx, options, &mut report);
    match &engine {
        Some((docker, engine)) => {
            let probe = helper.as_ref().map(ImageRef::pull_reference);
            job_output(&ctx, docker, engine, probe, &mut report).await;
        }
        None => report.skip("job output", "the engine does not answer"),
    }
    match (&engine, &helper) {
        (Some((docker, ..)), Some(image)) => {
            helper_available(&ctx, docker, image, &resolver, &mut report).await
        }
        (None, Some(_)) => report.skip("helper image", "the engine does not answer"),
        (_, None) => {}
    }
    aws(&ctx, &resolver, helper.as_ref(), options, &mut report).await;
    token_cache(&ctx, &mut report);
    gc_timer(&UNIT_DIRS, &mut report);

    if report.failures == 0 {
        output::info("This host is ready for the runner.");
        Ok(())
    } else {
        Err(Error::Stage(StageError::DoctorFound {
            failures: report.failures,
        }))
    }
}

/// The engine: does it answer this user, and what is it.
async fn engine(ctx: &Context, report: &mut Report) -> Option<(Docker, Engine)> {
    let host = client::docker_host(&ctx.config, &ctx.env);
    let docker = match client::connect(&ctx.config, &ctx.env) {
        Ok(docker) => docker,
        Err(e) => {
            report.fail("engine", e);
            return None;
        }
    };
    match Engine::ask(&docker, &host).await {
        Ok(engine) => {
            let uid = rustix::process::geteuid().as_raw();
            let rootless = if engine.rootless {
                " (rootless: services are waited for from inside the job network)"
            } else {
                ""
            };
            let line = format!(
                "{} {} at {host}, API {}, usable by this user (uid {uid}){rootless}",
                engine.kind,
                engine.version.as_deref().unwrap_or("(version unknown)"),
                engine.api.as_deref().unwrap_or_default(),
            );
            if engine.api_supported() {
                report.ok("engine", line);
            } else {
                report.fail(
                    "engine",
                    format!("{line}: the driver needs Engine API 1.41 (Docker 20.10 or newer); upgrade the engine"),
                );
            }
            Some((docker, engine))
        }
        Err(e) => {
            let host_hint = if host.starts_with("unix://") {
                "the socket"
            } else {
                "the host"
            };
            let error = Error::docker("ask the version of", host_hint, e);
            report.fail("engine", error);
            None
        }
    }
}

/// Whether job output can skip the engine here, and why not.
async fn job_output(
    ctx: &Context,
    docker: &Docker,
    engine: &Engine,
    probe: Option<String>,
    report: &mut Report,
) {
    const CHECK: &str = "job output";
    if !ctx.config.docker.direct_output {
        return report.ok(CHECK, "through the engine ([docker] direct_output = false)");
    }
    if engine.access() == Access::Exec {
        return report.ok(CHECK, "through the engine (on Podman, stages run as execs)");
    }
    if !engine.on_this_host() {
        let why = if !engine.host.starts_with("unix://") {
            format!("the engine is remote ({})", engine.host)
        } else {
            format!(
                "the engine runs another kernel ({}, this host {}): it is in a VM",
                engine.kernel.as_deref().unwrap_or("unknown"),
                local_kernel().unwrap_or_default()
            )
        };
        return report.ok(CHECK, format!("through the engine: {why}"));
    }
    let dirs = ctx.job_dirs();
    let job = format!("doctor-{}", std::process::id());
    let dir = match dirs.create(&job) {
        Ok(dir) => dir,
        Err(e) => {
            return report.fail(
                CHECK,
                format!(
                    "cannot make a job directory {} ({e}); set [docker] direct_output_dir to a \
                     directory this user may write, or direct_output = false",
                    dirs.of(&job).display()
                ),
            );
        }
    };
    let seen = direct::engine_sees(docker, &dir, probe).await;
    let _ = dirs.remove(&job);
    match seen {
        Ok(true) => report.ok(
            CHECK,
            format!(
                "skips the engine (FIFOs under {})",
                dir.parent().unwrap_or(&dir).display()
            ),
        ),
        Ok(false) => report.fail(
            CHECK,
            format!(
                "the engine cannot see {} (a runner in a container, or systemd PrivateTmp=yes), \
                 so every job would fall back to the engine; set [docker] direct_output_dir to a \
                 directory on the engine's filesystem, or direct_output = false",
                dir.display()
            ),
        ),
        Err(why) => report.ok(
            CHECK,
            format!("skips the engine where it can (not proven here: {why})"),
        ),
    }
}

/// The helper image jobs will use: the configured one, else GitLab's for the installed
/// runner's version and architecture.
fn helper_image(ctx: &Context, options: &Options, report: &mut Report) -> Option<ImageRef> {
    const CHECK: &str = "helper image";
    let name = match &ctx.config.helper_image {
        Some(name) => name.clone(),
        None => {
            let Some(vars) = runner_version(options) else {
                report.fail(
                    CHECK,
                    "cannot tell the runner's version (`gitlab-runner --version` did not \
                     answer): pass --runner-version, or set helper_image in the driver config",
                );
                return None;
            };
            default_helper_image(&vars)
        }
    };
    match ImageRef::parse(&name) {
        Ok(image) => Some(image),
        Err(reason) => {
            report.fail(
                CHECK,
                format!("{name:?} is not an image reference: {reason}"),
            );
            None
        }
    }
}

/// The runner's version and architecture, as the job variables carry them.
fn runner_version(options: &Options) -> Option<JobVars> {
    let mut vars = JobVars::default();
    if let Some(version) = &options.runner_version {
        vars.insert("CI_RUNNER_VERSION", version.trim_start_matches('v'));
        return Some(vars);
    }
    let out = std::process::Command::new("gitlab-runner")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let name = match key.trim() {
            "Version" => "CI_RUNNER_VERSION",
            "Git revision" => "CI_RUNNER_REVISION",
            "OS/Arch" => "CI_RUNNER_EXECUTABLE_ARCH",
            _ => continue,
        };
        vars.insert(name, value.trim());
    }
    vars.get("CI_RUNNER_VERSION").is_some().then_some(vars)
}

/// Present on the host, or pullable (the registry's answer to the engine), through the
/// pull-through cache when a rule covers it.
async fn helper_available(
    ctx: &Context,
    docker: &Docker,
    image: &ImageRef,
    resolver: &Resolver<'_>,
    report: &mut Report,
) {
    const CHECK: &str = "helper image";
    let route = match pull_through::route(&ctx.config.pull_through, image) {
        Ok(route) => route,
        Err(reason) => return report.fail(CHECK, reason),
    };
    let pulled = route.as_ref().map_or(image, |r| &r.image);
    let via = match &route {
        Some(r) => format!(" (through the pull-through cache as {})", r.image),
        None => String::new(),
    };
    let reference = pulled.pull_reference();
    if docker.inspect_image(&reference).await.is_ok() {
        return report.ok(CHECK, format!("{image}{via} is on the host"));
    }
    let credentials = match resolver.credentials_for(pulled).await {
        Ok(credentials) => credentials,
        Err(e) => return report.fail(CHECK, format!("{image}{via}: {e}")),
    };
    let with = credentials
        .as_ref()
        .map(|c| format!(" with {}", c.who()))
        .unwrap_or_default();
    match docker
        .inspect_registry_image(&reference, credentials.as_ref().map(|c| c.docker()))
        .await
    {
        Ok(found) => report.ok(
            CHECK,
            format!(
                "{image}{via} is pullable{with} ({}); it is pulled when not present",
                found
                    .descriptor
                    .digest
                    .as_deref()
                    .unwrap_or("digest unknown")
            ),
        ),
        Err(e) => report.fail(
            CHECK,
            format!(
                "{image}{via} is neither on the host nor pullable{with} ({}); load it on the \
                 engine's host, or make it pullable (registry, credentials, [[pull_through]])",
                Error::docker("look up", &reference, e)
            ),
        ),
    }
}

/// The runner's AWS identity, and a token for every ECR registry the config names.
async fn aws(
    ctx: &Context,
    resolver: &Resolver<'_>,
    helper: Option<&ImageRef>,
    options: &Options,
    report: &mut Report,
) {
    let config = &ctx.config;
    let mut hosts: Vec<String> = config.registries.iter().map(|r| r.host.clone()).collect();
    hosts.extend(config.pull_through.iter().map(|p| p.registry.clone()));
    hosts.extend(helper.map(|h| h.registry_host().to_owned()));
    for image in &options.images {
        match ImageRef::parse(image) {
            Ok(image) => match pull_through::route(&config.pull_through, &image) {
                Ok(Some(route)) => hosts.push(route.image.registry_host().to_owned()),
                _ => hosts.push(image.registry_host().to_owned()),
            },
            Err(reason) => report.fail("image", format!("{image:?}: {reason}")),
        }
    }
    let mut targets: Vec<EcrTarget> = Vec::new();
    for host in hosts {
        if let Some(target) = resolver.ecr_target(&host)
            && !targets.iter().any(|t| t.host == target.host)
        {
            targets.push(target);
        }
    }

    // The runner's own identity, with the first registry's region and profile.
    let probe = targets.first().cloned().unwrap_or_else(|| EcrTarget {
        host: "(the runner's identity)".into(),
        registry_id: None,
        region: "us-east-1".into(),
        partition: Partition::Aws,
        fips: false,
        mode: config.ecr.identity,
        role_arn: None,
        profile: config.ecr.profile.clone(),
        id_token_variable: config.ecr.id_token_variable.clone(),
        allowed_job_roles: Default::default(),
    });
    let source = credential_source(&ctx.env, probe.profile.as_deref());
    let runner_needed = config.ecr.identity != IdentityMode::Job
        || targets.iter().any(|t| t.mode != IdentityMode::Job);
    // Without credentials no registry can get a token with the runner's identity: said once.
    let mut no_runner_credentials = false;
    match resolver.runner_arn(&probe).await {
        Ok(arn) => report.ok("AWS identity", format!("{arn} (credentials from {source})")),
        Err(e) if runner_needed => {
            no_runner_credentials = matches!(
                e,
                AuthError::NoAwsCredentials { .. } | AuthError::AwsCredentialsFailed { .. }
            );
            report.fail("AWS identity", e);
        }
        Err(_) => report.ok(
            "AWS identity",
            "none on this host, and none needed: every registry uses the job's identity",
        ),
    }
    if targets.is_empty() {
        report.ok(
            "ECR registries",
            "none named in the config; `doctor --image IMAGE` checks an image's registry",
        );
    }
    for target in &targets {
        let check = format!("ECR {}", target.host);
        let place = format!(
            "account {} in {}{}",
            target.registry_id.as_deref().unwrap_or("ECR Public"),
            target.region,
            if target.fips { " (FIPS endpoints)" } else { "" }
        );
        match resolver.identity(target) {
            Ok(Identity::Job { .. }) => {}
            Err(AuthError::NoIdToken { .. }) => {
                let role = target
                    .role_arn
                    .as_deref()
                    .unwrap_or("ECR_ROLE_ARN of the job");
                report.ok(
                    &check,
                    format!(
                        "{place}: the job's id_token ({}) for role {role}, checked when a job \
                         runs",
                        target.id_token_variable
                    ),
                );
                continue;
            }
            Err(e) => {
                report.fail(&check, e);
                continue;
            }
            Ok(Identity::Runner { .. }) if no_runner_credentials => {
                report.skip(
                    &check,
                    "the runner's AWS credentials are missing (see above)",
                );
                continue;
            }
            Ok(Identity::Runner { .. }) => {}
        }
        match resolver.fetch_fresh(target).await {
            Ok(token) => {
                let expires =
                    DateTime::from_secs(i64::try_from(token.expires_at).unwrap_or(i64::MAX))
                        .fmt(Format::DateTime)
                        .unwrap_or_default();
                let role = match &token.role_arn {
                    Some(role) => format!(", assuming {role}"),
                    None => String::new(),
                };
                report.ok(
                    &check,
                    format!(
                        "{place}: a token for {}{role}, valid until {expires}",
                        token.arn.as_deref().unwrap_or("the runner's identity")
                    ),
                );
            }
            Err(e) => report.fail(&check, e),
        }
    }
}

/// Where the SDK's default chain will find the runner's credentials, by what this host has.
fn credential_source(env: &Env, profile: Option<&str>) -> String {
    let hint = |name: &str| {
        env.aws_identity_hints
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if hint("AWS_ACCESS_KEY_ID").is_some() {
        return "environment variables (AWS_ACCESS_KEY_ID)".into();
    }
    let profile = profile
        .map(str::to_owned)
        .or_else(|| hint("AWS_PROFILE"))
        .or_else(|| hint("AWS_DEFAULT_PROFILE"));
    let home = env.home.clone().unwrap_or_default();
    let config = env
        .aws_config_file
        .clone()
        .unwrap_or_else(|| home.join(".aws/config"));
    let credentials =
        (env.aws_credentials_file.clone()).unwrap_or_else(|| home.join(".aws/credentials"));
    if let Some(profile) = &profile {
        let kind = profile_kind(&config, profile);
        return format!("AWS profile {profile}{kind}");
    }
    if hint("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        return "a web identity token file (AWS_WEB_IDENTITY_TOKEN_FILE)".into();
    }
    if hint("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || hint("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        return "the ECS/EKS container credentials endpoint".into();
    }
    if has_section(&credentials, "default") || has_section(&config, "default") {
        return format!("the default profile{}", profile_kind(&config, "default"));
    }
    if env.aws_imds_disabled {
        return "nowhere (AWS_EC2_METADATA_DISABLED=true)".into();
    }
    "the EC2 instance profile (IMDS)".into()
}

fn has_section(file: &Path, name: &str) -> bool {
    fs::read_to_string(file).is_ok_and(|text| {
        text.lines().any(|l| {
            let l = l.trim();
            l == format!("[{name}]") || l == format!("[profile {name}]")
        })
    })
}

/// What kind of profile `name` of `config` is: SSO, a role, a process, or plain keys.
fn profile_kind(config: &Path, name: &str) -> &'static str {
    let Ok(text) = fs::read_to_string(config) else {
        return "";
    };
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[profile {name}]") || line == format!("[{name}]");
            continue;
        }
        if !inside {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default().trim();
        match key {
            "sso_session" | "sso_start_url" => return " (SSO)",
            "web_identity_token_file" => return " (web identity)",
            "role_arn" => return " (assuming a role)",
            "credential_process" => return " (credential process)",
            _ => {}
        }
    }
    ""
}

/// The runner-identity token cache: owned by this user, private.
fn token_cache(ctx: &Context, report: &mut Report) {
    const CHECK: &str = "token cache";
    if !ctx.config.ecr.cache {
        return report.ok(CHECK, "off ([ecr] cache = false)");
    }
    let Some(dir) = ctx
        .config
        .ecr
        .cache_dir
        .clone()
        .or_else(|| crate::auth::default_cache_dir(&ctx.env))
    else {
        return report.fail(
            CHECK,
            "no directory for it: this user has no HOME; set [ecr] cache_dir, or cache = false",
        );
    };
    let uid = rustix::process::geteuid().as_raw();
    let Ok(meta) = fs::metadata(&dir) else {
        let parent = dir
            .ancestors()
            .skip(1)
            .find(|p| p.exists())
            .map(Path::to_owned);
        return match parent {
            Some(p) if writable(&p) => report.ok(
                CHECK,
                format!("{} is made (mode 0700) on first use", dir.display()),
            ),
            _ => report.fail(
                CHECK,
                format!(
                    "{} cannot be made by this user; create it (`install -d -m 0700 -o <runner user> {}`) or set [ecr] cache_dir",
                    dir.display(),
                    dir.display()
                ),
            ),
        };
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.uid() != uid {
        return report.fail(
            CHECK,
            format!(
                "{} is owned by uid {}, not by this user ({uid}); `chown` it to the runner's user",
                dir.display(),
                meta.uid()
            ),
        );
    }
    let loose: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.metadata()
                        .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    if !loose.is_empty() {
        return report.fail(
            CHECK,
            format!(
                "{} holds files others may read ({}); `chmod 600` them",
                dir.display(),
                loose[0].display()
            ),
        );
    }
    let note = if mode & 0o077 != 0 {
        format!("mode {mode:o}, tightened to 0700 on first use")
    } else {
        format!("mode {mode:o}")
    };
    report.ok(
        CHECK,
        format!("{} (owner uid {uid}, {note})", dir.display()),
    )
}

/// Where systemd looks for the gc unit and its drop-ins, most important first.
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
const GC_UNIT: &str = "ecr-executor-gc.service";

/// The packages' gc timer must run as the runner's user (its Docker socket, its job
/// directories): the user its service names must exist and be this one.
fn gc_timer(unit_dirs: &[&str], report: &mut Report) {
    const CHECK: &str = "gc timer";
    let Some(user) = unit_user(unit_dirs, GC_UNIT) else {
        return report.skip(
            CHECK,
            "no ecr-executor-gc.service here (the packages install one); without it, run \
             `ecr-executor gc` as the runner's user every 30 minutes",
        );
    };
    let fix = "set the runner's user in a drop-in: `systemctl edit ecr-executor-gc.service`, \
               then [Service] User=<runner user>";
    let this = rustix::process::geteuid().as_raw();
    match uid_of(&user) {
        None => report.fail(
            CHECK,
            format!("{GC_UNIT} runs as `{user}`, which does not exist here; {fix}"),
        ),
        Some(uid) if uid != this => report.fail(
            CHECK,
            format!(
                "{GC_UNIT} runs as `{user}` (uid {uid}), not as this user (uid {this}), so it \
                 cannot see this runner's jobs; {fix}"
            ),
        ),
        Some(_) => report.ok(CHECK, format!("{GC_UNIT} runs as `{user}`, this user")),
    }
}

/// The user a systemd service runs as: the last `User=` of its unit file and then its
/// drop-ins (`<unit>.d/*.conf`, in file-name order; a name in an earlier directory hides
/// the same name in a later one), `root` when none sets one. None when the unit is not
/// installed.
fn unit_user(dirs: &[&str], unit: &str) -> Option<String> {
    let main = dirs
        .iter()
        .map(|d| Path::new(d).join(unit))
        .find(|p| p.is_file())?;
    let mut dropins: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(Path::new(dir).join(format!("{unit}.d"))) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if Path::new(&name).extension().is_some_and(|e| e == "conf")
                && !dropins.iter().any(|(n, _)| *n == name)
            {
                dropins.push((name, entry.path()));
            }
        }
    }
    dropins.sort();
    let mut user = None;
    for file in std::iter::once(main).chain(dropins.into_iter().map(|(_, path)| path)) {
        for line in fs::read_to_string(&file).unwrap_or_default().lines() {
            if let Some(value) = line.trim().strip_prefix("User=") {
                // An empty assignment resets it.
                user = Some(value.trim().to_owned()).filter(|u| !u.is_empty());
            }
        }
    }
    Some(user.unwrap_or_else(|| "root".to_owned()))
}

/// A user's uid, as the system's user database (NSS) has it, through `id`.
fn uid_of(user: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .args(["-u", "--", user])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two unit directories, as /etc and /usr/lib: `files` are (dir index, path, text).
    fn dirs_with(files: &[(usize, &str, &str)]) -> (tempfile::TempDir, [String; 2]) {
        let root = tempfile::tempdir().unwrap();
        let dirs = ["etc", "lib"].map(|d| root.path().join(d).display().to_string());
        for (dir, path, text) in files {
            let file = Path::new(&dirs[*dir]).join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        (root, dirs)
    }

    fn user(files: &[(usize, &str, &str)]) -> Option<String> {
        let (_root, dirs) = dirs_with(files);
        unit_user(&[&dirs[0], &dirs[1]], GC_UNIT)
    }

    #[test]
    fn the_gc_units_user_is_its_last_assignment_across_drop_ins() {
        let unit = "[Service]\nType=oneshot\nUser=gitlab-runner\n";
        assert_eq!(user(&[]), None);
        assert_eq!(
            user(&[(1, GC_UNIT, unit)]).as_deref(),
            Some("gitlab-runner")
        );
        // Drop-ins in name order; one in /etc hides the same name in /usr/lib.
        let d = format!("{GC_UNIT}.d");
        assert_eq!(
            user(&[
                (1, GC_UNIT, unit),
                (1, &format!("{d}/20-b.conf"), "[Service]\nUser=lib-b\n"),
                (0, &format!("{d}/20-b.conf"), "[Service]\nUser=etc-b\n"),
                (1, &format!("{d}/10-a.conf"), "[Service]\nUser=a\n"),
                (
                    0,
                    &format!("{d}/30-c.txt"),
                    "[Service]\nUser=not-a-drop-in\n"
                ),
            ])
            .as_deref(),
            Some("etc-b")
        );
        // An empty assignment resets to root, as does a unit in /etc without one.
        assert_eq!(
            user(&[(1, GC_UNIT, unit), (0, &format!("{d}/x.conf"), "User=\n")]).as_deref(),
            Some("root")
        );
        assert_eq!(
            user(&[(1, GC_UNIT, unit), (0, GC_UNIT, "[Service]\n")]).as_deref(),
            Some("root")
        );
    }

    #[test]
    fn users_are_looked_up_in_the_user_database() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("no-such-user-ecr-executor"), None);
    }
}
