//! `[[trust]]`: images signed the way `cosign sign --key` stores signatures (an OCI manifest at
//! `sha256-<hex>.sig` whose simple-signing layer carries the signature annotation), pushed to
//! real registries with plain registry API calls; the driver runs only what a trusted key
//! signed, from the digest it verified.

use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cached::Registry;
use crate::harness::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A signer's key pair; the public half is a PEM file, as `cosign.pub`.
struct Key {
    signing: SigningKey,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Key {
    fn new(seed: u8) -> Key {
        let mut bytes = [0x42u8; 32];
        bytes[31] = seed;
        let signing = SigningKey::from_slice(&bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("signer-{seed}.pub"));
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(&file, pem).unwrap();
        Key {
            signing,
            file,
            _dir: dir,
        }
    }

    /// What the audit trail records: SHA-256 of the DER public key.
    fn fingerprint(&self) -> String {
        let der = self.signing.verifying_key().to_public_key_der().unwrap();
        sha256(der.as_bytes())
    }
}

/// A registry the tests push to: its host and the login it takes.
struct Target {
    host: String,
    login: Option<(String, String)>,
}

impl Target {
    fn anonymous(registry: &Registry) -> Target {
        Target {
            host: format!("127.0.0.1:{}", registry.port),
            login: None,
        }
    }

    fn auth(&self) -> RegistryAuth {
        match &self.login {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Pushes the local image `local` as `<host>/<path>`, returns its digest, and removes the
    /// tag from the host so that jobs really pull it.
    fn push(&self, local: &str, path: &str) -> String {
        let image = format!("{}/{path}", self.host);
        let config = tempfile::tempdir().unwrap();
        let config_dir = config.path().to_str().unwrap();
        docker(&["tag", local, &image]);
        if let Some((user, password)) = &self.login {
            let status = std::process::Command::new("docker")
                .args([
                    "--config", config_dir, "login", "-u", user, "-p", password, &self.host,
                ])
                .output()
                .unwrap();
            assert!(status.status.success(), "{status:?}");
        }
        let out = std::process::Command::new("docker")
            .args(["--config", config_dir, "push", &image])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let digest = text
            .split_whitespace()
            .find(|w| w.starts_with("sha256:") && w.len() == 71)
            .unwrap_or_else(|| panic!("no digest in {text}"))
            .to_owned();
        docker(&["rmi", &image]);
        digest
    }

    /// Stores a cosign signature of `payload_digest` (claimed for `repository`) by `key` as
    /// the signature of `digest`.
    fn sign_as(&self, path: &str, digest: &str, payload_digest: &str, key: &Key) {
        let repository = path.split(':').next().unwrap();
        let payload = json!({
            "critical": {
                "identity": {"docker-reference": format!("{}/{repository}", self.host)},
                "image": {"docker-manifest-digest": payload_digest},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string()
        .into_bytes();
        let signature: Signature = key.signing.sign(&payload);
        let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der());
        let config = br#"{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#.to_vec();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": sha256(&config)},
            "layers": [{
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "size": payload.len(),
                "digest": sha256(&payload),
                "annotations": {"dev.cosignproject.cosign/signature": signature}
            }]
        })
        .to_string();
        let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        let reference = Reference::with_tag(self.host.clone(), repository.to_owned(), tag);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = Client::new(ClientConfig {
                protocol: ClientProtocol::Http,
                ..Default::default()
            });
            client
                .auth(&reference, &self.auth(), RegistryOperation::Push)
                .await
                .unwrap();
            client
                .push_blob(&reference, config.clone(), &sha256(&config))
                .await
                .unwrap();
            client
                .push_blob(&reference, payload.clone(), &sha256(&payload))
                .await
                .unwrap();
            client
                .push_manifest_raw(
                    &reference,
                    manifest.into_bytes(),
                    "application/vnd.oci.image.manifest.v1+json"
                        .parse()
                        .unwrap(),
                )
                .await
                .unwrap();
        });
    }

