//! Direct output: a stage's output skips the engine when the engine shares this host.
//!
//! Through an attach, every byte a job prints is copied by containerd-shim and then by dockerd
//! before the driver reads it: for a chatty job that is most of two cores (256 MB took the
//! engine about 0.8 s here). When the engine runs on this kernel and sees this filesystem,
//! prepare makes a fresh directory per job ([`create_job_dir`], private to the runner user on
//! the host) and bind-mounts it read-only at [`MOUNT_POINT`] into the build and helper
//! containers. For each stage the driver makes two FIFOs there named after the stage's nonce
//! ([`Fifos`]) and reads them; the stage shell points the script's stdout and stderr at them
//! when it can open them, and says so on its start marker line (`F`). When it cannot (SELinux
//! labels, a directory gone), the stage runs over the attach as before. Engines elsewhere
//! (remote, in a VM) are ruled out in prepare ([`possible`]), and one that cannot see the
//! directory refuses the mount ([`engine_cannot_see`]). Cleanup removes the directory, `gc`
//! those of runners that died ([`abandoned`]).
//!
//! A FIFO is a pipe to the job, as the attach's pipes are: no tty, output byte for byte. One
//! difference, shared with the Docker executor (whose container stops after each stage): a
//! background process that writes after its stage ended gets SIGPIPE, since nobody reads.

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfigLogConfig, Mount, MountType};
use tokio::net::unix::pipe;

use crate::error::Error;

/// Where the job's directory appears in its containers.
pub const MOUNT_POINT: &str = "/.ecr-executor";

/// The file in a job's directory that says the job was told its FIFOs could not be opened.
const NOT_OPENED: &str = "fifos-not-opened";

/// Bytes read from a FIFO at a time.
const READ_SIZE: usize = 256 * 1024;

/// Pipe buffer asked for each FIFO: fewer wake-ups than the default 64 KiB for big outputs
/// (the unprivileged limit is 1 MiB).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Whether direct output can work: an engine on a local socket, running this host's kernel
/// (an engine in a VM reports its own). Whether it sees this filesystem shows when the bind
/// mount is created ([`engine_cannot_see`]).
pub fn possible(host: &str, engine_kernel: Option<&str>) -> bool {
    host.starts_with("unix://")
        && engine_kernel.is_some_and(|k| Some(k) == local_kernel().as_deref())
}

fn local_kernel() -> Option<String> {
    // SAFETY: uname fills the struct it is given.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminates its fields.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// The host directory of job `job`: `$TMPDIR/ecr-executor-<uid>/<job>`. Derived from the
/// job's name only, so that cleanup needs nothing from prepare.
pub fn job_dir(job: &str) -> PathBuf {
    base_dir().join(job)
}

fn base_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("ecr-executor-{uid}"))
}

/// Makes a fresh, empty directory for job `job`. Its parent is the runner user's own (mode
/// 0700, checked when it exists: the temp dir is shared), so no other user on the host can
/// reach the FIFOs; the directory itself is open to every user of the containers.
pub fn create_job_dir(job: &str) -> io::Result<PathBuf> {
    let base = base_dir();
    match DirBuilder::new().mode(0o700).create(&base) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_private(&base)?,
        result => result?,
    }
    let dir = base.join(job);
    remove_job_dir(job)?;
    fs::create_dir(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// The parent of the job directories, if it exists and is this user's alone: never follow a
/// path in the shared temp dir that someone else made (a symlink to a directory of ours
/// would have `gc` empty it).
fn private_base() -> io::Result<Option<PathBuf>> {
    let base = base_dir();
    match check_private(&base) {
        Ok(()) => Ok(Some(base)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_private(base: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(base)?;
    // SAFETY: geteuid cannot fail.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    if !meta.is_dir() || !ours || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory private to this user", base.display()),
        ));
    }
    Ok(())
}

/// How old a job's directory without containers must be to count as abandoned: a prepare in
/// progress has made its directory before its containers.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Job directories whose cleanup never ran (the runner died): those of no job in `live` and
/// untouched for an hour. For `gc`.
pub fn abandoned(live: &std::collections::HashSet<&str>) -> io::Result<Vec<PathBuf>> {
    let Some(base) = private_base()? else {
        return Ok(Vec::new());
    };
    Ok(fs::read_dir(base)?
        .flatten()
        .filter(|entry| {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > ABANDONED_AFTER));
            old && !live.contains(entry.file_name().to_string_lossy().as_ref())
        })
        .map(|entry| entry.path())
        .collect())
}

/// Removes job `job`'s directory; one that does not exist is fine.
pub fn remove_job_dir(job: &str) -> io::Result<()> {
    let Some(base) = private_base()? else {
        return Ok(());
    };
    match fs::remove_dir_all(base.join(job)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The read-only bind mount of `dir` at [`MOUNT_POINT`]. Read-only: the job cannot make files
/// on the host, while FIFOs still open for writing.
pub fn mount(dir: &Path) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(dir.to_string_lossy().into_owned()),
        target: Some(MOUNT_POINT.to_owned()),
        read_only: Some(true),
        ..Default::default()
    }
}

