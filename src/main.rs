//! `ecr-executor`: a GitLab Runner custom executor driver. See the README.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ecr_executor::cli::main(ecr_executor::cli::Cli::parse())
}
