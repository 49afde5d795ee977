//! The one integration test binary. It plays GitLab Runner against the real Docker engine
//! with images built by `scripts/build-test-images.sh`; run it through `scripts/test.sh`.

// Test code: a failed unwrap is a failed test, and items are shared between test modules.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod harness;

mod cached;
mod cancel;
mod cleanup;
mod debian;
mod doctor;
mod ecr;
mod engine;
mod errors;
mod exec;
mod fake_aws;
mod faults;
mod helpers;
mod jobs;
mod metadata;
mod output;
mod parity;
mod policy;
mod pull_through;
mod pulls;
mod restart;
mod rootless;
mod soak;
mod tokens;
mod trust;
