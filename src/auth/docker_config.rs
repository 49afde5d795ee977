//! `DOCKER_AUTH_CONFIG` and `config.json`: registry credentials in Docker's config format, as
//! the Docker executor reads them. `auths` keys may be `host`, a URL, or, as in GitLab Runner
//! 17.5+, `host/namespace` for one part of a registry (the longest match wins). Which
//! credential helper a config names for a host (`credHelpers`, else `credsStore`) is read
//! here; running it is [`super::helper`]'s, and deciding the order [`super::Resolver`]'s.

use std::collections::HashMap;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::login::Login;
use crate::job::payload::Credential;
use crate::reference::ImageRef;
use crate::reference::host::registry_key;

/// Hostnames Docker treats as Docker Hub.
const DOCKER_HUB_ALIASES: &[&str] = &["index.docker.io", "registry-1.docker.io", "docker.io"];

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, Entry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    auth: Option<SecretString>,
    username: Option<String>,
    password: Option<SecretString>,
    /// A refresh token the engine exchanges for registry tokens (`docker login` to an
    /// OAuth registry such as ACR writes it, often beside an `auth` of `<user>:`).
    identitytoken: Option<SecretString>,
}

/// Parsed `auths` entries, keyed by normalised `host[/path]`, and the credential helpers the
/// config names.
#[derive(Debug, Default)]
pub(crate) struct DockerAuthConfig {
    entries: Vec<(String, Login)>,
    /// `credHelpers`: normalised host → (helper name, the key as written, which the helper
    /// is asked for).
    helpers: Vec<(String, String, String)>,
    /// `credsStore`: the helper for every host.
    store: Option<String>,
}

/// The credential helper a config names for an image's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelperChoice {
    pub name: String,
    /// What the helper is asked for: the `credHelpers` key as written, or for `credsStore`
    /// the server as the Docker CLI names it (`https://index.docker.io/v1/` for Docker Hub,
    /// else `host[:port]`).
    pub server: String,
    /// `credsStore`, which may not know the host (then `auths` and the next source apply);
    /// a `credHelpers` entry is the host's only source of login.
    pub store: bool,
}

impl DockerAuthConfig {
    /// Parses the JSON. Errors never include the value's content.
    pub(crate) fn parse(text: &str) -> Result<DockerAuthConfig, String> {
        let file: ConfigFile = serde_json::from_str(text).map_err(|e| {
            format!(
                "not valid Docker config JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let mut entries = Vec::new();
        let mut helpers = Vec::new();
        for (key, name) in file.cred_helpers {
            if !super::helper::valid_name(&name) {
                return Err(format!(
                    "the credential helper for {key:?} is not a helper name (letters, digits, \
                     `.`, `_` and `-` only)"
                ));
            }
            helpers.push((normalise_key(&key), name, key));
        }
        let store = match file.creds_store.filter(|s| !s.is_empty()) {
            Some(name) if !super::helper::valid_name(&name) => {
                return Err(
                    "`credsStore` is not a helper name (letters, digits, `.`, `_` and \
                            `-` only)"
                        .into(),
                );
            }
            store => store,
        };
        for (key, entry) in file.auths {
            let normalised = normalise_key(&key);
            // The identity token wins over whatever `auth` holds beside it, and is all the
            // engine gets (Login::docker_credentials), as from the Docker CLI.
            if let Some(token) = entry
                .identitytoken
                .filter(|t| !t.expose_secret().trim().is_empty())
            {
                let (key, mut login) =
                    keyed_login(normalised, entry.username.unwrap_or_default(), token);
                login.identity_token = true;
                entries.push((key, login));
                continue;
            }
            let login = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.expose_secret().trim().is_empty() => {
                    decode_auth(auth.expose_secret()).ok_or_else(|| {
                        format!("the `auth` value of {key:?} is not base64 of user:password")
                    })?
                }
                (_, Some(username), Some(password)) => (username, password),
                // `docker login` with a `credsStore` writes `{}` here: no login of its own,
                // but no error either.
                _ => {
                    tracing::debug!(
                        entry = %key,
                        "Docker config entry without a login skipped (it lives in a credential \
                         helper)"
                    );
                    continue;
                }
            };
            entries.push(keyed_login(normalised, login.0, login.1));
        }
        Ok(DockerAuthConfig {
            entries,
            helpers,
            store,
        })
    }

    /// The helper this config names for `image`'s host: its `credHelpers` entry, else its
    /// `credsStore`.
    pub(crate) fn helper(&self, image: &ImageRef) -> Option<HelperChoice> {
        let host = normalise_key(image.registry_host());
        if let Some((_, name, key)) = self.helpers.iter().find(|(h, ..)| *h == host) {
            return Some(HelperChoice {
                name: name.clone(),
                server: key.clone(),
                store: false,
            });
        }
        let name = self.store.clone()?;
        let server = if host == "docker.io" {
            "https://index.docker.io/v1/".to_owned()
        } else {
            image.registry_host().to_owned()
        };
        Some(HelperChoice {
            name,
            server,
            store: true,
        })
    }

    /// Every helper this config names, for `doctor`.
    pub(crate) fn helper_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.helpers.iter().map(|(_, n, _)| n.clone()).collect();
        names.extend(self.store.clone());
        names.sort();
        names.dedup();
        names
    }

    /// A config of `credHelpers` only: the driver config's `credential_helpers`.
    pub(crate) fn from_helpers<'h>(
        helpers: impl IntoIterator<Item = (&'h String, &'h String)>,
    ) -> DockerAuthConfig {
        DockerAuthConfig {
            helpers: helpers
                .into_iter()
                .map(|(key, name)| (normalise_key(key), name.clone(), key.clone()))
                .collect(),
            ..Default::default()
        }
    }

