//! The host's credential endpoints as a job sees them: a container made the way prepare
//! makes a job's network namespace (the helper image, the job's network settings, the
//! metadata guard as `[security] instance_metadata` says) probes each endpoint of
//! [`guard::ENDPOINTS`] for about a second: IMDSv2's token `PUT`, a tokenless IMDSv1 `GET`,
//! and TCP to the container credential endpoints. A refusal or a timeout is blocked; an
//! answer is a job reading the host's credentials. Also: whether this host itself reaches
//! IMDS (`AWS_EC2_METADATA_SERVICE_ENDPOINT` when set, as the SDK does).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use tokio::time::Instant;

use super::report::Report;
use crate::config::security::MetadataPolicy;
use crate::docker::{container, guard, resources};
use crate::naming::{LABEL_EXPIRES_AT, LABEL_MANAGED};
use crate::reference::ImageRef;
use crate::stages::Context;
use crate::stages::prepare::plan::MetadataGuard;

const CHECK: &str = "instance metadata";

/// One probe per line of output: `<index> answered|refused <what the client said>`.
fn probe_script() -> String {
    let mut s = String::from(
        "probe() { i=$1; addr=$2; req=$3\n\
         if out=$(printf \"$req\" | timeout 3 nc -w 1 \"$addr\" 80 2>&1); then echo \"$i answered\"\n\
         else echo \"$i refused $(printf '%s' \"$out\" | head -n 1)\"; fi; }\n",
    );
    for (i, probe) in probes().iter().enumerate() {
        s.push_str(&format!(
            "probe {i} {} '{}'\n",
            probe.address, probe.request
        ));
    }
    s
}

/// What is asked of each endpoint.
struct Probe {
    address: &'static str,
    what: String,
    request: &'static str,
}

fn probes() -> Vec<Probe> {
    let mut all = Vec::new();
    for e in guard::ENDPOINTS {
        if e.what.starts_with("EC2") {
            all.push(Probe {
                address: e.address,
                what: format!("IMDSv2 token at {}", e.address),
                request: "PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n",
            });
            all.push(Probe {
                address: e.address,
                what: format!("IMDSv1 at {}", e.address),
                request: "GET /latest/meta-data/ HTTP/1.0\\r\\n\\r\\n",
            });
        } else {
            all.push(Probe {
                address: e.address,
                what: format!("{} at {}", e.what, e.address),
                request: "",
            });
        }
    }
    all
}

pub(crate) async fn check(
    ctx: &Context,
    docker: &Docker,
    helper: Option<&ImageRef>,
    report: &mut Report,
) {
    let config = &ctx.config;
    let policy = config.security.instance_metadata;
    let plan = MetadataGuard::decide(config, config.network_per_job, config.privileged, &[]);
    report.ok(
        CHECK,
        format!(
            "[security] instance_metadata = \"{}\"{}",
            policy.as_str(),
            match (&plan.unenforced, policy) {
                (Some(reason), MetadataPolicy::Block) =>
                    format!("; jobs will fail, as the block cannot hold here: {reason}"),
                (Some(reason), _) => format!("; not blocked here: {reason}"),
                (None, _) => String::new(),
            }
        ),
    );
    host_reaches_imds(ctx, report).await;
    let Some(image) = helper else {
        return report.skip("metadata from a job", "no helper image to probe with");
    };
    let image = image.pull_reference();
    if docker.inspect_image(&image).await.is_err() {
        return report.skip(
            "metadata from a job",
            &format!("{image} is not on the host to probe with"),
        );
    }
    let name = format!("ecr-executor-doctor-{}-netns", std::process::id());
    let network = config
        .network_per_job
        .then(|| format!("ecr-executor-doctor-{}-network", std::process::id()));
    let said = probe_from_a_job(ctx, docker, &image, &name, network.as_deref(), &plan).await;
    for failure in [
        resources::remove_container(docker, &format!("{name}-guard")).await,
        resources::remove_container(docker, &name).await,
    ]
    .into_iter()
    .flatten()
    {
        crate::output::warn(format!("could not remove {failure}"));
    }
    if let Some(network) = &network {
        let _ = docker.remove_network(network).await;
    }
    let said = match said {
        Ok(said) => said,
        Err(e) => return report.fail("metadata from a job", e),
    };
    for (i, probe) in probes().iter().enumerate() {
        let check = format!("{} from a job", probe.what);
        let line = said
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{i} ")))
            .unwrap_or("refused (no answer from the probe)");
        match (line.strip_prefix("refused"), policy) {
            (Some(why), _) => report.ok(&check, format!("blocked{}", parenthesised(why))),
            (None, MetadataPolicy::Allow) => report.ok(
                &check,
                "reachable, as [security] instance_metadata = \"allow\" wants",
            ),
            (None, _) => report.fail(
                &check,
                "answered: a job can read the runner host's AWS credentials; set [security] \
                 instance_metadata = \"block\" and fix what keeps the block from holding (the \
                 line above), or set the instance's IMDS hop limit to 1 (aws ec2 \
                 modify-instance-metadata-options --http-put-response-hop-limit 1)",
            ),
        }
    }
}

