//! Service containers: pulled with the same policies and credentials as the job image,
//! started on the job's network under their aliases, then waited for.
//!
//! Waiting: each service's TCP ports (its image's exposed ports, or `HEALTHCHECK_TCP_PORT`)
//! are probed from the driver at the container's address on the job network, until
//! `wait_for_services_timeout`. A service that does not come up is a warning with its last
//! log lines, as in the Docker executor; the job still runs. When the driver cannot reach the
//! job network at all (a remote `tcp://` engine, a rootless engine), the wait is skipped with
//! a notice instead of a false warning after the whole timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use futures_util::future::{join_all, try_join_all};
use tokio::time::{Instant, timeout};

use super::audit::{Audit, audited};
use super::containers;
use super::plan::{Plan, ServicePlan, healthcheck_ports};
use crate::auth::Resolver;
use crate::auth::ecr::TokenFetcher;
use crate::config::Config;
use crate::docker::pull::ensure_image;
use crate::docker::state;
use crate::error::Result;
use crate::naming::{Names, image_labels};
use crate::output;

/// A started service and the ports to wait for.
pub(crate) struct Started<'p> {
    pub container: String,
    pub plan: &'p ServicePlan,
    pub ports: Vec<u16>,
}

/// Pulls and starts every service concurrently.
pub(crate) async fn start<'p, F: TokenFetcher>(
    docker: &Docker,
    config: &Config,
    names: &Names,
    plan: &'p Plan,
    labels: impl Fn() -> HashMap<String, String>,
    auth: &Resolver<'_, F>,
    audit: Option<&Audit<'_>>,
) -> Result<Vec<Started<'p>>> {
    let starts = plan.services.iter().enumerate().map(|(i, service)| {
        let labels = labels();
        async move {
            let pull = ensure_image(
                docker,
                &service.image,
                service.route.as_ref(),
                &service.pull_policies,
                None,
                auth,
            );
            let image = audited(audit, "service", &service.image, pull).await?;
            let mut labels = labels;
            labels.extend(image_labels(
                &service.image.pull_reference(),
                &image.reference,
            ));
            let exposed = image
                .inspect
                .config
                .as_ref()
                .and_then(|c| c.exposed_ports.clone())
                .unwrap_or_default();
            let container = names.service(i);
            let body = containers::service(
                config,
                names,
                service,
                image.inspect.id.unwrap_or_default(),
                labels,
            );
            containers::create_and_start(docker, &container, None, &body).await?;
            output::info(format!(
                "Started service {} as {container} (aliases: {})",
                service.name,
                service.aliases.join(", ")
            ));
            Ok(Started {
                container,
                plan: service,
                ports: healthcheck_ports(service, &exposed),
            })
        }
    });
    try_join_all(starts).await
}

/// Waits for every service's ports, warning about those that do not open in time.
pub(crate) async fn wait(
    docker: &Docker,
    network: &str,
    services: &[Started<'_>],
    limit: Duration,
) {
    if limit.is_zero() {
        return;
    }
    let deadline = Instant::now() + limit;
    let waits = services
        .iter()
        .filter(|s| !s.ports.is_empty())
        .map(|s| async move {
            let Some(ip) = address(docker, &s.container, network).await else {
                return Wait::Closed(s, s.ports.clone());
            };
            let probes = s
                .ports
                .iter()
                .map(|port| async move { (*port, probe(ip, *port, deadline).await) });
            let results = join_all(probes).await;
            if results.iter().any(|(_, p)| *p == Probe::Unreachable) {
                return Wait::Unreachable(s);
            }
            let closed: Vec<u16> = results
                .into_iter()
                .filter(|(_, p)| *p == Probe::Closed)
                .map(|(port, _)| port)
                .collect();
            if closed.is_empty() {
                Wait::Up
            } else {
                Wait::Closed(s, closed)
            }
        });
    for wait in join_all(waits).await {
        match wait {
            Wait::Up => {}
            Wait::Unreachable(s) => output::info(format!(
                "Not waiting for service {} ({}): the driver cannot reach the job network \
                 (a remote or rootless engine)",
                s.plan.name, s.container
            )),
            Wait::Closed(s, closed) => {
                let logs = state::last_log_lines(docker, &s.container).await;
                output::warn(format!(
                    "service {} ({}) did not open port(s) {closed:?} within {}s; it probably did not start properly. Its last log lines:\n{}",
                    s.plan.name,
                    s.container,
                    limit.as_secs(),
                    if logs.is_empty() {
                        "(no output)"
                    } else {
                        &logs
                    }
                ));
            }
        }
    }
}

enum Wait<'a, 'p> {
    Up,
    Closed(&'a Started<'p>, Vec<u16>),
    Unreachable(&'a Started<'p>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Open,
    /// Refused until the deadline: the service is reachable but did not listen.
    Closed,
    /// No route or no answer at all: the job network is not reachable from here.
    Unreachable,
}

/// How one failed connect attempt counts. A container on a local engine answers a connect
/// at once, with a refusal while nothing listens; silence or "no route" means the driver is
/// not on that network.
fn classify(result: Option<std::io::Result<()>>) -> Option<Probe> {
    use std::io::ErrorKind;
    match result {
        Some(Ok(())) => Some(Probe::Open),
        None => Some(Probe::Unreachable), // the attempt timed out
        Some(Err(e)) => match e.kind() {
            ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => Some(Probe::Unreachable),
            _ => None, // refused or reset: try again until the deadline
        },
    }
}

/// The container's address on the job network.
async fn address(docker: &Docker, container: &str, network: &str) -> Option<IpAddr> {
    let inspect = docker.inspect_container(container, None).await.ok()?;
    let ip = inspect
        .network_settings?
        .networks?
        .remove(network)?
        .ip_address?;
    ip.parse().ok()
}

async fn probe(ip: IpAddr, port: u16, deadline: Instant) -> Probe {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Probe::Closed;
        }
        let attempt = remaining.min(Duration::from_secs(1));
        let result = timeout(attempt, tokio::net::TcpStream::connect((ip, port)))
            .await
            .ok()
            .map(|r| r.map(drop));
        if let Some(verdict) = classify(result) {
            // A last attempt cut short by the deadline is not evidence of an unreachable network.
            if verdict == Probe::Unreachable && attempt < Duration::from_secs(1) {
                return Probe::Closed;
            }
            return verdict;
        }
        tokio::time::sleep(Duration::from_millis(200).min(remaining)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    #[test]
    fn refusals_are_retried_silence_and_no_route_mean_unreachable() {
        assert_eq!(classify(Some(Ok(()))), Some(Probe::Open));
        assert_eq!(
            classify(Some(Err(Error::from(ErrorKind::ConnectionRefused)))),
            None
        );
        assert_eq!(
            classify(Some(Err(Error::from(ErrorKind::ConnectionReset)))),
            None
        );
        assert_eq!(classify(None), Some(Probe::Unreachable));
        for kind in [ErrorKind::NetworkUnreachable, ErrorKind::HostUnreachable] {
            assert_eq!(
                classify(Some(Err(Error::from(kind)))),
                Some(Probe::Unreachable)
            );
        }
    }
}
