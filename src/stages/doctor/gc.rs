//! The packages' gc timer runs as this user (the unit's `User=` after its drop-ins).

use std::fs;
use std::path::{Path, PathBuf};

use super::report::Report;

/// Where systemd looks for the gc unit and its drop-ins, most important first.
pub(crate) const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
pub(crate) const GC_UNIT: &str = "ecr-executor-gc.service";

/// The packages' gc timer must run as the runner's user (its Docker socket, its job
/// directories): the user its service names must exist and be this one.
pub(crate) fn gc_timer(unit_dirs: &[&str], report: &mut Report) {
    const CHECK: &str = "gc timer";
    let Some(user) = unit_user(unit_dirs, GC_UNIT) else {
        return report.skip(
            CHECK,
            "no ecr-executor-gc.service here (the packages install one); without it, run \
             `ecr-executor gc` as the runner's user every 30 minutes",
        );
    };
    let fix = "set the runner's user in a drop-in: `systemctl edit ecr-executor-gc.service`, \
               then [Service] User=<runner user>";
    let this = rustix::process::geteuid().as_raw();
    match uid_of(&user) {
        None => report.fail(
            CHECK,
            format!("{GC_UNIT} runs as `{user}`, which does not exist here; {fix}"),
        ),
        Some(uid) if uid != this => report.fail(
            CHECK,
            format!(
                "{GC_UNIT} runs as `{user}` (uid {uid}), not as this user (uid {this}), so it \
                 cannot see this runner's jobs; {fix}"
            ),
        ),
        Some(_) => report.ok(CHECK, format!("{GC_UNIT} runs as `{user}`, this user")),
    }
}

/// The user a systemd service runs as: the last `User=` of its unit file and then its
/// drop-ins (`<unit>.d/*.conf`, in file-name order; a name in an earlier directory hides
/// the same name in a later one), `root` when none sets one. None when the unit is not
/// installed.
pub(crate) fn unit_user(dirs: &[&str], unit: &str) -> Option<String> {
    let main = dirs
        .iter()
        .map(|d| Path::new(d).join(unit))
        .find(|p| p.is_file())?;
    let mut dropins: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(Path::new(dir).join(format!("{unit}.d"))) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if Path::new(&name).extension().is_some_and(|e| e == "conf")
                && !dropins.iter().any(|(n, _)| *n == name)
            {
                dropins.push((name, entry.path()));
            }
        }
    }
    dropins.sort();
    let mut user = None;
    for file in std::iter::once(main).chain(dropins.into_iter().map(|(_, path)| path)) {
        for line in fs::read_to_string(&file).unwrap_or_default().lines() {
            if let Some(value) = line.trim().strip_prefix("User=") {
                // An empty assignment resets it.
                user = Some(value.trim().to_owned()).filter(|u| !u.is_empty());
            }
        }
    }
    Some(user.unwrap_or_else(|| "root".to_owned()))
}

/// A user's uid, as the system's user database (NSS) has it, through `id`.
pub(crate) fn uid_of(user: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .args(["-u", "--", user])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two unit directories, as /etc and /usr/lib: `files` are (dir index, path, text).
    fn dirs_with(files: &[(usize, &str, &str)]) -> (tempfile::TempDir, [String; 2]) {
        let root = tempfile::tempdir().unwrap();
        let dirs = ["etc", "lib"].map(|d| root.path().join(d).display().to_string());
        for (dir, path, text) in files {
            let file = Path::new(&dirs[*dir]).join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        (root, dirs)
    }

    fn user(files: &[(usize, &str, &str)]) -> Option<String> {
        let (_root, dirs) = dirs_with(files);
        unit_user(&[&dirs[0], &dirs[1]], GC_UNIT)
    }

    #[test]
    fn the_gc_units_user_is_its_last_assignment_across_drop_ins() {
        let unit = "[Service]\nType=oneshot\nUser=gitlab-runner\n";
        assert_eq!(user(&[]), None);
        assert_eq!(
            user(&[(1, GC_UNIT, unit)]).as_deref(),
            Some("gitlab-runner")
        );
        // Drop-ins in name order; one in /etc hides the same name in /usr/lib.
        let d = format!("{GC_UNIT}.d");
        assert_eq!(
            user(&[
                (1, GC_UNIT, unit),
                (1, &format!("{d}/20-b.conf"), "[Service]\nUser=lib-b\n"),
                (0, &format!("{d}/20-b.conf"), "[Service]\nUser=etc-b\n"),
                (1, &format!("{d}/10-a.conf"), "[Service]\nUser=a\n"),
                (
                    0,
                    &format!("{d}/30-c.txt"),
                    "[Service]\nUser=not-a-drop-in\n"
                ),
            ])
            .as_deref(),
            Some("etc-b")
        );
        // An empty assignment resets to root, as does a unit in /etc without one.
        assert_eq!(
            user(&[(1, GC_UNIT, unit), (0, &format!("{d}/x.conf"), "User=\n")]).as_deref(),
            Some("root")
        );
        assert_eq!(
            user(&[(1, GC_UNIT, unit), (0, GC_UNIT, "[Service]\n")]).as_deref(),
            Some("root")
        );
    }

    #[test]
    fn users_are_looked_up_in_the_user_database() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("no-such-user-ecr-executor"), None);
    }
}
