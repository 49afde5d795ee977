//! On-disk cache of runner-identity ECR tokens, shared by every driver process on the host.
//!
//! - Layout: one directory (mode 0700, owned by the runner user) with one `<key>.json` entry
//!   (mode 0600) and one `<key>.lock` per registry and identity. The key is a hash of
//!   partition, region, registry id, endpoint kind (FIPS or standard) and an identity
//!   fingerprint, so neither file names nor contents reveal the access key, and a FIPS
//!   registry never gets a token a standard endpoint issued.
//! - Concurrency: entries are replaced atomically (write a temp file, fsync, rename), so a
//!   reader never sees half a file; a process that misses takes the key's exclusive lock,
//!   looks again, and only then calls AWS, so N concurrent jobs make one call.
//! - Freshness: an entry is used until half its lifetime has passed (as the credential
//!   helper does) and never within [`MIN_REMAINING`] of its expiry. Expired or unreadable
//!   entries are deleted; an expired token is never used as a fallback.
//! - Job-identity tokens never come here.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::login::Login;
use crate::util::hex;

/// An entry is never used when it expires within this many seconds.
pub(crate) const MIN_REMAINING: u64 = 5 * 60;
/// Version 2 added the endpoint kind: version 1 entries (which may hold a standard
/// endpoint's token for a FIPS registry) are never read.
const VERSION: u32 = 2;
/// How often a process waiting for a key's lock tries it again.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// What a token is for: the identity of a token, in this process's memo and on disk.
/// `fingerprint` identifies the identity without revealing it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub partition: String,
    pub region: String,
    pub registry_id: String,
    /// Whether FIPS endpoints issued the token (a FIPS registry's hostname).
    pub fips: bool,
    pub fingerprint: String,
}

impl CacheKey {
    fn endpoint(&self) -> &'static str {
        if self.fips { "fips" } else { "standard" }
    }

    fn stem(&self) -> String {
        let digest = Sha256::digest(
            format!(
                "ecr-executor/cache/v{VERSION}\0{}\0{}\0{}\0{}\0{}",
                self.partition,
                self.region,
                self.registry_id,
                self.endpoint(),
                self.fingerprint
            )
            .as_bytes(),
        );
        hex(&digest[..16])
    }
}

/// A token with its validity window (unix seconds).
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    pub login: Login,
    pub requested_at: u64,
    pub expires_at: u64,
    /// The principal that fetched it, when known (for the job log and the audit trail).
    pub arn: Option<String>,
}

/// Whether a token requested at `requested_at` and expiring at `expires_at` may be used `now`.
pub(crate) fn is_fresh(requested_at: u64, expires_at: u64, now: u64) -> bool {
    let half_life = requested_at + expires_at.saturating_sub(requested_at) / 2;
    now < half_life && now + MIN_REMAINING < expires_at
}

#[derive(Serialize, Deserialize)]
struct Entry<P> {
    version: u32,
    partition: String,
    region: String,
    registry_id: String,
    #[serde(default)]
    fips: bool,
    fingerprint: String,
    username: String,
    password: P,
    server: String,
    requested_at: u64,
    expires_at: u64,
    #[serde(default)]
    arn: Option<String>,
}

pub(crate) struct DiskCache {
    dir: PathBuf,
}

/// Holds a key's lock until dropped.
pub(crate) struct KeyLock(File);

