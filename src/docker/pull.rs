//! Getting an image onto the Docker host under a list of pull policies, with progress in the
//! job log: one line each time a layer changes state, never one per progress tick.
//!
//! An image a `[[pull_through]]` rule covers is pulled under the cache's name instead, with the
//! cache's ECR credentials. When the cache cannot serve it (not found, access denied), the
//! rule's `fallback` decides: the name the job wrote, from upstream with upstream's
//! credentials, or a failure naming both names. Throttling, 5xx and unreachable registries
//! are not "cannot serve": they fail the prepare as any pull's do, and the runner retries it.
//!
//! An image a `[[trust]]` rule covers (by the job's name or the name pulled) is then checked
//! ([`crate::trust`]): the digests the engine recorded for it, with the same login.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ImageInspect;

use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::client::is_not_found;
use crate::auth::ecr::TokenFetcher;
use crate::auth::{Credentials, Resolver};
use crate::config::pull_through::{Fallback, Route};
use crate::config::security::CachedImages;
use crate::error::{AuthError, EngineError, Error, PolicyError, PullError, PullFailure, Result};
use crate::output;
use crate::pull_policy::PullPolicy;
use crate::reference::ImageRef;
use crate::reference::ecr::{EcrHost, parse_ecr_host};
use crate::trust::{self, Policy, Verified};

/// An image on the engine's host, and how it got there.
#[derive(Debug)]
pub(crate) struct Pulled {
    pub inspect: ImageInspect,
    /// The reference used: the cache's name, or the job's when it was not routed or fell back.
    pub reference: String,
    /// Whose credentials pulled it; `None` when it was already there or pulled anonymously.
    pub credentials: Option<Credentials>,
    /// Whether it was pulled now (else it was already on the host).
    pub pulled: bool,
    /// For an image already on the host: what confirmed that this job may use it.
    pub cached: Option<CachedCheck>,
    /// The signature check of a `[[trust]]` rule that covers it.
    pub verified: Option<Verified>,
}

impl Pulled {
    /// What its container is created from: the digest whose signature was verified, else the
    /// image's ID. Never a tag, which could move after the pull.
    pub(crate) fn image_to_run(&self) -> String {
        match &self.verified {
            Some(v) => v.pinned.clone(),
            None => self.inspect.id.clone().unwrap_or_default(),
        }
    }
}

/// Why a job may use an image that was already on the host ([`CachedImages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CachedCheck {
    /// The registry served its manifest to this job's credentials (or anonymously).
    Confirmed,
    /// It has no digest from a registry: built or loaded on the host by its operator.
    Local,
    /// The registry could not be reached, and `verify-when-reachable` ran the cached copy.
    Unconfirmed,
    /// `cached_images = "trust"`: not asked.
    Trusted,
}

impl CachedCheck {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CachedCheck::Confirmed => "confirmed",
            CachedCheck::Local => "local",
            CachedCheck::Unconfirmed => "unconfirmed",
            CachedCheck::Trusted => "trusted",
        }
    }
}

/// How a pull is announced in the job log.
#[derive(Clone, Copy)]
enum Announce<'a> {
    Plain,
    /// Through a pull-through cache: the name the job wrote, and the rule.
    Routed {
        requested: &'a str,
        route: &'a Route,
    },
}

/// Makes `image` available, through the pull-through cache of `route` when there is one, and
/// when a `[[trust]]` rule covers it, checks its signature; see the module's documentation.
pub(crate) async fn ensure_image<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    route: Option<&Route>,
    policies: &[PullPolicy],
    platform: Option<&str>,
    auth: &Resolver<'_, F>,
    trust: &Policy,
) -> Result<Pulled> {
    let mut pulled = obtain(docker, image, route, policies, platform, auth).await?;
    pulled.verified = signed(trust, image, &pulled, auth).await?;
    Ok(pulled)
}

