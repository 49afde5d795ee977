//! `ecr-executor auth check [IMAGE|HOST]`: resolves the identity for a registry, fetches (or
//! reads from the cache) a token, and reports which identity and role were used, the
//! registry, the expiry and where the token came from. Never the token itself.

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

use super::Context;
use crate::auth::{Resolver, Source};
use crate::error::{Error, Result};
use crate::output;
use crate::reference::ImageRef;

pub(crate) async fn run(ctx: &Context, target: Option<&str>) -> Result<()> {
    let named = match target {
        Some(t) => t.to_owned(),
        None => {
            let payload = ctx.env.payload()?;
            payload
                .image_name()
                .or_else(|| ctx.env.vars.get("CI_JOB_IMAGE"))
                .or(ctx.config.default_image.as_deref())
                .ok_or(Error::NoImage)?
                .to_owned()
        }
    };
    // An image reference names its registry; anything else is taken as a registry host.
    let host = match ImageRef::parse(&named) {
        Ok(image) if image.registry.is_some() => image.registry_host().to_owned(),
        _ => named.clone(),
    };
    let resolver = Resolver::new(&ctx.config, &ctx.env);
    let Some(target) = resolver.ecr_target(&host) else {
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
    output::info(format!(
        "registry: {}\naccount:  {account} (region {}, partition {})\nidentity: {}\nuser:     {}\nexpires:  {expires}\nsource:   {}",
        target.host,
        target.region,
        target.partition,
        token.identity,
        token.login.username,
        match token.source {
            Source::Cache => "cache",
            Source::Aws => "AWS",
        }
    ));
    Ok(())
}
