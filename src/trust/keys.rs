//! The operator's public keys: ECDSA P-256 in PEM (`-----BEGIN PUBLIC KEY-----`), as
//! `cosign generate-key-pair` writes `cosign.pub`, each named in messages by its file and a
//! fingerprint (SHA-256 of the key's DER `SubjectPublicKeyInfo`).

use std::path::{Path, PathBuf};

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use crate::util::hex;

/// A key file is a few hundred bytes; anything far larger is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// One trusted public key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrustedKey {
    pub path: PathBuf,
    /// `sha256:<hex>` of the key's DER `SubjectPublicKeyInfo`.
    pub fingerprint: String,
    key: VerifyingKey,
}

impl TrustedKey {
    /// Reads the key at `path`; the error says what is wrong with the file, without naming it
    /// (the caller does).
    pub(crate) fn load(path: &Path) -> Result<TrustedKey, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read it: {e}"))?
            .len();
        if size > MAX_KEY_FILE {
            return Err(format!("it has {size} bytes, too many for a public key"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        TrustedKey::from_pem(path, &text)
    }

    pub(crate) fn from_pem(path: &Path, text: &str) -> Result<TrustedKey, String> {
        if text.contains("PRIVATE KEY-----") {
            return Err("it holds a private key; name the public key (cosign.pub)".into());
        }
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
            format!(
                "it is not an ECDSA P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`, as \
                 cosign generate-key-pair writes cosign.pub): {e}"
            )
        })?;
        let der = key
            .to_public_key_der()
            .map_err(|e| format!("cannot encode the key: {e}"))?;
        Ok(TrustedKey {
            path: path.to_owned(),
            fingerprint: format!("sha256:{}", hex(&Sha256::digest(der.as_bytes()))),
            key,
        })
    }

    /// Whether `signature` (ASN.1 DER, as cosign stores it) is this key's over `payload`
    /// (ECDSA with SHA-256). A high-S signature, which Go's `crypto/ecdsa` makes and accepts,
    /// counts too.
    pub(crate) fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_der(signature) else {
            return false;
        };
        let signature = signature.normalize_s().unwrap_or(signature);
        self.key.verify(payload, &signature).is_ok()
    }

    /// `file (sha256:0123456789abcdef…)`, for the job log.
    pub(crate) fn describe(&self) -> String {
        let short: String = self.fingerprint.chars().take(7 + 16).collect();
        format!("{} ({short}…)", self.path.display())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::LineEnding;

    /// A signing key from a seed byte (any non-zero scalar is a key).
    pub(crate) fn signing_key(seed: u8) -> SigningKey {
        let mut bytes = [0u8; 32];
        bytes[31] = seed;
        bytes[0] = 0x11;
        SigningKey::from_slice(&bytes).unwrap()
    }

    pub(crate) fn public_pem(key: &SigningKey) -> String {
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    pub(crate) fn trusted(seed: u8) -> TrustedKey {
        let key = signing_key(seed);
        TrustedKey::from_pem(Path::new("/keys/k.pub"), &public_pem(&key)).unwrap()
    }

    #[test]
    fn a_key_verifies_its_own_signatures_and_no_other() {
        let (one, two) = (signing_key(1), signing_key(2));
        let key = trusted(1);
        let payload = b"{\"critical\":{}}";
        let signature: Signature = one.sign(payload);
        let der = signature.to_der();
        assert!(key.verifies(payload, der.as_bytes()));
        assert!(!key.verifies(b"{\"critical\":{ }}", der.as_bytes()));
        let other: Signature = two.sign(payload);
        assert!(!key.verifies(payload, other.to_der().as_bytes()));
        assert!(!key.verifies(payload, b"not DER"));
        assert!(key.fingerprint.starts_with("sha256:") && key.fingerprint.len() == 7 + 64);
        assert_ne!(key.fingerprint, trusted(2).fingerprint);
    }

    #[test]
    fn high_s_signatures_verify_as_in_go() {
        use p256::elliptic_curve::ops::Neg;
        let key = signing_key(3);
        let payload = b"payload";
        let low: Signature = key.sign(payload);
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r, s.neg()).unwrap();
        assert!(
            high.normalize_s().is_some(),
            "the negated s is the high one"
        );
        assert!(trusted(3).verifies(payload, high.to_der().as_bytes()));
    }

    #[test]
    fn files_that_are_not_p256_public_keys_are_refused_with_the_reason() {
        let path = Path::new("/k");
        let rsa = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMvxsD4Q2eTgn5K2i6R+ST/LxUPMCV/u\nnGd1LSqMnJR9QZT1gTLOVkzoW1WjTR3UbV2WYvmW4S8m1I8ZJV4kBu0CAwEAAQ==\n-----END PUBLIC KEY-----\n";
        let err = TrustedKey::from_pem(path, rsa).unwrap_err();
        assert!(err.contains("not an ECDSA P-256 public key"), "{err}");
        let err = TrustedKey::from_pem(path, "hello").unwrap_err();
        assert!(err.contains("not an ECDSA P-256 public key"), "{err}");
        let err = TrustedKey::from_pem(
            path,
            "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("private key"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = TrustedKey::load(&dir.path().join("missing.pub")).unwrap_err();
        assert!(err.contains("cannot read it"), "{err}");
    }
}
