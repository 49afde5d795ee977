//! The driver's output. Job output is copied to file descriptors 1 and 2 unbuffered, as it
//! arrives, so the job log streams and memory stays flat. The driver's own messages are single
//! lines: progress on stdout, warnings and errors on stderr (both reach the job log in
//! `prepare` and `run`; in `cleanup` they reach the runner's log).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

/// One of the process's standard streams, written without buffering.
pub struct RawStream(ManuallyDrop<File>);

impl RawStream {
    pub fn stdout() -> RawStream {
        // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
        RawStream(ManuallyDrop::new(unsafe { File::from_raw_fd(1) }))
    }

    pub fn stderr() -> RawStream {
        // SAFETY: as above, for fd 2.
        RawStream(ManuallyDrop::new(unsafe { File::from_raw_fd(2) }))
    }

    /// Writes all of `bytes`. A closed reader (EPIPE) is not an error worth failing a job
    /// for; the bytes are dropped, as the runner drops output past its log limit.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.0.write_all(bytes) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// A progress line for the job log.
pub fn info(message: impl std::fmt::Display) {
    let _ = RawStream::stdout().write_all(format!("{message}\n").as_bytes());
}

/// A warning line for the job log.
pub fn warn(message: impl std::fmt::Display) {
    let _ = RawStream::stderr().write_all(format!("WARNING: {message}\n").as_bytes());
}

/// An error line for the job log.
pub fn error(message: impl std::fmt::Display) {
    let _ = RawStream::stderr().write_all(format!("ERROR: {message}\n").as_bytes());
}
