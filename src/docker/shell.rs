//! Running a stage script in a container through the container's own shell.
//!
//! The build and helper containers run [`Access::configure`]'s command: a shell, the *stage
//! shell*, that reads commands from the container's stdin, which the engine keeps open between
//! attaches. A stage attaches to the container, writes the stage shell a short program and
//! copies the container's output, frame by frame as it arrives, until the program's end
//! markers. The program prints a start marker on both streams (anything before it is a
//! leftover of an earlier stage and is dropped), runs bash or sh with the script as its stdin,
//! and prints an end marker with the exit code. Markers carry a random nonce per stage, so no
//! script output or leftover can end a stage.
//!
//! Why not one exec per stage: an attach costs the engine a few milliseconds where an exec
//! costs tens (the runtime has to enter the container's namespaces), and the script runs under
//! the image's ENTRYPOINT with its environment, as with the Docker executor. With an engine on
//! this host the script's output skips the engine through two FIFOs ([`direct`]) and the
//! attach carries only the markers; otherwise the output comes over the attach, and the
//! containers log nothing (log driver `none`).
//! Cancellation is [`super::script`]'s.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::AttachContainerOptions;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::fifo::{self, Fifos};
use super::markers::Scanner;
use super::script::{Outcome, SHELL_DETECTION, ShellError, TERM_GRACE, signal_all, stop_processes};
use super::{direct, exec, state};
use crate::output::RawStream;

/// How stages reach the build and helper containers ([`super::engine::Engine::access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Through the container's stage shell, over an attach.
    Attach,
    /// One exec per stage, for engines that close a container's stdin when an attach ends
    /// (Podman).
    Exec,
}

impl Access {
    /// Sets up a build or helper container and returns its main command (for `sh -c`, after
    /// `prelude`). Attach: the stage shell, reading a stdin the engine keeps open, beside a
    /// watchdog that ends every process once the container's lifetime has passed (PID 1 exits
    /// when the stage shell does; a cancel that kills the watchdog's sleep does not fire it),
    /// and a log only with direct output (see [`direct::log_config`]). Exec: a sleep as long
    /// as the lifetime.
    pub(crate) fn configure(
        self,
        body: &mut ContainerCreateBody,
        prelude: &str,
        lifetime_secs: u64,
        direct_output: bool,
    ) -> String {
        body.stop_timeout = Some(Access::STOP_TIMEOUT_SECS);
        match self {
            Access::Attach => {
                body.open_stdin = Some(true);
                body.stdin_once = Some(false);
                body.host_config
                    .get_or_insert_with(Default::default)
                    .log_config = Some(direct::log_config(direct_output));
                format!(
                    "{prelude}(sleep {lifetime_secs} && kill -s TERM -1) </dev/null >/dev/null 2>&1 & sh; exit 0"
                )
            }
            Access::Exec => format!("{prelude}exec sleep {lifetime_secs}"),
        }
    }

    /// How long the engine waits after SIGTERM when it stops a build or helper container
    /// (an engine restart without live-restore, or shutdown): none. PID 1 there (the shell
    /// above, or `sleep`) ignores SIGTERM, so Docker's default 10 s would only delay the
    /// engine; the job's own processes get their signals from a cancel (see `script`).
    pub(crate) const STOP_TIMEOUT_SECS: i64 = 0;
}

/// What the stage shell is given for one stage. The script's stdout and stderr go to the
/// stage's FIFOs when the shell can open them (direct output), else to its own; the start line
/// says which (` F`), and the end markers follow the output on the same streams.
fn stage_program(nonce: &str, script: &[u8]) -> Vec<u8> {
    let [out, err] = Fifos::names(nonce);
    let mut program = Vec::with_capacity(script.len() + 6 * nonce.len() + 512);
    program.extend_from_slice(
        format!(
            "if [ -p {out} ] && command exec 3>{out} 4>{err}; then m=' F'; printf '%s S %s\\n' {nonce} \"$$\" >&3; \
             else exec 3>&1 4>&2; m=; fi\n\
             printf '%s S %s%s\\n' {nonce} \"$$\" \"$m\"; printf '%s S%s\\n' {nonce} \"$m\" >&2\n\
             sh -c '{SHELL_DETECTION}' <<'{nonce}' >&3 2>&4 3>&- 4>&-\n"
        )
        .as_bytes(),
    );
    program.extend_from_slice(script);
    if !script.ends_with(b"\n") {
        program.push(b'\n');
    }
    program.extend_from_slice(
        format!(
            "{nonce}\nprintf '%s E %s\\n' {nonce} \"$?\" >&3; printf '%s E\\n' {nonce} >&4; exec 3>&- 4>&-\n"
        )
        .as_bytes(),
    );
    program
}

