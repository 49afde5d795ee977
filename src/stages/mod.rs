//! One file per custom-executor stage, in the order GitLab Runner calls them
//! (`config` → `prepare` → `run` × N → `cleanup`), plus `exec`, which plays that sequence
//! locally, and `gc`, which removes what dead runners left behind. Each takes the same
//! [`Context`], built once per process.

pub mod cleanup;
pub mod config;
pub mod exec;
pub mod gc;
pub mod prepare;
pub mod run;

use crate::config::Config;
use crate::job::Env;

/// Everything a stage needs: the runner's environment and the driver config.
#[derive(Debug, Clone)]
pub struct Context {
    pub env: Env,
    pub config: Config,
}
