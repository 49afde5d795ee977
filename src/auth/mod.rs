//! Registry credentials for image pulls, decided per image at pull time.
//!
//! - An ECR registry (recognised hostname or `[[registry]]` entry) gets a token the driver
//!   fetches itself with the runner's AWS identity or the job's OIDC id_token
//!   ([`IdentityMode`]). Runner-identity tokens are shared through the on-disk [`cache`];
//!   job-identity tokens live only in this process. Within one job each registry and
//!   identity is fetched once, even when several pulls need it at the same time.
//! - Any other registry uses `DOCKER_AUTH_CONFIG` (`auths`), the job's before the runner's.
//!
//! Credentials only ever travel to the Docker daemon in the pull's `X-Registry-Auth` header.

pub(crate) mod cache;
pub(crate) mod docker_config;
pub(crate) mod ecr;
pub(crate) mod helper;
pub(crate) mod login;
pub(crate) mod target;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::auth::DockerCredentials;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use self::cache::{CacheKey, CachedToken, DiskCache};
use self::docker_config::{DockerAuthConfig, HelperChoice};
use self::ecr::{AwsFetcher, FetchedToken, TokenFetcher};
use self::helper::Helpers;
use self::login::Login;
use self::target::{EcrTarget, Identity};
use crate::config::Config;
use crate::config::ecr::IdentityMode;
use crate::error::{AuthError, Whose};

type Result<T, E = AuthError> = std::result::Result<T, E>;
use crate::job::Env;
use crate::job::payload::Credential;
use crate::output;
use crate::reference::ImageRef;
use crate::reference::ecr::{self as registry, EcrHost, Partition, parse_ecr_host};
use crate::reference::host::{hostname, registry_key};
use crate::util::{hex, unix_now};

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Cache,
    Aws,
}

/// A token ready for pulls, with what `auth check`, the job log and the audit trail say
/// about it: whose identity fetched it and where it came from. Never the token itself.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub login: Login,
    pub expires_at: u64,
    pub source: Source,
    /// How the identity was chosen (`Identity::describe`).
    pub identity: String,
    pub job_identity: bool,
    /// The principal AWS saw, when known: an assumed role's session ARN, or the runner's own.
    pub arn: Option<String>,
    /// The role assumed, if any (the configured one, or the job's).
    pub role_arn: Option<String>,
    /// The STS session name, when a role was assumed.
    pub session: Option<String>,
}

impl Token {
    /// Whose identity pulls, for the job log: the principal's ARN (which for an assumed role
    /// names the role and the session), and where the token came from.
    pub(crate) fn who(&self) -> String {
        let whose = if self.job_identity { "job" } else { "runner" };
        let principal = match (&self.arn, &self.role_arn) {
            (Some(arn), _) => arn.clone(),
            (None, Some(role)) => format!("role {role}"),
            (None, None) => "(ARN unknown)".into(),
        };
        let from = match self.source {
            Source::Cache => "the cache",
            Source::Aws => "AWS",
        };
        format!("the {whose}'s AWS identity {principal} (token from {from})")
    }
}

/// The credentials of one pull, and whose they are.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// An ECR token the driver fetched (or found in the cache).
    Ecr(Arc<Token>),
    /// A login from `DOCKER_AUTH_CONFIG`, the runner user's Docker config (their `auths`, or
    /// a credential helper they name), or the job's registry credentials.
    Login { login: Login, origin: String },
}

impl Credentials {
    /// What bollard sends in `X-Registry-Auth`. Never log it.
    pub(crate) fn docker(&self) -> DockerCredentials {
        match self {
            Credentials::Ecr(token) => token.login.docker_credentials(),
            Credentials::Login { login, .. } => login.docker_credentials(),
        }
    }

    /// Whose credentials, for the job log; never the secret.
    pub(crate) fn who(&self) -> String {
        match self {
            Credentials::Ecr(token) => token.who(),
            Credentials::Login { login, origin } if login.identity_token => {
                format!("an identity token from {origin}")
            }
            Credentials::Login { login, origin } => {
                format!("user {} from {origin}", login.username)
            }
        }
    }

