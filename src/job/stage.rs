//! Stage names GitLab Runner passes to `run`, and which container runs each.

/// Where a stage's script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The job's own image: the user's commands.
    Build,
    /// The helper image: git, cache and artifact handling with `gitlab-runner`.
    Helper,
}

/// Stages that need the runner's tools rather than the user's.
const HELPER_STAGES: &[&str] = &[
    "prepare_script",
    "get_sources",
    "clear_worktree",
    "restore_cache",
    "download_artifacts",
    "archive_cache",
    "archive_cache_on_failure",
    "upload_artifacts_on_success",
    "upload_artifacts_on_failure",
    "cleanup_file_variables",
];

/// Stages known to run in the build container.
const BUILD_STAGES: &[&str] = &["build_script", "step_script", "after_script"];

/// Picks the container for a stage. The second value is false for a stage name the driver
/// does not know; such a stage runs in the build container, and the caller warns.
pub(crate) fn target_of(stage: &str) -> (Target, bool) {
    if HELPER_STAGES.contains(&stage) {
        (Target::Helper, true)
    } else if BUILD_STAGES.contains(&stage) || stage.starts_with("step_") {
        (Target::Build, true)
    } else {
        (Target::Build, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_stages_like_the_docker_executor() {
        assert_eq!(target_of("get_sources"), (Target::Helper, true));
        assert_eq!(
            target_of("upload_artifacts_on_failure"),
            (Target::Helper, true)
        );
        assert_eq!(target_of("build_script"), (Target::Build, true));
        assert_eq!(target_of("step_release"), (Target::Build, true));
        assert_eq!(target_of("after_script"), (Target::Build, true));
        assert_eq!(target_of("something_new"), (Target::Build, false));
    }
}
