//! Command line and the edge of the program: parse arguments, read the environment and the
//! config once, run one stage, and turn its outcome into an exit code (the only place that
//! does). GitLab Runner registers the binary as `config_exec`, `prepare_exec`, `run_exec` and
//! `cleanup_exec` with the subcommand as the first argument.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::error::{Error, Failure, Result, StageError};
use crate::job::Env;
use crate::output;
use crate::stages::{self, Context, exec::ExecJob};

#[derive(Debug, Parser)]
#[command(name = "ecr-executor", version, about)]
pub struct Cli {
    /// Driver config file (default: /etc/ecr-executor/config.toml when it exists).
    #[arg(long, global = true, env = "ECR_EXECUTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// config_exec: print the builds/cache dirs and driver info as JSON.
    Config,
    /// prepare_exec: pull the images and start the job's containers.
    Prepare,
    /// run_exec: run one stage script in the job's containers.
    Run {
        /// The stage script written by GitLab Runner.
        script: PathBuf,
        /// The stage name (build_script, get_sources, ...).
        stage: String,
    },
    /// cleanup_exec: remove the job's containers, network and volumes.
    Cleanup,
    /// Remove containers, networks and volumes whose jobs are past their lifetime.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// ECR authentication tools.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Check this host the way the runner will use it, before registering a runner.
    Doctor {
        /// The installed runner's version (default: from `gitlab-runner --version`), for the
        /// helper image.
        #[arg(long, value_name = "VERSION")]
        runner_version: Option<String>,
        /// Also check this image's registry (repeatable).
        #[arg(long = "image", value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        /// Directory that receives `man/` and `completions/`.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Run a job locally through all stages, to try an image and a driver config.
    Exec {
        /// The job image.
        #[arg(long)]
        image: String,
        /// A command for after_script (repeatable).
        #[arg(long = "after-script", value_name = "COMMAND")]
        after_script: Vec<String>,
        /// The build_script commands, one per argument.
        #[arg(last = true, required = true, value_name = "SCRIPT")]
        script: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Fetch (or read from the cache) a token for a registry and report how, never the token.
    Check {
        /// An image reference or a registry host (default: the job's image).
        target: Option<String>,
    },
}

/// Runs the command and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // Packaging runs this on a build machine: no environment or config to read.
    if let Command::GenerateAssets { out_dir } = &cli.command {
        return match crate::assets::generate(&Cli::command(), out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                output::error(format!("cannot write to {}: {e}", out_dir.display()));
                ExitCode::FAILURE
            }
        };
    }
    let env = Env::from_process();
    if let Some(filter) = &env.log_filter {
        init_tracing(filter);
    }
    for warning in &env.exit_code_warnings {
        output::warn(warning);
    }
    let is_cleanup = matches!(cli.command, Command::Cleanup);
    let is_exec = matches!(cli.command, Command::Exec { .. });
    let result = dispatch(cli, env.clone());
    match result {
        Ok(()) if is_exec => {
            output::info("Job succeeded");
            ExitCode::SUCCESS
        }
        Ok(()) => ExitCode::SUCCESS,
        // The runner ignores cleanup's exit code; a failed cleanup is a warning in its log.
        Err(e) if is_cleanup => {
            output::warn(format!("cleanup: {e}"));
            ExitCode::SUCCESS
        }
        // `exec` ends as a job does: one line saying how, and the build script's own code.
        Err(e) if is_exec => {
            output::error(format!("Job failed: {e}"));
            match e {
                Error::Stage(StageError::ScriptFailed { code, .. }) => {
                    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
                }
                e => exit_code(&e, &env),
            }
        }
        Err(e) => {
            report(&e);
            if e.engine_lost() {
                output::info(
                    "If the Docker engine is restarting, the runner's cleanup waits for it (up \
                     to `[docker] engine_restart_wait`) when this job has anything there, and \
                     then removes it",
                );
            }
            exit_code(&e, &env)
        }
    }
}