/// The signature check of `pulled` (the job's `requested`) under the `[[trust]]` rules that
/// cover either name, with the login its pull used (or would use); `None` when no rule does.
async fn signed<F: TokenFetcher>(
    trust: &Policy,
    requested: &ImageRef,
    pulled: &Pulled,
    auth: &Resolver<'_, F>,
) -> Result<Option<Verified>> {
    if trust.is_empty() {
        return Ok(None);
    }
    let used = ImageRef::parse(&pulled.reference).map_err(|reason| PolicyError::InvalidImage {
        image: pulled.reference.clone(),
        reason,
    })?;
    let rules = trust.covering_either(requested, &used);
    if rules.is_empty() {
        return Ok(None);
    }
    let canonical = used.canonical();
    let digests: Vec<String> = (pulled.inspect.repo_digests.iter().flatten())
        .filter(|d| ImageRef::parse(d).is_ok_and(|r| r.canonical() == canonical))
        .cloned()
        .collect();
    let credentials = match &pulled.credentials {
        Some(c) => Some(c.clone()),
        None if digests.is_empty() => None,
        None => auth.credentials_for(&used).await?,
    };
    let login = credentials.as_ref().map(Credentials::login);
    let shown = requested.pull_reference();
    let verified = trust::verify(&rules, &shown, &used, Some(digests), login).await?;
    output::info(verified.line());
    Ok(Some(verified))
}

/// [`ensure_image`] without the signature check.
async fn obtain<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    route: Option<&Route>,
    policies: &[PullPolicy],
    platform: Option<&str>,
    auth: &Resolver<'_, F>,
) -> Result<Pulled> {
    let Some(route) = route else {
        return ensure(docker, image, policies, platform, auth, Announce::Plain).await;
    };
    let requested = image.pull_reference();
    let routed = route.image.pull_reference();
    let announce = Announce::Routed {
        requested: &requested,
        route,
    };
    let error = match ensure(docker, &route.image, policies, platform, auth, announce).await {
        Ok(pulled) => return Ok(pulled),
        Err(e) => e,
    };
    let Some(reason) = not_served(&error) else {
        return Err(error);
    };
    match route.fallback {
        Fallback::Upstream => {
            output::warn(format!(
                "the pull-through cache could not serve {requested} as {routed} ({reason}); \
                 pulling {requested} from {} instead (fallback = \"upstream\")",
                route.upstream
            ));
            ensure(docker, image, policies, platform, auth, Announce::Plain).await
        }
        Fallback::Fail => Err(Error::Pull(PullError::PullThrough {
            requested,
            routed,
            rule: route.rule + 1,
            upstream: route.upstream.clone(),
            reason,
        })),
    }
}

/// Why a failed pull means the cache cannot serve the image (no rule on the ECR side, no such
/// repository or tag, access denied), or `None` for a failure of another kind (throttling,
/// server errors, an engine or network down), which no other registry would fix.
fn not_served(error: &Error) -> Option<String> {
    match error {
        Error::Pull(e) => match e.failure_kind() {
            PullFailure::Other => None,
            PullFailure::NotFound | PullFailure::Denied | PullFailure::NeedsCredentials => {
                Some(e.reason())
            }
        },
        Error::Auth(AuthError::AwsDenied { .. }) => Some(error.to_string()),
        _ => None,
    }
}

