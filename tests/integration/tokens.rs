//! Identity-token logins, as `docker login` leaves them for OAuth registries (ACR, for
//! one): an `identitytoken` in a Docker config's `auths`, or a credential helper answering
//! the `<token>` user. The engine exchanges the token for a registry token itself; the test
//! proves the whole way with a registry that wants Bearer tokens: a `docker-registry` of the
//! test's own behind [`TokenFront`], which answers the registry's token endpoint (only the
//! OAuth refresh-token grant, with the one token it knows) and lets through only requests
//! carrying the access token it handed out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use serde_json::json;

use crate::cached::Registry;
use crate::harness::*;
use crate::helpers::Helpers;

const REFRESH: &str = "eyJ-refresh-token-of-the-test-7d1e";
const ACCESS: &str = "access-token-of-the-test-52a9";

/// Bearer-token auth in front of a registry on this host's loopback (one request per
/// connection).
struct TokenFront {
    port: u16,
    /// Refresh-token grants it answered with an access token.
    exchanges: Arc<AtomicUsize>,
    _serving: Serving,
}

impl TokenFront {
    fn start(upstream: u16) -> TokenFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let exchanges = Arc::new(AtomicUsize::new(0));
        let counted = exchanges.clone();
        let serving = serve(listener, move |client| {
            let _ = answer(client, port, upstream, &counted);
        });
        TokenFront {
            port,
            exchanges,
            _serving: serving,
        }
    }
}

fn answer(
    client: TcpStream,
    port: u16,
    upstream: u16,
    exchanges: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut client = client;
    let reply = |client: &mut TcpStream, status: &str, extra: &str, body: &str| {
        client.write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Docker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n{extra}\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    if path.starts_with("/token") {
        let form: Vec<(String, String)> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3A", ":")))
            .collect();
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if field("grant_type") == Some("refresh_token") && field("refresh_token") == Some(REFRESH) {
            exchanges.fetch_add(1, Ordering::SeqCst);
            let token = json!({"access_token": ACCESS, "expires_in": 300}).to_string();
            return reply(&mut client, "200 OK", "", &token);
        }
        return reply(
            &mut client,
            "401 Unauthorized",
            "",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"no such refresh token"}]}"#,
        );
    }
    let bearer = format!("authorization: bearer {}", ACCESS.to_ascii_lowercase());
    if !headers
        .iter()
        .any(|h| h.trim().to_ascii_lowercase() == bearer)
    {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"ecr-executor-test\"\r\n"
        );
        return reply(
            &mut client,
            "401 Unauthorized",
            &challenge,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    // Let it through, without the token the registry does not know.
    let mut head = request;
    for h in &headers {
        let lower = h.to_ascii_lowercase();
        if !lower.starts_with("authorization:") && !lower.starts_with("connection:") {
            head.push_str(h);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(head.as_bytes())?;
    std::io::copy(&mut up, &mut client)?;
    Ok(())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `repo:1` on `registry`, the busybox test image pushed there.
fn pushed(registry: &Registry, repo: &str) {
    let tag = format!("127.0.0.1:{}/{repo}:1", registry.port);
    docker(&["tag", BUSYBOX, &tag]);
    docker(&["push", "-q", &tag]);
    docker(&["rmi", &tag]);
}

fn pulling(image: &str) -> JobBuilder {
    Job::builder(image).payload_image(json!({"name": image, "pull_policy": ["always"]}))
}

#[test]
fn identity_token_logins_pull_from_a_registry_that_wants_bearer_tokens() {
    let registry = Registry::start();
    pushed(&registry, "tokens/app");
    let front = TokenFront::start(registry.port);
    let host = format!("127.0.0.1:{}", front.port);
    let image = format!("{host}/tokens/app:1");

    // Without a login the registry refuses the pull: the front is not open to all.
    let anonymous = pulling(&image).build();
    anonymous.prepare().assert_code(SYSTEM_FAILURE);
    anonymous.cleanup().assert_ok();
    assert_eq!(front.exchanges.load(Ordering::SeqCst), 0);

    // The job's DOCKER_AUTH_CONFIG, as `docker login` writes it for such a registry.
    let config = json!({"auths": {&host: {
        "auth": b64("00000000-0000-0000-0000-000000000000:"),
        "identitytoken": REFRESH,
    }}})
    .to_string();
    let job = pulling(&image)
        .secret_var("DOCKER_AUTH_CONFIG", &config)
        .build();
    let prepare = job.prepare();
    prepare.assert_ok();
    assert!(
        prepare
            .stdout()
            .contains("with an identity token from the job's DOCKER_AUTH_CONFIG"),
        "{}",
        prepare.stdout()
    );
    assert_eq!(
        front.exchanges.load(Ordering::SeqCst),
        1,
        "the engine exchanged it"
    );
    job.run("build_script", "echo pulled-with-a-token")
        .assert_ok();

    // A credential helper answering the `<token>` user, on the runner.
    let helpers = Helpers::new();
    helpers.add(
        "oauth",
        &format!(
            r#"printf '{{"ServerURL":"%s","Username":"<token>","Secret":"{REFRESH}"}}' "$server""#
        ),
    );
    let by_helper = pulling(&image)
        .runner_env("PATH", &helpers.path())
        .runner_env(
            "DOCKER_AUTH_CONFIG",
            &json!({"credHelpers": {&host: "oauth"}}).to_string(),
        )
        .build();
    let prepare = by_helper.prepare();
    prepare.assert_ok();
    assert!(
        prepare.stdout().contains("with an identity token from"),
        "{}",
        prepare.stdout()
    );
    assert_eq!(front.exchanges.load(Ordering::SeqCst), 2);

    for job in [&job, &by_helper] {
        let printed = String::from_utf8_lossy(&job.everything_printed()).into_owned();
        assert!(
            !printed.contains(REFRESH) && !printed.contains(ACCESS),
            "{printed}"
        );
        job.cleanup().assert_ok();
        assert_no_leftovers(job);
    }
    docker(&["rmi", &image]);
}
