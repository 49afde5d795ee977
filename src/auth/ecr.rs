//! The AWS calls: sts:AssumeRole / sts:AssumeRoleWithWebIdentity when the identity needs
//! them, then ecr:GetAuthorizationToken (or ECR Public's). The SDK is configured only when a
//! token is really fetched, so a cache hit costs no AWS configuration work at all.
//!
//! Endpoints follow the SDK's rules (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ECR`, profiles).
//! Every attempt has a timeout; throttling, 5xx and connection errors are retried with the
//! SDK's standard exponential backoff, then reported as system failures. STS refusing a job's
//! token is the job's failure, with a one-line likely cause.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::config::Credentials;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::get_authorization_token::GetAuthorizationTokenError;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use std::future::Future;

use super::login::Login;
use super::target::{EcrTarget, Identity};
use crate::error::{AuthError, Whose, sources};

type Result<T, E = AuthError> = std::result::Result<T, E>;

/// Fetches a token from AWS. The seam where unit tests substitute a fake.
pub(crate) trait TokenFetcher {
    fn fetch(
        &self,
        target: &EcrTarget,
        identity: &Identity,
        session: &str,
    ) -> impl Future<Output = Result<FetchedToken>>;
}

/// The token the registry accepts, with its validity (unix seconds).
#[derive(Debug, Clone)]
pub(crate) struct FetchedToken {
    pub login: Login,
    pub requested_at: u64,
    pub expires_at: u64,
    /// The principal that fetched it, when known.
    pub arn: Option<String>,
}

/// Fetches tokens from AWS with the SDK.
#[derive(Debug, Clone)]
pub(crate) struct AwsFetcher {
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    /// The environment names an AWS endpoint, which the SDK refuses to combine with FIPS.
    pub endpoint_configured: bool,
}

impl AwsFetcher {
    /// The SDK's configuration for one fetch. For a FIPS registry, ECR and STS are asked for
    /// their FIPS endpoints (`ecr-fips.<region>`, `sts-fips.<region>` or the partition's
    /// equivalent), unless the environment names an endpoint: the SDK refuses FIPS with a
    /// custom endpoint ("FIPS and custom endpoint are not supported"), and an operator who
    /// names one (a FIPS VPC endpoint, say) means it as given, as amazon-ecs-agent does.
    async fn sdk_config(
        &self,
        region: &str,
        profile: Option<&str>,
        anonymous: bool,
        fips: bool,
    ) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.attempt_timeout)
                    .operation_attempt_timeout(self.attempt_timeout)
                    .build(),
            );
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if anonymous {
            loader = loader.no_credentials();
        }
        if fips && !self.endpoint_configured {
            loader = loader.use_fips(true);
        } else if fips {
            tracing::debug!("FIPS registry: using the configured AWS endpoint as given");
        }
        loader.load().await
    }
}

impl AwsFetcher {
    /// Who the runner's own identity is, for `target`'s region and profile.
    pub(crate) async fn caller_arn(&self, target: &EcrTarget) -> Result<String> {
        let sdk = self
            .sdk_config(
                &target.region,
                target.profile.as_deref(),
                false,
                target.fips,
            )
            .await;
        let out = aws_sdk_sts::Client::new(&sdk)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| aws_error(e, "sts:GetCallerIdentity", target, Whose::Runner, None))?;
        Ok(out.arn().unwrap_or("(no ARN in the answer)").to_owned())
    }
}