/// Makes `image` available, trying `policies` in order (a later one is a fallback for an
/// earlier failure, as in the Docker executor). Registry credentials are resolved only when
/// a pull really happens.
async fn ensure<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    policies: &[PullPolicy],
    platform: Option<&str>,
    auth: &Resolver<'_, F>,
    announce: Announce<'_>,
) -> Result<Pulled> {
    let reference = image.pull_reference();
    let mut last = None;
    for (i, policy) in policies.iter().enumerate() {
        let attempt = match policy {
            PullPolicy::Never | PullPolicy::IfNotPresent => {
                match local_id(docker, &reference).await? {
                    Some(inspect) => match verify_cached(docker, image, &inspect, auth).await {
                        Ok(check) => {
                            if let Announce::Routed { requested, route } = announce {
                                output::info(format!(
                                    "Using {reference} for {requested} ([[pull_through]] #{} \
                                     for {}): present on the host",
                                    route.rule + 1,
                                    route.upstream
                                ));
                            }
                            return Ok(Pulled {
                                inspect,
                                reference,
                                credentials: None,
                                pulled: false,
                                cached: Some(check),
                                verified: None,
                            });
                        }
                        // The next policy (`always`, say) may still pull it for this job.
                        Err(e) => Err(e),
                    },
                    None if *policy == PullPolicy::Never => {
                        Err(Error::Pull(PullError::NotPresent {
                            image: reference.clone(),
                        }))
                    }
                    None => pull(docker, image, platform, auth, announce).await,
                }
            }
            PullPolicy::Always => pull(docker, image, platform, auth, announce).await,
        };
        match attempt {
            Ok(credentials) => {
                let inspect = local_id(docker, &reference).await?.ok_or_else(|| {
                    Error::Pull(PullError::Failed {
                        image: reference.clone(),
                        message: "the image is missing right after the pull".into(),
                        failure: PullFailure::Other,
                    })
                })?;
                return Ok(Pulled {
                    inspect,
                    reference,
                    credentials,
                    pulled: true,
                    cached: None,
                    verified: None,
                });
            }
            Err(e) => {
                if let Some(next) = policies.get(i + 1) {
                    output::warn(format!("{e}; trying the next pull policy ({next})"));
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(Error::Pull(PullError::Failed {
        image: reference,
        message: "no pull policy to apply".into(),
        failure: PullFailure::Other,
    })))
}

/// Whether this job may use `inspect`, found on the host as `image`. Under `verify`, an
/// image that came from a registry (it has a digest from this repository) is used only when
/// the registry serves its manifest to this job's own credentials: a manifest request
/// through the engine (`GET /distribution/.../json`), which pulls no layers. Otherwise
/// another job's pull would hand this one a private image it could never pull itself.
async fn verify_cached<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    inspect: &ImageInspect,
    auth: &Resolver<'_, F>,
) -> Result<CachedCheck> {
    let mode = auth.config().security.cached_images;
    if mode == CachedImages::Trust {
        return Ok(CachedCheck::Trusted);
    }
    let wanted = image.canonical();
    let from_registry = inspect
        .repo_digests
        .iter()
        .flatten()
        .any(|d| ImageRef::parse(d).is_ok_and(|r| r.canonical() == wanted));
    if !from_registry {
        return Ok(CachedCheck::Local);
    }
    let credentials = auth.credentials_for(image).await?;
    let reference = image.pull_reference();
    let Err(e) = docker
        .inspect_registry_image(&reference, credentials.as_ref().map(Credentials::docker))
        .await
    else {
        return Ok(CachedCheck::Confirmed);
    };
    let message = pull_error_message(e);
    let who = credentials.as_ref().map_or_else(
        || "no credentials (anonymously)".to_owned(),
        Credentials::who,
    );
    match classify(&message, credentials.is_some()) {
        PullFailure::Other if mode == CachedImages::VerifyWhenReachable => {
            output::warn(format!(
                "Using {reference} from the host without the registry's confirmation that \
                 this job may read it: {message} ([security] cached_images = \
                 \"verify-when-reachable\")"
            ));
            Ok(CachedCheck::Unconfirmed)
        }
        PullFailure::Other => Err(PullError::CachedUnconfirmed {
            image: reference,
            message,
        }
        .into()),
        failure => Err(PullError::CachedNotReadable {
            image: reference,
            who,
            message,
            failure,
        }
        .into()),
    }
}

/// The local image, or `None` when it is not on the host.
async fn local_id(docker: &Docker, reference: &str) -> Result<Option<ImageInspect>> {
    match docker.inspect_image(reference).await {
        Ok(image) => Ok(Some(image)),
        Err(e) if is_not_found(&e) => Ok(None),
        // The reference passed Docker's grammar here, but this engine's is older (IPv6
        // registry hosts came later): still the job's reference, not the engine's failure.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 400,
            message,
        }) if message.contains("invalid reference format") => {
            Err(Error::Policy(PolicyError::InvalidImage {
                image: reference.to_owned(),
                reason: "this Docker engine does not accept it as a reference (older engines \
                     refuse IPv6 registry hosts)"
                    .into(),
            }))
        }
        Err(e) => Err(Error::docker("inspect image", reference, e)),
    }
}

