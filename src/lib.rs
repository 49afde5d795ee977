//! `ecr-executor` runs GitLab CI jobs in Docker through a custom executor and authenticates
//! to Amazon ECR itself, so registry credentials never reach the job.
//!
//! Layout (see `docs/architecture.md`):
//! - [`cli`]: argument parsing and the one place that turns an outcome into an exit code;
//! - [`job`]: everything GitLab Runner hands the driver, parsed once into types;
//! - [`config`]: the driver's own TOML configuration;
//! - [`naming`]: container, volume and network names and labels derived from job identity;
//! - [`docker`]: the bollard client and the Docker operations the stages share;
//! - [`stages`]: one file per custom-executor stage, plus the local `exec` sequence;
//! - [`error`]: the typed error and the build-versus-system decision.

pub mod auth;
pub mod cli;
pub mod config;
pub mod docker;
pub mod error;
pub mod image_ref;
pub mod job;
pub mod naming;
pub mod output;
pub mod policy;
pub mod signals;
pub mod stages;

#[cfg(test)]
mod robustness_tests;
