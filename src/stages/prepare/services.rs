//! Service containers: pulled with the same policies and credentials as the job image,
//! started on the job's network under their aliases, then waited for.
//!
//! Waiting: each service's TCP ports (its image's exposed ports, or `HEALTHCHECK_TCP_PORT`)
//! are probed from the driver at the container's address on the job network, until
//! `wait_for_services_timeout`. A service that does not come up is a warning with its last
//! log lines, as in the Docker executor; the job still runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use futures_util::future::{join_all, try_join_all};
use tokio::time::{Instant, timeout};

use super::containers;
use super::plan::{Plan, ServicePlan, healthcheck_ports};
use crate::auth::{Resolver, TokenFetcher};
use crate::config::Config;
use crate::docker::pull::ensure_image;
use crate::error::Result;
use crate::naming::Names;
use crate::output;

/// A started service and the ports to wait for.
pub struct Started<'p> {
    pub container: String,
    pub plan: &'p ServicePlan,
    pub ports: Vec<u16>,
}

/// Pulls and starts every service concurrently.
pub async fn start<'p, F: TokenFetcher>(
    docker: &Docker,
    config: &Config,
    names: &Names,
    plan: &'p Plan,
    labels: impl Fn() -> HashMap<String, String>,
    auth: &Resolver<'_, F>,
) -> Result<Vec<Started<'p>>> {
    let starts = plan.services.iter().enumerate().map(|(i, service)| {
        let labels = labels();
        async move {
            let image =
                ensure_image(docker, &service.image, &service.pull_policies, None, auth).await?;
            let exposed = image
                .config
                .as_ref()
                .and_then(|c| c.exposed_ports.clone())
                .unwrap_or_default();
            let container = names.service(i);
            let body =
                containers::service(config, names, service, image.id.unwrap_or_default(), labels);
            containers::create_and_start(docker, &container, None, body).await?;
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
pub async fn wait(docker: &Docker, network: &str, services: &[Started<'_>], limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let deadline = Instant::now() + limit;
    let waits = services.iter().filter(|s| !s.ports.is_empty()).map(|s| async move {
        let closed = match address(docker, &s.container, network).await {
            Some(ip) => {
                let probes = s.ports.iter().map(|port| async move {
                    (!port_opens(ip, *port, deadline).await).then_some(*port)
                });
                join_all(probes).await.into_iter().flatten().collect::<Vec<_>>()
            }
            None => s.ports.clone(),
        };
        if !closed.is_empty() {
            let logs = containers::last_log_lines(docker, &s.container).await;
            output::warn(format!(
                "service {} ({}) did not open port(s) {closed:?} within {}s; it probably did not start properly. Its last log lines:\n{}",
                s.plan.name,
                s.container,
                limit.as_secs(),
                if logs.is_empty() { "(no output)" } else { &logs }
            ));
        }
    });
    join_all(waits).await;
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

async fn port_opens(ip: IpAddr, port: u16, deadline: Instant) -> bool {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return false;
        }
        let attempt = remaining.min(Duration::from_secs(1));
        if let Ok(Ok(_)) = timeout(attempt, tokio::net::TcpStream::connect((ip, port))).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200).min(remaining)).await;
    }
}
