//! The instance metadata guard: the endpoints that hand out the runner host's own AWS
//! credentials are made unreachable inside a job's network namespaces.
//!
//! Mechanism: an `unreachable` route for each address of [`ENDPOINTS`], put into the network
//! namespace from outside the job, before any job process runs there: a short-lived *guard*
//! container of the driver's helper image joins the namespace (`network_mode:
//! container:<owner>`, the owner being the helper container for the build container and
//! itself, or a service's network container), with every capability dropped but
//! `NET_ADMIN`, adds the routes and exits. No job container gets `NET_ADMIN`, so a job
//! running as root in its container cannot remove the routes; a connection to one of the
//! addresses fails at once ("No route to host") without a packet leaving the namespace, and
//! every other address routes as before. This is the design of AWS's own ECS agent
//! (`ECS_AWSVPC_BLOCK_IMDS`), done through the engine, so it works the same on rootful
//! Docker, rootless Docker and Podman without root on the runner host. A privileged exec in
//! the owner would be cheaper but asks for every capability, which engines without all of
//! them in their bounding set refuse ("unable to apply caps").

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};

use super::{container, state};

/// An endpoint that hands out credentials of the host, or of the task or pod it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub address: &'static str,
    /// Its port, for a probe.
    pub port: u16,
    pub what: &'static str,
}

/// Every endpoint the guard blocks: the one list, used by prepare and by `doctor`.
pub(crate) const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        address: "169.254.169.254",
        port: 80,
        what: "EC2 instance metadata (IMDS)",
    },
    Endpoint {
        address: "fd00:ec2::254",
        port: 80,
        what: "EC2 instance metadata (IMDS, IPv6)",
    },
    Endpoint {
        address: "169.254.170.2",
        port: 80,
        what: "ECS task credentials",
    },
    Endpoint {
        address: "169.254.170.23",
        port: 80,
        what: "EKS Pod Identity agent",
    },
    Endpoint {
        address: "fd00:ec2::23",
        port: 80,
        what: "EKS Pod Identity agent (IPv6)",
    },
];

/// Why the guard could not be put in place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    /// The engine refused or failed a request for the guard container.
    #[error("{0}")]
    Engine(#[from] crate::error::Error),
    /// The guard ran and said why it could not add the routes.
    #[error("{0}")]
    Refused(String),
}

/// The script the guard runs: the routes of [`ENDPOINTS`], IPv6 ones where the kernel has
/// IPv6 (they hold even while the namespace has it turned off). `replace`: repeating it is
/// harmless.
fn script() -> String {
    let mut s = String::from(
        "command -v ip >/dev/null 2>&1 || { echo 'the helper image has no `ip` command'; exit 3; }\n",
    );
    for e in ENDPOINTS {
        if e.address.contains(':') {
            s.push_str(&format!(
                "[ ! -e /proc/net/if_inet6 ] || ip -6 route replace unreachable {}/128 || exit 4\n",
                e.address
            ));
        } else {
            s.push_str(&format!(
                "ip route replace unreachable {}/32 || exit 4\n",
                e.address
            ));
        }
    }
    s
}

/// The guard container's name for the namespace `owner` holds.
pub(crate) fn name(owner: &str) -> String {
    format!("{owner}-guard")
}

/// Creates the guard for `owner`'s namespace from `image` (the helper image); `owner` must
/// exist. Prepare creates it while the owner starts.
pub(crate) async fn create(
    docker: &Docker,
    owner: &str,
    image: &str,
    labels: HashMap<String, String>,
) -> Result<(), GuardError> {
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        cmd: Some(vec![script()]),
        user: Some("0".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{owner}")),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["NET_ADMIN".into()]),
            // What it says, for the error when it fails; whatever the engine's default.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([("max-size".into(), "64k".into())])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    container::create(docker, &name(owner), None, &body).await?;
    Ok(())
}

/// Runs the guard created for `owner`, which must be running and run no job process yet, and
/// waits for it to have added the routes. The ended guard is left for cleanup (it carries
/// the job's labels): removing it here would only delay the job's first process.
pub(crate) async fn run(docker: &Docker, owner: &str) -> Result<(), GuardError> {
    let name = name(owner);
    container::start(docker, &name).await?;
    let code = container::wait(docker, &name).await?;
    if code == 0 {
        return Ok(());
    }
    let said = state::last_log_lines(docker, &name).await;
    let last = said.lines().last().unwrap_or("no output");
    Err(GuardError::Refused(format!(
        "adding the routes failed (exit code {code}): {last}"
    )))
}

/// Creates, runs and removes a guard for `owner`'s namespace: what `doctor` does.
pub(crate) async fn block(
    docker: &Docker,
    owner: &str,
    image: &str,
    labels: HashMap<String, String>,
) -> Result<(), GuardError> {
    let outcome = match create(docker, owner, image, labels).await {
        Ok(()) => run(docker, owner).await,
        Err(e) => Err(e),
    };
    if let Some(failure) = super::resources::remove_container(docker, &name(owner)).await {
        crate::output::warn(format!("could not remove {failure}"));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_blocks_every_endpoint_of_the_one_list() {
        let s = script();
        for e in ENDPOINTS {
            assert!(s.contains(&format!("unreachable {}/", e.address)), "{s}");
        }
        assert!(s.contains("ip -6 route replace unreachable fd00:ec2::254/128"));
        assert!(s.contains("ip route replace unreachable 169.254.169.254/32"));
    }
}
