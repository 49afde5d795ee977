//! The helper image jobs will use, for the installed runner's version: present or
//! pullable.

use bollard::Docker;

use super::report::Report;
use crate::auth::Resolver;
use crate::config::pull_through;
use crate::error::Error;
use crate::job::JobVars;
use crate::reference::ImageRef;
use crate::stages::Context;
use crate::stages::prepare::plan::default_helper_image;

/// The helper image jobs will use: the configured one, else GitLab's for the installed
/// runner's version and architecture.
pub(crate) fn helper_image(
    ctx: &Context,
    runner_version_flag: Option<&str>,
    report: &mut Report,
) -> Option<ImageRef> {
    const CHECK: &str = "helper image";
    let name = match &ctx.config.helper_image {
        Some(name) => name.clone(),
        None => {
            let Some(vars) = runner_version(runner_version_flag) else {
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
fn runner_version(flag: Option<&str>) -> Option<JobVars> {
    let mut vars = JobVars::default();
    if let Some(version) = flag {
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
pub(crate) async fn helper_available(
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