fn dispatch(cli: Cli, env: Env) -> Result<()> {
    if let Command::Doctor {
        runner_version,
        images,
    } = cli.command
    {
        // The config's own problems are one of the findings, not the end.
        let loaded = Config::load(cli.config.as_deref());
        let path = match &cli.config {
            Some(path) => path.display().to_string(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => DEFAULT_CONFIG_PATH.to_owned(),
            None => format!("built-in defaults (no {DEFAULT_CONFIG_PATH})"),
        };
        let options = stages::doctor::Options {
            runner_version,
            images,
        };
        return runtime()?.block_on(stages::doctor::run(loaded, &path, env, &options));
    }
    let config = Config::load(cli.config.as_deref())?;
    if let Command::Config = cli.command {
        // No runtime, no Docker: config runs before every prepare attempt.
        return stages::config::run(&Context { env, config });
    }
    runtime()?.block_on(async move {
        let cancel = crate::signals::cancel_on_signals()
            .map_err(|e| Error::io("installing signal handlers", e))?;
        match cli.command {
            Command::Config | Command::Doctor { .. } | Command::GenerateAssets { .. } => {
                unreachable!("handled above")
            }
            Command::Prepare => stages::prepare::run(&Context { env, config }, &cancel).await,
            Command::Run { script, stage } => {
                stages::run::run(&Context { env, config }, &script, &stage, &cancel).await
            }
            Command::Cleanup => stages::cleanup::run(&Context { env, config }, &cancel).await,
            Command::Gc { dry_run } => stages::gc::run(&Context { env, config }, dry_run).await,
            Command::Auth {
                command: AuthCommand::Check { target },
            } => stages::auth_check::run(&Context { env, config }, target.as_deref()).await,
            Command::Exec {
                image,
                after_script,
                script,
            } => {
                let job = ExecJob {
                    image,
                    script,
                    after_script,
                };
                stages::exec::run(config, &env, &job, &cancel).await
            }
        }
    })
}

/// Prints an error once, on stderr, where the runner puts it in the job log. A failing
/// script speaks for itself: the runner prints its exit code.
fn report(error: &Error) {
    if error.script_exit_code().is_none() {
        output::error(error);
    }
}

/// Picks the exit code GitLab Runner expects for an error: the build-failure code (with the
/// script's own code in `BUILD_EXIT_CODE_FILE`) or the system-failure code.
fn exit_code(error: &Error, env: &Env) -> ExitCode {
    let codes = env.exit_codes();
    match error.failure() {
        Failure::Build => {
            if let Some(path) = &env.build_exit_code_file {
                record_build_exit_code(path, error.script_exit_code());
            }
            ExitCode::from(codes.build_failure)
        }
        Failure::System => ExitCode::from(codes.system_failure),
    }
}

/// Writes the script's exit code for the runner (17.9+), replacing any stale value; for a
/// build failure that is not a script's, removes the file so the runner reports its own code.
fn record_build_exit_code(path: &Path, code: Option<i32>) {
    let result = match code {
        Some(code) => std::fs::write(path, format!("{code}\n")),
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    };
    if let Err(e) = result {
        output::warn(format!("cannot update {}: {e}", path.display()));
    }
}

/// The one runtime of the process: a current-thread one keeps start cheap.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_file_is_overwritten_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build_exit_code");
        std::fs::write(&path, "99\n").unwrap();
        record_build_exit_code(&path, Some(7));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        record_build_exit_code(&path, None);
        assert!(!path.exists());
        record_build_exit_code(&path, None);
    }

    #[test]
    fn exit_codes_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("code");
        let env = Env::from_pairs([
            ("BUILD_FAILURE_EXIT_CODE".into(), "33".into()),
            ("SYSTEM_FAILURE_EXIT_CODE".into(), "34".into()),
            ("BUILD_EXIT_CODE_FILE".into(), file.clone().into()),
        ]);
        let script = Error::Stage(StageError::ScriptFailed {
            stage: "build_script".into(),
            code: 7,
        });
        assert_eq!(exit_code(&script, &env), ExitCode::from(33));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "7\n");
        let system = Error::Stage(StageError::Cancelled {
            what: "prepare".into(),
        });
        assert_eq!(exit_code(&system, &env), ExitCode::from(34));
    }

    #[test]
    fn the_packaged_assets_cover_the_real_cli() {
        Cli::command().debug_assert();
        let dir = tempfile::tempdir().unwrap();
        crate::assets::generate(&Cli::command(), dir.path()).unwrap();
        for page in [
            "ecr-executor.1",
            "ecr-executor-doctor.1",
            "ecr-executor-auth-check.1",
        ] {
            assert!(dir.path().join("man").join(page).is_file(), "{page}");
        }
        let bash =
            std::fs::read_to_string(dir.path().join("completions/ecr-executor.bash")).unwrap();
        assert!(bash.contains("doctor") && !bash.contains("generate-assets"));
    }

    #[test]
    fn cli_parses_runner_invocations() {
        let cli =
            Cli::try_parse_from(["ecr-executor", "run", "/tmp/x/script", "build_script"]).unwrap();
        assert!(matches!(cli.command, Command::Run { ref stage, .. } if stage == "build_script"));
        let cli = Cli::try_parse_from([
            "ecr-executor",
            "--config",
            "/c.toml",
            "exec",
            "--image",
            "alpine",
            "--",
            "echo hi",
            "false",
        ])
        .unwrap();
        assert_eq!(cli.config.as_deref(), Some(Path::new("/c.toml")));
        assert!(matches!(cli.command, Command::Exec { ref script, .. } if script.len() == 2));
    }
}
