//! The job's directory on the runner host: `<root>/ecr-executor-<uid>/<job>`, where job output
//! FIFOs live ([`crate::docker::fifo`]) and which is bind-mounted into the job's containers
//! ([`crate::docker::direct`]). The root is the runner's `TMPDIR` unless the driver config
//! names one (`[docker] direct_output_dir`, for runners under systemd's `PrivateTmp=yes`).
//!
//! It also marks a job whose prepare got as far as making things on the engine: `cleanup`
//! waits for an engine that is down only when the directory exists.
//!
//! Lifecycle: `prepare` makes a fresh one ([`JobDirs::create`]), `cleanup` removes it by name
//! ([`JobDirs::remove`]), `gc` finds those of runners that died ([`JobDirs::abandoned`]). The
//! parent directory is the runner user's alone (mode 0700, checked every time: the temp dir is
//! shared), and a path somebody else made is never followed.

use std::collections::HashSet;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How old a job's directory without containers must be to count as abandoned: a prepare in
/// progress has made its directory before its containers.
const ABANDONED_AFTER: Duration = Duration::from_secs(60 * 60);

/// Where this user's job directories live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobDirs {
    base: PathBuf,
}

impl JobDirs {
    /// The job directories of this user under `root` (the runner's `TMPDIR`, or the configured
    /// directory).
    pub(crate) fn under(root: &Path) -> JobDirs {
        let uid = rustix::process::geteuid().as_raw();
        JobDirs {
            base: root.join(format!("ecr-executor-{uid}")),
        }
    }

    /// The directory of job `job`. Derived from the job's name only, so that cleanup needs
    /// nothing from prepare.
    pub(crate) fn of(&self, job: &str) -> PathBuf {
        self.base.join(job)
    }

    /// Makes a fresh, empty directory for job `job`. Its parent is this user's own (mode 0700),
    /// so no other user on the host can reach the FIFOs; the directory itself is open to every
    /// user of the containers.
    pub(crate) fn create(&self, job: &str) -> io::Result<PathBuf> {
        match DirBuilder::new().mode(0o700).create(&self.base) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_private(&self.base)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The root itself is missing (a configured directory not made yet).
                if let Some(root) = self.base.parent() {
                    fs::create_dir_all(root)?;
                }
                DirBuilder::new().mode(0o700).create(&self.base)?;
            }
            result => result?,
        }
        let dir = self.of(job);
        self.remove(job)?;
        fs::create_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// Removes job `job`'s directory; one that does not exist is fine.
    pub(crate) fn remove(&self, job: &str) -> io::Result<()> {
        if !self.private_base()? {
            return Ok(());
        }
        match fs::remove_dir_all(self.of(job)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Job directories whose cleanup never ran (the runner died): those of no job in `live`
    /// and untouched for an hour.
    pub(crate) fn abandoned(&self, live: &HashSet<&str>) -> io::Result<Vec<PathBuf>> {
        if !self.private_base()? {
            return Ok(Vec::new());
        }
        Ok(fs::read_dir(&self.base)?
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

    /// Whether the parent of the job directories exists and is this user's alone: never follow
    /// a path in the shared temp dir that someone else made (a symlink to a directory of ours
    /// would have `gc` empty it).
    fn private_base(&self) -> io::Result<bool> {
        match check_private(&self.base) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn check_private(base: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(base)?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.is_dir() || !ours || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory private to this user", base.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn directories_are_made_fresh_and_removed_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = JobDirs::under(&tmp.path().join("not-yet"));
        let dir = dirs.create("job-1").unwrap();
        fs::write(dir.join("leftover"), b"x").unwrap();
        let again = dirs.create("job-1").unwrap();
        assert_eq!(again, dir);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "made fresh");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        let base = dir.parent().unwrap();
        assert_eq!(fs::metadata(base).unwrap().mode() & 0o777, 0o700);
        assert!(
            dirs.abandoned(&HashSet::new()).unwrap().is_empty(),
            "too new"
        );
        dirs.remove("job-1").unwrap();
        assert!(!dir.exists());
        dirs.remove("job-1").unwrap();
    }

    #[test]
    fn a_base_someone_else_could_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = JobDirs::under(tmp.path());
        let base = dirs.create("j").unwrap().parent().unwrap().to_owned();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(dirs.create("k").is_err());
        assert!(dirs.remove("j").is_err());
    }
}
