//! A registry login, as the engine receives it for a pull. The password never leaves this
//! type except into the pull's `X-Registry-Auth` header.

use bollard::auth::DockerCredentials;
use secrecy::{ExposeSecret, SecretString};

/// A registry login. The password is redacted in `Debug`.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub username: String,
    pub password: SecretString,
    /// The registry host the login is for.
    pub server: String,
    /// The password is an identity token (a credential helper's `<token>` user): the engine
    /// exchanges it for a registry token.
    pub identity_token: bool,
}

impl Login {
    /// What bollard sends in `X-Registry-Auth`. Never log the result: its `Debug` is not redacted.
    pub(crate) fn docker_credentials(&self) -> DockerCredentials {
        if self.identity_token {
            return DockerCredentials {
                identitytoken: Some(self.password.expose_secret().to_owned()),
                serveraddress: Some(self.server.clone()),
                ..Default::default()
            };
        }
        DockerCredentials {
            username: Some(self.username.clone()),
            password: Some(self.password.expose_secret().to_owned()),
            serveraddress: Some(self.server.clone()),
            ..Default::default()
        }
    }
}
