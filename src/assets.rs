//! The man pages and the bash, zsh and fish completions, generated from the clap definitions
//! by the very binary that is packaged (`ecr-executor generate-assets --out-dir DIR`, a hidden
//! subcommand `scripts/package.sh` calls), so they cannot drift from it. A leaf: it is handed
//! the command tree and names nothing of the crate.
//!
//! Why a hidden subcommand rather than a build script or an xtask: no second build, and no
//! cost at the ~10 starts per job (clap builds one more small subcommand; the generators run
//! only here).

use std::io;
use std::path::Path;

use clap_complete::Shell;

/// `cmd` as users see it: without hidden subcommands, which clap_mangen skips but
/// clap_complete would offer (clap-rs/clap#1335). clap has no way to remove a subcommand, so
/// the root is put together again from `cmd`'s own arguments and visible subcommands.
fn visible(cmd: &clap::Command) -> clap::Command {
    let mut visible = clap::Command::new(cmd.get_name().to_owned())
        .version(cmd.get_version().unwrap_or_default().to_owned())
        .subcommand_required(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        visible = visible.about(about.clone());
    }
    visible
}

/// Writes `DIR/man/<name>.1` and one page per visible subcommand (`<name>-run.1`, ...;
/// uncompressed) and `DIR/completions/{<name>.bash,_<name>,<name>.fish}`.
pub(crate) fn generate(cmd: &clap::Command, out_dir: &Path) -> io::Result<()> {
    let man = out_dir.join("man");
    let completions = out_dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(visible(cmd), &man)?;
    let mut visible = visible(cmd);
    let name = cmd.get_name().to_owned();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut visible, &name, &completions)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .version("1.2.3")
            .subcommand_required(true)
            .arg(clap::Arg::new("config").long("config").global(true))
            .subcommand(
                clap::Command::new("gc").arg(
                    clap::Arg::new("dry-run")
                        .long("dry-run")
                        .action(clap::ArgAction::SetTrue),
                ),
            )
            .subcommand(clap::Command::new("prepare"))
            .subcommand(clap::Command::new("generate-assets").hide(true))
    }

    #[test]
    fn assets_cover_the_cli_and_leave_out_hidden_subcommands() {
        visible(&cli()).debug_assert();
        let dir = tempfile::tempdir().unwrap();
        generate(&cli(), dir.path()).unwrap();
        for page in ["tool.1", "tool-gc.1", "tool-prepare.1"] {
            assert!(dir.path().join("man").join(page).is_file(), "{page}");
        }
        assert!(!dir.path().join("man/tool-generate-assets.1").exists());
        for file in ["tool.bash", "_tool", "tool.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(file)).unwrap();
            assert!(
                text.contains("prepare") && text.contains("dry-run"),
                "{file}"
            );
            assert!(
                !text.contains("generate-assets"),
                "{file} offers the hidden subcommand"
            );
        }
    }
}
