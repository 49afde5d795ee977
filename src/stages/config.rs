//! `config` stage: prints the JSON GitLab Runner reads before `prepare` (builds and cache
//! directories, hostname, driver name and version). Makes no Docker or network call: it runs
//! before every prepare attempt and must be instant.

use serde::Serialize;

use super::Context;
use crate::naming::Names;

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct ConfigOutput {
    pub builds_dir: String,
    pub cache_dir: String,
    /// Each job has its own builds volume, so the directory is never shared between jobs.
    pub builds_dir_is_shared: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub driver: Driver,
}

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Driver {
    pub name: &'static str,
    pub version: &'static str,
}

pub(crate) fn output(ctx: &Context) -> ConfigOutput {
    ConfigOutput {
        builds_dir: ctx.config.builds_dir.clone(),
        cache_dir: ctx.config.cache_dir.clone(),
        builds_dir_is_shared: false,
        hostname: ctx
            .env
            .vars
            .identity()
            .ok()
            .map(|id| Names::new(&id).hostname),
        driver: Driver {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        },
    }
}

/// Prints the config JSON on stdout.
pub(crate) fn run(ctx: &Context) -> crate::error::Result<()> {
    let json = serde_json::to_string(&output(ctx)).expect("config output serializes");
    crate::output::RawStream::stdout()
        .write_all(format!("{json}\n").as_bytes())
        .map_err(|e| crate::error::Error::io("writing the config JSON", e))
}