    /// The login itself, for a registry request of the driver's own (signatures). Never log it.
    pub(crate) fn login(&self) -> &Login {
        match self {
            Credentials::Ecr(token) => &token.login,
            Credentials::Login { login, .. } => login,
        }
    }

    /// The ECR token's details, for an ECR pull.
    pub(crate) fn token(&self) -> Option<&Token> {
        match self {
            Credentials::Ecr(token) => Some(token),
            Credentials::Login { .. } => None,
        }
    }
}

type Memo = Arc<OnceCell<Arc<Token>>>;

/// Resolves the credentials of every pull of one driver invocation.
pub(crate) struct Resolver<'a, F = AwsFetcher> {
    config: &'a Config,
    env: &'a Env,
    fetcher: F,
    memo: Mutex<HashMap<CacheKey, Memo>>,
    docker_auth: OnceLock<Result<DockerAuthSources, DockerAuthError>>,
    payload_auth: DockerAuthConfig,
    helpers: Helpers,
    /// What each helper answered for each server, within this process.
    helper_answers: tokio::sync::Mutex<HashMap<(String, String), Option<Login>>>,
}

/// Static registry logins, in the Docker executor's order: `DOCKER_AUTH_CONFIG` from the job,
/// then from the runner's environment, then the runner user's Docker config file, then the
/// job payload's `credentials[]`. The first source with an entry for the image wins.
struct DockerAuthSources {
    job: Option<DockerAuthConfig>,
    /// The driver config's `credential_helpers`.
    driver: Option<DockerAuthConfig>,
    runner: Option<DockerAuthConfig>,
    runner_file: Option<DockerAuthConfig>,
}

/// A `DOCKER_AUTH_CONFIG` that did not parse: whose it was, and why.
struct DockerAuthError {
    whose: Whose,
    message: String,
}

impl<'a> Resolver<'a, AwsFetcher> {
    pub(crate) fn new(config: &'a Config, env: &'a Env) -> Self {
        let fetcher = AwsFetcher {
            attempt_timeout: Duration::from_secs(config.ecr.timeout_seconds),
            max_attempts: config.ecr.max_attempts,
            endpoint_configured: env.aws_endpoint_configured,
        };
        Resolver::with_fetcher(config, env, fetcher)
    }

    /// The ARN the runner's own AWS identity resolves to (`sts:GetCallerIdentity`), for
    /// `doctor`; `target` says which registry's region and settings (profile) apply.
    pub(crate) async fn runner_arn(&self, target: &EcrTarget) -> Result<String> {
        self.fetcher.caller_arn(target).await
    }
}

