//! Service containers: pulled with the same policies and credentials as the job image,
//! started on the job's network under their aliases, then waited for.
//!
//! Each service joins a network namespace made for it first: a small container of the
//! helper image ([`containers::service_network`]) holds the service's address and aliases on
//! the job's network, and the metadata guard is put into it ([`super::metadata`]) before the
//! service's own ENTRYPOINT runs, as the helper does for the build container.
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
use super::metadata::Guard;
use super::plan::{Plan, ServicePlan, healthcheck_ports};
use crate::auth::Resolver;
use crate::auth::ecr::TokenFetcher;
use crate::config::Config;
use crate::docker::container;
use crate::docker::engine::Engine;
use crate::docker::pull::ensure_image;
use crate::docker::state;
use crate::error::Result;
use crate::naming::{Names, Role, image_labels};
use crate::output;

/// A started service and the ports to wait for.
pub(crate) struct Started<'p> {
    pub container: String,
    /// The container whose network namespace it joined: its address on the job network.
    pub network_owner: String,
    pub plan: &'p ServicePlan,
    pub ports: Vec<u16>,
}

/// What starting the services needs besides the plan.
pub(crate) struct ServiceStart<'a, F: TokenFetcher> {
    pub docker: &'a Docker,
    pub config: &'a Config,
    pub names: &'a Names,
    pub auth: &'a Resolver<'a, F>,
    pub audit: Option<&'a Audit<'a>>,
    pub guard: &'a Guard<'a>,
    /// The helper image, which keeps each service's network namespace.
    pub helper_image_id: String,
    pub lifetime_secs: u64,
}

/// Pulls and starts every service concurrently: its network namespace first (made, then
/// guarded), then the service in it.
pub(crate) async fn start<'p, F: TokenFetcher>(
    with: &ServiceStart<'_, F>,
    plan: &'p Plan,
    labels: impl Fn(Role) -> HashMap<String, String>,
) -> Result<Vec<Started<'p>>> {
    let (docker, names) = (with.docker, with.names);
    let starts = plan.services.iter().enumerate().map(|(i, service)| {
        let (labels, owner_labels) = (labels(Role::Service), labels(Role::ServiceNetwork));
        async move {
            let owner = names.service_network(i);
            let body = containers::service_network(
                with.config,
                names,
                service,
                with.helper_image_id.clone(),
                owner_labels,
                with.lifetime_secs,
            );
            let network = async {
                container::create(docker, &owner, None, &body).await?;
                let (started, guard_made) = tokio::join!(
                    container::start(docker, &owner),
                    with.guard.create(docker, &owner)
                );
                started?;
                guard_made?;
                with.guard.block(docker, &owner).await
            };
            let pull = audited(
                with.audit,
                "service",
                &service.image,
                ensure_image(
                    docker,
                    &service.image,
                    service.route.as_ref(),
                    &service.pull_policies,
                    None,
                    with.auth,
                    &plan.trust,
                ),
            );
            let (image, ()) = tokio::try_join!(pull, network)?;
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
            let body =
                containers::service(with.config, service, &owner, image.image_to_run(), labels);
            container::create_and_start(docker, &container, None, &body).await?;
            output::info(format!(
                "Started service {} as {container} (aliases: {})",
                service.name,
                service.aliases.join(", ")
            ));
            Ok(Started {
                container,
                network_owner: owner,
                plan: service,
                ports: healthcheck_ports(service, &exposed),
            })
        }
    });
    try_join_all(starts).await
}

/// Where the ports are probed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeFrom {
    /// The driver's host: the engine is local and rootful, so container addresses are routed.
    Driver,
    /// Inside the job's network namespace, through an exec in the helper container: for
    /// rootless and remote engines, whose container addresses the driver cannot reach (and
    /// must not try: they would be routed off the machine).
    Helper,
}

