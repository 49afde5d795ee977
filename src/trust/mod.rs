//! `[[trust]]`: an image a rule covers runs only when its digest carries a cosign signature
//! by one of the rule's keys, and then from that digest (`repository@sha256:…`), so nothing
//! can change between the check and the run.
//!
//! Contract of [`check`]: given the digests the engine recorded for the pulled image (what
//! will run) and the registry it came from, read `<repository>:sha256-<hex>.sig` there with
//! the pull's own login, and accept the first digest for which every covering rule has a
//! simple-signing payload that one of its keys verifies and that names that digest
//! ([`cosign`]). One manifest and one small blob request per signature; no transparency log.
//! A refusal ([`Refusal`]) is the job's failure; a registry that cannot be reached is the
//! runner's.

pub(crate) mod cosign;
pub(crate) mod keys;
pub(crate) mod registry;

use std::fmt;
use std::time::Duration;

use crate::auth::login::Login;
use crate::config::trust::TrustRule;
use crate::error::{ConfigError, TrustError};
use crate::policy::AllowList;
use crate::reference::ImageRef;
use keys::TrustedKey;
use registry::{Fetch, OciRegistry, Registry};

/// The loaded `[[trust]]` rules: patterns and the keys read from their files.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Policy {
    rules: Vec<Rule>,
}

/// One rule, numbered as in the config (1-based).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub number: usize,
    pub images: AllowList,
    pub keys: Vec<TrustedKey>,
}

impl Policy {
    /// Reads every key file the rules name. An unreadable file, or one that is not an ECDSA
    /// P-256 public key, is a config error naming the file.
    pub(crate) fn load(rules: &[TrustRule]) -> Result<Policy, ConfigError> {
        let mut loaded = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let mut keys = Vec::new();
            for path in &rule.keys {
                let key = TrustedKey::load(path).map_err(|why| ConfigError::TrustKey {
                    rule: i + 1,
                    path: path.clone(),
                    why,
                })?;
                keys.push(key);
            }
            loaded.push(Rule {
                number: i + 1,
                images: rule.images.clone(),
                keys,
            });
        }
        Ok(Policy { rules: loaded })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that cover `requested` (the job's name) or `used` (the name pulled: a
    /// pull-through cache's), in any of their [`spellings`].
    pub(crate) fn covering_either(&self, requested: &ImageRef, used: &ImageRef) -> Vec<&Rule> {
        let mut names = spellings(requested, &requested.pull_reference());
        names.extend(spellings(used, &used.pull_reference()));
        self.covering(&names)
    }

    /// The rules that cover an image known by any of `names` (see [`spellings`]).
    pub(crate) fn covering(&self, names: &[String]) -> Vec<&Rule> {
        self.rules
            .iter()
            .filter(|r| names.iter().any(|n| r.images.allows(n)))
            .collect()
    }
}

/// The names a rule's patterns are matched against for `image`: as written, as pulled
/// (`:latest` added), and canonical (Docker Hub's `docker.io/library/`, a lower-case host, no
/// `:443`), so that no spelling of a covered image slips past its rule.
pub(crate) fn spellings(image: &ImageRef, written: &str) -> Vec<String> {
    let mut names = vec![written.trim().to_owned(), image.pull_reference()];
    let (host, path) = image.canonical();
    let host = host.strip_suffix(":443").unwrap_or(&host);
    let mut canonical = ImageRef {
        registry: Some(host.to_owned()),
        repository: path,
        ..image.clone()
    };
    names.push(canonical.pull_reference());
    canonical.tag = None;
    if canonical.digest.is_some() {
        names.push(canonical.pull_reference());
    }
    names.dedup();
    names
}

/// An image whose signature verified: what to run, and who vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// `repository@sha256:…`, as the engine records it: what the container is created from.
    pub pinned: String,
    pub digest: String,
    /// The key that verified it, one per covering rule (a key file, its fingerprint).
    pub keys: Vec<(String, String)>,
    /// The repository the signer named (`critical.identity.docker-reference`).
    pub signed_reference: String,
}

