//! The engine: does it answer this user, what is it; and whether job output can skip it
//! here, and why not.

use bollard::Docker;

use super::report::Report;
use crate::docker::engine::{Engine, local_kernel};
use crate::docker::shell::Access;
use crate::docker::{client, direct};
use crate::error::Error;
use crate::stages::Context;

/// The engine: does it answer this user, and what is it.
pub(crate) async fn engine(ctx: &Context, report: &mut Report) -> Option<(Docker, Engine)> {
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
pub(crate) async fn job_output(
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
