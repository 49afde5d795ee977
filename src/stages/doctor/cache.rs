//! The token cache: its owner and modes.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::report::Report;
use crate::stages::Context;

/// The runner-identity token cache: owned by this user, private.
pub(crate) fn token_cache(ctx: &Context, report: &mut Report) {
    const CHECK: &str = "token cache";
    if !ctx.config.ecr.cache {
        return report.ok(CHECK, "off ([ecr] cache = false)");
    }
    let Some(dir) = ctx
        .config
        .ecr
        .cache_dir
        .clone()
        .or_else(|| crate::auth::default_cache_dir(&ctx.env))
    else {
        return report.fail(
            CHECK,
            "no directory for it: this user has no HOME; set [ecr] cache_dir, or cache = false",
        );
    };
    let uid = rustix::process::geteuid().as_raw();
    let Ok(meta) = fs::metadata(&dir) else {
        let parent = dir
            .ancestors()
            .skip(1)
            .find(|p| p.exists())
            .map(Path::to_owned);
        return match parent {
            Some(p) if writable(&p) => report.ok(
                CHECK,
                format!("{} is made (mode 0700) on first use", dir.display()),
            ),
            _ => report.fail(
                CHECK,
                format!(
                    "{} cannot be made by this user; create it (`install -d -m 0700 -o <runner user> {}`) or set [ecr] cache_dir",
                    dir.display(),
                    dir.display()
                ),
            ),
        };
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.uid() != uid {
        return report.fail(
            CHECK,
            format!(
                "{} is owned by uid {}, not by this user ({uid}); `chown` it to the runner's user",
                dir.display(),
                meta.uid()
            ),
        );
    }
    let loose: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.metadata()
                        .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    if !loose.is_empty() {
        return report.fail(
            CHECK,
            format!(
                "{} holds files others may read ({}); `chmod 600` them",
                dir.display(),
                loose[0].display()
            ),
        );
    }
    let note = if mode & 0o077 != 0 {
        format!("mode {mode:o}, tightened to 0700 on first use")
    } else {
        format!("mode {mode:o}")
    };
    report.ok(
        CHECK,
        format!("{} (owner uid {uid}, {note})", dir.display()),
    )
}

pub(crate) fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}
