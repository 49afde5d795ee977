//! Reading signature artifacts from a repository's registry, with the login its pull uses:
//! [`Registry`] is the small trait the verification asks, [`OciRegistry`] its implementation
//! on `oci-client` (the registry's token handshake, Basic or Bearer, and digest checks of
//! what it serves).
//!
//! HTTPS first, as the engine does; a registry whose host resolves only to loopback (where
//! Docker allows plain HTTP without configuration) is tried over HTTP when HTTPS fails.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use secrecy::ExposeSecret;
use tokio::io::AsyncWrite;

use crate::auth::login::Login;

/// Manifest types a signature artifact may be stored as.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Manifest types the digest of a tag is asked for with (`auth check`), as the engine pulls.
const IMAGE_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Why something could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// The registry has no such manifest or blob.
    Missing,
    /// The registry refused the login (or its absence).
    Denied(String),
    /// What it served is not what was asked for (a digest mismatch, too large, malformed).
    Invalid(String),
    /// It could not be reached, timed out, throttled, or failed on its side.
    Unreachable(String),
}

/// One repository of a registry, as the signature check reads it.
pub(crate) trait Registry {
    /// The manifest at `tag`, or [`Fetch::Missing`].
    async fn manifest(&self, tag: &str) -> Result<Vec<u8>, Fetch>;
    /// The blob `digest`, of at most `size` bytes, checked against its digest.
    async fn blob(&self, digest: &str, size: i64) -> Result<Vec<u8>, Fetch>;
}

/// A repository on a registry, reached with `oci-client`.
pub(crate) struct OciRegistry {
    client: Client,
    registry: String,
    repository: String,
}

impl OciRegistry {
    /// Connects to `repository` on `host` (as the engine names it: `docker.io` for Docker
    /// Hub) and goes through its authentication handshake with `login`, or anonymously.
    pub(crate) async fn open(
        host: &str,
        repository: &str,
        login: Option<&Login>,
    ) -> Result<OciRegistry, Fetch> {
        let auth = match login {
            None => RegistryAuth::Anonymous,
            Some(l) if l.identity_token => {
                return Err(Fetch::Unreachable(
                    "the login for it is an identity token, which signature checks cannot use \
                     yet; give the registry a username and password in DOCKER_AUTH_CONFIG"
                        .into(),
                ));
            }
            Some(l) => RegistryAuth::Basic(l.username.clone(), l.password.expose_secret().into()),
        };
        let open = |protocol| async {
            let registry = OciRegistry {
                client: Client::new(client_config(protocol)),
                registry: host.to_owned(),
                repository: repository.to_owned(),
            };
            registry
                .client
                .auth(
                    &registry.reference("latest"),
                    &auth,
                    RegistryOperation::Pull,
                )
                .await
                .map(|_| registry)
        };
        match open(ClientProtocol::Https).await {
            Ok(registry) => Ok(registry),
            Err(OciDistributionError::RequestError(e)) if resolves_to_loopback(host).await => {
                drop(e);
                open(ClientProtocol::Http).await.map_err(fetch_error)
            }
            Err(e) => Err(fetch_error(e)),
        }
    }

    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_owned(),
        )
    }

    /// The digest `tag` resolves to (the index's, for a multi-platform image, as a pull
    /// records it).
    pub(crate) async fn digest(&self, tag: &str) -> Result<String, Fetch> {
        self.client
            .pull_manifest_raw(&self.reference(tag), &RegistryAuth::Anonymous, IMAGE_TYPES)
            .await
            .map(|(_, digest)| digest)
            .map_err(fetch_error)
    }
}

impl Registry for OciRegistry {
    async fn manifest(&self, tag: &str) -> Result<Vec<u8>, Fetch> {
        // The login was stored by `open`; the one given here is not used again.
        self.client
            .pull_manifest_raw(
                &self.reference(tag),
                &RegistryAuth::Anonymous,
                MANIFEST_TYPES,
            )
            .await
            .map(|(body, _)| body.to_vec())
            .map_err(fetch_error)
    }

    async fn blob(&self, digest: &str, size: i64) -> Result<Vec<u8>, Fetch> {
        let limit = usize::try_from(size).unwrap_or(0);
        let descriptor = OciDescriptor {
            digest: digest.to_owned(),
            size,
            ..Default::default()
        };
        let mut out = Capped {
            bytes: Vec::with_capacity(limit),
            limit,
        };
        self.client
            .pull_blob(&self.reference("latest"), &descriptor, &mut out)
            .await
            .map_err(fetch_error)?;
        Ok(out.bytes)
    }
}

