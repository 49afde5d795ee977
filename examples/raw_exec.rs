//! The floor for a stage: the smallest bollard program that runs stdin as a shell script in a
//! container and copies its output (create exec, start attached, inspect). Used by the
//! benchmark as the "raw API exec" side. Usage: raw_exec CONTAINER < script

// Measurement tooling, not the product: a failed unwrap aborts the run.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

fn main() -> std::process::ExitCode {
    let container = std::env::args()
        .nth(1)
        .expect("usage: raw_exec CONTAINER < script");
    let mut script = Vec::new();
    std::io::stdin().read_to_end(&mut script).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(async move {
        let docker = Docker::connect_with_unix(
            "/var/run/docker.sock",
            120,
            &bollard::ClientVersion {
                major_version: 1,
                minor_version: 41,
            },
        )
        .unwrap();
        let exec = docker
            .create_exec(
                &container,
                CreateExecOptions {
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(vec!["sh"]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let StartExecResults::Attached {
            mut output,
            mut input,
        } = docker.start_exec(&exec.id, None).await.unwrap()
        else {
            unreachable!()
        };
        let feed = async move {
            let _ = input.write_all(&script).await;
            let _ = input.shutdown().await;
        };
        let pump = async move {
            let mut out = std::io::stdout().lock();
            while let Some(Ok(frame)) = output.next().await {
                if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = frame {
                    let _ = out.write_all(&message);
                }
            }
        };
        tokio::join!(feed, pump);
        docker
            .inspect_exec(&exec.id)
            .await
            .unwrap()
            .exit_code
            .unwrap_or(1)
    });
    std::process::ExitCode::from(code as u8)
}
