//! One file per custom-executor stage, in the order GitLab Runner calls them
//! (`config` → `prepare` → `run` × N → `cleanup`), plus `exec`, which plays that sequence
//! locally, `gc`, which removes what dead runners left behind, and `auth check`, which
//! shows how a registry's token is obtained. Each takes the same
//! [`Context`], built once per process.

pub(crate) mod auth_check;
pub(crate) mod cleanup;
pub(crate) mod config;
pub(crate) mod doctor;
pub(crate) mod exec;
pub(crate) mod gc;
pub(crate) mod prepare;
pub(crate) mod run;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::job::Env;
use crate::jobdir::JobDirs;

/// Everything a stage needs: the runner's environment and the driver config.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub env: Env,
    pub config: Config,
}

impl Context {
    /// Where this user's job directories (direct output) live: `[docker] direct_output_dir`,
    /// else the runner's `TMPDIR`, else `/tmp`.
    pub(crate) fn job_dirs(&self) -> JobDirs {
        let root = (self.config.docker.direct_output_dir.clone())
            .or_else(|| self.env.tmpdir.clone())
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        JobDirs::under(Path::new(&root))
    }
}