impl TokenFetcher for AwsFetcher {
    async fn fetch(
        &self,
        target: &EcrTarget,
        identity: &Identity,
        session: &str,
    ) -> Result<FetchedToken> {
        let requested_at = crate::util::unix_now();
        let registry = &target.host;
        let (sdk, credentials, assumed) = match identity {
            Identity::Runner { role_arn, profile } => {
                let sdk = self
                    .sdk_config(&target.region, profile.as_deref(), false, target.fips)
                    .await;
                match role_arn {
                    None => (sdk, None, None),
                    Some(role) => {
                        let out = aws_sdk_sts::Client::new(&sdk)
                            .assume_role()
                            .role_arn(role)
                            .role_session_name(session)
                            .duration_seconds(900)
                            .send()
                            .await
                            .map_err(|e| {
                                aws_error(e, "sts:AssumeRole", target, Whose::Runner, None)
                            })?;
                        let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
                        let credentials = session_credentials(out.credentials(), target)?;
                        (sdk, Some(credentials), arn)
                    }
                }
            }
            Identity::Job { role_arn, token } => {
                let sdk = self
                    .sdk_config(&target.region, None, true, target.fips)
                    .await;
                let out = aws_sdk_sts::Client::new(&sdk)
                    .assume_role_with_web_identity()
                    .role_arn(role_arn)
                    .role_session_name(session)
                    .web_identity_token(token.expose_secret())
                    .duration_seconds(900)
                    .send()
                    .await
                    .map_err(|e| web_identity_error(e, role_arn, target))?;
                let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
                let credentials = session_credentials(out.credentials(), target)?;
                (sdk, Some(credentials), arn)
            }
        };
        let whose = match identity {
            Identity::Job { .. } => Whose::Job,
            Identity::Runner { .. } => Whose::Runner,
        };

        // Who the runner's own identity is (sts:GetCallerIdentity, which needs no permission),
        // asked beside the token call: the job log and the audit trail name it, and so does
        // a refusal. Best effort: not knowing it fails nothing.
        let caller = async {
            if assumed.is_some() || credentials.is_some() {
                return assumed.clone();
            }
            let out = aws_sdk_sts::Client::new(&sdk)
                .get_caller_identity()
                .send()
                .await;
            out.ok().and_then(|o| o.arn().map(str::to_owned))
        };
        let token_call = async {
            match &target.registry_id {
                Some(registry_id) => {
                    let mut conf = aws_sdk_ecr::config::Builder::from(&sdk);
                    if let Some(c) = credentials.clone() {
                        conf = conf.credentials_provider(c);
                    }
                    // registryIds is deprecated (the token's scope is the principal's), but
                    // the credential helper still sends it and it names the account.
                    #[allow(deprecated)]
                    let request = aws_sdk_ecr::Client::from_conf(conf.build())
                        .get_authorization_token()
                        .registry_ids(registry_id);
                    request
                        .send()
                        .await
                        .map(|out| {
                            let data = out.authorization_data().first();
                            (
                                data.and_then(|d| d.authorization_token())
                                    .map(str::to_owned),
                                data.and_then(|d| d.expires_at()).map(|t| t.secs()),
                            )
                        })
                        .map_err(|e| (TokenCallError::Ecr(e), "ecr:GetAuthorizationToken"))
                }
                None => {
                    let mut conf = aws_sdk_ecrpublic::config::Builder::from(&sdk);
                    if let Some(c) = credentials.clone() {
                        conf = conf.credentials_provider(c);
                    }
                    aws_sdk_ecrpublic::Client::from_conf(conf.build())
                        .get_authorization_token()
                        .send()
                        .await
                        .map(|out| {
                            let data = out.authorization_data();
                            (
                                data.and_then(|d| d.authorization_token())
                                    .map(str::to_owned),
                                data.and_then(|d| d.expires_at()).map(|t| t.secs()),
                            )
                        })
                        .map_err(|e| {
                            (
                                TokenCallError::Public(e),
                                "ecr-public:GetAuthorizationToken",
                            )
                        })
                }
            }
        };
        let (answer, arn) = tokio::join!(token_call, caller);
        let (token, expires_at) = answer.map_err(|(error, action)| match error {
            TokenCallError::Ecr(e) => aws_error(e, action, target, whose, arn.as_deref()),
            TokenCallError::Public(e) => aws_error(e, action, target, whose, arn.as_deref()),
        })?;
        let token = SecretString::from(token.unwrap_or_default());
        let (username, password) =
            decode_token(token.expose_secret()).ok_or_else(|| AuthError::AwsUnavailable {
                action: "ecr:GetAuthorizationToken",
                registry: registry.clone(),
                region: target.region.clone(),
                message: "its answer holds no usable authorization token".into(),
            })?;
        Ok(FetchedToken {
            login: Login {
                username,
                password,
                server: target.host.clone(),
                identity_token: false,
            },
            requested_at,
            expires_at: expires_at.map_or(0, |s| u64::try_from(s).unwrap_or(0)),
            arn,
        })
    }
}

/// A failed token call, of either API.
enum TokenCallError {
    Ecr(SdkError<GetAuthorizationTokenError, HttpResponse>),
    Public(
        SdkError<
            aws_sdk_ecrpublic::operation::get_authorization_token::GetAuthorizationTokenError,
            HttpResponse,
        >,
    ),
}