    fn sign(&self, path: &str, digest: &str, key: &Key) {
        self.sign_as(path, digest, digest, key);
    }
}

/// A `[[trust]]` rule for `images` with `keys`.
fn rule(images: &[&str], keys: &[&Path]) -> String {
    format!(
        "[[trust]]\nimages = {images:?}\nkeys = {:?}\n",
        keys.iter()
            .map(|k| k.display().to_string())
            .collect::<Vec<_>>()
    )
}

fn pulling(image: &str) -> JobBuilder {
    Job::builder(image).payload_image(json!({"name": image, "pull_policy": ["always"]}))
}

fn inspect_image(container: &str) -> String {
    docker(&["inspect", "--format", "{{.Config.Image}}", container]).join("")
}

/// A tag of this test process's own, so that runs never share one.
fn tag(name: &str) -> String {
    format!("trust/{name}:{}", std::process::id())
}

#[track_caller]
fn assert_refused(prepare: &Output, image: &str, reason: &str) {
    prepare.assert_code(BUILD_FAILURE);
    let expected = format!("{image} may not run: {reason}");
    assert!(
        prepare.stderr.contains(&expected) && prepare.stderr.matches("ERROR").count() == 1,
        "wanted {expected:?} in:\n{}",
        prepare.stderr
    );
}

#[test]
fn a_signed_image_runs_from_the_digest_that_was_verified() {
    let registry = Registry::start();
    let target = Target::anonymous(&registry);
    let key = Key::new(1);
    let path = tag("signed");
    let digest = target.push(BUSYBOX, &path);
    target.sign(&path, &digest, &key);
    let image = format!("{}/{path}", target.host);
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("pulls.jsonl");
    let job = pulling(&image)
        .config(&rule(&[&format!("{}/trust/**", target.host)], &[&key.file]))
        .config(&format!("[audit]\nfile = {trail:?}"))
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    let pinned = format!(
        "{}/{}@{digest}",
        target.host,
        path.split(':').next().unwrap()
    );
    let line = format!(
        "Verified the cosign signature of {pinned} with key {} ({}",
        key.file.display(),
        &key.fingerprint()[..23]
    );
    assert!(prepare.stdout().contains(&line), "{}", prepare.stdout());
    assert_eq!(inspect_image(&job.build_container()), pinned);
    let run = job.run("build_script", "echo signed-and-running");
    run.assert_ok();
    assert!(run.stdout().contains("signed-and-running"));

    let text = std::fs::read_to_string(&trail).unwrap();
    let build: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["role"] == "build")
        .unwrap();
    assert_eq!(build["signature_verified"], true, "{build}");
    assert_eq!(build["signature_keys"], json!([key.fingerprint()]));
    assert_eq!(build["digest"], pinned.as_str());
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn unsigned_foreign_mismatched_and_moved_images_are_refused_before_any_script() {
    let registry = Registry::start();
    let target = Target::anonymous(&registry);
    let (trusted, stranger) = (Key::new(2), Key::new(3));
    let rules = rule(&[&format!("{}/trust/**", target.host)], &[&trusted.file]);

    let unsigned = tag("unsigned");
    let unsigned_digest = target.push(BUSYBOX, &unsigned);
    let foreign = tag("foreign");
    let foreign_digest = target.push(BUSYBOX, &foreign);
    target.sign(&foreign, &foreign_digest, &stranger);
    // The trusted key signed the helper image; that signature is stored under busybox's digest.
    let mismatched = tag("mismatched");
    let helper_digest = target.push(HELPER, &tag("helper-for-mismatch"));
    let mismatched_digest = target.push(BUSYBOX, &mismatched);
    target.sign_as(&mismatched, &mismatched_digest, &helper_digest, &trusted);
    // Signed, then the tag moved to another image.
    let moved = tag("moved");
    let signed_digest = target.push(BUSYBOX, &moved);
    target.sign(&moved, &signed_digest, &trusted);
    let moved_digest = target.push(HELPER, &moved);
    assert_ne!(moved_digest, signed_digest);

    for (path, reason) in [
        (
            &unsigned,
            format!("{unsigned_digest} has no cosign signature"),
        ),
        (
            &foreign,
            format!("{foreign_digest} has 1 cosign signature(s), none by a trusted key"),
        ),
        (
            &mismatched,
            format!(
                "its signature by a trusted key is for another image ({helper_digest}, not {mismatched_digest})"
            ),
        ),
        (&moved, format!("{moved_digest} has no cosign signature")),
    ] {
        let image = format!("{}/{path}", target.host);
        let job = pulling(&image).config(&rules).build();
        let prepare = job.prepare();
        assert_refused(&prepare, &image, &reason);
        assert!(
            prepare.stderr.contains("[[trust]] rule #1"),
            "{}",
            prepare.stderr
        );
        assert!(
            docker(&[
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("name={}", job.build_container())
            ])
            .is_empty(),
            "no container was made for a refused image"
        );
        job.cleanup().assert_ok();
        assert_no_leftovers(&job);
    }
}

#[test]
fn an_image_no_rule_covers_runs_as_today_and_a_cached_one_under_a_rule_is_checked() {
    let registry = Registry::start();
    let target = Target::anonymous(&registry);
    let key = Key::new(4);
    let rules = rule(&[&format!("{}/trust/**", target.host)], &[&key.file]);

    let outside = format!("other/app:{}", std::process::id());
    target.push(BUSYBOX, &outside);
    let image = format!("{}/{outside}", target.host);
    let job = pulling(&image).config(&rules).build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stdout().contains("Verified"),
        "{}",
        prepare.stdout()
    );
    assert!(inspect_image(&job.build_container()).starts_with("sha256:"));
    job.cleanup().assert_ok();