fn client_config(protocol: ClientProtocol) -> ClientConfig {
    ClientConfig {
        protocol,
        connect_timeout: Some(Duration::from_secs(5)),
        read_timeout: Some(Duration::from_secs(10)),
        user_agent: concat!("ecr-executor/", env!("CARGO_PKG_VERSION")),
        platform_resolver: None,
        ..Default::default()
    }
}

/// Whether every address `host` (`name[:port]`) resolves to is a loopback one.
async fn resolves_to_loopback(host: &str) -> bool {
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:443")
    };
    match tokio::net::lookup_host(with_port).await {
        Ok(addresses) => {
            let addresses: Vec<_> = addresses.collect();
            !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// What an `oci-client` error means for a signature check.
fn fetch_error(error: OciDistributionError) -> Fetch {
    use OciDistributionError as E;
    match error {
        E::ImageManifestNotFoundError(_) => Fetch::Missing,
        E::RegistryError { envelope, .. } => {
            let message = envelope.to_string();
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Fetch::Missing
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Denied | OciErrorCode::Unauthorized))
            {
                Fetch::Denied(message)
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                Fetch::Unreachable(message)
            } else {
                Fetch::Invalid(message)
            }
        }
        E::ServerError { code: 404, .. } => Fetch::Missing,
        E::ServerError {
            code: 401 | 403,
            message,
            ..
        } => Fetch::Denied(one_line(&message)),
        E::ServerError { code, message, .. } if code == 429 || code >= 500 => {
            Fetch::Unreachable(format!("HTTP {code} {}", one_line(&message)))
        }
        E::ServerError { code, message, .. } => {
            Fetch::Invalid(format!("HTTP {code} {}", one_line(&message)))
        }
        E::UnauthorizedError { .. } => Fetch::Denied("401 Unauthorized".into()),
        E::AuthenticationFailure(message) => Fetch::Denied(one_line(&message)),
        E::RequestError(e) => Fetch::Unreachable(request_error(&e)),
        other => Fetch::Invalid(one_line(&other.to_string())),
    }
}

/// A request error in the words of its root cause ("Connection refused (os error 111)").
fn request_error(error: &(dyn std::error::Error + 'static)) -> String {
    let root = crate::error::sources(error).last().unwrap_or(error);
    one_line(&root.to_string())
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

/// Collects a blob in memory up to its declared size, refusing more.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes its manifest declares",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_answers_become_what_they_mean_for_a_check() {
        let server = |code, message: &str| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: message.into(),
        };
        assert_eq!(fetch_error(server(404, "")), Fetch::Missing);
        assert!(matches!(fetch_error(server(403, "no")), Fetch::Denied(_)));
        assert!(
            matches!(fetch_error(server(503, "busy")), Fetch::Unreachable(m) if m.contains("503"))
        );
        assert!(matches!(
            fetch_error(server(429, "slow")),
            Fetch::Unreachable(_)
        ));
        assert!(matches!(fetch_error(server(400, "bad")), Fetch::Invalid(_)));
        let envelope = |code| OciDistributionError::RegistryError {
            envelope: serde_json::from_value(
                serde_json::json!({"errors": [{"code": code, "message": "m"}]}),
            )
            .unwrap(),
            url: "u".into(),
        };
        assert_eq!(fetch_error(envelope("MANIFEST_UNKNOWN")), Fetch::Missing);
        assert!(matches!(fetch_error(envelope("DENIED")), Fetch::Denied(_)));
        assert!(matches!(
            fetch_error(envelope("TOOMANYREQUESTS")),
            Fetch::Unreachable(_)
        ));
    }

    #[test]
    fn a_blob_larger_than_declared_is_refused() {
        let mut capped = Capped {
            bytes: Vec::new(),
            limit: 4,
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut pinned = Pin::new(&mut capped);
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"abc"),
            Poll::Ready(Ok(3))
        ));
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"de"),
            Poll::Ready(Err(_))
        ));
    }

    #[tokio::test]
    async fn loopback_names_and_addresses_are_loopback() {
        assert!(resolves_to_loopback("127.0.0.1:5000").await);
        assert!(resolves_to_loopback("localhost:5000").await);
        assert!(!resolves_to_loopback("10.0.0.1:5000").await);
    }
}
