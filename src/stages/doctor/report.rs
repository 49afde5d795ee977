//! The lines `doctor` prints: one per check, `✔`, `✘` (with the fix) or not checked.

use crate::output;

/// The lines so far, and how many failed.
#[derive(Default)]
pub(crate) struct Report {
    pub failures: usize,
}

impl Report {
    pub(crate) fn ok(&mut self, check: &str, detail: impl std::fmt::Display) {
        output::info(format!("✔ {check}: {detail}"));
    }

    pub(crate) fn fail(&mut self, check: &str, detail: impl std::fmt::Display) {
        self.failures += 1;
        output::info(format!("✘ {check}: {detail}"));
    }

    /// A check that could not run, because an earlier one failed.
    pub(crate) fn skip(&mut self, check: &str, why: &str) {
        output::info(format!("- {check}: not checked: {why}"));
    }
}
