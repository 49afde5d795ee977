//! A fault-injecting stand-in for STS and ECR, for what moto cannot do: tokens that expire in
//! the future (so caching can be observed), STS error responses, throttling, 5xx and
//! endpoints that never answer. Happy paths are tested against moto; this is only for faults.
//! It speaks just enough HTTP/1.1 for the AWS SDK (keep-alive, Content-Length bodies).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

/// How the fake answers one kind of call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A valid answer; ECR tokens expire in 12 h.
    Ok,
    /// An AWS error with this HTTP status and code.
    Error(u16, &'static str),
    /// Accept the request and never answer.
    Hang,
    /// Answer normally after this long.
    Delay(Duration),
}

/// Recognisable secrets the fake hands out, for leak checks.
pub const STS_SECRET_KEY: &str = "FAKESTSSECRETKEY0123456789abcdefSECRET";
pub const STS_SESSION_TOKEN: &str = "FAKESTSSESSIONTOKEN0123456789SESSION";

#[derive(Default)]
struct State {
    replies: HashMap<&'static str, Reply>,
    calls: HashMap<String, usize>,
    /// The `Host` header of each call, by action.
    hosts: HashMap<String, Vec<String>>,
    /// Requests being answered, and the most at once, by action.
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
}

pub struct FakeAws {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeAws {
    pub fn start() -> FakeAws {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, st) = (s.clone(), st.clone());
                        std::thread::spawn(move || serve(conn, &s, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeAws { url, state, stop }
    }

    /// Sets the reply for `action`: `AssumeRoleWithWebIdentity`, `AssumeRole`,
    /// `GetAuthorizationToken` or `ecr-public`.
    pub fn reply(&self, action: &'static str, reply: Reply) -> &Self {
        self.state.lock().unwrap().replies.insert(action, reply);
        self
    }

    /// The most requests of `action` that were being answered at the same time.
    pub fn max_in_flight(&self, action: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.max_in_flight.get(action).copied().unwrap_or(0)
    }

    /// How many requests of `action` arrived.
    pub fn calls(&self, action: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(action)
            .copied()
            .unwrap_or(0)
    }
}

impl FakeAws {
    /// The `Host` header of every call of `action`, in order: the endpoint the SDK resolved.
    pub fn hosts(&self, action: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .hosts
            .get(action)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let action = match headers.get("x-amz-target") {
            Some(t) if t.starts_with("SpencerFrontendService") => "ecr-public".to_owned(),
            Some(t) => t.rsplit('.').next().unwrap_or_default().to_owned(),
            None => form_value(&body, "Action").unwrap_or_default(),
        };
        let reply = {
            let mut s = state.lock().unwrap();
            *s.calls.entry(action.clone()).or_default() += 1;
            let host = headers.get("host").cloned().unwrap_or_default();
            s.hosts.entry(action.clone()).or_default().push(host);
            let now = {
                let n = s.in_flight.entry(action.clone()).or_default();
                *n += 1;
                *n
            };
            let max = s.max_in_flight.entry(action.clone()).or_default();
            *max = (*max).max(now);
            s.replies.get(action.as_str()).cloned().unwrap_or(Reply::Ok)
        };
        let response = match reply {
            Reply::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Reply::Delay(d) => {
                std::thread::sleep(d);
                success(&action, &body)
            }
            Reply::Ok => success(&action, &body),
            Reply::Error(status, code) => error(&action, status, code),
        };
        if let Some(n) = state.lock().unwrap().in_flight.get_mut(&action) {
            *n -= 1;
        }
        if out.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.replace("%3A", ":").replace("%2F", "/"))
}

fn http(status: u16, content_type: &str, body: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: fake\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The principal a runner identity's static test keys stand for.
pub const RUNNER_ARN: &str = "arn:aws:iam::123456789012:user/fake-runner";

fn success(action: &str, body: &str) -> String {
    match action {
        "GetCallerIdentity" => {
            let xml = format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                 <GetCallerIdentityResult><Arn>{RUNNER_ARN}</Arn><UserId>AIDAFAKE</UserId>\
                 <Account>123456789012</Account></GetCallerIdentityResult>\
                 <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>\
                 </GetCallerIdentityResponse>"
            );
            http(200, "text/xml", &xml, "")
        }
        "AssumeRoleWithWebIdentity" | "AssumeRole" => {
            let role = form_value(body, "RoleArn").unwrap_or_default();
            let account = role.split(':').nth(4).unwrap_or("123456789012").to_owned();
            let xml = format!(
                "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result>\
                 <Credentials><AccessKeyId>ASIAFAKE{account}</AccessKeyId>\
                 <SecretAccessKey>{STS_SECRET_KEY}</SecretAccessKey>\
                 <SessionToken>{STS_SESSION_TOKEN}</SessionToken>\
                 <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                 <AssumedRoleUser><Arn>arn:aws:sts::{account}:assumed-role/fake/s</Arn>\
                 <AssumedRoleId>AROAFAKE:s</AssumedRoleId></AssumedRoleUser></{action}Result>\
                 <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></{action}Response>"
            );
            http(200, "text/xml", &xml, "")
        }
        "ecr-public" => {
            let token = base64::engine::general_purpose::STANDARD.encode("AWS:public-auth-token");
            let json = format!(
                r#"{{"authorizationData":{{"authorizationToken":"{token}","expiresAt":{}}}}}"#,
                now() + 12 * 3600
            );
            http(200, "application/x-amz-json-1.1", &json, "")
        }
        _ => {
            let request: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            let id = request["registryIds"][0]
                .as_str()
                .unwrap_or("123456789012")
                .to_owned();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("AWS:{id}-auth-token"));
            let json = format!(
                r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":{},"proxyEndpoint":"https://{id}.dkr.ecr.eu-west-1.amazonaws.com"}}]}}"#,
                now() + 12 * 3600
            );
            http(200, "application/x-amz-json-1.1", &json, "")
        }
    }
}

fn error(action: &str, status: u16, code: &str) -> String {
    if action.starts_with("Assume") || action == "GetCallerIdentity" {
        let xml = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>{code}</Code><Message>injected {code}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
        );
        http(status, "text/xml", &xml, "")
    } else {
        let json = format!(r#"{{"__type":"{code}","message":"injected {code}"}}"#);
        http(
            status,
            "application/x-amz-json-1.1",
            &json,
            &format!("x-amzn-ErrorType: {code}\r\n"),
        )
    }
}

/// The fake behind the real AWS endpoint names: TLS on 127.0.0.1:443 with a certificate for
/// `names` from a throwaway CA (trust it with `SSL_CERT_FILE`), every connection forwarded to
/// the fake. With `/etc/hosts` sending those names to loopback (the test world does), the SDK
/// resolves its endpoints itself and the fake sees which it chose. One at a time (port 443).
pub struct AwsNames {
    certs: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AwsNames {
    pub fn start(fake: &FakeAws, names: &[&str]) -> AwsNames {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;

        let certs = tempfile::tempdir().unwrap();
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let script = format!(
            "set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=fake-aws-ca
openssl req -newkey rsa:2048 -nodes -keyout key.pem -out server.csr -subj /CN={}
printf 'subjectAltName={}\\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile server.ext
",
            names[0],
            san.join(",")
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(certs.path())
            .output()
            .expect("openssl is installed by scripts/test.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = certs.path();
        let chain = vec![CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:443").expect("port 443 (root, one test)");
        listener.set_nonblocking(true).unwrap();
        let backend = fake.url.trim_start_matches("http://").to_owned();
        let stop = tls_front(listener, acceptor, Backend::Tcp(backend));
        AwsNames {
            certs,
            stop: Some(stop),
        }
    }

    /// The CA to trust (`SSL_CERT_FILE`).
    pub fn ca(&self) -> std::path::PathBuf {
        self.certs.path().join("ca.pem")
    }
}

impl Drop for AwsNames {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Where a [`tls_front`] forwards its connections.
pub enum Backend {
    Tcp(String),
    Unix(&'static str),
}

/// Serves TLS on `listener` (non-blocking) with `acceptor` on a thread of its own, and
/// forwards each connection in plain to `backend`, until the returned sender is used or
/// dropped.
pub fn tls_front(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    backend: Backend,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let backend = Arc::new(backend);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let serve = async {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, backend) = (acceptor.clone(), backend.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = match &*backend {
                            Backend::Tcp(address) => {
                                let Ok(mut plain) = tokio::net::TcpStream::connect(address).await
                                else {
                                    return;
                                };
                                tokio::io::copy_bidirectional(&mut tls, &mut plain).await
                            }
                            Backend::Unix(path) => {
                                let Ok(mut plain) = tokio::net::UnixStream::connect(path).await
                                else {
                                    return;
                                };
                                tokio::io::copy_bidirectional(&mut tls, &mut plain).await
                            }
                        };
                    });
                }
            };
            tokio::select! {
                () = serve => {}
                _ = stopped => {}
            }
        });
    });
    stop
}
