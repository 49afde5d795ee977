//! The driver's output. Job output is copied to file descriptors 1 and 2 unbuffered, as it
//! arrives, so the job log streams and memory stays flat. The driver's own messages are single
//! lines: progress on stdout, warnings and errors on stderr (both reach the job log in
//! `prepare` and `run`; in `cleanup` they reach the runner's log).

use std::io;
use std::os::fd::BorrowedFd;

/// One of the process's standard streams, written without buffering.
#[derive(Clone, Copy)]
pub(crate) struct RawStream(BorrowedFd<'static>);

impl RawStream {
    pub(crate) fn stdout() -> RawStream {
        RawStream(rustix::stdio::stdout())
    }

    pub(crate) fn stderr() -> RawStream {
        RawStream(rustix::stdio::stderr())
    }

    /// Writes all of `bytes`. A closed reader (EPIPE) is not an error worth failing a job
    /// for; the bytes are dropped, as the runner drops output past its log limit.
    pub(crate) fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match rustix::io::write(self.0, bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::PIPE) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// A progress line for the job log.
pub(crate) fn info(message: impl std::fmt::Display) {
    let _ = RawStream::stdout().write_all(format!("{message}\n").as_bytes());
}

/// A warning line for the job log.
pub(crate) fn warn(message: impl std::fmt::Display) {
    let _ = RawStream::stderr().write_all(format!("WARNING: {message}\n").as_bytes());
}

/// An error line for the job log.
pub(crate) fn error(message: impl std::fmt::Display) {
    let _ = RawStream::stderr().write_all(format!("ERROR: {message}\n").as_bytes());
}