/// How a build or helper container logs. With direct output its own stdout and stderr carry
/// only the stage markers and whatever the ENTRYPOINT prints, so the engine keeps a small log:
/// the last words of an ENTRYPOINT that exits. Without, every byte of job output would be
/// logged as well, which took the engine 4 s instead of 0.7 s for 256 MB: no log.
pub fn log_config(direct_output: bool) -> HostConfigLogConfig {
    if direct_output {
        HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), "1m".to_owned()),
                ("max-file".to_owned(), "1".to_owned()),
            ])),
        }
    } else {
        HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }
    }
}

/// Takes the mount of [`mount`] out of a container spec again, and the log that only direct
/// output makes cheap.
pub fn unmount(body: &mut ContainerCreateBody) {
    if let Some(host) = body.host_config.as_mut() {
        if let Some(mounts) = host.mounts.as_mut() {
            mounts.retain(|m| m.target.as_deref() != Some(MOUNT_POINT));
        }
        if host.log_config.is_some() {
            host.log_config = Some(log_config(false));
        }
    }
}

/// Whether creating a container failed because the engine does not see the directory: it
/// runs on this kernel but in another mount namespace (a runner in a container talking to the
/// host's engine).
pub fn engine_cannot_see(e: &Error) -> bool {
    matches!(
        e,
        Error::Docker {
            source: bollard::errors::Error::DockerResponseServerError { status_code: 400, message },
            ..
        } if message.contains("bind source path does not exist")
    )
}

/// One stage's two FIFOs (stdout, stderr) in the job's directory, open for reading.
pub struct Fifos {
    dir: PathBuf,
    pub out: Fifo,
    pub err: Fifo,
}

impl Fifos {
    pub fn open(dir: &Path, nonce: &str) -> io::Result<Fifos> {
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
    pub fn not_opened(&self) {
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

    /// The FIFOs' paths as the container sees them, relative to [`MOUNT_POINT`].
    pub fn names(nonce: &str) -> [String; 2] {
        [1, 2].map(|fd| format!("{MOUNT_POINT}/{nonce}.{fd}"))
    }
}

/// One FIFO, open for reading. The driver holds it open for writing too, so a read never sees
/// end-of-file and the stage shell never waits to open it; the end marker tells when the
/// stage is over. Removed on drop.
pub struct Fifo {
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
        // SAFETY: fcntl on a descriptor we own; a refusal leaves the default size.
        unsafe { libc::fcntl(receiver.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(Fifo {
            path,
            receiver,
            buf: vec![0; READ_SIZE],
        })
    }

    /// The next bytes written to it (cancel-safe). End-of-file cannot happen while the driver
    /// holds a write end; should it, it is an error rather than a loop that spins.
    pub async fn read(&mut self) -> io::Result<&[u8]> {
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
pub async fn read(fifo: Option<&mut Fifo>) -> io::Result<&[u8]> {
    match fifo {
        Some(fifo) => fifo.read().await,
        None => std::future::pending().await,
    }
}

/// `mkfifo` with mode 0666 whatever the umask: the job may run as any user.
fn make_fifo(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o666) } != 0 {
        return Err(io::Error::last_os_error());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_local_socket_with_this_kernel_qualifies() {
        let kernel = local_kernel().unwrap();
        assert!(possible("unix:///var/run/docker.sock", Some(&kernel)));
        assert!(!possible("tcp://127.0.0.1:2375", Some(&kernel)));
        assert!(!possible(
            "unix:///var/run/docker.sock",
            Some("6.10.14-linuxkit")
        ));
        assert!(!possible("unix:///var/run/docker.sock", None));
    }

    #[test]
    fn only_a_missing_bind_source_means_the_engine_cannot_see() {
        let refused = |status_code, message: &str| Error::Docker {
            action: "create container",
            target: "x".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code,
                message: message.into(),
            },
        };
        assert!(engine_cannot_see(&refused(
            400,
            "invalid mount config for type \"bind\": bind source path does not exist: /tmp/x"
        )));
        assert!(!engine_cannot_see(&refused(
            400,
            "invalid reference format"
        )));
        assert!(!engine_cannot_see(&refused(
            500,
            "bind source path does not exist"
        )));
    }

    #[test]
    fn only_a_directory_of_ours_with_mode_0700_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        DirBuilder::new().mode(0o700).create(&dir).unwrap();
        check_private(&dir).unwrap();
        // A symlink to it (someone else's name in the shared temp dir) is not.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(
            check_private(&link).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_private(&dir).is_err());
        let missing = check_private(&tmp.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_mount_can_be_taken_out_again() {
        let mut body = ContainerCreateBody {
            host_config: Some(bollard::models::HostConfig {
                mounts: Some(vec![Mount::default(), mount(Path::new("/tmp/x"))]),
                ..Default::default()
            }),
            ..Default::default()
        };
        unmount(&mut body);
        assert_eq!(
            body.host_config.unwrap().mounts.unwrap(),
            vec![Mount::default()]
        );
    }
}