fn parenthesised(why: &str) -> String {
    let why = why.trim();
    if why.is_empty() {
        " (no answer within the probe's time)".to_owned()
    } else {
        format!(" ({why})")
    }
}

/// How long the probe's container (`exec sleep 60`) and network may live: past this, a
/// doctor killed before removing them leaves them to `ecr-executor gc`.
const PROBE_LIFETIME: Duration = Duration::from_secs(120);

/// The labels of everything the probe makes: the driver's, with an expiry for `gc`.
fn probe_labels(now: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (
            LABEL_EXPIRES_AT.to_owned(),
            (now + PROBE_LIFETIME.as_secs()).to_string(),
        ),
    ])
}

/// Makes a job's network namespace as prepare does (guarded as the policy says) and runs the
/// probes in it; what they printed.
async fn probe_from_a_job(
    ctx: &Context,
    docker: &Docker,
    image: &str,
    name: &str,
    network: Option<&str>,
    plan: &MetadataGuard,
) -> Result<String, String> {
    let labels = probe_labels(crate::util::unix_now());
    if let Some(network) = network {
        docker
            .create_network(NetworkCreateRequest {
                name: network.to_owned(),
                driver: Some("bridge".into()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create a network to probe from: {e}"))?;
    }
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec!["sh".into(), "-c".into()]),
        cmd: Some(vec!["exec sleep 60".into()]),
        labels: Some(labels.clone()),
        host_config: Some(HostConfig {
            network_mode: network
                .map(str::to_owned)
                .or_else(|| ctx.config.container.network_mode.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    container::create_and_start(docker, name, None, &body)
        .await
        .map_err(|e| e.to_string())?;
    if plan.block
        && let Err(e) = guard::block(docker, name, image, labels).await
    {
        // Never probe an unguarded namespace where the job's would be guarded.
        return Err(format!(
            "the block could not be put in place, so jobs would fail: {e}"
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let cmd = vec!["sh".to_owned(), "-c".to_owned(), probe_script()];
    container::exec_output(docker, name, cmd, deadline).await
}

/// Whether this host reaches IMDS (TCP, 1 s): where the runner's own credentials may come
/// from.
async fn host_reaches_imds(ctx: &Context, report: &mut Report) {
    const HOST: &str = "instance metadata from this host";
    if ctx.env.aws_imds_disabled {
        return report.skip(HOST, "AWS_EC2_METADATA_DISABLED is set");
    }
    let endpoint = ctx
        .env
        .aws_imds_endpoint
        .clone()
        .unwrap_or_else(|| "http://169.254.169.254".to_owned());
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, rest)| rest)
        .trim_end_matches('/');
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let connect = tokio::net::TcpStream::connect(address.as_str());
    match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(_)) => report.ok(
            HOST,
            format!("{endpoint} answers: the runner's own AWS credentials may come from it"),
        ),
        Ok(Err(e)) => report.ok(HOST, format!("{endpoint} does not answer ({e})")),
        Err(_) => report.ok(HOST, format!("{endpoint} does not answer within 1 s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_of_the_one_list_is_probed() {
        let script = probe_script();
        for e in guard::ENDPOINTS {
            assert!(script.contains(&format!(" {} ", e.address)), "{script}");
        }
        assert!(script.contains("PUT /latest/api/token"));
        assert!(script.contains("GET /latest/meta-data/"));
        assert_eq!(probes().len(), guard::ENDPOINTS.len() + 2);
    }

    /// A doctor killed mid-probe leaves its container and network to `gc`, once they have
    /// outlived the probe's `sleep 60`, and never sooner.
    #[test]
    fn what_the_probe_makes_expires_for_gc_after_the_probe() {
        let labels = probe_labels(1_000);
        assert!(!crate::stages::gc::expired(Some(&labels), 1_060));
        assert!(crate::stages::gc::expired(
            Some(&labels),
            1_000 + PROBE_LIFETIME.as_secs()
        ));
    }
}