impl Verified {
    /// The job log's one line.
    pub(crate) fn line(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|(described, _)| described.clone())
            .collect();
        format!(
            "Verified the cosign signature of {} with key {}",
            self.pinned,
            keys.join(" and ")
        )
    }
}

/// Why an image a rule covers may not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Built or loaded on the host: no registry digest, so nothing to look a signature up by.
    NoDigest,
    /// No `sha256-<hex>.sig` in its repository.
    Unsigned { digest: String },
    /// Signed, but by none of the rule's keys.
    UntrustedKey { digest: String, signatures: usize },
    /// A trusted key signed a payload for another digest.
    OtherDigest { digest: String, signed: String },
    /// The signature artifact could not be read as one.
    Unreadable { digest: String, why: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoDigest => write!(
                f,
                "it has no digest from a registry (it was built or loaded on this host), so no \
                 signature can name it"
            ),
            Refusal::Unsigned { digest } => write!(f, "{digest} has no cosign signature"),
            Refusal::UntrustedKey { digest, signatures } => write!(
                f,
                "{digest} has {signatures} cosign signature(s), none by a trusted key"
            ),
            Refusal::OtherDigest { digest, signed } => write!(
                f,
                "its signature by a trusted key is for another image ({signed}, not {digest})"
            ),
            Refusal::Unreadable { digest, why } => {
                write!(f, "the signature of {digest} cannot be read: {why}")
            }
        }
    }
}

/// How a check ended without a verified image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The job's image may not run: which rule, and why.
    Refused { rule: usize, refusal: Refusal },
    /// The registry could not answer.
    Unreachable(String),
}

