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
//! configured role; the token cache's owner and modes; every `[[trust]]` key file; that the
//! packages' gc timer runs as this user.

mod aws;
mod cache;
mod engine;
mod gc;
mod helper;
mod helpers;
mod metadata;
mod report;
mod trust;

use super::Context;
use crate::auth::Resolver;
use crate::config::Config;
use crate::error::{Error, Result, StageError};
use crate::job::Env;
use crate::output;
use crate::reference::ImageRef;
use report::Report;

/// What `doctor` is told besides the config.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// The runner's version, when `gitlab-runner --version` cannot tell (for the helper image).
    pub runner_version: Option<String>,
    /// Images whose registries to check too.
    pub images: Vec<String>,
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

    let engine = engine::engine(&ctx, &mut report).await;
    let resolver = Resolver::new(&ctx.config, &ctx.env);
    let helper = helper::helper_image(&ctx, options.runner_version.as_deref(), &mut report);
    match &engine {
        Some((docker, engine)) => {
            let probe = helper.as_ref().map(ImageRef::pull_reference);
            engine::job_output(&ctx, docker, engine, probe, &mut report).await;
        }
        None => report.skip("job output", "the engine does not answer"),
    }
    match (&engine, &helper) {
        (Some((docker, ..)), Some(image)) => {
            helper::helper_available(&ctx, docker, image, &resolver, &mut report).await
        }
        (None, Some(_)) => report.skip("helper image", "the engine does not answer"),
        (_, None) => {}
    }
    match &engine {
        Some((docker, _)) => metadata::check(&ctx, docker, helper.as_ref(), &mut report).await,
        None => report.skip("instance metadata", "the engine does not answer"),
    }
    aws::aws(
        &ctx,
        &resolver,
        helper.as_ref(),
        &options.images,
        &mut report,
    )
    .await;
    helpers::check(&ctx, &resolver, &mut report);
    trust::check(&ctx, &mut report);
    cache::token_cache(&ctx, &mut report);
    gc::gc_timer(&gc::UNIT_DIRS, &mut report);

    if report.failures == 0 {
        output::info("This host is ready for the runner.");
        Ok(())
    } else {
        Err(Error::Stage(StageError::DoctorFound {
            failures: report.failures,
        }))
    }
}