impl<'a, F: TokenFetcher> Resolver<'a, F> {
    pub(crate) fn with_fetcher(config: &'a Config, env: &'a Env, fetcher: F) -> Self {
        Resolver {
            config,
            env,
            fetcher,
            memo: Mutex::new(HashMap::new()),
            docker_auth: OnceLock::new(),
            payload_auth: DockerAuthConfig::default(),
            helpers: Helpers {
                path: env.path.clone(),
                timeout: helper::TIMEOUT,
            },
            helper_answers: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The driver config the credentials are resolved under.
    pub(crate) fn config(&self) -> &Config {
        self.config
    }

    /// Adds the job payload's `credentials[]` as the last source of registry logins.
    pub(crate) fn with_job_credentials(mut self, credentials: &[Credential]) -> Self {
        self.payload_auth = DockerAuthConfig::from_credentials(credentials);
        self
    }

    /// Credentials for pulling `image`, or `None` for an anonymous pull.
    pub(crate) async fn credentials_for(&self, image: &ImageRef) -> Result<Option<Credentials>> {
        if let Some(target) = self.ecr_target(image.registry_host()) {
            return Ok(Some(Credentials::Ecr(self.ecr_token(&target).await?)));
        }
        Ok(self
            .docker_auth_login(image)
            .await?
            .map(|(login, origin)| Credentials::Login { login, origin }))
    }

    /// The ECR registry behind `host`, when it is one.
    pub(crate) fn ecr_target(&self, host: &str) -> Option<EcrTarget> {
        let key = registry_key(host);
        let name = hostname(host).to_ascii_lowercase();
        let entry = self.config.registries.iter().find(|r| {
            let k = registry_key(&r.host);
            k == key || (!k.contains(':') && k == name)
        });
        let parsed = parse_ecr_host(host);
        let (registry_id, region, partition, fips) = match (&parsed, entry) {
            (None, None) => return None,
            (Some(EcrHost::Public), _) => (
                None,
                registry::PUBLIC_REGION.to_owned(),
                Partition::Aws,
                false,
            ),
            (
                Some(EcrHost::Private {
                    registry_id,
                    region,
                    partition,
                    fips,
                }),
                e,
            ) => (
                Some(
                    e.and_then(|e| e.registry_id.clone())
                        .unwrap_or_else(|| registry_id.clone()),
                ),
                e.and_then(|e| e.region.clone())
                    .unwrap_or_else(|| region.clone()),
                *partition,
                *fips,
            ),
            (None, Some(e)) => {
                let region = e.region.clone()?;
                let partition = Partition::of_region(&region);
                (Some(e.registry_id.clone()?), region, partition, false)
            }
        };
        let ecr = &self.config.ecr;
        Some(EcrTarget {
            host: key,
            registry_id,
            region,
            partition,
            fips,
            mode: entry.and_then(|e| e.identity).unwrap_or(ecr.identity),
            role_arn: entry
                .and_then(|e| e.role_arn.clone())
                .or_else(|| ecr.role_arn.clone()),
            profile: entry
                .and_then(|e| e.profile.clone())
                .or_else(|| ecr.profile.clone()),
            id_token_variable: entry
                .and_then(|e| e.id_token_variable.clone())
                .unwrap_or_else(|| ecr.id_token_variable.clone()),
            allowed_job_roles: entry
                .and_then(|e| e.allowed_job_roles.clone())
                .unwrap_or_else(|| ecr.allowed_job_roles.clone()),
        })
    }

    /// Which identity fetches the token for `target`.
    pub(crate) fn identity(&self, target: &EcrTarget) -> Result<Identity> {
        let token = self.env.vars.get(&target.id_token_variable);
        let runner = || Identity::Runner {
            role_arn: target.role_arn.clone(),
            profile: target.profile.clone(),
        };
        match (target.mode, token) {
            (IdentityMode::Runner, _) | (IdentityMode::Auto, None) => Ok(runner()),
            (IdentityMode::Job, None) => Err(AuthError::NoIdToken {
                registry: target.host.clone(),
                variable: target.id_token_variable.clone(),
            }),
            (IdentityMode::Job | IdentityMode::Auto, Some(token)) => Ok(Identity::Job {
                role_arn: self.job_role(target)?,
                token: SecretString::from(token.to_owned()),
            }),
        }
    }

    fn job_role(&self, target: &EcrTarget) -> Result<String> {
        match self.env.vars.get("ECR_ROLE_ARN") {
            Some(requested) if target.role_arn.as_deref() == Some(requested) => {
                Ok(requested.to_owned())
            }
            Some(requested) => {
                if !target.allowed_job_roles.is_empty()
                    && target.allowed_job_roles.allows(requested)
                {
                    Ok(requested.to_owned())
                } else {
                    Err(AuthError::JobRoleNotAllowed {
                        role_arn: requested.to_owned(),
                    })
                }
            }
            None => target.role_arn.clone().ok_or_else(|| AuthError::NoJobRole {
                registry: target.host.clone(),
            }),
        }
    }

    /// The token for an ECR registry: from this process, the disk cache, or AWS.
    pub(crate) async fn ecr_token(&self, target: &EcrTarget) -> Result<Arc<Token>> {
        let identity = self.identity(target)?;
        let key = self.token_key(target, &identity);
        let cell = self
            .memo
            .lock()
            .expect("memo lock")
            .entry(key.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async { self.load(target, &identity, &key).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// What tells one token from another, here and in the disk cache: the registry, the
    /// endpoint kind that issues it and the identity.
    fn token_key(&self, target: &EcrTarget, identity: &Identity) -> CacheKey {
        CacheKey {
            partition: target.partition.to_string(),
            region: target.region.clone(),
            registry_id: target
                .registry_id
                .clone()
                .unwrap_or_else(|| "public".into()),
            fips: target.fips,
            fingerprint: self.fingerprint(identity),
        }
    }

    async fn load(&self, target: &EcrTarget, identity: &Identity, key: &CacheKey) -> Result<Token> {
        let session = session_name(self.env);
        let fetched = |f: FetchedToken| {
            token(
                f.login,
                f.expires_at,
                f.arn,
                Source::Aws,
                identity,
                &session,
            )
        };
        let cached = |hit: CachedToken| {
            token(
                hit.login,
                hit.expires_at,
                hit.arn,
                Source::Cache,
                identity,
                &session,
            )
        };
        let cache = match identity {
            Identity::Runner { .. } => self.disk_cache(),
            // Another job's token must never ride on this job's trust-policy check.
            Identity::Job { .. } => None,
        };
        let Some(cache) = cache else {
            return Ok(fetched(self.fetch(target, identity).await?));
        };
        if let Some(hit) = cache.read_fresh(key, unix_now()) {
            return Ok(cached(hit));
        }
        let waiting = || {
            output::info(format!(
                "Waiting for another job that is fetching the same token for {} (the credential \
                 cache lock) ...",
                target.host
            ));
        };
        let _lock = match cache.lock(key, self.lock_limit(), waiting).await {
            Ok(lock) => Some(lock),
            Err(e) => {
                output::warn(format!(
                    "credential cache lock unavailable ({e}); fetching without it"
                ));
                None
            }
        };
        if let Some(hit) = cache.read_fresh(key, unix_now()) {
            return Ok(cached(hit));
        }
        let new = self.fetch(target, identity).await?;
        let entry = CachedToken {
            login: new.login.clone(),
            requested_at: new.requested_at,
            expires_at: new.expires_at,
            arn: new.arn.clone(),
        };
        if let Err(e) = cache.store(key, &entry, unix_now()) {
            output::warn(format!("could not update the ECR credential cache: {e}"));
        }
        Ok(fetched(new))
    }

    /// How long a process waits for another that fetches the same token: that one's STS and
    /// ECR calls, each with every attempt, and a little more. Then it fetches on its own.
    fn lock_limit(&self) -> Duration {
        let ecr = &self.config.ecr;
        Duration::from_secs(2 * ecr.timeout_seconds * u64::from(ecr.max_attempts) + 5)
    }

    /// A fresh token from AWS, past every cache and without storing it: what `doctor`
    /// checks.
    pub(crate) async fn fetch_fresh(&self, target: &EcrTarget) -> Result<Token> {
        let identity = self.identity(target)?;
        let f = self.fetch(target, &identity).await?;
        let session = session_name(self.env);
        Ok(token(
            f.login,
            f.expires_at,
            f.arn,
            Source::Aws,
            &identity,
            &session,
        ))
    }

    async fn fetch(&self, target: &EcrTarget, identity: &Identity) -> Result<FetchedToken> {
        let session = session_name(self.env);
        tracing::debug!(registry = %target.host, identity = %identity.describe(), "fetching ECR token");
        self.fetcher.fetch(target, identity, &session).await
    }

    fn disk_cache(&self) -> Option<DiskCache> {
        if !self.config.ecr.cache {
            return None;
        }
        let dir = self
            .config
            .ecr
            .cache_dir
            .clone()
            .or_else(|| default_cache_dir(self.env))?;
        match DiskCache::open(&dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                output::warn(format!(
                    "ECR credential cache {} unusable ({e}); not caching",
                    dir.display()
                ));
                None
            }
        }
    }

    /// A stable, non-reversible name for an identity: what selects it, hashed.
    fn fingerprint(&self, identity: &Identity) -> String {
        let mut h = Sha256::new();
        h.update(b"ecr-executor/identity/v1\0");
        match identity {
            Identity::Runner { role_arn, profile } => {
                h.update(b"runner\0");
                for (k, v) in &self.env.aws_identity_hints {
                    h.update(format!("{k}={v}\0").as_bytes());
                }
                h.update(format!("profile={profile:?}\0role={role_arn:?}").as_bytes());
            }
            Identity::Job { role_arn, token } => {
                h.update(b"job\0");
                h.update(role_arn.as_bytes());
                h.update(b"\0");
                h.update(token.expose_secret().as_bytes());
            }
        }
        hex(&h.finalize()[..16])
    }

    /// `auths` of the runner user's `$DOCKER_CONFIG/config.json` (default `~/.docker`), as the
    /// Docker executor reads it. A file that does not parse is skipped with a warning: it
    /// belongs to the host, not to this driver.
    fn runner_docker_config(&self) -> Option<DockerAuthConfig> {
        let dir = (self.env.docker_config_dir.clone())
            .or_else(|| self.env.home.as_ref().map(|h| h.join(".docker")))?;
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).ok()?;
        DockerAuthConfig::parse(&text)
            .map_err(|e| output::warn(format!("ignoring {}: {e}", path.display())))
            .ok()
    }

    /// The sources of registry logins, parsed once.
    fn docker_auth_sources(&self) -> Result<&DockerAuthSources> {
        let sources = self.docker_auth.get_or_init(|| {
            let parse = |text: Option<&str>, whose| {
                text.map(DockerAuthConfig::parse)
                    .transpose()
                    .map_err(|message| DockerAuthError { whose, message })
            };
            Ok(DockerAuthSources {
                job: parse(self.env.vars.get("DOCKER_AUTH_CONFIG"), Whose::Job)?,
                driver: (!self.config.credential_helpers.is_empty())
                    .then(|| DockerAuthConfig::from_helpers(&self.config.credential_helpers)),
                runner: parse(self.env.docker_auth_config.as_deref(), Whose::Runner)?,
                runner_file: self.runner_docker_config(),
            })
        });
        sources.as_ref().map_err(|e| AuthError::DockerAuthConfig {
            origin: match e.whose {
                Whose::Job => "(the job's variable)",
                Whose::Runner => "(the runner's environment)",
            },
            message: e.message.clone(),
            whose: e.whose,
        })
    }

    /// The login for a non-ECR image, in the Docker executor's order: the sources one after
    /// the other (the job's `DOCKER_AUTH_CONFIG`, the driver config's `credential_helpers`,
    /// the runner's `DOCKER_AUTH_CONFIG`, the runner user's Docker config, the payload's
    /// credentials), and within one its `credHelpers` entry for the
    /// host (whose "not found" means anonymous), else its `credsStore` (which may not know
    /// the host), else its `auths`. A helper named only by the job runs only when
    /// `allowed_credential_helpers` lists it.
    async fn docker_auth_login(&self, image: &ImageRef) -> Result<Option<(Login, String)>> {
        let s = self.docker_auth_sources()?;
        for (config, whose, origin) in [
            (&s.job, Whose::Job, "the job's DOCKER_AUTH_CONFIG"),
            (
                &s.driver,
                Whose::Runner,
                "the driver config's credential_helpers",
            ),
            (&s.runner, Whose::Runner, "the runner's DOCKER_AUTH_CONFIG"),
            (
                &s.runner_file,
                Whose::Runner,
                "the runner user's Docker config",
            ),
        ] {
            let Some(config) = config else { continue };
            if let Some(choice) = config.helper(image) {
                let named = format!("docker-credential-{} ({origin})", choice.name);
                match self.ask_helper(&choice, whose, origin, image).await {
                    Ok(Some(login)) => return Ok(Some((login, named))),
                    Ok(None) if !choice.store => return Ok(None),
                    Ok(None) => {}
                    // A `credsStore` serves every host, and a broken one (or one left from a
                    // desktop install) must not fail pulls it was never meant for: its
                    // `auths` and the next sources still apply, with a warning.
                    Err(AuthError::HelperFailed { reason, .. }) if choice.store => {
                        output::warn(format!(
                            "the credsStore of {origin} gave no login for {}: {reason}; \
                             trying its `auths` and the next sources",
                            image.registry_host()
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(login) = config.find(image) {
                return Ok(Some((login.clone(), origin.to_owned())));
            }
        }
        Ok(self
            .payload_auth
            .find(image)
            .map(|login| (login.clone(), "the job's registry credentials".to_owned())))
    }

    /// Runs a helper once per server within this process.
    async fn ask_helper(
        &self,
        choice: &HelperChoice,
        whose: Whose,
        origin: &str,
        image: &ImageRef,
    ) -> Result<Option<Login>> {
        let registry = image.registry_host().to_owned();
        if whose == Whose::Job
            && !self
                .config
                .allowed_credential_helpers
                .contains(&choice.name)
        {
            return Err(AuthError::HelperNotAllowed {
                name: choice.name.clone(),
                registry,
            });
        }
        let key = (choice.name.clone(), choice.server.clone());
        let mut answers = self.helper_answers.lock().await;
        if let Some(answer) = answers.get(&key) {
            return Ok(answer.clone());
        }
        let answer = self
            .helpers
            .get(&choice.name, &choice.server)
            .await
            .map_err(|e| AuthError::HelperFailed {
                registry,
                origin: origin.to_owned(),
                reason: e.to_string(),
            })?;
        answers.insert(key, answer.clone());
        Ok(answer)
    }

    /// The helpers the operator's own configuration names (the runner's
    /// `DOCKER_AUTH_CONFIG`, the runner user's Docker config), and those
    /// `allowed_credential_helpers` lets jobs name, with where each was named: for `doctor`.
    pub(crate) fn named_helpers(&self) -> Result<Vec<(String, &'static str)>> {
        let s = self.docker_auth_sources()?;
        let mut named = Vec::new();
        for (config, origin) in [
            (&s.driver, "the driver config's credential_helpers"),
            (&s.runner, "the runner's DOCKER_AUTH_CONFIG"),
            (&s.runner_file, "the runner user's Docker config"),
        ] {
            for name in config.iter().flat_map(DockerAuthConfig::helper_names) {
                named.push((name, origin));
            }
        }
        for name in &self.config.allowed_credential_helpers {
            named.push((name.clone(), "allowed_credential_helpers"));
        }
        Ok(named)
    }
}

/// A token with what is known of the identity that fetched it.
fn token(
    login: Login,
    expires_at: u64,
    arn: Option<String>,
    source: Source,
    identity: &Identity,
    session: &str,
) -> Token {
    let (job_identity, role_arn) = match identity {
        Identity::Runner { role_arn, .. } => (false, role_arn.clone()),
        Identity::Job { role_arn, .. } => (true, Some(role_arn.clone())),
    };
    Token {
        login,
        expires_at,
        source,
        identity: identity.describe(),
        job_identity,
        session: role_arn.is_some().then(|| session.to_owned()),
        arn,
        role_arn,
    }
}

/// `$XDG_CACHE_HOME/ecr-executor`, else `~/.cache/ecr-executor`.
pub(crate) fn default_cache_dir(env: &Env) -> Option<PathBuf> {
    env.xdg_cache_home
        .clone()
        .or_else(|| env.home.as_ref().map(|h| h.join(".cache")))
        .map(|d| d.join("ecr-executor"))
}

/// STS session name from the job's identity: `gitlab-p<project>-j<job>`, in STS's charset.
pub(crate) fn session_name(env: &Env) -> String {
    let project = env.vars.get("CI_PROJECT_ID").unwrap_or("0");
    let job = env.vars.get("CI_JOB_ID").unwrap_or("0");
    let name: String = format!("gitlab-p{project}-j{job}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c))
        .take(64)
        .collect();
    if name.len() < 2 {
        "ecr-executor".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests;
