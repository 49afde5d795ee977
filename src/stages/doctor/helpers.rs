//! The credential helpers the runner's configuration names (its `DOCKER_AUTH_CONFIG`, the
//! runner user's Docker config) and those jobs may name (`allowed_credential_helpers`), and
//! whether each is on this user's `PATH`.

use std::path::PathBuf;

use super::report::Report;
use crate::auth::Resolver;
use crate::stages::Context;

const CHECK: &str = "credential helpers";

pub(crate) fn check(ctx: &Context, resolver: &Resolver<'_>, report: &mut Report) {
    let named = match resolver.named_helpers() {
        Ok(named) => named,
        Err(e) => return report.fail(CHECK, e),
    };
    if named.is_empty() {
        return report.ok(
            CHECK,
            "none named (the runner's DOCKER_AUTH_CONFIG, the runner user's Docker config, \
             allowed_credential_helpers)",
        );
    }
    let mut names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let by: Vec<&str> = named
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, origin)| *origin)
            .collect();
        let check = format!("docker-credential-{name}");
        let ecr = if name == "ecr-login" {
            "; ECR hosts use the driver's own authentication instead"
        } else {
            ""
        };
        match find(ctx, name) {
            Some(path) => report.ok(
                &check,
                format!("{} (named by {}){ecr}", path.display(), by.join(", ")),
            ),
            None => report.fail(
                &check,
                format!(
                    "not on this user's PATH (named by {}); install it, or remove it from there",
                    by.join(", ")
                ),
            ),
        }
    }
}

/// `docker-credential-<name>` in the runner's `PATH`, as the driver would run it.
fn find(ctx: &Context, name: &str) -> Option<PathBuf> {
    let path = ctx.env.path.as_ref()?;
    std::env::split_paths(path)
        .map(|dir| dir.join(format!("docker-credential-{name}")))
        .find(|candidate| rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok())
}
