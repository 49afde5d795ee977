//! The runner's AWS identity (where its credentials come from, the ARN they resolve to),
//! and a fresh token for every ECR registry the config names.

use std::fs;
use std::path::Path;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use super::report::Report;
use crate::auth::Resolver;
use crate::auth::target::{EcrTarget, Identity};
use crate::config::ecr::IdentityMode;
use crate::config::pull_through;
use crate::error::AuthError;
use crate::job::Env;
use crate::reference::ImageRef;
use crate::reference::ecr::Partition;
use crate::stages::Context;

/// The runner's AWS identity, and a token for every ECR registry the config names.
pub(crate) async fn aws(
    ctx: &Context,
    resolver: &Resolver<'_>,
    helper: Option<&ImageRef>,
    images: &[String],
    report: &mut Report,
) {
    let config = &ctx.config;
    let mut hosts: Vec<String> = config.registries.iter().map(|r| r.host.clone()).collect();
    hosts.extend(config.pull_through.iter().map(|p| p.registry.clone()));
    hosts.extend(helper.map(|h| h.registry_host().to_owned()));
    for image in images {
        match ImageRef::parse(image) {
            Ok(image) => match pull_through::route(&config.pull_through, &image) {
                Ok(Some(route)) => hosts.push(route.image.registry_host().to_owned()),
                _ => hosts.push(image.registry_host().to_owned()),
            },
            Err(reason) => report.fail("image", format!("{image:?}: {reason}")),
        }
    }
    let mut targets: Vec<EcrTarget> = Vec::new();
    for host in hosts {
        if let Some(target) = resolver.ecr_target(&host)
            && !targets.iter().any(|t| t.host == target.host)
        {
            targets.push(target);
        }
    }

    // The runner's own identity, with the first registry's region and profile.
    let probe = targets.first().cloned().unwrap_or_else(|| EcrTarget {
        host: "(the runner's identity)".into(),
        registry_id: None,
        region: "us-east-1".into(),
        partition: Partition::Aws,
        fips: false,
        mode: config.ecr.identity,
        role_arn: None,
        profile: config.ecr.profile.clone(),
        id_token_variable: config.ecr.id_token_variable.clone(),
        allowed_job_roles: Default::default(),
    });
    let source = credential_source(&ctx.env, probe.profile.as_deref());
    let runner_needed = config.ecr.identity != IdentityMode::Job
        || targets.iter().any(|t| t.mode != IdentityMode::Job);
    // Without credentials no registry can get a token with the runner's identity: said once.
    let mut no_runner_credentials = false;
    match resolver.runner_arn(&probe).await {
        Ok(arn) => report.ok("AWS identity", format!("{arn} (credentials from {source})")),
        Err(e) if runner_needed => {
            no_runner_credentials = matches!(
                e,
                AuthError::NoAwsCredentials { .. } | AuthError::AwsCredentialsFailed { .. }
            );
            report.fail("AWS identity", e);
        }
        Err(_) => report.ok(
            "AWS identity",
            "none on this host, and none needed: every registry uses the job's identity",
        ),
    }
    if targets.is_empty() {
        report.ok(
            "ECR registries",
            "none named in the config; `doctor --image IMAGE` checks an image's registry",
        );
    }
    for target in &targets {
        let check = format!("ECR {}", target.host);
        let place = format!(
            "account {} in {}{}",
            target.registry_id.as_deref().unwrap_or("ECR Public"),
            target.region,
            if target.fips { " (FIPS endpoints)" } else { "" }
        );
        match resolver.identity(target) {
            Ok(Identity::Job { .. }) => {}
            Err(AuthError::NoIdToken { .. }) => {
                let role = target
                    .role_arn
                    .as_deref()
                    .unwrap_or("ECR_ROLE_ARN of the job");
                report.ok(
                    &check,
                    format!(
                        "{place}: the job's id_token ({}) for role {role}, checked when a job \
                         runs",
                        target.id_token_variable
                    ),
                );
                continue;
            }
            Err(e) => {
                report.fail(&check, e);
                continue;
            }
            Ok(Identity::Runner { .. }) if no_runner_credentials => {
                report.skip(
                    &check,
                    "the runner's AWS credentials are missing (see above)",
                );
                continue;
            }
            Ok(Identity::Runner { .. }) => {}
        }
        match resolver.fetch_fresh(target).await {
            Ok(token) => {
                let expires =
                    DateTime::from_secs(i64::try_from(token.expires_at).unwrap_or(i64::MAX))
                        .fmt(Format::DateTime)
                        .unwrap_or_default();
                let role = match &token.role_arn {
                    Some(role) => format!(", assuming {role}"),
                    None => String::new(),
                };
                report.ok(
                    &check,
                    format!(
                        "{place}: a token for {}{role}, valid until {expires}",
                        token.arn.as_deref().unwrap_or("the runner's identity")
                    ),
                );
            }
            Err(e) => report.fail(&check, e),
        }
    }
}

/// Where the SDK's default chain will find the runner's credentials, by what this host has.
pub(crate) fn credential_source(env: &Env, profile: Option<&str>) -> String {
    let hint = |name: &str| {
        env.aws_identity_hints
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if hint("AWS_ACCESS_KEY_ID").is_some() {
        return "environment variables (AWS_ACCESS_KEY_ID)".into();
    }
    let profile = profile
        .map(str::to_owned)
        .or_else(|| hint("AWS_PROFILE"))
        .or_else(|| hint("AWS_DEFAULT_PROFILE"));
    let home = env.home.clone().unwrap_or_default();
    let config = env
        .aws_config_file
        .clone()
        .unwrap_or_else(|| home.join(".aws/config"));
    let credentials =
        (env.aws_credentials_file.clone()).unwrap_or_else(|| home.join(".aws/credentials"));
    if let Some(profile) = &profile {
        let kind = profile_kind(&config, profile);
        return format!("AWS profile {profile}{kind}");
    }
    if hint("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        return "a web identity token file (AWS_WEB_IDENTITY_TOKEN_FILE)".into();
    }
    if hint("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || hint("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        return "the ECS/EKS container credentials endpoint".into();
    }
    if has_section(&credentials, "default") || has_section(&config, "default") {
        return format!("the default profile{}", profile_kind(&config, "default"));
    }
    if env.aws_imds_disabled {
        return "nowhere (AWS_EC2_METADATA_DISABLED=true)".into();
    }
    "the EC2 instance profile (IMDS)".into()
}

pub(crate) fn has_section(file: &Path, name: &str) -> bool {
    fs::read_to_string(file).is_ok_and(|text| {
        text.lines().any(|l| {
            let l = l.trim();
            l == format!("[{name}]") || l == format!("[profile {name}]")
        })
    })
}

/// What kind of profile `name` of `config` is: SSO, a role, a process, or plain keys.
pub(crate) fn profile_kind(config: &Path, name: &str) -> &'static str {
    let Ok(text) = fs::read_to_string(config) else {
        return "";
    };
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[profile {name}]") || line == format!("[{name}]");
            continue;
        }
        if !inside {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default().trim();
        match key {
            "sso_session" | "sso_start_url" => return " (SSO)",
            "web_identity_token_file" => return " (web identity)",
            "role_arn" => return " (assuming a role)",
            "credential_process" => return " (credential process)",
            _ => {}
        }
    }
    ""
}