/// Feeds one frame of the attach to the stage's streams.
fn on_frame(
    frame: Result<LogOutput, bollard::errors::Error>,
    streams: &mut Streams,
    to_out: &mut impl FnMut(&[u8]) -> std::io::Result<()>,
    to_err: &mut impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), ShellError> {
    match frame.map_err(|e| ShellError::Docker("read output of", e))? {
        LogOutput::StdOut { message } | LogOutput::Console { message } => streams
            .stdout
            .feed(&message, to_out)
            .map_err(ShellError::Output)?,
        LogOutput::StdErr { message } => streams
            .stderr
            .feed(&message, to_err)
            .map_err(ShellError::Output)?,
        LogOutput::StdIn { .. } => {}
    }
    Ok(())
}

/// 128 random bits as hex.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source");
    crate::util::hex(&bytes)
}

/// A stage's output as it may arrive: on the attach's stdout and stderr, which always carry
/// the start lines, and on the FIFOs when the start lines say ` F` (direct output). The
/// stdout FIFO has a start line of its own too, with the stage shell's PID: the engine may
/// deliver the attach's later than the FIFO delivers the stage's first output.
struct Streams {
    stdout: Scanner,
    stderr: Scanner,
    fifo_out: Scanner,
    fifo_err: Scanner,
}

impl Streams {
    fn new(nonce: &str) -> Streams {
        Streams {
            stdout: Scanner::new(nonce),
            stderr: Scanner::new(nonce),
            fifo_out: Scanner::new(nonce),
            fifo_err: Scanner::started(nonce),
        }
    }

    /// Whether every stream that carries the stage has shown its end marker.
    fn ended(&self) -> bool {
        self.stdout.done()
            && self.stderr.done()
            && (!self.stdout.diverted() || (self.fifo_out.done() && self.fifo_err.done()))
    }

    /// The stage shell's PID, from the start line.
    fn stage_shell(&self) -> Option<u32> {
        let line = self
            .stdout
            .start_extra()
            .or_else(|| self.fifo_out.start_extra())?;
        line.split(' ').next()?.parse().ok()
    }

    /// The script's exit status (0 to 255), from the end line on stdout; none if that line
    /// does not carry one.
    fn exit_code(&self) -> Option<i64> {
        let end = match self.stdout.diverted() {
            true => &self.fifo_out,
            false => &self.stdout,
        };
        end.end_extra()?
            .parse()
            .ok()
            .filter(|code| (0..=255).contains(code))
    }
}