    /// The registry logins of the job payload's `credentials[]` (the GitLab container
    /// registry with the job token), as the Docker executor uses them.
    pub(crate) fn from_credentials(credentials: &[Credential]) -> DockerAuthConfig {
        let entries = credentials
            .iter()
            .filter(|c| c.kind == "registry" && !c.url.trim().is_empty())
            .filter_map(|c| {
                let password = c.password.clone()?;
                Some(keyed_login(
                    normalise_key(&c.url),
                    c.username.clone(),
                    password,
                ))
            })
            .collect();
        DockerAuthConfig {
            entries,
            ..Default::default()
        }
    }

    /// The login for an image: the entry whose key is the longest prefix of `host/path`.
    pub(crate) fn find(&self, image: &ImageRef) -> Option<&Login> {
        let host = normalise_key(image.registry_host());
        let full = format!("{host}/{}", image.repository);
        self.entries
            .iter()
            .filter(|(key, _)| {
                *key == host
                    || (full.starts_with(key.as_str())
                        && full.as_bytes().get(key.len()) == Some(&b'/'))
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(_, login)| login)
    }
}

/// An entry under a normalised `host[/path]` key; the login is for the host part.
fn keyed_login(key: String, username: String, password: SecretString) -> (String, Login) {
    let server = key.split('/').next().unwrap_or_default().to_owned();
    let login = Login {
        username,
        password,
        server,
        identity_token: false,
    };
    (key, login)
}

fn normalise_key(key: &str) -> String {
    let s = key.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let mut parts = s.trim_end_matches('/').splitn(2, '/');
    let host = registry_key(parts.next().unwrap_or_default());
    let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        "docker.io".to_owned()
    } else {
        host
    };
    match parts.next() {
        // `index.docker.io/v1/` is the Hub's legacy URL, not a namespace.
        Some("v1") | Some("v2") | None => host,
        Some(path) => format!("{host}/{path}"),
    }
}

