//! Docker credential helpers, run as the Docker CLI and GitLab Runner run them:
//! `docker-credential-<name> get` from the runner's `PATH`, the registry's server on stdin,
//! `{"ServerURL", "Username", "Secret"}` on stdout. An answer that says "credentials not
//! found" means an anonymous pull; a `<token>` username means the secret is an identity
//! token. The answer is a secret: it becomes a [`Login`], which only the engine receives. A
//! helper that hangs is killed after [`TIMEOUT`]; one that fails is reported with its name,
//! its exit status and one line of its stderr, redacted.

use std::process::Stdio;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::login::Login;

/// How long a helper may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest stderr line shown.
const SHOWN: usize = 160;

/// Why a helper gave no login.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum HelperError {
    #[error("`{0}` is not a credential helper name (letters, digits, `.`, `_` and `-` only)")]
    BadName(String),
    #[error("docker-credential-{0} is not on the runner's PATH")]
    Missing(String),
    #[error("docker-credential-{name} did not answer within {seconds} s and was killed")]
    TimedOut { name: String, seconds: f64 },
    #[error("docker-credential-{name} failed ({status}){}", .said.as_deref().map(|s| format!(": {s}")).unwrap_or_default())]
    Failed {
        name: String,
        status: String,
        /// One line of its stderr, redacted.
        said: Option<String>,
    },
    #[error("docker-credential-{name} answered something that is not its JSON")]
    BadAnswer { name: String },
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: SecretString,
}

/// Whether `name` may be a helper's name: nothing that could make it a path.
pub(crate) fn valid_name(name: &str) -> bool {
    crate::config::credential_helper_name_ok(name)
}

/// Where helpers are found, and how long they may take.
#[derive(Debug, Clone)]
pub(crate) struct Helpers {
    /// The runner's `PATH` (`None`: the process's own).
    pub path: Option<std::ffi::OsString>,
    pub timeout: Duration,
}

impl Helpers {
    /// Asks helper `name` for the login to `server` (`host[:port]`). `Ok(None)`: it has none.
    pub(crate) async fn get(&self, name: &str, server: &str) -> Result<Option<Login>, HelperError> {
        get(name, server, self.path.as_deref(), self.timeout).await
    }
}