/// Runs `script` in `container` through its stage shell, streaming its output, until it
/// ends or `cancel`. After `start_notice` without the stage starting, the job log says why it
/// might not.
pub(crate) async fn run_script(
    docker: &Docker,
    container: &str,
    script: &[u8],
    cancel: &CancellationToken,
    start_notice: Duration,
) -> Result<Outcome, ShellError> {
    let options = AttachContainerOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        stream: true,
        ..Default::default()
    };
    let attached = match docker.attach_container(container, Some(options)).await {
        Ok(attached) => attached,
        // Podman refuses to attach to an ended container with a 500.
        Err(e) => {
            return Err(match state::run_state(docker, container).await {
                Ok(state) if !state.running => ShellError::ContainerNotRunning,
                _ => ShellError::from_request("attach to", e),
            });
        }
    };
    let (mut output, mut input) = (attached.output, attached.input);
    // An attach to a stopped container waits for it to start again, while one in place when
    // the container stops ends: so look now.
    let state = state::run_state(docker, container)
        .await
        .map_err(|e| ShellError::from_request("inspect", e))?;
    if !state.running {
        return Err(ShellError::ContainerNotRunning);
    }
    if !state.open_stdin {
        drop((output, input));
        return exec::run_script(docker, container, script, cancel).await;
    }

    let nonce = nonce();
    let program = stage_program(&nonce, script);
    // Direct output when prepare gave the container the job's directory; if the FIFOs cannot
    // be made, the stage shell finds none and the stage runs over the attach.
    let mut fifos = state
        .direct_dir
        .as_deref()
        .and_then(|dir| Fifos::open(dir, &nonce).ok());
    let stage_shell = AtomicU32::new(0);
    let feed = async move {
        // A stopped container refuses the bytes; the output's end tells the story. The input
        // stays open: the stage shell's stdin must outlive this stage.
        let _ = input.write_all(&program).await;
        let _ = input.flush().await;
        input
    };
    let pump = async {
        let (mut out, mut err) = (RawStream::stdout(), RawStream::stderr());
        let (mut to_out, mut to_err) = (|b: &[u8]| out.write_all(b), |b: &[u8]| err.write_all(b));
        let mut streams = Streams::new(&nonce);
        let (mut from_out, mut from_err) = match &mut fifos {
            Some(f) => (Some(&mut f.out), Some(&mut f.err)),
            None => (None, None),
        };
        // Dropped once the stage has started: a live timer costs a clock read per wake-up.
        let mut notice = Some(Box::pin(tokio::time::sleep(start_notice)));
        while !streams.ended() {
            if notice.is_some() && stage_shell.load(Ordering::Relaxed) != 0 {
                notice = None;
            }
            // Biased, the FIFOs first: while a job writes fast, a wake-up reads them without
            // polling the attach too, which carries only the markers then (the stage shell's
            // PID, which a cancel needs, comes on the stdout FIFO as well).
            tokio::select! {
                biased;
                read = fifo::read(from_out.as_deref_mut()), if !streams.fifo_out.done() => {
                    let bytes = read.map_err(ShellError::Fifo)?;
                    streams.fifo_out.feed(bytes, &mut to_out).map_err(ShellError::Output)?;
                }
                read = fifo::read(from_err.as_deref_mut()), if !streams.fifo_err.done() => {
                    let bytes = read.map_err(ShellError::Fifo)?;
                    streams.fifo_err.feed(bytes, &mut to_err).map_err(ShellError::Output)?;
                }
                frame = output.next() => {
                    let Some(frame) = frame else {
                        // Before the stage's start marker the container stopped without
                        // running the stage: as one found stopped, its state says why.
                        return Err(if stage_shell.load(Ordering::Relaxed) == 0 {
                            ShellError::ContainerNotRunning
                        } else {
                            ShellError::Ended
                        });
                    };
                    on_frame(frame, &mut streams, &mut to_out, &mut to_err)?;
                }
                () = async {
                    match notice.as_mut() {
                        Some(sleep) => sleep.await,
                        None => std::future::pending().await,
                    }
                }, if notice.is_some() => {
                    notice = None;
                    crate::output::warn(format!(
                        "the stage has not started after {} s: the container's shell has not \
                         read it. If the image's ENTRYPOINT does not run the command it is \
                         given, set `image: entrypoint: [\"\"]` in .gitlab-ci.yml; it may \
                         also still be starting, or an earlier stage still running",
                        start_notice.as_secs()
                    ));
                    continue;
                }
            }
            if stage_shell.load(Ordering::Relaxed) == 0
                && let Some(pid) = streams.stage_shell()
            {
                stage_shell.store(pid, Ordering::Relaxed);
            }
        }
        if !streams.stdout.diverted()
            && let Some(fifos) = &fifos
        {
            fifos.not_opened();
        }
        streams.exit_code().ok_or(ShellError::NoExitStatus)
    };
    let run = async {
        let (_input, code) = tokio::join!(feed, pump);
        code
    };
    tokio::pin!(run);

    tokio::select! {
        code = &mut run => code.map(Outcome::Exited),
        () = cancel.cancelled() => {
            // The stage may not have started yet: give its start marker a moment, copying
            // output meanwhile.
            let started = async {
                while stage_shell.load(Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = &mut run => return Ok(Outcome::Cancelled),
                _ = tokio::time::timeout(TERM_GRACE, started) => {}
            }
            match stage_shell.load(Ordering::Relaxed) {
                // Never started: no process of this stage exists, so there is no output to
                // wait for. Whatever runs in its place (an earlier stage's leftovers) gets
                // SIGTERM, and cleanup removes the container.
                0 => signal_all(docker, container, 0, "TERM", false).await,
                pid => stop_processes(docker, container, pid, run).await,
            }
            Ok(Outcome::Cancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_marker_without_a_status_gives_none_not_a_code() {
        let end = |line: &str| {
            let mut streams = Streams::new("n0nce");
            let mut sink = |_: &[u8]| Ok(());
            let text = format!("n0nce S 42\nout\n{line}\n");
            streams.stdout.feed(text.as_bytes(), &mut sink).unwrap();
            streams.exit_code()
        };
        assert_eq!(end("n0nce E 3"), Some(3));
        assert_eq!(end("n0nce E 0"), Some(0));
        assert_eq!(end("n0nce E"), None);
        assert_eq!(end("n0nce E x7"), None);
        assert_eq!(end("n0nce E 300"), None);
    }

    #[test]
    fn the_stage_program_quotes_the_script_as_a_here_document() {
        let program = String::from_utf8(stage_program("n0nce", b"echo 'hi' \"$X\"")).unwrap();
        assert!(
            program.contains("<<'n0nce' >&3 2>&4 3>&- 4>&-\necho 'hi' \"$X\"\nn0nce\n"),
            "{program}"
        );
        // The shell detection goes in single quotes: it must not hold one.
        assert!(!SHELL_DETECTION.contains('\''));
    }

    #[test]
    fn nonces_are_long_and_distinct() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