fn decode_auth(auth: &str) -> Option<(String, SecretString)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), SecretString::from(password.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn finds_entries_by_host_url_and_namespace() {
        let json = format!(
            r#"{{"auths": {{
                "https://registry.example.com/v1/": {{"auth": "{}"}},
                "registry.example.com/team": {{"username": "team", "password": "team-pass"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "127.0.0.1:5000": {{"auth": "{}"}}
            }}, "credHelpers": {{"x": "ecr-login"}}}}"#,
            b64("u:p:with:colons"),
            b64("hub:hubpass"),
            b64("AWS:tok")
        );
        let c = DockerAuthConfig::parse(&json).unwrap();
        let login = c.find(&image("registry.example.com/other/app")).unwrap();
        assert_eq!(login.username, "u");
        assert_eq!(login.password.expose_secret(), "p:with:colons");
        assert_eq!(login.server, "registry.example.com");
        assert_eq!(
            c.find(&image("registry.example.com/team/app"))
                .unwrap()
                .username,
            "team"
        );
        assert_eq!(
            c.find(&image("registry.example.com/teamx/app"))
                .unwrap()
                .username,
            "u"
        );
        assert_eq!(c.find(&image("alpine")).unwrap().username, "hub");
        assert_eq!(
            c.find(&image("127.0.0.1:5000/a/b")).unwrap().username,
            "AWS"
        );
        assert!(c.find(&image("127.0.0.1:5001/a/b")).is_none());
    }

    #[test]
    fn errors_never_show_values() {
        let err = DockerAuthConfig::parse(r#"{"auths": {"h": {"auth": "!!!secret-ish!!!"}}}"#)
            .unwrap_err();
        assert!(!err.contains("secret-ish"), "{err}");
        let err = DockerAuthConfig::parse("{not json: hunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(DockerAuthConfig::parse(r#"{"auths": []}"#).is_err());
        assert!(DockerAuthConfig::parse("{}").unwrap().entries.is_empty());
    }

    /// Issue 22, defect 1: a config as `docker login` writes it next to a `credsStore` (`{}`
    /// entries) keeps every other login instead of failing whole.
    #[test]
    fn entries_without_a_login_are_skipped_not_fatal() {
        let json = format!(
            r#"{{"auths": {{
                "registry.example.com": {{}},
                "empty.example.com": {{"auth": "", "identitytoken": " "}},
                "127.0.0.1:5000": {{"auth": "{}"}}
            }}, "credsStore": "desktop"}}"#,
            b64("ci:pass")
        );
        let c = DockerAuthConfig::parse(&json).unwrap();
        assert_eq!(c.entries.len(), 1, "{c:?}");
        assert_eq!(c.find(&image("127.0.0.1:5000/a/b")).unwrap().username, "ci");
        assert!(c.find(&image("registry.example.com/a")).is_none());
        assert!(c.find(&image("empty.example.com/a")).is_none());
        // A malformed `auth` is still an error: that entry meant to be a login.
        assert!(DockerAuthConfig::parse(r#"{"auths": {"h": {"auth": "@@"}}}"#).is_err());
    }

    /// A runner migrated from the Docker executor keeps its identity-token logins: the
    /// engine gets the token as `identitytoken`, as from the Docker CLI, whether `auth`
    /// (`<user>:`, as `docker login` writes for ACR) is beside it or not.
    #[test]
    fn identity_token_entries_are_logins_the_engine_exchanges() {
        let json = format!(
            r#"{{"auths": {{
                "acr.example.io": {{"auth": "{}", "identitytoken": "eyJ-refresh-1"}},
                "token.example.com": {{"identitytoken": "eyJ-refresh-2"}}
            }}}}"#,
            b64("00000000-0000-0000-0000-000000000000:")
        );
        let c = DockerAuthConfig::parse(&json).unwrap();
        for (host, token) in [
            ("acr.example.io", "eyJ-refresh-1"),
            ("token.example.com", "eyJ-refresh-2"),
        ] {
            let login = c.find(&image(&format!("{host}/team/app:1"))).unwrap();
            assert!(login.identity_token, "{login:?}");
            let sent = login.docker_credentials();
            assert_eq!(sent.identitytoken.as_deref(), Some(token));
            assert_eq!(sent.serveraddress.as_deref(), Some(host));
            assert_eq!((sent.username, sent.password), (None, None));
            assert!(!format!("{login:?}").contains(token), "redacted");
        }
    }

    #[test]
    fn helpers_per_host_beat_the_store() {
        let c = DockerAuthConfig::parse(
            r#"{"credHelpers": {"europe-docker.pkg.dev": "gcloud", "https://reg.example.com:5000": "pass"},
                "credsStore": "desktop", "auths": {"reg.example.com:5000": {}}}"#,
        )
        .unwrap();
        let gar = c.helper(&image("europe-docker.pkg.dev/p/r/app:1")).unwrap();
        assert_eq!(
            (gar.name.as_str(), gar.server.as_str(), gar.store),
            ("gcloud", "europe-docker.pkg.dev", false)
        );
        let own = c.helper(&image("reg.example.com:5000/a")).unwrap();
        assert_eq!(
            (own.name.as_str(), own.server.as_str()),
            ("pass", "https://reg.example.com:5000")
        );
        let hub = c.helper(&image("alpine")).unwrap();
        assert_eq!(
            (hub.name.as_str(), hub.server.as_str(), hub.store),
            ("desktop", "https://index.docker.io/v1/", true)
        );
        assert_eq!(c.helper_names(), ["desktop", "gcloud", "pass"]);
        assert!(DockerAuthConfig::parse(r#"{"credHelpers": {"h": "../../bin/sh"}}"#).is_err());
        assert!(DockerAuthConfig::parse(r#"{"credsStore": "a/b"}"#).is_err());
        assert!(
            DockerAuthConfig::parse("{}")
                .unwrap()
                .helper(&image("alpine"))
                .is_none()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let c = DockerAuthConfig::parse(&format!(
            r#"{{"auths": {{"h": {{"auth": "{}"}}}}}}"#,
            b64("u:topsecret")
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