/// How long reading one image's signatures may take, all requests together.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Checks `used` (the name pulled; the job's is `shown`) against `rules` on its registry,
/// logging in with `login`: the candidate `digests` (`repository@sha256:…`, as the engine
/// recorded them), or with `None` the digest its tag resolves to now (for `auth check`).
pub(crate) async fn verify(
    rules: &[&Rule],
    shown: &str,
    used: &ImageRef,
    digests: Option<Vec<String>>,
    login: Option<&Login>,
) -> Result<Verified, TrustError> {
    let first = rules.first().map_or(0, |r| r.number);
    let refused = |rule, refusal: Refusal| TrustError::Refused {
        image: shown.to_owned(),
        rule,
        reason: refusal.to_string(),
    };
    let unreachable = |message| TrustError::Unreachable {
        image: shown.to_owned(),
        registry: used.registry_host().to_owned(),
        message,
    };
    if digests.as_ref().is_some_and(Vec::is_empty) {
        return Err(refused(first, Refusal::NoDigest));
    }
    let (host, path) = used.canonical();
    let work = async {
        let registry = match OciRegistry::open(&host, &path, login).await {
            Ok(r) => r,
            Err(Fetch::Unreachable(m)) => return Err(unreachable(m)),
            Err(Fetch::Missing) => {
                return Err(unreachable("it has no registry API at /v2/".into()));
            }
            Err(Fetch::Denied(why) | Fetch::Invalid(why)) => {
                return Err(refused(
                    first,
                    Refusal::Unreadable {
                        digest: used.pull_reference(),
                        why: format!("the registry refused the login: {why}"),
                    },
                ));
            }
        };
        let digests = match digests {
            Some(d) => d,
            None => {
                let tagged = used.tag.as_deref().unwrap_or("latest");
                let digest = match &used.digest {
                    Some(d) => d.clone(),
                    None => registry.digest(tagged).await.map_err(|f| match f {
                        Fetch::Unreachable(m) => unreachable(m),
                        Fetch::Missing => refused(
                            first,
                            Refusal::Unreadable {
                                digest: used.pull_reference(),
                                why: "the registry has no such image".into(),
                            },
                        ),
                        Fetch::Denied(why) | Fetch::Invalid(why) => refused(
                            first,
                            Refusal::Unreadable {
                                digest: used.pull_reference(),
                                why,
                            },
                        ),
                    })?,
                };
                vec![format!("{host}/{path}@{digest}")]
            }
        };
        match check(rules, &digests, &registry).await {
            Ok(verified) => Ok(verified),
            Err(Failed::Refused { rule, refusal }) => Err(refused(rule, refusal)),
            Err(Failed::Unreachable(m)) => Err(unreachable(m)),
        }
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
}

/// Checks the image `repository` (as the engine names it) whose candidate digests are
/// `digests` (`repository@sha256:…`, from the engine) against `rules`, reading signatures
/// through `registry`. See the module's documentation.
pub(crate) async fn check<R: Registry>(
    rules: &[&Rule],
    digests: &[String],
    registry: &R,
) -> Result<Verified, Failed> {
    let first_rule = rules.first().map_or(0, |r| r.number);
    let mut first_refusal = None;
    for pinned in digests {
        let Some((_, digest)) = pinned.rsplit_once('@') else {
            continue;
        };
        match check_digest(rules, pinned, digest, registry).await {
            Ok(verified) => return Ok(verified),
            Err(Failed::Unreachable(why)) => return Err(Failed::Unreachable(why)),
            Err(refused) => {
                first_refusal.get_or_insert(refused);
            }
        }
    }
    Err(first_refusal.unwrap_or(Failed::Refused {
        rule: first_rule,
        refusal: Refusal::NoDigest,
    }))
}

async fn check_digest<R: Registry>(
    rules: &[&Rule],
    pinned: &str,
    digest: &str,
    registry: &R,
) -> Result<Verified, Failed> {
    let first_rule = rules.first().map_or(0, |r| r.number);
    let refused = |refusal| Failed::Refused {
        rule: first_rule,
        refusal,
    };
    let unreadable = |why: String| {
        refused(Refusal::Unreadable {
            digest: digest.to_owned(),
            why,
        })
    };
    let Some(tag) = cosign::signature_tag(digest) else {
        return Err(unreadable(format!("{digest} is not a sha256 digest")));
    };
    let manifest = match registry.manifest(&tag).await {
        Ok(m) => m,
        Err(Fetch::Missing) => {
            return Err(refused(Refusal::Unsigned {
                digest: digest.to_owned(),
            }));
        }
        Err(Fetch::Unreachable(why)) => return Err(Failed::Unreachable(why)),
        Err(Fetch::Denied(why)) => {
            return Err(unreadable(format!("the registry refused {tag}: {why}")));
        }
        Err(Fetch::Invalid(why)) => return Err(unreadable(why)),
    };
    let layers = cosign::signed_layers(&manifest).map_err(unreadable)?;
    // Each signature: its claim, and the keys (of any rule) it verifies under.
    let mut signatures = Vec::new();
    for layer in &layers {
        let payload = match registry.blob(&layer.digest, layer.size).await {
            Ok(p) => p,
            Err(Fetch::Unreachable(why)) => return Err(Failed::Unreachable(why)),
            Err(Fetch::Missing) => {
                return Err(unreadable(format!(
                    "its payload {} is missing",
                    layer.digest
                )));
            }
            Err(Fetch::Denied(why) | Fetch::Invalid(why)) => return Err(unreadable(why)),
        };
        signatures.push((payload, &layer.signature));
    }
    let mut keys = Vec::new();
    let mut signed_reference = String::new();
    for rule in rules {
        let mut other_digest = None;
        let found = signatures.iter().find_map(|(payload, signature)| {
            let key = rule.keys.iter().find(|k| k.verifies(payload, signature))?;
            match cosign::claim(payload) {
                Ok(claim) if claim.digest == digest => Some((key, claim)),
                Ok(claim) => {
                    other_digest.get_or_insert(claim.digest);
                    None
                }
                Err(_) => None,
            }
        });
        let Some((key, claim)) = found else {
            let refusal = match other_digest {
                Some(signed) => Refusal::OtherDigest {
                    digest: digest.to_owned(),
                    signed,
                },
                None => Refusal::UntrustedKey {
                    digest: digest.to_owned(),
                    signatures: signatures.len(),
                },
            };
            return Err(Failed::Refused {
                rule: rule.number,
                refusal,
            });
        };
        signed_reference = claim.reference;
        keys.push((key.describe(), key.fingerprint.clone()));
    }
    keys.dedup();
    Ok(Verified {
        pinned: pinned.to_owned(),
        digest: digest.to_owned(),
        keys,
        signed_reference,
    })
}

#[cfg(test)]
mod tests;