async fn get(
    name: &str,
    server: &str,
    path: Option<&std::ffi::OsStr>,
    timeout: Duration,
) -> Result<Option<Login>, HelperError> {
    if !valid_name(name) {
        return Err(HelperError::BadName(name.to_owned()));
    }
    let program = format!("docker-credential-{name}");
    let mut command = tokio::process::Command::new(&program);
    // A changed PATH is where the program is looked up, as the child's.
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let mut child = command
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                HelperError::Missing(name.to_owned())
            }
            _ => HelperError::Failed {
                name: name.to_owned(),
                status: format!("could not start: {e}"),
                said: None,
            },
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading gets a broken pipe here: its exit tells.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            return Err(HelperError::Failed {
                name: name.to_owned(),
                status: format!("could not be read: {e}"),
                said: None,
            });
        }
        // Dropping the child (kill_on_drop) kills it.
        Err(_) => {
            return Err(HelperError::TimedOut {
                name: name.to_owned(),
                seconds: timeout.as_secs_f64(),
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // The protocol's answer for "no login here", on stdout (or stderr, in some helpers).
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        return Err(HelperError::Failed {
            name: name.to_owned(),
            status: output.status.to_string(),
            said: one_line(&stderr).or_else(|| one_line(&stdout)),
        });
    }
    let answer: Answer =
        serde_json::from_str(stdout.trim()).map_err(|_| HelperError::BadAnswer {
            name: name.to_owned(),
        })?;
    let identity_token = answer.username == "<token>";
    Ok(Some(Login {
        username: if identity_token {
            String::new()
        } else {
            answer.username
        },
        password: answer.secret,
        server: server.to_owned(),
        identity_token,
    }))
}

/// The first non-empty line of `text`, cut short, with anything that looks like a secret (a
/// long run of token characters) replaced.
fn one_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut out = String::new();
    for word in line.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        let tokenish = word.len() >= 16
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=_-.:".contains(&b))
            && word.bytes().any(|b| b.is_ascii_digit());
        out.push_str(if tokenish { "[redacted]" } else { word });
    }
    if out.len() > SHOWN {
        let cut = (0..=SHOWN)
            .rev()
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        out.truncate(cut);
        out.push('…');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn names_that_could_be_paths_are_refused() {
        for ok in [
            "gcloud",
            "ecr-login",
            "acr-env",
            "pass",
            "desktop.exe",
            "a_b",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../sh",
            "a/b",
            "-x",
            ".hidden",
            "a b",
            "x;rm",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn stderr_is_one_line_without_secrets() {
        let said = one_line(
            "\n  error: token AKIAIOSFODNN7EXAMPLE0 rejected for eyJhbGciOi.abc123DEF456ghi789\nmore\n",
        )
        .unwrap();
        assert_eq!(said, "error: token [redacted] rejected for [redacted]");
        assert!(one_line(&"x ".repeat(200)).unwrap().ends_with('…'));
        assert_eq!(one_line("\n \n"), None);
    }

    /// Helpers as small scripts on `PATH`: the protocol, "not found", identity tokens,
    /// failures and a hang.
    #[tokio::test]
    async fn the_protocol_as_real_helpers_speak_it() {
        let dir = tempfile::tempdir().unwrap();
        let helper = |name: &str, body: &str| {
            let path = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        helper(
            "good",
            r#"read server; [ "$1" = get ] || exit 9; printf '{"ServerURL":"%s","Username":"ci","Secret":"s3cret-for-%s"}' "$server" "$server""#,
        );
        helper(
            "token",
            r#"cat >/dev/null; echo '{"Username":"<token>","Secret":"refresh-tok"}'"#,
        );
        helper(
            "none",
            "cat >/dev/null; echo 'credentials not found in native keychain'; exit 1",
        );
        helper(
            "broken",
            "cat >/dev/null; echo 'cannot reach the vault with key AKIAIOSFODNN7EXAMPLE0' >&2; exit 3",
        );
        helper("garbage", "cat >/dev/null; echo 'not json'");
        helper("hang", "exec sleep 60");
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let helpers = Helpers {
            path: Some(path.into()),
            timeout: Duration::from_millis(500),
        };
        let login = helpers
            .get("good", "reg.example.com:5000")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(login.username, "ci");
        assert_eq!(
            login.password.expose_secret(),
            "s3cret-for-reg.example.com:5000"
        );
        assert!(!login.identity_token);
        let token = helpers
            .get("token", "reg.example.com")
            .await
            .unwrap()
            .unwrap();
        assert!(token.identity_token);
        let sent = token.docker_credentials();
        assert_eq!(sent.identitytoken.as_deref(), Some("refresh-tok"));
        assert_eq!(sent.password, None);
        assert!(
            helpers
                .get("none", "reg.example.com")
                .await
                .unwrap()
                .is_none()
        );
        let err = helpers.get("broken", "reg.example.com").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "docker-credential-broken failed (exit status: 3): cannot reach the vault with key \
             [redacted]"
        );
        assert_eq!(
            helpers.get("garbage", "r").await.unwrap_err(),
            HelperError::BadAnswer {
                name: "garbage".into()
            }
        );
        let start = std::time::Instant::now();
        assert!(matches!(
            helpers.get("hang", "r").await.unwrap_err(),
            HelperError::TimedOut { .. }
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(
            helpers.get("absent", "r").await.unwrap_err(),
            HelperError::Missing("absent".into())
        );
        assert_eq!(
            helpers.get("../x", "r").await.unwrap_err(),
            HelperError::BadName("../x".into())
        );
    }
}
