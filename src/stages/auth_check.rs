//! `ecr-executor auth check [IMAGE|HOST]`: resolves the identity for a registry, fetches (or
//! reads from the cache) a token, and reports which identity and role were used, the
//! registry, the expiry and where the token came from. Never the token itself. For an image a
//! `[[pull_through]]` rule covers, it shows the route and checks the cache's registry. For an
//! image a `[[trust]]` rule covers, it checks the signature of the digest its tag names now.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use super::Context;
use crate::auth::{Credentials, Resolver, Source};
use crate::config::pull_through::{self, Fallback};
use crate::error::{Error, PolicyError, Result};
use crate::output;
use crate::reference::ImageRef;
use crate::trust::{self, Policy};

pub(crate) async fn run(ctx: &Context, target: Option<&str>) -> Result<()> {
    let named = match target {
        Some(t) => t.to_owned(),
        None => {
            let payload = ctx.env.payload()?;
            payload
                .image_name()
                .or_else(|| ctx.env.vars.get("CI_JOB_IMAGE"))
                .or(ctx.config.default_image.as_deref())
                .ok_or(Error::Policy(PolicyError::NoImage))?
                .to_owned()
        }
    };
    // An image reference names its registry (through a pull-through cache when a rule covers
    // it); anything else is taken as a registry host.
    let mut image_and_pulled = None;
    let host = match ImageRef::parse(&named) {
        Ok(image) => match pull_through::route(&ctx.config.pull_through, &image) {
            Ok(Some(route)) => {
                output::info(format!(
                    "image:    {}\nroute:    {} ([[pull_through]] #{} for {}, fallback {})",
                    image.pull_reference(),
                    route.image.pull_reference(),
                    route.rule + 1,
                    route.upstream,
                    match route.fallback {
                        Fallback::Upstream => "upstream",
                        Fallback::Fail => "fail",
                    }
                ));
                let host = route.image.registry_host().to_owned();
                image_and_pulled = Some((image, route.image));
                host
            }
            Ok(None) if image.registry.is_some() => {
                let host = image.registry_host().to_owned();
                image_and_pulled = Some((image.clone(), image));
                host
            }
            Ok(None) => named.clone(),
            Err(reason) => {
                return Err(Error::Policy(PolicyError::InvalidImage {
                    image: named,
                    reason,
                }));
            }
        },
        Err(_) => named.clone(),
    };
    let resolver = Resolver::new(&ctx.config, &ctx.env);
    registry(&resolver, &host).await?;
    match image_and_pulled {
        Some((image, pulled)) => signature(ctx, &resolver, &image, &pulled).await,
        None => Ok(()),
    }
}

/// Whether a `[[trust]]` rule covers `image` (pulled as `pulled`) and, if one does, whether
/// the digest its tag names now carries a trusted signature. A refusal is the command's error.
async fn signature(
    ctx: &Context,
    resolver: &Resolver<'_>,
    image: &ImageRef,
    pulled: &ImageRef,
) -> Result<()> {
    let policy = Policy::load(&ctx.config.trust)?;
    let rules = policy.covering_either(image, pulled);
    if rules.is_empty() {
        if !policy.is_empty() {
            output::info(
                "trust:    no [[trust]] rule covers it: it runs without a signature check",
            );
        }
        return Ok(());
    }
    let numbers: Vec<String> = rules.iter().map(|r| format!("#{}", r.number)).collect();
    output::info(format!(
        "trust:    [[trust]] {} cover(s) it",
        numbers.join(", ")
    ));
    let credentials = resolver.credentials_for(pulled).await?;
    let login = credentials.as_ref().map(Credentials::login);
    let verified = trust::verify(&rules, &image.pull_reference(), pulled, None, login).await?;
    output::info(format!("signed:   yes. {}", verified.line()));
    Ok(())
}

/// The ECR side of `host`: the identity, the token's expiry and source.
async fn registry(resolver: &Resolver<'_>, host: &str) -> Result<()> {
    let Some(target) = resolver.ecr_target(host) else {
        output::info(format!(
            "registry: {host}\necr:      no (not an ECR hostname and no [[registry]] entry); \
             pulls use DOCKER_AUTH_CONFIG or no credentials"
        ));
        return Ok(());
    };
    let token = resolver.ecr_token(&target).await?;
    let expires = DateTime::from_secs(i64::try_from(token.expires_at).unwrap_or(i64::MAX))
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| token.expires_at.to_string());
    let account = target.registry_id.as_deref().unwrap_or("ECR Public");
    let mut report = format!(
        "registry: {}\naccount:  {account} (region {}, partition {}{})\nidentity: {}\n",
        target.host,
        target.region,
        target.partition,
        if target.fips { ", FIPS endpoints" } else { "" },
        token.identity,
    );
    if let Some(arn) = &token.arn {
        report.push_str(&format!("arn:      {arn}\n"));
    }
    if let Some(session) = &token.session {
        report.push_str(&format!("session:  {session}\n"));
    }
    report.push_str(&format!(
        "user:     {}\nexpires:  {expires}\nsource:   {}",
        token.login.username,
        match token.source {
            Source::Cache => "cache",
            Source::Aws => "AWS",
        }
    ));
    output::info(report);
    Ok(())
}
