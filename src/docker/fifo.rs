//! A stage's output through two FIFOs in the job's directory, for direct output
//! ([`super::direct`]): made per stage, named after the stage's nonce, read as the job writes.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode};
use tokio::net::unix::pipe;

use super::direct::MOUNT_POINT;

/// The file in a job's directory that says the job was told its FIFOs could not be opened.
const NOT_OPENED: &str = "fifos-not-opened";

/// Bytes read from a FIFO at a time.
const READ_SIZE: usize = 256 * 1024;

/// Pipe buffer asked for each FIFO: fewer wake-ups than the default 64 KiB for big outputs
/// (the unprivileged limit is 1 MiB).
const PIPE_SIZE: usize = 1 << 20;

/// One stage's two FIFOs (stdout, stderr) in the job's directory, open for reading.
pub(crate) struct Fifos {
    dir: PathBuf,
    pub out: Fifo,
    pub err: Fifo,
}

impl Fifos {
    pub(crate) fn open(dir: &Path, nonce: &str) -> io::Result<Fifos> {
        let [out, err] = [1, 2].map(|fd| dir.join(format!("{nonce}.{fd}")));
        Ok(Fifos {
            dir: dir.to_owned(),
            out: Fifo::open(out)?,
            // Should this fail, `out` is dropped and removed.
            err: Fifo::open(err)?,
        })
    }

    /// Says once per job, in the job log, that the stage shell could not open the FIFOs (the
    /// stage ran over the attach): with direct output on, the containers log what passes
    /// their own stdout, so a chatty job now costs the engine that too. A file beside the
    /// FIFOs remembers it was said; cleanup removes it with the directory.
    pub(crate) fn not_opened(&self) {
        let said = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.dir.join(NOT_OPENED));
        if said.is_ok() {
            crate::output::warn(format!(
                "this job's containers cannot open the FIFOs in {MOUNT_POINT} (SELinux labels, \
                 or a user without access?), so its output goes through the Docker engine; \
                 the runner's operator can set [docker] direct_output = false"
            ));
        }
    }

    /// The FIFOs' paths as the container sees them, below [`MOUNT_POINT`].
    pub(crate) fn names(nonce: &str) -> [String; 2] {
        [1, 2].map(|fd| format!("{MOUNT_POINT}/{nonce}.{fd}"))
    }
}

/// One FIFO, open for reading. The driver holds it open for writing too, so a read never sees
/// end-of-file and the stage shell never waits to open it; the end marker tells when the
/// stage is over. Removed on drop.
pub(crate) struct Fifo {
    path: PathBuf,
    receiver: pipe::Receiver,
    buf: Vec<u8>,
}

impl Fifo {
    fn open(path: PathBuf) -> io::Result<Fifo> {
        make_fifo(&path)?;
        let receiver = match pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
        {
            Ok(receiver) => receiver,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        // A refusal leaves the default size, which only costs wake-ups.
        let _ = rustix::pipe::fcntl_setpipe_size(&receiver, PIPE_SIZE);
        Ok(Fifo {
            path,
            receiver,
            buf: vec![0; READ_SIZE],
        })
    }

    /// The next bytes written to it (cancel-safe). End-of-file cannot happen while the driver
    /// holds a write end; should it, it is an error rather than a loop that spins.
    pub(crate) async fn read(&mut self) -> io::Result<&[u8]> {
        match tokio::io::AsyncReadExt::read(&mut self.receiver, &mut self.buf).await? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => Ok(&self.buf[..n]),
        }
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The next bytes of `fifo`; without one, never (a select branch that stays quiet).
pub(crate) async fn read(fifo: Option<&mut Fifo>) -> io::Result<&[u8]> {
    match fifo {
        Some(fifo) => fifo.read().await,
        None => std::future::pending().await,
    }
}

/// `mkfifo` with mode 0666 whatever the umask: the job may run as any user.
fn make_fifo(path: &Path) -> io::Result<()> {
    rustix::fs::mkfifoat(CWD, path, Mode::from_raw_mode(0o666))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fifo_carries_bytes_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let fifos = Fifos::open(dir.path(), "n0nce").unwrap();
        let path = dir.path().join("n0nce.1");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o666);
        let mut fifos = fifos;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut w| io::Write::write_all(&mut w, b"hello"))
            .unwrap();
        assert_eq!(fifos.out.read().await.unwrap(), b"hello");
        drop(fifos);
        assert!(!path.exists());
        assert_eq!(Fifos::names("n")[1], format!("{MOUNT_POINT}/n.2"));
    }
}