/// Waits for every service's ports, warning about those that do not open in time. Never
/// skipped silently: when the ports cannot be probed at all, the job log says so.
pub(crate) async fn wait(
    docker: &Docker,
    names: &Names,
    services: &[Started<'_>],
    limit: Duration,
    from: ProbeFrom,
) {
    if limit.is_zero() {
        return;
    }
    let deadline = Instant::now() + limit;
    let waiting: Vec<&Started<'_>> = services.iter().filter(|s| !s.ports.is_empty()).collect();
    if waiting.is_empty() {
        return;
    }
    let mut targets = Vec::new();
    for s in &waiting {
        // Its address on the job network; its first alias when the engine does not say.
        let host = match address(docker, &s.network_owner, &names.network).await {
            Some(ip) => ip.to_string(),
            None => s.plan.aliases.first().cloned().unwrap_or_default(),
        };
        targets.push((*s, host));
    }
    let closed: Vec<(&Started<'_>, Vec<u16>)> = match from {
        ProbeFrom::Driver => from_driver(&targets, deadline).await,
        ProbeFrom::Helper => match from_helper(docker, &names.helper, &targets, deadline).await {
            Ok(closed) => closed,
            Err(why) => {
                output::warn(format!(
                    "could not check whether the services are up ({why}); the job starts \
                     without waiting for {}",
                    waiting
                        .iter()
                        .map(|s| s.plan.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return;
            }
        },
    };
    for (s, ports) in closed {
        let logs = state::last_log_lines(docker, &s.container).await;
        output::warn(format!(
            "service {} ({}) did not open port(s) {ports:?} within {}s; it probably did not \
             start properly. Its last log lines:\n{}",
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

/// Probes from the driver's host: each port until it opens or the deadline passes.
async fn from_driver<'a, 'p>(
    targets: &[(&'a Started<'p>, String)],
    deadline: Instant,
) -> Vec<(&'a Started<'p>, Vec<u16>)> {
    let waits = targets.iter().map(|(s, host)| async move {
        let Ok(ip) = host.parse::<IpAddr>() else {
            return (*s, s.ports.clone());
        };
        let probes = s
            .ports
            .iter()
            .map(|port| async move { (*port, probe(ip, *port, deadline).await) });
        let closed: Vec<u16> = join_all(probes)
            .await
            .into_iter()
            .filter(|(_, open)| !open)
            .map(|(port, _)| port)
            .collect();
        (*s, closed)
    });
    join_all(waits)
        .await
        .into_iter()
        .filter(|(_, closed)| !closed.is_empty())
        .collect()
}

/// Probes from inside the job's network namespace: one exec in the helper container (which
/// owns that namespace) runs [`IN_NETWORK_PROBE`] over every port until the deadline.
async fn from_helper<'a, 'p>(
    docker: &Docker,
    helper: &str,
    targets: &[(&'a Started<'p>, String)],
    deadline: Instant,
) -> Result<Vec<(&'a Started<'p>, Vec<u16>)>, String> {
    let seconds = deadline
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1)
        .to_string();
    let mut cmd = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        IN_NETWORK_PROBE.to_owned(),
        "sh".to_owned(),
        seconds,
    ];
    for (s, host) in targets {
        for port in &s.ports {
            cmd.push(host.clone());
            cmd.push(port.to_string());
        }
    }
    let report = container::exec_output(docker, helper, cmd, deadline).await?;
    if report.lines().any(|l| l == "noprobe") {
        return Err(format!(
            "the helper image has neither `nc` nor `bash` to probe ports from the job's \
             network, and the driver cannot reach {helper}'s network"
        ));
    }
    let mut closed = Vec::new();
    for (s, host) in targets {
        let open = |port: &u16| report.lines().any(|l| l == format!("open {host} {port}"));
        let not_open: Vec<u16> = s.ports.iter().filter(|p| !open(p)).copied().collect();
        if !not_open.is_empty() {
            closed.push((*s, not_open));
        }
    }
    Ok(closed)
}

/// Waits for `host port` pairs (after `$1`, the seconds left) from inside the container, with
/// what every helper image has: busybox `nc`, or bash's `/dev/tcp`. Prints `open HOST PORT`
/// or `closed HOST PORT` for each, or `noprobe` when it has no way to connect.
const IN_NETWORK_PROBE: &str = r#"end=$(( $(date +%s) + $1 )); shift
if command -v nc >/dev/null 2>&1; then
  probe() { nc -w 1 "$1" "$2" </dev/null >/dev/null 2>&1; }
elif command -v bash >/dev/null 2>&1; then
  probe() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" >/dev/null 2>&1; }
else
  echo noprobe; exit 0
fi
while [ $# -ge 2 ]; do
  state=open
  until probe "$1" "$2"; do
    if [ "$(date +%s)" -ge "$end" ]; then state=closed; break; fi
    sleep 0.2
  done
  echo "$state $1 $2"
  shift 2
done"#;

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

/// Whether `ip:port` accepts a connection before `deadline`; refusals are retried.
async fn probe(ip: IpAddr, port: u16, deadline: Instant) -> bool {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return false;
        }
        let attempt = remaining.min(Duration::from_secs(1));
        let connected = timeout(attempt, tokio::net::TcpStream::connect((ip, port))).await;
        if matches!(connected, Ok(Ok(_))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200).min(remaining)).await;
    }
}

/// Where to probe services from: the driver's host when the engine is on this host and
/// rootful, else inside the job's network.
pub(crate) fn probe_from(engine: &Engine) -> ProbeFrom {
    if engine.on_this_host() && !engine.rootless {
        ProbeFrom::Driver
    } else {
        ProbeFrom::Helper
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::engine::Kind;

    #[test]
    fn only_a_local_rootful_engine_is_probed_from_the_driver() {
        let local = Engine {
            host: "unix:///var/run/docker.sock".into(),
            kind: Kind::Docker,
            version: None,
            api: None,
            kernel: crate::docker::engine::local_kernel(),
            rootless: false,
        };
        assert_eq!(probe_from(&local), ProbeFrom::Driver);
        let rootless = Engine {
            rootless: true,
            ..local.clone()
        };
        assert_eq!(probe_from(&rootless), ProbeFrom::Helper);
        let remote = Engine {
            host: "tcp://10.0.0.2:2376".into(),
            ..local.clone()
        };
        assert_eq!(probe_from(&remote), ProbeFrom::Helper);
        let vm = Engine {
            kernel: Some("6.10.14-linuxkit".into()),
            ..local
        };
        assert_eq!(probe_from(&vm), ProbeFrom::Helper);
    }

    /// The in-network probe needs what every helper image has: a POSIX shell with `date`,
    /// `sleep` and `nc` or `bash`; its output is one line per port.
    #[tokio::test]
    async fn the_in_network_probe_reports_each_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let out = tokio::process::Command::new("sh")
            .args(["-c", IN_NETWORK_PROBE, "sh", "1"])
            .args([
                "127.0.0.1",
                &open.to_string(),
                "127.0.0.1",
                &closed.to_string(),
            ])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim() == "noprobe" {
            return; // this host has neither nc nor bash: nothing to show
        }
        assert!(text.contains(&format!("open 127.0.0.1 {open}")), "{text}");
        assert!(
            text.contains(&format!("closed 127.0.0.1 {closed}")),
            "{text}"
        );
        drop(listener);
    }
}
