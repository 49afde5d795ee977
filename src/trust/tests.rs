//! The verification against a registry held in memory: each refusal, and what is accepted.

use std::collections::HashMap;
use std::path::Path;

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

use super::cosign::SIMPLE_SIGNING;
use super::cosign::tests::{manifest_for, payload_for};
use super::keys::tests::{public_pem, signing_key};
use super::*;
use crate::util::hex;

#[derive(Default)]
struct Memory {
    manifests: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, Vec<u8>>,
    down: bool,
}

impl Registry for Memory {
    async fn manifest(&self, tag: &str) -> Result<Vec<u8>, Fetch> {
        if self.down {
            return Err(Fetch::Unreachable("connection refused".into()));
        }
        self.manifests.get(tag).cloned().ok_or(Fetch::Missing)
    }

    async fn blob(&self, digest: &str, _size: i64) -> Result<Vec<u8>, Fetch> {
        self.blobs.get(digest).cloned().ok_or(Fetch::Missing)
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

impl Memory {
    /// Stores a signature of `payload` by `key` for image `digest`.
    fn sign(&mut self, digest: &str, payload: &[u8], key: &SigningKey) {
        let signature: Signature = key.sign(payload);
        let der = signature.to_der();
        let tag = cosign::signature_tag(digest).unwrap();
        self.blobs.insert(digest_of(payload), payload.to_vec());
        self.manifests.insert(
            tag,
            manifest_for(&[(SIMPLE_SIGNING, payload, Some(der.as_bytes()))]),
        );
    }
}

fn rule(number: usize, patterns: &[&str], seeds: &[u8]) -> Rule {
    Rule {
        number,
        images: AllowList::try_from(patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            .unwrap(),
        keys: seeds
            .iter()
            .map(|s| {
                TrustedKey::from_pem(Path::new("/k.pub"), &public_pem(&signing_key(*s))).unwrap()
            })
            .collect(),
    }
}

const REPO: &str = "registry.example.com/team/app";

fn image_digest(n: u8) -> String {
    format!("sha256:{}", hex(&[n; 32]))
}

fn pinned(n: u8) -> String {
    format!("{REPO}@{}", image_digest(n))
}

async fn run(registry: &Memory, rules: &[Rule], digests: &[String]) -> Result<Verified, Failed> {
    let rules: Vec<&Rule> = rules.iter().collect();
    check(&rules, digests, registry).await
}

#[tokio::test]
async fn a_signature_by_a_trusted_key_for_the_digest_verifies_and_pins_it() {
    let mut registry = Memory::default();
    registry.sign(
        &image_digest(1),
        &payload_for(REPO, &image_digest(1)),
        &signing_key(7),
    );
    let verified = run(&registry, &[rule(1, &["**"], &[9, 7])], &[pinned(1)])
        .await
        .unwrap();
    assert_eq!(verified.pinned, pinned(1));
    assert_eq!(verified.digest, image_digest(1));
    assert_eq!(verified.signed_reference, REPO);
    assert_eq!(verified.keys.len(), 1);
    assert!(verified.line().starts_with(&format!(
        "Verified the cosign signature of {} with key /k.pub (sha256:",
        pinned(1)
    )));
}

#[tokio::test]
async fn each_refusal_says_why() {
    let mut registry = Memory::default();
    let rules = [rule(2, &["**"], &[7])];
    assert_eq!(
        run(&registry, &rules, &[pinned(1)]).await.unwrap_err(),
        Failed::Refused {
            rule: 2,
            refusal: Refusal::Unsigned {
                digest: image_digest(1)
            }
        }
    );
    registry.sign(
        &image_digest(1),
        &payload_for(REPO, &image_digest(1)),
        &signing_key(8),
    );
    assert_eq!(
        run(&registry, &rules, &[pinned(1)]).await.unwrap_err(),
        Failed::Refused {
            rule: 2,
            refusal: Refusal::UntrustedKey {
                digest: image_digest(1),
                signatures: 1
            }
        }
    );
    // A trusted signature copied under another image's tag names the other digest.
    registry.sign(
        &image_digest(1),
        &payload_for(REPO, &image_digest(2)),
        &signing_key(7),
    );
    assert_eq!(
        run(&registry, &rules, &[pinned(1)]).await.unwrap_err(),
        Failed::Refused {
            rule: 2,
            refusal: Refusal::OtherDigest {
                digest: image_digest(1),
                signed: image_digest(2)
            }
        }
    );
    assert_eq!(
        run(&registry, &rules, &[]).await.unwrap_err(),
        Failed::Refused {
            rule: 2,
            refusal: Refusal::NoDigest
        }
    );
    registry.manifests.insert(
        cosign::signature_tag(&image_digest(3)).unwrap(),
        b"{}".to_vec(),
    );
    assert!(matches!(
        run(&registry, &rules, &[pinned(3)]).await.unwrap_err(),
        Failed::Refused {
            refusal: Refusal::Unreadable { .. },
            ..
        }
    ));
    registry.down = true;
    assert!(matches!(
        run(&registry, &rules, &[pinned(1)]).await.unwrap_err(),
        Failed::Unreachable(_)
    ));
}

#[tokio::test]
async fn every_covering_rule_must_be_satisfied_and_any_candidate_digest_may_be() {
    let mut registry = Memory::default();
    registry.sign(
        &image_digest(2),
        &payload_for(REPO, &image_digest(2)),
        &signing_key(7),
    );
    let rules = [
        rule(1, &["**"], &[7]),
        rule(2, &["registry.example.com/team/**"], &[8]),
    ];
    assert!(matches!(
        run(&registry, &rules, &[pinned(2)]).await.unwrap_err(),
        Failed::Refused {
            rule: 2,
            refusal: Refusal::UntrustedKey { .. }
        }
    ));
    let verified = run(&registry, &rules[..1], &[pinned(1), pinned(2)])
        .await
        .unwrap();
    assert_eq!(
        verified.pinned,
        pinned(2),
        "the unsigned candidate is passed over"
    );
}

#[test]
fn rules_cover_every_spelling_of_an_image() {
    let policy = Policy {
        rules: vec![
            rule(1, &["docker.io/library/*"], &[1]),
            rule(2, &["registry.example.com/base/*"], &[1]),
        ],
    };
    for (written, covered_by) in [
        ("busybox", vec![1]),
        ("docker.io/library/busybox:1", vec![1]),
        ("index.docker.io/library/busybox", vec![1]),
        ("registry.example.com/base/app", vec![2]),
        ("REGISTRY.example.com/base/app:2", vec![2]),
        ("registry.example.com:443/base/app", vec![2]),
        (
            "registry.example.com/base/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            vec![2],
        ),
        ("registry.example.com/other/app", vec![]),
    ] {
        let image = ImageRef::parse(written).unwrap();
        let numbers: Vec<usize> = policy
            .covering(&spellings(&image, written))
            .iter()
            .map(|r| r.number)
            .collect();
        assert_eq!(numbers, covered_by, "{written}");
    }
}

#[test]
fn key_files_are_read_at_load_and_named_when_bad() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("team.pub");
    std::fs::write(&good, public_pem(&signing_key(1))).unwrap();
    let bad = dir.path().join("rsa.pub");
    std::fs::write(
        &bad,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let rules = |keys: Vec<std::path::PathBuf>| {
        vec![TrustRule {
            images: AllowList::try_from(vec!["**".to_owned()]).unwrap(),
            keys,
        }]
    };
    let policy = Policy::load(&rules(vec![good.clone()])).unwrap();
    assert_eq!(policy.rules[0].keys[0].path, good);
    for (path, why) in [
        (bad, "not an ECDSA P-256 public key"),
        (dir.path().join("none.pub"), "cannot read it"),
    ] {
        let err = Policy::load(&rules(vec![path.clone()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains(why)
                && err.contains("[[trust]] #1"),
            "{err}"
        );
    }
}