    // On the host already, under `if-not-present`: checked without a pull, both ways.
    let path = tag("cached");
    let digest = target.push(BUSYBOX, &path);
    let image = format!("{}/{path}", target.host);
    docker(&["pull", &image]);
    let job = Job::builder(&image).config(&rules).build();
    let prepare = job.prepare();
    assert_refused(
        &prepare,
        &image,
        &format!("{digest} has no cosign signature"),
    );
    assert!(
        !prepare.stdout().contains("Pulling"),
        "{}",
        prepare.stdout()
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    target.sign(&path, &digest, &key);
    let job = Job::builder(&image).config(&rules).build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        !prepare.stdout().contains("Pulling") && prepare.stdout().contains("Verified"),
        "{}",
        prepare.stdout()
    );
    job.cleanup().assert_ok();
    docker(&["rmi", &image]);
}

#[test]
fn services_and_the_helper_image_are_checked_too() {
    let registry = Registry::start();
    let target = Target::anonymous(&registry);
    let key = Key::new(5);
    let helper = tag("helper");
    let helper_digest = target.push(HELPER, &helper);
    target.sign(&helper, &helper_digest, &key);
    let helper_image = format!("{}/{helper}", target.host);
    let service = tag("service");
    let service_digest = target.push(BUSYBOX, &service);
    let service_image = format!("{}/{service}", target.host);
    let config = format!(
        "helper_image = \"{helper_image}\"\n{}",
        rule(&[&format!("{}/trust/**", target.host)], &[&key.file])
    );
    let services = json!([{
        "name": service_image,
        "alias": "svc",
        "pull_policy": ["always"],
        "entrypoint": ["sh", "-c"],
        "command": ["sleep 300"]
    }]);
    let job = Job::builder(BUSYBOX)
        .only_config(&config.replace("helper_image", "pull_policy = [\"if-not-present\"]\nallowed_pull_policies = [\"if-not-present\", \"always\"]\nhelper_image"))
        .services(services.clone())
        .build();
    let prepare = job.prepare();
    assert_refused(
        &prepare,
        &service_image,
        &format!("{service_digest} has no cosign signature"),
    );
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);

    target.sign(&service, &service_digest, &key);
    let job = Job::builder(BUSYBOX)
        .only_config(&config.replace("helper_image", "pull_policy = [\"if-not-present\"]\nallowed_pull_policies = [\"if-not-present\", \"always\"]\nhelper_image"))
        .services(services)
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    let repository = |p: &str| format!("{}/{}", target.host, p.split(':').next().unwrap());
    assert_eq!(
        inspect_image(&format!("{}-helper", job.key())),
        format!("{}@{helper_digest}", repository(&helper))
    );
    assert_eq!(
        inspect_image(&format!("{}-svc0", job.key())),
        format!("{}@{service_digest}", repository(&service))
    );
    job.run("build_script", "echo with-signed-service")
        .assert_ok();
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
    docker(&["rmi", &helper_image]);
}

