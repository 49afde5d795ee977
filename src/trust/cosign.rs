//! Cosign's key-based signatures as `cosign sign --key` stores them: for an image digest
//! `sha256:<hex>`, an OCI manifest at tag `sha256-<hex>.sig` of the same repository, whose
//! layers of type [`SIMPLE_SIGNING`] are payloads (JSON naming the signed digest), each with
//! its base64 ECDSA signature in the [`SIGNATURE`] annotation. Pure: the bytes come from
//! [`super::registry`].

use base64::Engine;
use serde::Deserialize;

/// The media type of a signed payload.
pub(crate) const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding a payload's signature.
pub(crate) const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// More signature layers than this is not a signature artifact any signer makes.
const MAX_LAYERS: usize = 32;
/// A payload is a few hundred bytes.
pub(crate) const MAX_PAYLOAD: i64 = 64 * 1024;

/// The tag cosign stores the signatures of `digest` under, or `None` for a digest that is
/// not `sha256:<64 hex>`.
pub(crate) fn signature_tag(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| format!("sha256-{hex}.sig"))
}

/// One signed payload listed in a signature manifest, before its bytes are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedLayer {
    pub digest: String,
    pub size: i64,
    /// The DER signature, decoded from the annotation.
    pub signature: Vec<u8>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The signed payloads a signature manifest lists; an error says why the manifest is not a
/// cosign signature artifact.
pub(crate) fn signed_layers(manifest: &[u8]) -> Result<Vec<SignedLayer>, String> {
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("its signature manifest is not an OCI manifest ({e})"))?;
    let signed: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING)
        .collect();
    if signed.is_empty() {
        return Err(format!(
            "its signature manifest has no {SIMPLE_SIGNING} layer"
        ));
    }
    if signed.len() > MAX_LAYERS {
        return Err(format!(
            "its signature manifest lists {} signatures, more than {MAX_LAYERS}",
            signed.len()
        ));
    }
    let mut layers = Vec::new();
    for layer in signed {
        let Some(encoded) = layer.annotations.get(SIGNATURE) else {
            continue;
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("a signature in its signature manifest is not base64 ({e})"))?;
        if !(0..=MAX_PAYLOAD).contains(&layer.size) {
            return Err(format!(
                "a signed payload in its signature manifest has {} bytes, more than {MAX_PAYLOAD}",
                layer.size
            ));
        }
        layers.push(SignedLayer {
            digest: layer.digest.clone(),
            size: layer.size,
            signature,
        });
    }
    if layers.is_empty() {
        return Err(format!(
            "no layer of its signature manifest carries a {SIGNATURE} annotation"
        ));
    }
    Ok(layers)
}

/// What a simple-signing payload claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// `critical.image.docker-manifest-digest`: the digest signed.
    pub digest: String,
    /// `critical.identity.docker-reference`: the repository the signer named. Recorded, not
    /// required to match: cosign does not check it either, so a signature copied with its
    /// image (to a mirror, through a pull-through cache) still verifies.
    pub reference: String,
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(default)]
    identity: Option<Identity>,
    image: Image,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference", default)]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The claim of a payload's bytes (already verified by a key).
pub(crate) fn claim(payload: &[u8]) -> Result<Claim, String> {
    let payload: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("a signed payload is not cosign's simple signing JSON ({e})"))?;
    Ok(Claim {
        digest: payload.critical.image.docker_manifest_digest,
        reference: payload
            .critical
            .identity
            .map(|i| i.docker_reference)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn payload_for(reference: &str, digest: &str) -> Vec<u8> {
        json!({
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string()
        .into_bytes()
    }

    /// A layer for [`manifest_for`]: media type, payload, signature (none: no annotation).
    pub(crate) type TestLayer<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

    pub(crate) fn manifest_for(layers: &[TestLayer<'_>]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|(media_type, payload, signature)| {
                let mut annotations = serde_json::Map::new();
                if let Some(s) = signature {
                    annotations.insert(
                        SIGNATURE.into(),
                        base64::engine::general_purpose::STANDARD.encode(s).into(),
                    );
                }
                json!({
                    "mediaType": media_type,
                    "size": payload.len(),
                    "digest": format!("sha256:{}", crate::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(payload))),
                    "annotations": annotations,
                })
            })
            .collect();
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
            "layers": layers,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn the_signature_tag_is_cosigns() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            signature_tag(&digest).unwrap(),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
        assert_eq!(signature_tag("sha512:abc"), None);
        assert_eq!(signature_tag("sha256:AB"), None);
    }

    #[test]
    fn signed_layers_are_the_annotated_simple_signing_ones() {
        let payload = payload_for("r.example/app", "sha256:1");
        let manifest = manifest_for(&[
            (SIMPLE_SIGNING, &payload, Some(b"sig")),
            ("application/vnd.dev.sigstore.bundle+json", b"x", Some(b"y")),
            (SIMPLE_SIGNING, b"unsigned", None),
        ]);
        let layers = signed_layers(&manifest).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].signature, b"sig");
        assert_eq!(layers[0].size, payload.len() as i64);
        assert_eq!(
            claim(&payload).unwrap(),
            Claim {
                digest: "sha256:1".into(),
                reference: "r.example/app".into()
            }
        );
    }

    #[test]
    fn what_is_not_a_signature_artifact_says_why() {
        for (manifest, why) in [
            (b"{".to_vec(), "not an OCI manifest"),
            (
                manifest_for(&[("text/plain", b"x", Some(b"s"))]),
                "no application/vnd.dev.cosign.simplesigning.v1+json layer",
            ),
            (
                manifest_for(&[(SIMPLE_SIGNING, b"x", None)]),
                "carries a dev.cosignproject.cosign/signature",
            ),
        ] {
            let err = signed_layers(&manifest).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let bad64 = String::from_utf8(manifest_for(&[(SIMPLE_SIGNING, b"x", Some(b"s"))]))
            .unwrap()
            .replace("cw==", "!!");
        assert!(
            signed_layers(bad64.as_bytes())
                .unwrap_err()
                .contains("not base64")
        );
        assert!(
            claim(b"{\"critical\":{}}")
                .unwrap_err()
                .contains("simple signing")
        );
    }
}