/// `base64(user:password)` → (user, password).
fn decode_token(token: &str) -> Option<(String, SecretString)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = SecretString::from(String::from_utf8(bytes).ok()?);
    let (user, password) = text.expose_secret().split_once(':')?;
    if user.is_empty() || password.is_empty() {
        return None;
    }
    Some((user.to_owned(), SecretString::from(password.to_owned())))
}

fn session_credentials(
    c: Option<&aws_sdk_sts::types::Credentials>,
    target: &EcrTarget,
) -> Result<Credentials> {
    let c = c.ok_or_else(|| AuthError::AwsUnavailable {
        action: "sts",
        registry: target.host.clone(),
        region: target.region.clone(),
        message: "its answer holds no credentials".into(),
    })?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "ecr-executor-sts",
    ))
}

/// Whether an AWS error is worth retrying later (throttling, 5xx, network) rather than a refusal.
fn is_transient<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            code.contains("Throttl")
                || code.contains("Unavailable")
                || code == "RequestLimitExceeded"
                || code == "ServerException"
                || code == "InternalFailure"
                || code == "IDPCommunicationError"
        }
        _ => true,
    }
}

/// What went wrong with an AWS call, as one plain phrase (no Rust debug output), and what
/// kind of failure it is.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    /// The SDK's chain found no credentials at all.
    NoCredentials,
    /// A credential source exists but failed (the metadata service refused, a broken profile,
    /// an expired SSO session): the SDK's own account of it.
    CredentialsFailed(String),
    /// AWS answered with a refusal (`code: message`).
    Refused(String),
    /// Retried and still failing: throttling, 5xx, the network; the phrase says which.
    Unavailable(String),
}

fn cause<E, R>(err: &SdkError<E, R>) -> Cause
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let SdkError::ServiceError(s) = err {
        let text = format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("no message")
        );
        return if is_transient(err) {
            Cause::Unavailable(text)
        } else {
            Cause::Refused(text)
        };
    }
    match credentials_error(err) {
        Some(CredentialsError::CredentialsNotLoaded(_)) => return Cause::NoCredentials,
        // Its own text is a generic "an error occurred while loading credentials": what
        // went wrong is in its sources.
        Some(failed) => {
            let text = std::error::Error::source(failed)
                .map_or_else(|| failed.to_string(), displayed_chain);
            return Cause::CredentialsFailed(text.trim_end_matches('.').to_owned());
        }
        None => {}
    }
    // The debug chain is read here, never shown.
    let chain = DisplayErrorContext(err).to_string();
    let has = |needle: &str| chain.contains(needle);
    if has("CredentialsNotLoaded") || has("no providers in chain provided credentials") {
        return Cause::NoCredentials;
    }
    let phrase = if matches!(err, SdkError::TimeoutError(_)) || has("timed out") || has("Timeout") {
        "no answer in time".to_owned()
    } else if has("dns error") || has("failed to lookup address") {
        "its endpoint's name does not resolve".to_owned()
    } else if has("Connection refused") || has("ConnectionRefused") {
        "the connection was refused".to_owned()
    } else if has("certificate") || has("InvalidCertificate") {
        "the endpoint's TLS certificate was not accepted".to_owned()
    } else if has("FIPS and custom endpoint are not supported") {
        "the SDK refuses FIPS endpoints beside a custom endpoint (unset AWS_USE_FIPS_ENDPOINT \
         or the endpoint URL)"
            .to_owned()
    } else if matches!(err, SdkError::ResponseError(_)) {
        "its answer could not be read".to_owned()
    } else {
        "a network error".to_owned()
    };
    Cause::Unavailable(phrase)
}

/// The credential provider's error behind a failed call, if that is why it failed.
fn credentials_error<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e CredentialsError> {
    sources(err).find_map(|e| e.downcast_ref())
}