impl Drop for KeyLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl DiskCache {
    /// Opens (creating, mode 0700) the cache directory. Refuses a directory owned by another
    /// user, and tightens its mode when others could read it.
    pub(crate) fn open(dir: &Path) -> io::Result<DiskCache> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let meta = fs::metadata(dir)?;
        let uid = rustix::process::geteuid().as_raw();
        if meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is owned by uid {}, not by this user ({uid})",
                    dir.display(),
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(DiskCache {
            dir: dir.to_owned(),
        })
    }

    fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.stem()))
    }

    /// The key's token if it is fresh. A stale or unreadable entry is deleted.
    pub(crate) fn read_fresh(&self, key: &CacheKey, now: u64) -> Option<CachedToken> {
        let path = self.entry_path(key);
        let bytes = fs::read(&path).ok()?;
        let entry: Option<Entry<SecretString>> = serde_json::from_slice(&bytes).ok();
        let valid = entry.filter(|e| {
            e.version == VERSION
                && e.partition == key.partition
                && e.region == key.region
                && e.registry_id == key.registry_id
                && e.fips == key.fips
                && e.fingerprint == key.fingerprint
        });
        match valid {
            Some(e) if is_fresh(e.requested_at, e.expires_at, now) => Some(CachedToken {
                login: Login {
                    username: e.username,
                    password: e.password,
                    server: e.server,
                    identity_token: false,
                },
                requested_at: e.requested_at,
                expires_at: e.expires_at,
                arn: e.arn,
            }),
            _ => {
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Takes the key's exclusive lock, waiting up to `limit` for another process that holds
    /// it (one fetching the same token); `on_wait` runs once if it has to wait. The wait polls
    /// without blocking a thread, so dropping the future (a cancelled prepare) ends it at
    /// once; past `limit` it fails with [`io::ErrorKind::TimedOut`].
    pub(crate) async fn lock(
        &self,
        key: &CacheKey,
        limit: Duration,
        on_wait: impl FnOnce(),
    ) -> io::Result<KeyLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(format!("{}.lock", key.stem())))?;
        let deadline = tokio::time::Instant::now() + limit;
        let mut on_wait = Some(on_wait);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(KeyLock(file)),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("another process held it for {} s", limit.as_secs()),
                ));
            }
            if let Some(f) = on_wait.take() {
                f();
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// Stores a token atomically, then purges expired entries. Tokens that would not be
    /// fresh (already past half-life) are not stored.
    pub(crate) fn store(&self, key: &CacheKey, token: &CachedToken, now: u64) -> io::Result<()> {
        if !is_fresh(token.requested_at, token.expires_at, now) {
            return Ok(());
        }
        let entry = Entry {
            version: VERSION,
            partition: key.partition.clone(),
            region: key.region.clone(),
            registry_id: key.registry_id.clone(),
            fips: key.fips,
            fingerprint: key.fingerprint.clone(),
            username: token.login.username.clone(),
            password: token.login.password.expose_secret(),
            server: token.login.server.clone(),
            requested_at: token.requested_at,
            expires_at: token.expires_at,
            arn: token.arn.clone(),
        };
        let json = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        // NamedTempFile creates the file with mode 0600 in the same directory.
        let mut tmp = tempfile::Builder::new()
            .prefix(".entry")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        tmp.write_all(&json)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.entry_path(key)).map_err(|e| e.error)?;
        self.purge_expired(now);
        Ok(())
    }

    /// Deletes entries that have expired or cannot be read, and abandoned temp files.
    pub(crate) fn purge_expired(&self, now: u64) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        for item in dir.flatten() {
            let path = item.path();
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json") {
                let expired = fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Entry<SecretString>>(&b).ok())
                    .is_none_or(|e| e.expires_at <= now);
                if expired {
                    let _ = fs::remove_file(&path);
                }
            } else if name.starts_with(".entry") && name.ends_with(".tmp") {
                let old = item
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 60);
                if old {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> CacheKey {
        CacheKey {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            registry_id: id.into(),
            fips: false,
            fingerprint: "fp".into(),
        }
    }

    fn token(requested_at: u64, expires_at: u64) -> CachedToken {
        CachedToken {
            login: Login {
                username: "AWS".into(),
                password: SecretString::from("pw-123".to_owned()),
                server: "h".into(),
                identity_token: false,
            },
            requested_at,
            expires_at,
            arn: Some("arn:aws:iam::111111111111:user/ci".into()),
        }
    }

    const H12: u64 = 12 * 3600;

    #[test]
    fn freshness_is_half_life_with_a_floor() {
        assert!(is_fresh(1000, 1000 + H12, 1000));
        assert!(is_fresh(1000, 1000 + H12, 1000 + H12 / 2 - 1));
        assert!(!is_fresh(1000, 1000 + H12, 1000 + H12 / 2));
        assert!(!is_fresh(1000, 1400, 1150), "too close to expiry");
        assert!(
            !is_fresh(1_420_070_400, 1_420_070_400, 1_800_000_000),
            "moto's 2015 expiry"
        );
    }

    #[test]
    fn store_read_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let cache = DiskCache::open(&cache_dir).unwrap();
        assert_eq!(fs::metadata(&cache_dir).unwrap().mode() & 0o777, 0o700);
        let now = 1_000_000;
        cache
            .store(&key("111111111111"), &token(now, now + H12), now)
            .unwrap();
        let got = cache.read_fresh(&key("111111111111"), now + 60).unwrap();
        assert_eq!(got.login.password.expose_secret(), "pw-123");
        assert!(cache.read_fresh(&key("222222222222"), now).is_none());
        let files: Vec<_> = fs::read_dir(&cache_dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].metadata().unwrap().mode() & 0o777, 0o600);
        let name = files[0].file_name().to_string_lossy().into_owned();
        assert!(!name.contains("111111111111"), "{name}");
    }

    #[test]
    fn stale_and_corrupt_entries_are_removed_never_returned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let now = 1_000_000;
        cache
            .store(&key("111111111111"), &token(now, now + H12), now)
            .unwrap();
        assert!(
            cache
                .read_fresh(&key("111111111111"), now + H12 - 10)
                .is_none()
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "stale entry deleted"
        );

        cache
            .store(&key("111111111111"), &token(now, now + H12), now)
            .unwrap();
        let path = cache.entry_path(&key("111111111111"));
        fs::write(&path, b"{\"version\":1,").unwrap();
        assert!(cache.read_fresh(&key("111111111111"), now).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn expired_tokens_are_not_stored_and_old_ones_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let now = 2_000_000_000;
        cache
            .store(&key("111111111111"), &token(now, 1_420_070_400), now)
            .unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        cache
            .store(&key("111111111111"), &token(now, now + H12), now)
            .unwrap();
        // Later, another key is stored after the first expired: the first is purged.
        let later = now + H12 + 1;
        cache
            .store(&key("222222222222"), &token(later, later + H12), later)
            .unwrap();
        assert!(!cache.entry_path(&key("111111111111")).exists());
        assert!(cache.entry_path(&key("222222222222")).exists());
    }

    /// Issue 22, defect 3: the wait for a lock another holder keeps is bounded, and dropping
    /// it (a cancel) ends it at once instead of waiting in a blocking thread the runtime must
    /// join before the process can exit.
    #[test]
    fn a_held_lock_is_waited_for_within_a_bound_and_a_cancel_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let k = key("111111111111");
        // flock(2) locks belong to an open file: another open of the file is another holder.
        let held = rt.block_on(cache.lock(&k, Duration::ZERO, || {})).unwrap();
        let waited = std::cell::Cell::new(0);
        let start = std::time::Instant::now();
        let err = rt
            .block_on(cache.lock(&k, Duration::from_millis(300), || {
                waited.set(waited.get() + 1)
            }))
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(waited.get(), 1, "told once that it waits");

        let cancel = tokio_util::sync::CancellationToken::new();
        let start = std::time::Instant::now();
        let ended = rt.block_on(async {
            tokio::spawn({
                let cancel = cancel.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    cancel.cancel();
                }
            });
            tokio::select! {
                _ = cache.lock(&k, Duration::from_secs(60), || {}) => false,
                () = cancel.cancelled() => true,
            }
        });
        drop(rt);
        assert!(
            ended && start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );

        drop(held);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(cache.lock(&k, Duration::ZERO, || panic!("free: no wait")))
            .unwrap();
    }

    #[test]
    fn loose_directory_modes_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        DiskCache::open(dir.path()).unwrap();
        assert_eq!(fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o700);
    }
}
