//! Getting an image onto the Docker host under a list of pull policies, with progress in the
//! job log: one line each time a layer changes state, never one per progress tick.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ImageInspect;

use crate::auth::Resolver;
use crate::auth::ecr::TokenFetcher;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::client::is_not_found;
use crate::error::{Error, Result};
use crate::output;
use crate::pull_policy::PullPolicy;
use crate::reference::ImageRef;

/// Makes `image` available, trying `policies` in order (a later one is a fallback for an
/// earlier failure, as in the Docker executor). Registry credentials are resolved only when
/// a pull really happens. Returns the local image's inspect data.
pub(crate) async fn ensure_image<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    policies: &[PullPolicy],
    platform: Option<&str>,
    auth: &Resolver<'_, F>,
) -> Result<ImageInspect> {
    let reference = image.pull_reference();
    let mut last = None;
    for (i, policy) in policies.iter().enumerate() {
        let attempt = match policy {
            PullPolicy::Never | PullPolicy::IfNotPresent => {
                match local_id(docker, &reference).await? {
                    Some(id) => return Ok(id),
                    None if *policy == PullPolicy::Never => Err(Error::ImageNotPresent {
                        image: reference.clone(),
                    }),
                    None => pull(docker, image, platform, auth).await,
                }
            }
            PullPolicy::Always => pull(docker, image, platform, auth).await,
        };
        match attempt {
            Ok(()) => {
                return local_id(docker, &reference)
                    .await?
                    .ok_or_else(|| Error::Pull {
                        image: reference.clone(),
                        message: "the image is missing right after the pull".into(),
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
    Err(last.unwrap_or(Error::Pull {
        image: reference,
        message: "no pull policy to apply".into(),
    }))
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
        }) if message.contains("invalid reference format") => Err(Error::InvalidImage {
            image: reference.to_owned(),
            reason: "this Docker engine does not accept it as a reference (older engines \
                     refuse IPv6 registry hosts)"
                .into(),
        }),
        Err(e) => Err(Error::docker("inspect image", reference, e)),
    }
}

async fn pull<F: TokenFetcher>(
    docker: &Docker,
    image: &ImageRef,
    platform: Option<&str>,
    auth: &Resolver<'_, F>,
) -> Result<()> {
    let credentials = auth.credentials_for(image).await?;
    let reference = image.pull_reference();
    match &credentials {
        Some(c) => output::info(format!(
            "Pulling image {reference} as {} ...",
            c.username.as_deref().unwrap_or("?")
        )),
        None => output::info(format!("Pulling image {reference} ...")),
    }
    let reference = reference.as_str();
    let options = CreateImageOptions {
        from_image: Some(reference.to_owned()),
        platform: platform.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let anonymous = credentials.is_none();
    let mut stream = docker.create_image(Some(options), None, credentials);
    let mut progress = Progress::default();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| Error::Pull {
            image: reference.to_owned(),
            message: with_auth_hint(pull_error_message(e), anonymous),
        })?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(Error::Pull {
                image: reference.to_owned(),
                message: detail,
            });
        }
        if let Some(line) = progress.line(info.id.as_deref(), info.status.as_deref()) {
            output::info(line);
        }
    }
    Ok(())
}

/// Points at the fix when a registry wanted credentials the driver did not have.
fn with_auth_hint(message: String, anonymous: bool) -> String {
    if anonymous
        && (message.contains("no basic auth credentials") || message.contains("unauthorized"))
    {
        format!(
            "{message} (the driver has no credentials for this registry: declare it as ECR with \
             a `[[registry]]` entry in the driver config, or provide DOCKER_AUTH_CONFIG)"
        )
    } else {
        message
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