/// Pulls `image`, saying in the job log what and with whose credentials (never the secret);
/// returns those credentials.
async fn pull<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    platform: Option<&str>,
    auth: &Resolver<'_, F>,
    announce: Announce<'_>,
) -> Result<Option<Credentials>> {
    let credentials = auth.credentials_for(image).await?;
    let reference = image.pull_reference();
    let with = credentials
        .as_ref()
        .map(|c| format!(" with {}", c.who()))
        .unwrap_or_default();
    output::info(match announce {
        Announce::Plain => format!("Pulling image {reference}{with} ..."),
        Announce::Routed { requested, route } => format!(
            "Pulling {requested} through the pull-through cache as {reference} \
             ([[pull_through]] #{} for {}){with} ...",
            route.rule + 1,
            route.upstream
        ),
    });
    let reference = reference.as_str();
    let options = CreateImageOptions {
        from_image: Some(reference.to_owned()),
        platform: platform.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let mut stream = docker.create_image(
        Some(options),
        None,
        credentials.as_ref().map(|c| c.docker()),
    );
    let mut progress = Progress::default();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| failed_request(image, e, &credentials))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(pull_error(image, detail, &credentials));
        }
        if let Some(line) = progress.line(info.id.as_deref(), info.status.as_deref()) {
            output::info(line);
        }
    }
    Ok(credentials)
}

/// What the engine's words for a failed pull mean, decided once, here. Docker words a refusal
/// "pull access denied for x, repository does not exist or may require 'docker login': denied:
/// <the registry's reason>": the refusal goes first, and without credentials a refusal may
/// hide a private image.
fn classify(message: &str, sent_credentials: bool) -> PullFailure {
    let lower = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&[
        "denied",
        "unauthorized",
        "forbidden",
        "not authorized",
        "no basic auth credentials",
        "may require 'docker login'",
    ]) {
        if sent_credentials {
            PullFailure::Denied
        } else {
            PullFailure::NeedsCredentials
        }
    } else if has(&[
        "manifest unknown",
        "not found",
        "name unknown",
        "does not exist",
    ]) {
        PullFailure::NotFound
    } else {
        PullFailure::Other
    }
}

/// A failed pull as the error that names its fix: the image is not there (naming the ECR
/// account, region, repository and tag), the registry refused the driver's ECR token (naming
/// whose), or it wanted credentials the driver did not have.
fn pull_error(image: &ImageRef, message: String, credentials: &Option<Credentials>) -> Error {
    let reference = image.pull_reference();
    let failure = classify(&message, credentials.is_some());
    let token = credentials.as_ref().and_then(Credentials::token);
    let error = match (failure, token) {
        (PullFailure::Denied, Some(token)) => PullError::Denied {
            image: reference,
            principal: token.arn.clone().unwrap_or_else(|| token.identity.clone()),
            message,
        },
        (PullFailure::NeedsCredentials, _) => PullError::Failed {
            image: reference,
            message: format!(
                "{message} (the driver has no credentials for this registry: declare it as ECR \
                 with a `[[registry]]` entry in the driver config, or provide \
                 DOCKER_AUTH_CONFIG)"
            ),
            failure,
        },
        (PullFailure::NotFound, _) => {
            let registry = match parse_ecr_host(image.registry_host()) {
                Some(EcrHost::Private {
                    registry_id,
                    region,
                    ..
                }) => format!("ECR registry {registry_id} in {region}"),
                Some(EcrHost::Public) => "ECR Public".to_owned(),
                None => format!("registry {}", image.registry_host()),
            };
            let wanted = match (&image.tag, &image.digest) {
                (_, Some(digest)) => format!("{}@{digest}", image.repository),
                (Some(tag), None) => format!("{}:{tag}", image.repository),
                (None, None) => format!("{}:latest", image.repository),
            };
            PullError::NotFound {
                image: reference,
                registry,
                wanted,
                message,
            }
        }
        (PullFailure::Denied | PullFailure::Other, _) => PullError::Failed {
            image: reference,
            message: match engine_side_fix(&message) {
                Some(fix) => format!("{message}; {fix}"),
                None => message,
            },
            failure,
        },
    };
    error.into()
}

