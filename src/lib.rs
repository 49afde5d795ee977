//! `ecr-executor` runs GitLab CI jobs in Docker through a custom executor and authenticates
//! to Amazon ECR itself, so registry credentials never reach the job.
//!
//! The library exists for the binary: only [`cli`] is public. Its layers, from the edge down
//! (each module imports only from the ones below it; `docs/architecture.md` draws the graph,
//! and a test keeps it that way):
//! - [`cli`]: arguments, reading the environment and the config once, the exit code;
//! - `stages`: one file per custom-executor stage, plus `exec`, `gc` and `auth check`;
//! - `docker`: the bollard client, container state, pulls, removal, and running stage
//!   scripts (over an attach or an exec, output direct or through the engine);
//! - `trust`: `[[trust]]`: cosign signatures of the images a rule covers, read from their
//!   registries with the pull's login;
//! - `auth`: registry credentials: ECR tokens (runner or job identity, the token cache) and
//!   `DOCKER_AUTH_CONFIG`;
//! - `config`: the driver's TOML, parsed into types once; `jobdir`: the job's host directory;
//! - `naming`: names and labels derived from the job's identity;
//! - `job`: what GitLab Runner hands the driver, parsed once into types;
//! - `error`: the one error type and the build-versus-system decision;
//! - leaves: `assets` (man pages, completions), `reference` (image references, registry hosts, ECR hostnames), `policy`
//!   (allow-lists), `pull_policy`, `output`, `signals`, `util` (clock, hex).

mod assets;
mod auth;
pub mod cli;
mod config;
mod docker;
mod error;
mod job;
mod jobdir;
mod naming;
mod output;
mod policy;
mod pull_policy;
mod reference;
mod signals;
mod stages;
mod trust;
mod util;

#[cfg(test)]
mod architecture_tests;
#[cfg(test)]
mod robustness_tests;