#[test]
fn an_ecr_image_under_a_rule_is_read_with_the_ecr_login_of_its_pull() {
    let w = world();
    let key = Key::new(6);
    let target = Target {
        host: w.ecr_host(RUNNER_ACCOUNT),
        login: Some(("AWS".into(), format!("{RUNNER_ACCOUNT}-auth-token"))),
    };
    let path = tag("ecr");
    let digest = target.push(BUSYBOX, &path);
    let image = format!("{}/{path}", target.host);
    let rules = rule(&[&format!("{}/trust/**", target.host)], &[&key.file]);
    let job = pulling(&image)
        .aws(&w.moto)
        .config("[ecr]\ncache_dir = \"@TMP@/cache\"")
        .config(&rules)
        .build();
    let prepare = job.prepare();
    assert_refused(
        &prepare,
        &image,
        &format!("{digest} has no cosign signature"),
    );
    assert!(!prepare.all().contains("auth-token"), "never the token");
    job.cleanup().assert_ok();

    target.sign(&path, &digest, &key);
    let job = pulling(&image)
        .aws(&w.moto)
        .config("[ecr]\ncache_dir = \"@TMP@/cache\"")
        .config(&rules)
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stdout().contains(&format!(
            "Verified the cosign signature of {}/trust/ecr@{digest}",
            target.host
        )),
        "{}",
        prepare.stdout()
    );
    assert!(!prepare.all().contains("auth-token"), "never the token");
    job.cleanup().assert_ok();
    assert_no_leftovers(&job);
}

#[test]
fn bad_key_files_are_config_errors_and_auth_check_and_doctor_report_signatures() {
    let registry = Registry::start();
    let target = Target::anonymous(&registry);
    let key = Key::new(7);
    let path = tag("checked");
    let digest = target.push(BUSYBOX, &path);
    let image = format!("{}/{path}", target.host);
    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("not-a-key.pub");
    std::fs::write(&not_a_key, "ssh-ed25519 AAAA user@host\n").unwrap();

    let job = pulling(&image)
        .config(&rule(
            &[&format!("{}/trust/**", target.host)],
            &[&not_a_key],
        ))
        .build();
    let prepare = job.prepare();
    prepare.assert_code(SYSTEM_FAILURE);
    assert!(
        prepare.stderr.contains(&format!(
            "[[trust]] #1 names the key file {}, but it is not an ECDSA P-256 public key",
            not_a_key.display()
        )) && prepare.stderr.matches("ERROR").count() == 1,
        "{}",
        prepare.stderr
    );
    let doctor = job.driver(&["doctor"]);
    assert!(
        doctor
            .all()
            .contains(&format!("key file {}", not_a_key.display())),
        "{}",
        doctor.all()
    );
    job.cleanup().assert_ok();

    let rules = rule(&[&format!("{}/trust/**", target.host)], &[&key.file]);
    let job = pulling(&image).config(&rules).build();
    let unsigned = job.driver(&["auth", "check", &image]);
    unsigned.assert_code(BUILD_FAILURE);
    assert!(
        unsigned
            .all()
            .contains("trust:    [[trust]] #1 cover(s) it")
            && unsigned
                .all()
                .contains(&format!("{digest} has no cosign signature")),
        "{}",
        unsigned.all()
    );
    target.sign(&path, &digest, &key);
    let signed = job.driver(&["auth", "check", &image]);
    signed.assert_ok();
    assert!(
        signed
            .all()
            .contains("signed:   yes. Verified the cosign signature of"),
        "{}",
        signed.all()
    );
    let doctor = job.driver(&["doctor"]);
    assert!(
        doctor.all().contains(&format!(
            "key {} ({})",
            key.file.display(),
            key.fingerprint()
        )),
        "{}",
        doctor.all()
    );
    job.cleanup().assert_ok();
}