/// The fix for a pull the engine itself could not finish: its disk full, or a layer that does
/// not match its digest (Docker: "filesystem layer verification failed for digest ...").
fn engine_side_fix(message: &str) -> Option<&'static str> {
    if message.contains("no space left on device") {
        Some(
            "the Docker engine's disk is full: free space under its data root (`docker system \
             df` shows what uses it; `docker image prune -a` removes unused images) or give it \
             a bigger disk",
        )
    } else if message.contains("verification failed for digest") {
        Some(
            "a layer the registry sent does not match its digest (damaged by the registry, a \
             proxy or the network); the runner retries prepare, and if it happens again the \
             registry's copy is damaged: push the image again",
        )
    } else {
        None
    }
}

/// A pull request that failed: an engine lost on the way (its connection refused or cut, as
/// by a restart) is the engine's error, anything the engine answered is the pull's.
fn failed_request(
    image: &ImageRef,
    e: bollard::errors::Error,
    credentials: &Option<Credentials>,
) -> Error {
    match EngineError::new("pull", image.pull_reference(), e) {
        EngineError::Api { source, .. } => {
            pull_error(image, pull_error_message(source), credentials)
        }
        lost => lost.into(),
    }
}

fn pull_error_message(e: bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerStreamError { error } => error,
        E::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

/// Turns the pull event stream into readable lines: a line when a layer changes state.
#[derive(Default)]
struct Progress {
    layers: HashMap<String, String>,
}

impl Progress {
    fn line(&mut self, id: Option<&str>, status: Option<&str>) -> Option<String> {
        let status = status?.trim();
        if status.is_empty() {
            return None;
        }
        match id {
            Some(id) if !id.is_empty() => {
                if self.layers.get(id).is_some_and(|s| s == status) {
                    return None;
                }
                self.layers.insert(id.to_owned(), status.to_owned());
                Some(format!("  {id}: {status}"))
            }
            _ => Some(format!("  {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_prints_state_changes_only() {
        let mut p = Progress::default();
        let events = [
            (Some("3"), Some("Pulling from library/alpine")),
            (Some("abc"), Some("Pulling fs layer")),
            (Some("abc"), Some("Downloading")),
            (Some("abc"), Some("Downloading")),
            (Some("abc"), Some("Downloading")),
            (Some("def"), Some("Downloading")),
            (Some("abc"), Some("Download complete")),
            (Some("abc"), Some("Extracting")),
            (Some("abc"), Some("Extracting")),
            (Some("abc"), Some("Pull complete")),
            (None, Some("Digest: sha256:00")),
            (None, None),
        ];
        let lines: Vec<String> = events
            .iter()
            .filter_map(|(id, s)| p.line(*id, *s))
            .collect();
        assert_eq!(
            lines,
            [
                "  3: Pulling from library/alpine",
                "  abc: Pulling fs layer",
                "  abc: Downloading",
                "  def: Downloading",
                "  abc: Download complete",
                "  abc: Extracting",
                "  abc: Pull complete",
                "  Digest: sha256:00",
            ]
        );
    }
}
