//! `[[trust]]`: every key file each rule names is an ECDSA P-256 public key this user can
//! read, shown with its fingerprint (what the audit trail records).

use super::report::Report;
use crate::stages::Context;
use crate::trust::keys::TrustedKey;

pub(crate) fn check(ctx: &Context, report: &mut Report) {
    if ctx.config.trust.is_empty() {
        return report.ok(
            "trust",
            "no [[trust]] rule: images run without a signature check",
        );
    }
    for (i, rule) in ctx.config.trust.iter().enumerate() {
        let check = format!("[[trust]] #{}", i + 1);
        for path in &rule.keys {
            match TrustedKey::load(path) {
                Ok(key) => report.ok(
                    &check,
                    format!(
                        "key {} ({}) for {}",
                        path.display(),
                        key.fingerprint,
                        rule.images.patterns().join(", ")
                    ),
                ),
                Err(why) => report.fail(
                    &check,
                    format!(
                        "key file {}: {why}; fix the file or the rule's `keys`",
                        path.display()
                    ),
                ),
            }
        }
    }
}