/// An error and its sources as the SDK words them (their `Display`), joined by ": ".
fn displayed_chain(err: &(dyn std::error::Error + 'static)) -> String {
    sources(err)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn aws_error<E, R>(
    err: SdkError<E, R>,
    action: &'static str,
    target: &EcrTarget,
    whose: Whose,
    principal: Option<&str>,
) -> AuthError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let registry = target.host.clone();
    match cause(&err) {
        Cause::NoCredentials => AuthError::NoAwsCredentials { registry },
        Cause::CredentialsFailed(message) => AuthError::AwsCredentialsFailed { registry, message },
        Cause::Refused(message) => AuthError::AwsDenied {
            action,
            registry,
            message,
            whose,
            principal: principal.map(str::to_owned),
        },
        Cause::Unavailable(message) => AuthError::AwsUnavailable {
            action,
            registry,
            region: target.region.clone(),
            message,
        },
    }
}

fn web_identity_error<E, R>(err: SdkError<E, R>, role_arn: &str, target: &EcrTarget) -> AuthError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let code = err.code().unwrap_or_default().to_owned();
    let hint = match code.as_str() {
        "InvalidIdentityToken" => {
            "the token failed validation: check that IAM has an OIDC provider for this GitLab URL \
             and that the id_token's `aud` matches the provider's audience"
        }
        "ExpiredTokenException" | "ExpiredToken" => {
            "the job's id_token has expired: retry the job (id_tokens live as long as the job timeout)"
        }
        "IDPRejectedClaim" => {
            "the identity provider rejected a claim of the token: check the OIDC provider's \
             configuration for this GitLab URL"
        }
        "AccessDenied" => {
            "the role's trust policy does not accept this token: check its `aud` condition and its \
             `sub` condition (e.g. project_path:GROUP/PROJECT:ref_type:branch:ref:main)"
        }
        _ => {
            return aws_error(
                err,
                "sts:AssumeRoleWithWebIdentity",
                target,
                Whose::Job,
                Some(role_arn),
            );
        }
    };
    AuthError::StsRejected {
        role_arn: role_arn.to_owned(),
        code,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecr::error::ConnectorError;

    use super::*;
    use crate::config::ecr::IdentityMode;
    use crate::reference::ecr::Partition;

    fn target(region: &str) -> EcrTarget {
        EcrTarget {
            host: format!("123456789012.dkr.ecr.{region}.amazonaws.com"),
            registry_id: Some("123456789012".into()),
            region: region.into(),
            partition: Partition::Aws,
            fips: false,
            mode: IdentityMode::Runner,
            role_arn: None,
            profile: None,
            id_token_variable: "ECR_ID_TOKEN".into(),
            allowed_job_roles: Default::default(),
        }
    }

    fn dispatch(message: &str) -> SdkError<GetAuthorizationTokenError, HttpResponse> {
        SdkError::dispatch_failure(ConnectorError::io(message.to_owned().into()))
    }

    /// A region that does not exist has no endpoint: the message names the region and where
    /// it came from, in one plain sentence without the SDK's debug dump.
    #[test]
    fn a_wrong_region_names_the_region() {
        let error =
            dispatch("dns error: failed to lookup address information: Name or service not known");
        let err = aws_error(
            error,
            "ecr:GetAuthorizationToken",
            &target("eu-west-9"),
            Whose::Runner,
            None,
        );
        assert_eq!(err.failure(), crate::error::Failure::System);
        let text = err.to_string();
        assert!(
            text.contains("does not resolve")
                && text.contains("region (eu-west-9")
                && text.contains("[[registry]]"),
            "{text}"
        );
        assert!(
            !text.contains("DispatchFailure") && !text.contains("ConnectorError"),
            "{text}"
        );
    }

    #[test]
    fn causes_are_plain_phrases() {
        for (message, phrase) in [
            (
                "Connection refused (os error 111)",
                "the connection was refused",
            ),
            ("invalid peer certificate: UnknownIssuer", "TLS certificate"),
            ("something else entirely", "a network error"),
        ] {
            let err = aws_error(
                dispatch(message),
                "sts:AssumeRole",
                &target("eu-west-1"),
                Whose::Runner,
                None,
            );
            assert!(err.to_string().contains(phrase), "{message}: {err}");
        }
    }

    #[test]
    fn decodes_tokens() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("AWS:123456789012-auth-token");
        let (u, p) = decode_token(&b64).unwrap();
        assert_eq!(u, "AWS");
        assert_eq!(p.expose_secret(), "123456789012-auth-token");
        assert!(decode_token("!!").is_none());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWS");
        assert!(decode_token(&no_colon).is_none());
    }
}
